//! The OpenAPI 3.1 document served at `/openapi.json`. Each route declares
//! its parameters, body and answers beside its handler (`#[utoipa::path]`),
//! with schemas derived from the types it reads and answers; this module
//! adds what every route shares: the token schemes, and the errors an
//! extractor answers before the handler runs (a bad token, a bad body, a
//! path parameter that does not decode).

use serde_json::{Value, json};
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};

use super::views::{ErrorBody, StripeErrorBody};

#[derive(OpenApi)]
#[openapi(
    info(title = "Tributary", description = "Mirror status, the read-after-write barrier, writes through to the upstream, \
        the Stripe-compatible path and the built-in pull queues of apps. Errors are {\"error\":{\"type\",\"message\"}} \
        (Stripe's shape on /stripe/…)."),
    components(schemas(ErrorBody, StripeErrorBody)),
    modifiers(&Tokens)
)]
struct Base;

struct Tokens;

impl utoipa::Modify for Tokens {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let scheme = |description: &str| {
            let mut http = Http::new(HttpAuthScheme::Bearer);
            http.description = Some(description.to_string());
            SecurityScheme::Http(http)
        };
        components.add_security_scheme("adminToken", scheme("the token in the env var [api] admin_token_env names"));
        components.add_security_scheme(
            "readToken",
            scheme("when [api] read_token_env is set: the token it names, or the admin token; unset: no token needed"),
        );
        components.add_security_scheme("appToken", scheme("an app's token (trb_…), from POST /v1/apps or tributary apps create"));
    }
}

/// The document the routes are added to.
pub fn base() -> utoipa::openapi::OpenApi {
    let mut base = Base::openapi();
    base.info.version = env!("CARGO_PKG_VERSION").to_string();
    base
}

fn error_ref(path: &str) -> Value {
    // the Stripe-compatible path answers errors in Stripe's shape
    let name = if path.starts_with("/stripe/") { "StripeError" } else { "Error" };
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// Add to every operation the errors its extractors answer, and give the
/// Stripe-compatible path Stripe's error shape.
pub fn finish(document: utoipa::openapi::OpenApi) -> Value {
    let mut document = serde_json::to_value(document).unwrap_or_else(|e| json!({"error": e.to_string()}));
    let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) else { return document };
    paths.insert(
        "/openapi.json".into(),
        json!({"get": {"summary": "This document", "operationId": "openapi",
            "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}}}}}),
    );
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else { continue };
        for op in item.values_mut().filter(|op| op.get("responses").is_some()) {
            let mut shared: Vec<(u16, &str)> = Vec::new();
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            if params.iter().any(|p| p["in"] == "path") {
                shared.push((400, "a path parameter that does not decode (not UTF-8)"));
            }
            if let Some(security) = op["security"].as_array() {
                let read = security.iter().any(|s| s.get("readToken").is_some());
                shared.push((
                    401,
                    if read {
                        "[api] read_token_env is set and neither it nor the admin token was sent"
                    } else {
                        "no token, an unknown or a revoked one"
                    },
                ));
                if security.iter().any(|s| s.get("appToken").is_some()) {
                    shared.push((429, "this token's request rate is exceeded (see Retry-After)"));
                }
            }
            if op.get("requestBody").is_some() {
                shared.extend([
                    (400, "malformed JSON"),
                    (413, "body over 1 MiB"),
                    (422, "unknown field, wrong type or value out of range"),
                ]);
            }
            let responses = &mut op["responses"];
            for (status, when) in shared {
                let key = status.to_string();
                if responses.get(&key).is_none() {
                    responses[&key] = json!({"description": when, "content": {"application/json": {"schema": error_ref(path)}}});
                }
            }
            if path.starts_with("/stripe/") {
                let stripe = error_ref(path);
                for (status, response) in responses.as_object_mut().into_iter().flatten() {
                    let schema = response.pointer_mut("/content/application~1json/schema");
                    if let Some(schema) = schema.filter(|s| !status.starts_with('2') && s["$ref"] == "#/components/schemas/Error") {
                        *schema = stripe.clone();
                    }
                }
            }
        }
    }
    document
}

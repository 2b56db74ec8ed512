//! The Stripe-compatible path, `/stripe/{source}/v1/…`: an official Stripe
//! client whose base URL points here (with an app token as its API key)
//! writes through the same atomic phases as `/v1/sources/…` and reads from
//! the mirror, so it reads its own writes without spending the upstream's
//! request budget.
//!
//! - `POST /stripe/{source}/v1/{resource}` creates, `POST …/{id}` updates,
//!   `DELETE …/{id}` deletes: Stripe's form encoding (or JSON),
//!   `Idempotency-Key` (generated when absent, as Stripe keys are optional),
//!   `Stripe-Account`; the answer is the upstream's, status and body, with
//!   `Idempotent-Replayed: true` on a replay.
//! - `GET …/{resource}/{id}` and `GET …/{resource}` (`limit`,
//!   `starting_after`, `ending_before`) answer from the mirror in Stripe's
//!   shapes; a filter the mirror cannot apply is refused, never ignored.
//! - Errors are Stripe's: `{"error":{"type","code","message","param"}}`,
//!   with the statuses and types the official clients map to their errors.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Map, Value};
use utoipa::{IntoParams, IntoResponses};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Param, Params, QueryParams};
use super::views::{ErrorBody, StripeErrorBody, StripeErrorDetail, StripeList};
use super::writes::{AccountHeader, MissingKey, WriteErrors, account, write};
use super::{ApiError, AppState};
use crate::store::mirror::ListCursor;
use crate::store::queues::App;
use crate::stripe_api::Target;
use crate::write::WriteError;

/// Stripe's default and largest list page.
const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = crate::stripe_api::MAX_PAGE;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(retrieve, update, remove))
        .route("/stripe/{source}/{*rest}", any(deeper))
}

/// A write's key on the Stripe-compatible path: optional, as with Stripe.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
struct OptionalKey {
    /// The same key and request replays the first answer; a write without
    /// one gets a key of its own.
    #[param(rename = "Idempotency-Key", max_length = 255)]
    idempotency_key: Option<String>,
}

/// How a read from the mirror can fail (in Stripe's error shape).
#[derive(IntoResponses)]
#[allow(dead_code)]
enum ReadErrors {
    /// A list parameter the mirror cannot answer (a filter), or a bad limit.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// The account has not granted this app access.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// No such object for this account (code `resource_missing`), or a
    /// resource the source does not mirror.
    #[response(status = 404)]
    NotFound(ErrorBody),
}

/// An error as Stripe answers it.
#[derive(Debug)]
pub struct StripeError {
    status: StatusCode,
    /// `invalid_request_error`, `idempotency_error` or `api_error`.
    kind: &'static str,
    code: Option<&'static str>,
    message: String,
    param: Option<&'static str>,
    retry_after_secs: Option<u64>,
}

impl StripeError {
    fn invalid(status: StatusCode, message: String) -> Self {
        StripeError { status, kind: "invalid_request_error", code: None, message, param: None, retry_after_secs: None }
    }

    fn missing(object: &str, id: &str, param: &'static str) -> Self {
        StripeError {
            code: Some("resource_missing"),
            param: Some(param),
            ..Self::invalid(StatusCode::NOT_FOUND, format!("No such {object}: '{id}'"))
        }
    }
}

impl From<ApiError> for StripeError {
    fn from(e: ApiError) -> Self {
        let message = e.to_string();
        let invalid = |status| StripeError::invalid(status, message.clone());
        match e {
            ApiError::BadRequest(_) | ApiError::Unprocessable(_) => invalid(StatusCode::BAD_REQUEST),
            ApiError::Unauthorized(_) => invalid(StatusCode::UNAUTHORIZED),
            ApiError::Forbidden(_) => invalid(StatusCode::FORBIDDEN),
            ApiError::NotFound(_) => invalid(StatusCode::NOT_FOUND),
            ApiError::TooLarge(_) => invalid(StatusCode::PAYLOAD_TOO_LARGE),
            ApiError::Conflict(_) => {
                StripeError { kind: "idempotency_error", code: Some("idempotency_key_in_use"), ..invalid(StatusCode::CONFLICT) }
            }
            ApiError::RateLimited { retry_after_secs } => {
                StripeError { code: Some("rate_limit"), retry_after_secs: Some(retry_after_secs), ..invalid(StatusCode::TOO_MANY_REQUESTS) }
            }
            ApiError::MethodNotAllowed => invalid(StatusCode::METHOD_NOT_ALLOWED),
            ApiError::Timeout(_) => StripeError { kind: "api_error", ..invalid(StatusCode::GATEWAY_TIMEOUT) },
            ApiError::BadGateway(_) => StripeError { kind: "api_error", ..invalid(StatusCode::BAD_GATEWAY) },
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "stripe-compatible request failed");
                StripeError { kind: "api_error", message: "internal error".into(), ..invalid(StatusCode::INTERNAL_SERVER_ERROR) }
            }
        }
    }
}

impl From<WriteError> for StripeError {
    fn from(e: WriteError) -> Self {
        match e {
            // what Stripe answers for a key reused with other parameters
            WriteError::Mismatch => StripeError {
                kind: "idempotency_error",
                ..StripeError::invalid(
                    StatusCode::BAD_REQUEST,
                    "Keys for idempotent requests can only be used with the same parameters they were first used with. \
                     Try using a key other than the one you sent if you meant to execute a different request."
                        .into(),
                )
            },
            other => ApiError::from(other).into(),
        }
    }
}

impl IntoResponse for StripeError {
    fn into_response(self) -> Response {
        let error = StripeErrorDetail { kind: self.kind, message: self.message, code: self.code, param: self.param };
        let mut response = (self.status, Json(StripeErrorBody { error })).into_response();
        let headers = response.headers_mut();
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, secs.into());
        }
        // Stripe's clients obey this before any status rule: an answer that
        // never came (502) may be retried with the same key
        let retry = if self.status == StatusCode::BAD_GATEWAY || self.status == StatusCode::CONFLICT { "true" } else { "false" };
        headers.insert("stripe-should-retry", HeaderValue::from_static(retry));
        response
    }
}

/// An extractor's rejection, answered in Stripe's shape.
fn stripe<T>(extracted: Result<T, ApiError>) -> Result<T, StripeError> {
    extracted.map_err(StripeError::from)
}

/// What a path under `/v1/` names among the resources the source mirrors
/// (`customers`, `customers/cus_1`, `checkout/sessions/cs_1`,
/// `customers/cus_1/tax_ids/txi_1`).
fn target_of(state: &AppState, source: &str, path: &str) -> Result<Target, StripeError> {
    let unrecognized = || {
        StripeError::invalid(StatusCode::NOT_FOUND, format!("Unrecognized request URL: /v1/{path} is not mirrored by source '{source}'"))
    };
    let resources = state.writes.resources(source).map_err(|_| unrecognized())?;
    crate::stripe_api::resolve(resources.iter().copied(), path).ok_or_else(unrecognized)
}

/// Stripe-compatible create, through the atomic phases; answers what the
/// upstream answered.
#[utoipa::path(post, path = "/stripe/{source}/v1/{resource}", security(("appToken" = [])),
    params(("source" = String, Path), ("resource" = String, Path, description = "`customers`, …"), OptionalKey, AccountHeader),
    request_body(content((Params = "application/x-www-form-urlencoded"), (Params = "application/json"))),
    responses((status = 200, description = "the upstream's answer as it came (Idempotent-Replayed: true when replayed)", body = Object), WriteErrors))]
async fn create(
    app: Result<App, ApiError>,
    State(state): State<AppState>,
    path: Result<Param<(String, String)>, ApiError>,
    headers: HeaderMap,
    params: Result<Params, ApiError>,
) -> Result<Response, StripeError> {
    let (app, Param((source, resource)), Params(params)) = (stripe(app)?, stripe(path)?, stripe(params)?);
    write(app, state, headers, (source, resource), "POST", params, MissingKey::Generate).await
}

/// Stripe-compatible update, through the atomic phases.
#[utoipa::path(post, path = "/stripe/{source}/v1/{resource}/{id}", security(("appToken" = [])),
    params(("source" = String, Path), ("resource" = String, Path), ("id" = String, Path), OptionalKey, AccountHeader),
    request_body(content((Params = "application/x-www-form-urlencoded"), (Params = "application/json"))),
    responses((status = 200, description = "the upstream's answer as it came", body = Object), WriteErrors))]
async fn update(
    app: Result<App, ApiError>,
    State(state): State<AppState>,
    path: Result<Param<(String, String, String)>, ApiError>,
    headers: HeaderMap,
    params: Result<Params, ApiError>,
) -> Result<Response, StripeError> {
    let (app, Param((source, resource, id)), Params(params)) = (stripe(app)?, stripe(path)?, stripe(params)?);
    write(app, state, headers, (source, format!("{resource}/{id}")), "POST", params, MissingKey::Generate).await
}

/// Stripe-compatible delete, through the atomic phases.
#[utoipa::path(delete, path = "/stripe/{source}/v1/{resource}/{id}", security(("appToken" = [])),
    params(("source" = String, Path), ("resource" = String, Path), ("id" = String, Path), OptionalKey, AccountHeader),
    responses((status = 200, description = "the upstream's answer as it came", body = Object), WriteErrors))]
async fn remove(
    app: Result<App, ApiError>,
    State(state): State<AppState>,
    path: Result<Param<(String, String, String)>, ApiError>,
    headers: HeaderMap,
) -> Result<Response, StripeError> {
    let (app, Param((source, resource, id))) = (stripe(app)?, stripe(path)?);
    write(app, state, headers, (source, format!("{resource}/{id}")), "DELETE", Map::new(), MissingKey::Generate).await
}

/// Stripe-compatible retrieve, answered from the mirror.
#[utoipa::path(get, path = "/stripe/{source}/v1/{resource}/{id}", security(("appToken" = [])),
    params(("source" = String, Path), ("resource" = String, Path), ("id" = String, Path), AccountHeader),
    responses((status = 200, description = "the object as mirrored", body = Object), ReadErrors))]
async fn retrieve(
    app: Result<App, ApiError>,
    State(state): State<AppState>,
    path: Result<Param<(String, String, String)>, ApiError>,
    headers: HeaderMap,
    query: Result<QueryParams<Vec<(String, String)>>, ApiError>,
) -> Result<Json<Value>, StripeError> {
    // `checkout/sessions` is a list: its query pages it
    let (app, Param((source, resource, id)), QueryParams(query)) = (stripe(app)?, stripe(path)?, stripe(query)?);
    read(app, state, headers, source, &format!("{resource}/{id}"), query).await
}

/// A read under `/stripe/{source}/v1/`: one object (its query is not
/// used), or a list page.
async fn read(
    app: App,
    state: AppState,
    headers: HeaderMap,
    source: String,
    path: &str,
    query: Vec<(String, String)>,
) -> Result<Json<Value>, StripeError> {
    let target = target_of(&state, &source, path)?;
    let object = target.resource.object;
    let account = account(&app, &headers, &state).await?;
    let Some(id) = &target.id else {
        if let Some(parent) = &target.parent {
            return Err(StripeError::invalid(
                StatusCode::BAD_REQUEST,
                format!("the {object} list of {parent} is not answered from the mirror (it holds no parent index); ask the upstream"),
            ));
        }
        let list = list_page(&state, &source, object, account.as_deref(), query).await?;
        let body = StripeList { url: format!("/v1/{path}"), ..list };
        return Ok(Json(serde_json::to_value(body).map_err(|e| ApiError::Internal(e.to_string()))?));
    };
    let found = state.store.mirror_object(&source, object, account.as_deref(), id).await.map_err(|e| ApiError::Internal(e.to_string()))?;
    // a child is found under its own parent only (a field of it names the parent)
    let under_parent = |o: &Value| target.parent.as_ref().is_none_or(|p| o.as_object().is_some_and(|f| f.values().any(|v| v == p)));
    found.filter(under_parent).map(Json).ok_or_else(|| StripeError::missing(object, id, "id"))
}

/// Stripe-compatible list, answered from the mirror in Stripe's shape
/// (newest first).
#[utoipa::path(get, path = "/stripe/{source}/v1/{resource}", security(("appToken" = [])),
    params(("source" = String, Path), ("resource" = String, Path), AccountHeader,
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "objects per page (default 10)"),
        ("starting_after" = Option<String>, Query, description = "an object id: the page after it"),
        ("ending_before" = Option<String>, Query, description = "an object id: the page before it"),
    ),
    responses((status = 200, description = "a Stripe list object", body = StripeList), ReadErrors))]
async fn list(
    app: Result<App, ApiError>,
    State(state): State<AppState>,
    path: Result<Param<(String, String)>, ApiError>,
    headers: HeaderMap,
    query: Result<QueryParams<Vec<(String, String)>>, ApiError>,
) -> Result<Json<Value>, StripeError> {
    let (app, Param((source, resource)), QueryParams(query)) = (stripe(app)?, stripe(path)?, stripe(query)?);
    read(app, state, headers, source, &resource, query).await
}

/// A list page from the mirror, newest first, with Stripe's cursors.
async fn list_page(
    state: &AppState,
    source: &str,
    object: &'static str,
    account: Option<&str>,
    query: Vec<(String, String)>,
) -> Result<StripeList, StripeError> {
    let bad = |message: String| StripeError::invalid(StatusCode::BAD_REQUEST, message);
    let (mut limit, mut cursor) = (DEFAULT_LIMIT, ListCursor::Start);
    for (name, value) in query {
        match name.as_str() {
            "limit" => {
                limit = value.parse().ok().filter(|l| (1..=MAX_LIMIT).contains(l)).ok_or_else(|| StripeError {
                    param: Some("limit"),
                    ..bad(format!("Invalid limit: must be an integer from 1 to {MAX_LIMIT}, got '{value}'"))
                })?
            }
            "starting_after" | "ending_before" if cursor != ListCursor::Start => {
                return Err(bad("You may only specify one of these parameters: starting_after, ending_before.".into()));
            }
            "starting_after" => cursor = ListCursor::After(value),
            "ending_before" => cursor = ListCursor::Before(value),
            other => {
                return Err(bad(format!(
                    "'{other}' is not answered from the mirror (it lists with limit, starting_after and ending_before); \
                     ask the upstream for filtered lists"
                )));
            }
        }
    }
    let page = state.store.mirror_list(source, object, account, &cursor, limit).await.map_err(|e| ApiError::Internal(e.to_string()))?;
    let Some(page) = page else {
        // only a cursor's object can be missing
        return Err(match &cursor {
            ListCursor::After(id) => StripeError::missing(object, id, "starting_after"),
            ListCursor::Before(id) => StripeError::missing(object, id, "ending_before"),
            ListCursor::Start => ApiError::Internal("the mirror gave no first page".into()).into(),
        });
    };
    Ok(StripeList { object: "list", data: page.data, has_more: page.has_more, url: String::new() })
}

/// A path deeper than the documented routes (`checkout/sessions/cs_1`,
/// `customers/cus_1/tax_ids`, `customers/cus_1/tax_ids/txi_1`): reads
/// and writes resolved against the catalogue like theirs; anything else
/// is what Stripe answers for a URL it does not serve.
async fn deeper(
    app: Result<App, ApiError>,
    State(state): State<AppState>,
    Param((source, rest)): Param<(String, String)>,
    method: Method,
    headers: HeaderMap,
    query: Result<QueryParams<Vec<(String, String)>>, ApiError>,
    params: Result<Params, ApiError>,
) -> Response {
    let unrecognized = || {
        StripeError::invalid(
            StatusCode::NOT_FOUND,
            format!("Unrecognized request URL ({method}: /stripe/{source}/{rest}): not served by this mirror"),
        )
    };
    let Some(path) = rest.strip_prefix("v1/").filter(|p| !p.is_empty()) else { return unrecognized().into_response() };
    let path = path.to_string();
    let app = match stripe(app) {
        Ok(app) => app,
        Err(e) => return e.into_response(),
    };
    let answer = match method {
        Method::GET => match stripe(query) {
            Ok(QueryParams(query)) => read(app, state, headers, source, &path, query).await.map(IntoResponse::into_response),
            Err(e) => Err(e),
        },
        Method::POST | Method::DELETE => {
            let verb = if method == Method::POST { "POST" } else { "DELETE" };
            match stripe(params) {
                Ok(Params(params)) => write(app, state, headers, (source, path), verb, params, MissingKey::Generate).await,
                Err(e) => Err(e),
            }
        }
        _ => Err(unrecognized()),
    };
    answer.unwrap_or_else(IntoResponse::into_response)
}

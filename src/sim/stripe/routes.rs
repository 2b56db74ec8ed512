//! Stripe's `/v1` routes: auth, connected accounts, restricted keys,
//! idempotency, and every served resource dispatched from the catalogue.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::expand;
use super::fixtures::served;
use super::list::ListParams;
use super::world::{Busy, PLATFORM, Replay, now_ms};
use crate::sim::Sim;
use crate::sim::error::ApiError;
use crate::sim::faults::{Auth, answer, error_response, gate, route_key, stripe_key, text_response};
use crate::stripe_api::{Target, form};

/// Every Stripe answer carries a `Request-Id` and the `Stripe-Version` it
/// was rendered in (the one asked for, else the simulator's default); an
/// unknown version is refused, as Stripe refuses it.
pub async fn stripe_api(State(sim): State<Arc<Sim>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let asked = headers.get("stripe-version").map(|v| v.to_str().unwrap_or_default().to_string());
    let mut response = match asked.as_deref() {
        Some(version) if !crate::stripe_api::is_api_version(version) => error_response(&ApiError {
            status: 400,
            kind: "invalid_request_error",
            code: None,
            param: None,
            message: format!("Invalid Stripe API version: {version}"),
        }),
        _ => stripe_answer(sim, method, uri, headers, body).await,
    };
    let version = asked.filter(|v| crate::stripe_api::is_api_version(v)).unwrap_or_else(|| crate::stripe_api::API_VERSION.into());
    let request_id = format!("req_{}", crate::ids::random_id("", 14));
    if response.status().is_client_error() || response.status().is_server_error() {
        response = with_request_log_url(response, &request_id).await;
    }
    for (name, value) in [("stripe-version", version), ("request-id", request_id)] {
        if let Ok(value) = value.parse() {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// An error answer with the dashboard's log of its request, as Stripe
/// links every error to it.
async fn with_request_log_url(response: Response, request_id: &str) -> Response {
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let body = match serde_json::from_slice::<Value>(&bytes) {
        Ok(mut error) if error["error"].is_object() => {
            error["error"]["request_log_url"] = Value::String(format!("https://dashboard.stripe.com/test/logs/{request_id}"));
            Bytes::from(error.to_string())
        }
        _ => bytes,
    };
    let mut response = Response::from_parts(parts, Body::from(body));
    response.headers_mut().remove(header::CONTENT_LENGTH);
    response
}

async fn stripe_answer(sim: Arc<Sim>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_string();
    let faults = match gate(&sim, route_key(&method, &path), &headers, Auth::StripeKey).await {
        Ok(faults) => faults,
        Err(response) => return response,
    };

    let scope = match headers.get("stripe-account").and_then(|v| v.to_str().ok()) {
        None => PLATFORM.to_string(),
        Some(account) if sim.world.lock().has_scope(account) && account != PLATFORM => account.to_string(),
        Some(account) => {
            return error_response(&ApiError {
                status: 403,
                kind: "invalid_request_error",
                code: Some("account_invalid"),
                param: None,
                message: format!("The provided key does not have access to account '{account}' (or that account does not exist)."),
            });
        }
    };

    let restricted_key = stripe_key(&headers).is_some_and(|k| k.starts_with("rk_"));
    if let Some(resource) = resource_of(&path).filter(|r| restricted_key && faults.restricted.iter().any(|x| x == r)) {
        let object = crate::stripe_api::by_path(resource).map_or(resource, |r| r.object);
        let account = if scope == PLATFORM { "acct_platform" } else { scope.as_str() };
        return error_response(&ApiError {
            status: 403,
            kind: "invalid_request_error",
            code: None,
            param: None,
            message: format!(
                "The provided key 'rk_test_***' does not have the required permissions for this endpoint on account '{account}'. \
                 Having the 'rak_{object}_read' permission would allow this request to continue."
            ),
        });
    }
    let query = form::decode(uri.query().unwrap_or_default().as_bytes());
    let params = if method == Method::POST { form::decode(&body) } else { query.clone() };
    let idempotency_key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(String::from);
    let request = format!("{method} {path} {params}");
    let write = method == Method::POST || method == Method::DELETE;
    let key = idempotency_key.filter(|_| write);
    if let Some(key) = &key {
        let world = sim.world.lock();
        // a key whose first request is still executing (its result is not
        // saved yet) is in use
        if world.is_busy(&Busy::Key { scope: scope.clone(), key: key.clone() }) {
            return error_response(&ApiError {
                status: 409,
                kind: "idempotency_error",
                code: Some("idempotency_key_in_use"),
                param: None,
                message: "There is currently another in-progress request using this Idempotent Key (that probably means you submitted twice, and the other request is still going through). Please try again later.".into(),
            });
        }
        if let Some(replay) = world.replay(&scope, key, now_ms()).cloned() {
            if replay.request != request {
                return error_response(&ApiError {
                    status: 400,
                    kind: "idempotency_error",
                    code: None,
                    param: None,
                    message: format!(
                        "Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{key}' if you meant to execute a different request."
                    ),
                });
            }
            let mut response = text_response(replay.status, replay.body);
            response.headers_mut().insert("idempotent-replayed", "true".parse().expect("static header"));
            return response;
        }
    }
    // the key is in use until the answer is sent, or the client hangs up
    let _key = key.as_ref().map(|key| Held::take(&sim, Busy::Key { scope: scope.clone(), key: key.clone() }));
    // a write to an object another write is executing on waits for no one:
    // Stripe answers 429 lock_timeout
    let object = write.then(|| target(&path, &query).and_then(|t| t.id)).flatten();
    let _object = match object.map(|id| Held::try_take(&sim, Busy::Object { scope: scope.clone(), id })) {
        Some(None) => return error_response(&ApiError::lock_timeout()),
        held => held.flatten(),
    };

    let result = dispatch(&sim, &method, &path, &scope, &query, &params);
    let (status, body) = match result {
        Ok(body) => (200, body),
        Err(error) => (error.status, error.body().to_string()),
    };
    // a request refused before it executed (a parameter that fails
    // validation) saves no result
    if let Some(key) = key.as_ref().filter(|_| status != 400) {
        sim.world.lock().remember(&scope, key, Replay { request, status, body: body.clone(), saved_ms: now_ms() });
        *sim.stats.executed_by_key.lock().entry(key.clone()).or_default() += 1;
    }
    if write && faults.write_answer_delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.write_answer_delay_ms)).await;
    }
    if write && status == 200 && sim.roll(faults.lose_responses) {
        // done, but the answer never arrives: the connection drops
        sim.stats.lost.fetch_add(1, Ordering::Relaxed);
        let lost = futures::stream::once(async { Err::<Bytes, std::io::Error>(std::io::Error::other("response lost (injected)")) });
        return (StatusCode::OK, Body::from_stream(lost)).into_response();
    }
    answer(&sim, &faults, status, body)
}

/// Something an executing request holds; released when dropped (the
/// answer sent, or the client gone).
struct Held {
    sim: Arc<Sim>,
    what: Busy,
}

impl Held {
    fn take(sim: &Arc<Sim>, what: Busy) -> Held {
        sim.world.lock().hold(what.clone());
        Held { sim: sim.clone(), what }
    }

    /// `None` when another request holds it.
    fn try_take(sim: &Arc<Sim>, what: Busy) -> Option<Held> {
        sim.world.lock().hold(what.clone()).then(|| Held { sim: sim.clone(), what })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.sim.world.lock().release(&self.what);
    }
}

fn not_found(path: &str) -> ApiError {
    ApiError { status: 404, kind: "invalid_request_error", code: None, param: None, message: format!("Unrecognized request URL ({path}).") }
}

/// Resolve `/v1/…` among the served resources; a list scoped by a
/// required filter takes its parent from it.
fn target(path: &str, query: &Value) -> Option<Target> {
    let mut target = crate::stripe_api::resolve(served().iter().copied(), path.strip_prefix("/v1/")?)?;
    if let Some((param, _)) = target.resource.scope.filters.iter().find(|(_, field)| *field == "id")
        && target.parent.is_none()
    {
        target.parent = query[*param].as_str().map(String::from);
    }
    Some(target)
}

/// The resource a path names, for the restricted-key fault.
pub fn resource_of(path: &str) -> Option<&'static str> {
    target(path, &Value::Null).map(|t| t.resource.path)
}

/// Serve one `/v1` request; the answer is JSON text (list pages are
/// serialized straight from the world, without copying its objects).
fn dispatch(sim: &Sim, method: &Method, path: &str, scope: &str, query: &Value, params: &Value) -> Result<String, ApiError> {
    let mut world = sim.world.lock();
    if method == Method::GET {
        match path.trim_end_matches('/').strip_prefix("/v1/events") {
            Some("") => return world.events(scope, &ListParams::from_query(query)?),
            Some(id) if id.starts_with('/') && !id[1..].contains('/') => return world.event(scope, &id[1..]).map(|e| e.to_string()),
            _ => {}
        }
    }
    // a list scoped by a required filter takes it from the query of a
    // list, from the body of a create
    let Target { resource, parent, id } = target(path, params).ok_or_else(|| not_found(path))?;
    // an object is reached by its own id; its list needs its parent
    if resource.scope.parent.is_some() && parent.is_none() && id.is_none() {
        let (param, _) = resource.scope.filters.first().copied().unwrap_or(("id", "id"));
        return Err(ApiError::required(param));
    }
    if let Some((param, _)) =
        resource.scope.filters.iter().find(|(param, _)| query.get(*param).is_none() && method == Method::GET && id.is_none())
    {
        return Err(ApiError::required(param));
    }
    let parent = parent.as_deref();
    let answer = match (method, id) {
        (&Method::GET, None) => return world.list(scope, resource, parent, &ListParams::from_query(query)?, path),
        (&Method::POST, None) => world.create(scope, resource, parent, params)?,
        (&Method::GET, Some(id)) => world.retrieve(scope, resource.object, &id)?,
        (&Method::POST, Some(id)) => world.update(scope, resource.object, &id, params)?,
        (&Method::DELETE, Some(id)) if resource.delete_endpoint => world.delete(scope, resource, &id)?,
        _ => return Err(not_found(path)),
    };
    world.expanded(scope, answer, &expand::paths(params)).map(|v| v.to_string())
}

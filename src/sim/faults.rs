//! What every simulated upstream shares: the faults injected into its
//! answers (latency, auth, rate limit, 500s, truncated bodies), request
//! counts, and JSON answers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::Value;

use super::Sim;
use super::error::ApiError;

/// Faults injected into `/v1` responses; changeable at run time through
/// `POST /__sim/faults`.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Requests per second served before answering 429 (none: unlimited).
    #[serde(default)]
    pub rate_limit: Option<u32>,
    /// Share of requests answered with a random 500.
    #[serde(default)]
    pub fail_rate: f64,
    /// Added to every response.
    #[serde(default)]
    pub latency_ms: u64,
    /// Share of successful responses whose JSON body is cut in half.
    #[serde(default)]
    pub truncate_rate: f64,
    /// Share of successful writes whose response is lost after the write.
    #[serde(default)]
    pub lose_responses: f64,
    /// A write's answer waits this long after the write is done (a client
    /// killed meanwhile never learns of it).
    #[serde(default)]
    pub write_answer_delay_ms: u64,
    /// Answer every request 401, as if the API key had been revoked.
    #[serde(default)]
    pub unauthorized: bool,
    /// Share of event queue acknowledgements dropped: the batch stays
    /// unacknowledged and is handed out again.
    #[serde(default)]
    pub lose_acks: f64,
    /// Window answers carry one shift without an id.
    #[serde(default)]
    pub broken_shift: bool,
    /// Event queue batches lead with an event whose payload has no order
    /// code or product id.
    #[serde(default)]
    pub broken_event: bool,
    /// The marketplace's order lookups answer 503 (maintenance).
    #[serde(default)]
    pub fail_order_lookups: bool,
    /// Resources (`charges`, …) a restricted key (`rk_test_…`) may not
    /// read: answered 403, as Stripe answers a key without the permission.
    #[serde(default)]
    pub restricted: Vec<String>,
    /// New events are rendered at this older API version (as Stripe renders
    /// an event at the version current when it was created): their objects
    /// carry the fields that version had.
    #[serde(default)]
    pub event_api_version: Option<String>,
    /// New events show in `/v1/events` after a random delay up to this
    /// (ms), so newer events are often listed before older ones, as
    /// Stripe's eventually consistent list does.
    #[serde(default)]
    pub event_visibility_delay_ms: u64,
    /// Share of new events that never show at all (the object still
    /// changes): events missed for good.
    #[serde(default)]
    pub drop_events: f64,
}

#[derive(Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub rate_limited: AtomicU64,
    pub failed: AtomicU64,
    pub truncated: AtomicU64,
    pub lost: AtomicU64,
    /// Writes executed (not replayed) per `Idempotency-Key`: more than one
    /// for a key means a side effect was repeated.
    pub executed_by_key: Mutex<BTreeMap<String, u64>>,
    /// Requests per route (`GET /v1/customers`, `GET /v1/invoices/{id}/lines`).
    pub by_route: Mutex<BTreeMap<String, u64>>,
}

pub fn text_response(status: u16, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

pub fn json_response(status: u16, body: &Value) -> Response {
    text_response(status, body.to_string())
}

pub fn error_response(error: &ApiError) -> Response {
    json_response(error.status, &error.body())
}

/// `/v1/invoices/in_123/lines` → `GET /v1/invoices/{id}/lines`.
pub fn route_key(method: &Method, path: &str) -> String {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let mut key = format!("{method} /{}", segments.iter().take(2).copied().collect::<Vec<_>>().join("/"));
    if segments.len() > 2 {
        key.push_str("/{id}");
    }
    for rest in segments.iter().skip(3) {
        key.push('/');
        key.push_str(rest);
    }
    key
}

/// Whose API a route is: what a request must present, and the shape of
/// the errors the gate answers (Stripe's envelope, WhenIWork's
/// `{"error","code"}`, Tiki's `{"errors":[…]}`).
#[derive(Clone, Copy, PartialEq)]
pub enum Auth {
    /// Stripe's `sk_test_…` key.
    StripeKey,
    /// The route checks its own tokens (WhenIWork's from `/login`).
    WhenIWork,
    /// The route checks its own tokens (Tiki's OAuth2 ones).
    Tiki,
    /// The route checks its bearer token (GitHub's `{"message"}` errors).
    GitHub,
}

/// An error the gate answers, in the shape of the route's API.
fn gate_error(auth: Auth, error: ApiError) -> Response {
    match auth {
        Auth::StripeKey => error_response(&error),
        Auth::WhenIWork => json_response(error.status, &serde_json::json!({"error": error.message, "code": error.status})),
        Auth::Tiki => json_response(error.status, &serde_json::json!({"errors": [error.message]})),
        Auth::GitHub => json_response(error.status, &serde_json::json!({"message": error.message})),
    }
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")
}

/// The API key a request presents, as Stripe takes it: a bearer token, or
/// the user name of HTTP basic auth (`curl -u sk_test_…:`).
pub fn stripe_key(headers: &HeaderMap) -> Option<String> {
    if let Some(token) = bearer(headers) {
        return Some(token.to_string());
    }
    basic(headers).map(|(user, _)| user)
}

/// HTTP basic auth's user and password (empty when there is no colon).
pub fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    use base64::Engine;
    let encoded = headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?).ok()?;
    Some(match decoded.split_once(':') {
        Some((user, password)) => (user.to_string(), password.to_string()),
        None => (decoded, String::new()),
    })
}

/// Count the request, then apply what every route shares: latency, auth,
/// the rate limit and injected 500s. `Err` is the answer to send instead.
pub async fn gate(sim: &Sim, route: String, headers: &HeaderMap, auth: Auth) -> Result<Faults, Response> {
    sim.stats.requests.fetch_add(1, Ordering::Relaxed);
    *sim.stats.by_route.lock().entry(route).or_default() += 1;
    let faults = sim.faults.read().clone();
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }
    let key_ok = match auth {
        Auth::StripeKey => {
            stripe_key(headers).is_some_and(|k| ["sk_test_", "rk_test_"].iter().any(|p| k.starts_with(p) && k.len() > p.len()))
        }
        Auth::WhenIWork | Auth::Tiki | Auth::GitHub => true,
    };
    if !key_ok || faults.unauthorized {
        let message = match auth {
            Auth::StripeKey => "Invalid API Key provided. Use `Authorization: Bearer sk_test_...`",
            Auth::WhenIWork | Auth::Tiki | Auth::GitHub => "missing or invalid token",
        };
        return Err(gate_error(
            auth,
            ApiError { status: 401, kind: "invalid_request_error", code: None, param: None, message: message.into() },
        ));
    }
    let limiter = sim.limiter.read().clone();
    if limiter.is_some_and(|l| l.check().is_err()) {
        sim.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
        let mut response = gate_error(
            auth,
            ApiError {
                status: 429,
                kind: "rate_limit_error",
                code: Some("rate_limit"),
                param: None,
                message: "Too many requests hit the API too quickly.".into(),
            },
        );
        response.headers_mut().insert(header::RETRY_AFTER, "1".parse().expect("static header"));
        return Err(response);
    }
    if sim.roll(faults.fail_rate) {
        sim.stats.failed.fetch_add(1, Ordering::Relaxed);
        return Err(gate_error(
            auth,
            ApiError { status: 500, kind: "api_error", code: None, param: None, message: "An unknown error occurred (injected).".into() },
        ));
    }
    Ok(faults)
}

/// A successful JSON answer, cut short by the `truncate_rate` fault.
pub fn answer(sim: &Sim, faults: &Faults, status: u16, body: String) -> Response {
    if status == 200 && sim.roll(faults.truncate_rate) {
        sim.stats.truncated.fetch_add(1, Ordering::Relaxed);
        let cut = body.len() / 2;
        return (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], Body::from(body[..cut].to_string())).into_response();
    }
    text_response(status, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_keys_hide_ids() {
        assert_eq!(route_key(&Method::GET, "/v1/customers"), "GET /v1/customers");
        assert_eq!(route_key(&Method::GET, "/v1/invoices/in_1/lines"), "GET /v1/invoices/{id}/lines");
        assert_eq!(route_key(&Method::POST, "/v1/customers/cus_1"), "POST /v1/customers/{id}");
    }
}

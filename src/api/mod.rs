//! The HTTP API: health, Prometheus metrics, source and sink status, the
//! `/wait` read-after-write barrier, apps with their pull queues
//! (`queues`), writes through to the upstream (`writes`) and the
//! Stripe-compatible path for Stripe's own clients (`stripe`). Errors are
//! JSON `{"error":{"type","message"}}`; internal details are logged, not
//! sent.

mod auth;
mod extract;
mod openapi;
pub mod queues;
mod stripe;
mod writes;

pub use auth::Tokens;
pub use extract::MAX_BODY_BYTES;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{Value, json};

use self::auth::Reader;
use self::extract::{Param, QueryParams};
use crate::delivery::SinkStatus;
use crate::source::Registry;
use crate::store::Store;

/// Longest `/wait` a client may ask for.
const MAX_WAIT_MS: u64 = 300_000;
const DEFAULT_WAIT_MS: u64 = 30_000;

#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<Registry>,
    /// Every sink of this process (fixed at start).
    pub sinks: Arc<Vec<Arc<SinkStatus>>>,
    pub store: Arc<dyn Store>,
    pub metrics: PrometheusHandle,
    pub queues: Arc<queues::QueueApi>,
    pub writes: Arc<crate::write::Writes>,
    /// The admin and read tokens.
    pub tokens: Arc<Tokens>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("too many requests; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// The upstream gave no usable answer.
    #[error("{0}")]
    BadGateway(String),
    #[error("internal error")]
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind) = match &self {
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            ApiError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::BadGateway(_) => (StatusCode::BAD_GATEWAY, "upstream_error"),
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "api request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
            }
        };
        let mut response = (status, Json(json!({"error": {"type": kind, "message": self.to_string()}}))).into_response();
        if let ApiError::RateLimited { retry_after_secs } = self {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, retry_after_secs.into());
        }
        response
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/v1/sources", get(sources))
        .route("/v1/sources/{name}/wait", get(wait))
        .route("/v1/sinks", get(sinks))
        .merge(queues::routes())
        .merge(writes::routes())
        .merge(stripe::routes())
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state)
}

/// 200 `{"status":"ok"}`, or 503 with the reasons while a source or sink
/// is stuck on a store error (a full disk, a lost database).
async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let sources = state.registry.all().into_iter().filter_map(|s| s.store_health.error().map(|e| format!("source '{}': {e}", s.name)));
    let sinks = state.sinks.iter().filter_map(|s| s.store_health.error().map(|e| format!("sink '{}': {e}", s.name)));
    let reasons: Vec<String> = sources.chain(sinks).collect();
    if reasons.is_empty() {
        return (StatusCode::OK, Json(json!({"status": "ok"})));
    }
    (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "unhealthy", "reasons": reasons})))
}

async fn metrics(_: Reader, State(state): State<AppState>) -> String {
    state.registry.record_lag();
    state.metrics.render()
}

async fn sources(_: Reader, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let mut out = Vec::new();
    for source in state.registry.all() {
        let objects = state.store.object_counts(&source.name).await.map_err(|e| ApiError::Internal(e.to_string()))?;
        let scopes: Vec<Value> = source.scopes().iter().map(|s| s.snapshot()).collect();
        let platform_cursor = scopes.iter().find(|s| s["account"].is_null()).map(|s| s["cursor"].clone()).unwrap_or(Value::Null);
        out.push(json!({
            "name": source.name,
            "kind": source.kind,
            "role": if source.is_owner() { "owner" } else { "standby" },
            "phase": source.phase(),
            "cursor": platform_cursor,
            "lag_ms": source.lag().map(|l| l.as_millis() as u64),
            "objects": objects,
            "accounts": scopes,
            "last_error": source.last_error(),
        }));
    }
    Ok(Json(json!({ "sources": out })))
}

/// Changes counted at most when reporting a sink's lag.
const LAG_COUNT_MAX: usize = 10_000;

async fn sinks(_: Reader, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let internal = |e: crate::store::StoreError| ApiError::Internal(e.to_string());
    let mut out = Vec::new();
    for sink in state.sinks.iter() {
        let mut view = sink.snapshot();
        view["dead_letters"] = json!(state.store.dead_letter_count(&sink.name).await.map_err(internal)?);
        if let Some(cursor) = sink.cursor() {
            // the backlog is read, not estimated: exact up to LAG_COUNT_MAX
            let backlog = state.store.changes_after(cursor, LAG_COUNT_MAX).await.map_err(internal)?;
            let oldest_ms = backlog.changes.first().and_then(|c| chrono::DateTime::parse_from_rfc3339(&c.committed_at).ok());
            view["lag_changes"] = json!(backlog.changes.len());
            view["lag_ms"] =
                json!(oldest_ms.map(|t| (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_milliseconds().max(0)).unwrap_or(0));
        }
        out.push(view);
    }
    Ok(Json(json!({ "sinks": out })))
}

async fn wait(
    _: Reader,
    State(state): State<AppState>,
    Param(name): Param<String>,
    QueryParams(query): QueryParams<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let source = state.registry.get(&name).ok_or_else(|| ApiError::NotFound(format!("no source named '{name}'")))?;
    let timeout_ms = match query.get("timeout_ms") {
        None => DEFAULT_WAIT_MS,
        Some(raw) => match raw.parse::<u64>() {
            Ok(ms) if ms <= MAX_WAIT_MS => ms,
            _ => return Err(ApiError::BadRequest(format!("timeout_ms must be an integer from 0 to {MAX_WAIT_MS}, got '{raw}'"))),
        },
    };
    let started = std::time::Instant::now();
    match tokio::time::timeout(Duration::from_millis(timeout_ms), source.wait()).await {
        Ok(()) => Ok(Json(json!({"source": name, "waited_ms": started.elapsed().as_millis() as u64}))),
        Err(_) => {
            Err(ApiError::Timeout(format!("source '{name}' did not apply a new poll within {timeout_ms} ms (phase: {:?})", source.phase())))
        }
    }
}

async fn openapi() -> Json<Value> {
    Json(openapi::document())
}

#[cfg(test)]
mod tests;

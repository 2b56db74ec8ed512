//! The HTTP API: health, Prometheus metrics, source and sink status, the
//! `/wait` read-after-write barrier, apps with their pull queues
//! (`queues`), writes through to the upstream (`writes`) and the
//! Stripe-compatible path for Stripe's own clients (`stripe`). Errors are
//! JSON `{"error":{"type","message"}}`; internal details are logged, not
//! sent.

mod auth;
#[cfg(any(test, feature = "testing"))]
pub mod conformance;
mod control;
mod extract;
mod openapi;
pub mod queues;
mod stripe;
pub mod views;
mod writes;

pub use auth::Tokens;
pub use control::change_filter;
pub(crate) use control::source as configured_source;
pub use extract::MAX_BODY_BYTES;
pub(crate) use queues::subscription_view;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(crate) use self::auth::Admin;
use self::auth::Reader;
pub(crate) use self::extract::Param;
use self::extract::QueryParams;
use self::views::{ErrorBody, ErrorDetail, Health, HealthStatus, ReconcileAsked, SinkView, Sinks, SourceView, Sources, Waited};
use crate::delivery::SinkStatus;
use crate::source::Registry;
use crate::store::controls::Target;
use crate::store::{Role, Store};

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
    /// The operators' requests as this process last read them.
    pub controls: tokio::sync::watch::Receiver<Arc<crate::control::Controls>>,
    /// The console's live overview and history.
    pub console: Arc<crate::console::Monitor>,
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
        let body = ErrorBody { error: ErrorDetail { kind, message: self.to_string() } };
        let mut response = (status, Json(body)).into_response();
        if let ApiError::RateLimited { retry_after_secs } = self {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, retry_after_secs.into());
        }
        response
    }
}

/// Every route, with the OpenAPI document generated from the same
/// declarations (`#[utoipa::path]` on each handler).
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(health))
        .routes(routes!(metrics))
        .routes(routes!(sources))
        .routes(routes!(wait))
        .routes(routes!(reconcile))
        .routes(routes!(sinks))
        .merge(control::routes())
        .merge(crate::console::routes())
        .merge(queues::routes())
        .merge(writes::routes())
        .merge(stripe::routes())
}

/// The OpenAPI document served at `/openapi.json`.
pub fn document() -> serde_json::Value {
    openapi::finish(routes().into_openapi())
}

pub fn router(state: AppState) -> Router {
    let (router, document) = routes().split_for_parts();
    let document = Arc::new(openapi::finish(document));
    router
        .route("/openapi.json", get(move || std::future::ready(Json((*document).clone()))))
        .merge(crate::console::pages())
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state)
}

/// 200 `{"status":"ok"}`, or 503 with the reasons while a source or sink
/// is stuck on a store error (a full disk, a lost database).
#[utoipa::path(get, path = "/health", responses(
    (status = 200, description = "every source and sink can reach the store", body = Health),
    (status = 503, description = "a source or sink is stuck on a store error (a full disk, a lost database); the reasons say which", body = Health),
))]
async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let sources = state.registry.all().into_iter().filter_map(|s| s.store_health.error().map(|e| format!("source '{}': {e}", s.name)));
    let sinks = state.sinks.iter().filter_map(|s| s.store_health.error().map(|e| format!("sink '{}': {e}", s.name)));
    let reasons: Vec<String> = sources.chain(sinks).collect();
    if reasons.is_empty() {
        return (StatusCode::OK, Json(Health { status: HealthStatus::Ok, reasons: None }));
    }
    (StatusCode::SERVICE_UNAVAILABLE, Json(Health { status: HealthStatus::Unhealthy, reasons: Some(reasons) }))
}

#[utoipa::path(get, path = "/metrics", security(("readToken" = [])), responses(
    (status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain"),
))]
async fn metrics(_: Reader, State(state): State<AppState>) -> String {
    state.registry.record_lag();
    state.metrics.render()
}

/// Every source: phase, cursor, lag, objects per type, per-account progress.
#[utoipa::path(get, path = "/v1/sources", security(("readToken" = [])), responses((status = 200, body = Sources)))]
async fn sources(_: Reader, State(state): State<AppState>) -> Result<Json<Sources>, ApiError> {
    let sources = source_views(&state).await.map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(Sources { sources }))
}

/// Every source as `/v1/sources` (and the console) shows it.
pub(crate) async fn source_views(state: &AppState) -> Result<Vec<SourceView>, crate::store::StoreError> {
    let mut out = Vec::new();
    for source in state.registry.all() {
        let objects = state.store.object_counts(&source.name).await?;
        let parked_events = state.store.parked_count(&source.name).await?;
        let accounts: Vec<_> = source.scopes().iter().map(|s| s.snapshot()).collect();
        let cursor = accounts.iter().find(|s| s.account.is_none()).and_then(|s| s.cursor.clone());
        out.push(SourceView {
            name: source.name.clone(),
            kind: source.kind,
            role: Role::of(source.is_owner()),
            phase: source.phase(),
            cursor,
            lag_ms: source.lag().map(|l| l.as_millis() as u64),
            objects,
            accounts,
            last_error: source.last_error(),
            parked_events,
            paused: state.controls.borrow().paused(Target::Source, &source.name),
        });
    }
    Ok(out)
}

/// Changes counted at most when reporting a sink's lag.
const LAG_COUNT_MAX: usize = 10_000;

/// Every sink and the queue fan-out: role, cursor, delivered, lag, last
/// error, dead letters.
#[utoipa::path(get, path = "/v1/sinks", security(("readToken" = [])), responses((status = 200, body = Sinks)))]
async fn sinks(_: Reader, State(state): State<AppState>) -> Result<Json<Sinks>, ApiError> {
    let sinks = sink_views(&state).await.map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(Sinks { sinks }))
}

/// Every sink and the queue fan-out as `/v1/sinks` (and the console) shows
/// them. A sink this process stands by for is measured from its stored
/// cursor.
pub(crate) async fn sink_views(state: &AppState) -> Result<Vec<SinkView>, crate::store::StoreError> {
    let controls = state.controls.borrow().clone();
    let mut out = Vec::new();
    for sink in state.sinks.iter() {
        let dead_letters = state.store.dead_letter_count(&sink.name).await?;
        let (mut lag_changes, mut lag_ms) = (None, None);
        let snapshot = sink.snapshot();
        let cursor = match snapshot.role {
            Role::Owner => sink.cursor(),
            Role::Standby => Some(state.store.sink_position(&sink.name).await?.cursor),
        };
        if let Some(cursor) = cursor {
            // counted, not estimated: exact up to LAG_COUNT_MAX
            let backlog = state.store.backlog(cursor, LAG_COUNT_MAX).await?;
            let oldest = backlog.oldest_committed_at.and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok());
            lag_changes = Some(backlog.count);
            lag_ms = Some(oldest.map_or(0, |t| (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_milliseconds().max(0) as u64));
        }
        out.push(SinkView {
            status: snapshot,
            dead_letters,
            lag_changes,
            lag_ms,
            paused: controls.paused(Target::Sink, &sink.name),
            rewind_pending: controls.rewind_to(&sink.name).is_some(),
        });
    }
    Ok(out)
}

/// Read-after-write barrier: answers once a poll of the upstream that
/// started after the call is applied (callers share polls).
#[utoipa::path(get, path = "/v1/sources/{name}/wait", security(("readToken" = [])),
    params(
        ("name" = String, Path, description = "the source"),
        ("timeout_ms" = Option<u64>, Query, minimum = 0, maximum = 300_000, description = "how long to wait (default 30,000)"),
    ),
    responses(
        (status = 200, description = "a poll that started after the call is applied", body = Waited),
        (status = 400, description = "a timeout_ms that is not an integer from 0 to 300,000", body = ErrorBody),
        (status = 404, description = "no such source", body = ErrorBody),
        (status = 504, description = "no new poll was applied in time", body = ErrorBody),
    ))]
async fn wait(
    _: Reader,
    State(state): State<AppState>,
    Param(name): Param<String>,
    QueryParams(query): QueryParams<HashMap<String, String>>,
) -> Result<Json<Waited>, ApiError> {
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
        Ok(()) => Ok(Json(Waited { source: name, waited_ms: started.elapsed().as_millis() as u64 })),
        Err(_) => {
            Err(ApiError::Timeout(format!("source '{name}' did not apply a new poll within {timeout_ms} ms (phase: {:?})", source.phase())))
        }
    }
}

/// Start a reconcile of every account of a stripe source now (one under
/// way goes on). The instance that runs the source picks the request up,
/// at once here or within 30 s on another; `/v1/sources` shows it running,
/// and a `reconcile_complete` line ends it.
#[utoipa::path(post, path = "/v1/sources/{name}/reconcile", security(("adminToken" = [])),
    params(("name" = String, Path, description = "the source")),
    responses(
        (status = 202, description = "asked for; it runs in the background", body = ReconcileAsked),
        (status = 404, description = "no such source", body = ErrorBody),
        (status = 422, description = "the source's kind has no reconcile", body = ErrorBody),
    ))]
async fn reconcile(
    _: Admin,
    State(state): State<AppState>,
    Param(name): Param<String>,
) -> Result<(StatusCode, Json<ReconcileAsked>), ApiError> {
    let source = state.registry.get(&name).ok_or_else(|| ApiError::NotFound(format!("no source named '{name}'")))?;
    if source.kind != "stripe" {
        return Err(ApiError::Unprocessable(format!("source '{name}' is a {} source; reconcile is for stripe sources", source.kind)));
    }
    let at = chrono::Utc::now().timestamp();
    let batch = crate::store::Batch {
        source: name.clone(),
        checkpoints: vec![crate::store::Checkpoint::unordered("reconcile/requested", serde_json::json!({ "at": at }))],
        ..Default::default()
    };
    state.store.apply(batch).await.map_err(|e| ApiError::Internal(e.to_string()))?;
    source.ask_reconcile();
    tracing::info!(kind = "reconcile_requested", source = %name, "reconcile asked for");
    Ok((StatusCode::ACCEPTED, Json(ReconcileAsked { source: name, requested_at: crate::store::timestamp(chrono::Utc::now()) })))
}

#[cfg(test)]
mod tests;

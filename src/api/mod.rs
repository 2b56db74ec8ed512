//! The HTTP API: health, Prometheus metrics, source and sink status, the
//! `/wait` read-after-write barrier, and apps with their pull queues
//! (`queues`). Errors are JSON `{"error":{"type","message"}}`; internal
//! details are logged, not sent.

pub mod queues;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{Value, json};

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
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/v1/sources", get(sources))
        .route("/v1/sources/{name}/wait", get(wait))
        .route("/v1/sinks", get(sinks))
        .merge(queues::routes())
        .layer(axum::extract::DefaultBodyLimit::max(queues::MAX_BODY_BYTES))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state)
}

async fn metrics(State(state): State<AppState>) -> String {
    for source in state.registry.all() {
        if let Some(lag) = source.lag() {
            metrics::gauge!("tributary_source_lag_ms", "source" => source.name.clone()).set(lag.as_millis() as f64);
        }
    }
    state.metrics.render()
}

async fn sources(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
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

async fn sinks(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
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
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
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
    let error = json!({"$ref": "#/components/schemas/Error"});
    Json(json!({
        "openapi": "3.1.0",
        "info": {"title": "Tributary", "version": env!("CARGO_PKG_VERSION")},
        "paths": {
            "/health": {"get": {"summary": "Liveness", "responses": {"200": {"description": "ok"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text exposition format"}}}},
            "/v1/sources": {"get": {"summary": "Every source: phase, cursor, lag, objects per type, per-account progress",
                "responses": {"200": {"description": "sources"}}}},
            "/v1/sources/{name}/wait": {"get": {
                "summary": "Read-after-write barrier: answers once a poll of the upstream that started after the call is applied",
                "parameters": [
                    {"name": "name", "in": "path", "required": true, "schema": {"type": "string"}},
                    {"name": "timeout_ms", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": MAX_WAIT_MS, "default": DEFAULT_WAIT_MS}}
                ],
                "responses": {"200": {"description": "applied"}, "400": {"description": "bad timeout", "content": {"application/json": {"schema": error}}},
                    "404": {"description": "no such source", "content": {"application/json": {"schema": error}}},
                    "504": {"description": "timed out", "content": {"application/json": {"schema": error}}}}
            }}
        },
        "components": {"schemas": {"Error": {"type": "object", "properties": {"error": {"type": "object",
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}}, "required": ["type", "message"]}}}}}
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn app() -> (tempfile::TempDir, Router) {
        let (dir, router, _) = app_and_store().await;
        (dir, router)
    }

    async fn app_and_store() -> (tempfile::TempDir, Router, Arc<dyn Store>) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = crate::store::open(&crate::store::Options::url(&url)).await.unwrap();
        let registry = Arc::new(Registry::default());
        registry.add(crate::source::SourceStatus::new("stripe", "stripe"));
        let queues = Arc::new(queues::QueueApi::new(Some("admin-secret"), 1_000, 3, Duration::from_secs(86_400)));
        let state = AppState { registry, sinks: Default::default(), store: store.clone(), metrics: crate::telemetry::metrics(), queues };
        (dir, router(state), store)
    }

    /// A request with an optional bearer token and JSON body.
    async fn send(app: &Router, method: &str, uri: &str, token: Option<&str>, body: Option<String>) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(uri).header("content-type", "application/json");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = app.clone().oneshot(request.body(Body::from(body.unwrap_or_default())).unwrap()).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn queues_end_to_end_over_http() {
        let (_dir, app, store) = app_and_store().await;
        let fanout = tokio::spawn(crate::queue::fanout::run(store.clone(), crate::delivery::SinkStatus::new("queue:fanout", "queues")));
        let admin = Some("admin-secret");
        let (status, body) = send(&app, "POST", "/v1/apps", None, Some(json!({"name": "shop", "kind": "inhouse"}).to_string())).await;
        assert_eq!((status, body["error"]["type"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")));
        let (status, _) = send(&app, "POST", "/v1/apps", admin, Some(json!({"name": "shop", "kind": "inhouse"}).to_string())).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "an inhouse app needs its account");
        let (status, shop) =
            send(&app, "POST", "/v1/apps", admin, Some(json!({"name": "shop", "kind": "inhouse", "account": "acct_a"}).to_string())).await;
        assert_eq!(status, StatusCode::CREATED);
        let (_, other) = send(&app, "POST", "/v1/apps", admin, Some(json!({"name": "other", "kind": "public"}).to_string())).await;
        let (token, other_token) = (shop["token"].as_str().unwrap().to_string(), other["token"].as_str().unwrap().to_string());
        let (t, o) = (Some(token.as_str()), Some(other_token.as_str()));

        let (status, queue) = send(&app, "POST", "/v1/queues", t, Some(json!({"name": "orders"}).to_string())).await;
        assert_eq!((status, &queue["status"]), (StatusCode::CREATED, &json!("ACTIVE")));
        let code = queue["code"].as_str().unwrap().to_string();
        let pull_uri = format!("/v1/queues/{code}/events/pull");
        let subs_uri = format!("/v1/queues/{code}/subscriptions");
        // another app's queue does not exist for it
        assert_eq!(send(&app, "POST", &pull_uri, o, Some("{}".into())).await.0, StatusCode::NOT_FOUND);
        assert_eq!(send(&app, "DELETE", &format!("/v1/queues/{code}"), o, None).await.0, StatusCode::NOT_FOUND);
        assert_eq!(send(&app, "GET", "/v1/queues", Some("trb_forged"), None).await.0, StatusCode::UNAUTHORIZED);
        let forbidden = send(&app, "POST", &subs_uri, t, Some(json!({"event_type": "*", "account": "acct_b"}).to_string())).await;
        assert_eq!(forbidden.0, StatusCode::FORBIDDEN);
        // bad bodies: never a 500
        for (body, expected) in [
            (r#"{"name": 5}"#.to_string(), StatusCode::UNPROCESSABLE_ENTITY),
            (r#"{"name": "x", "extra": 1}"#.to_string(), StatusCode::UNPROCESSABLE_ENTITY),
            ("{nope".to_string(), StatusCode::BAD_REQUEST),
            (format!(r#"{{"name": "{}"}}"#, "x".repeat(2 << 20)), StatusCode::PAYLOAD_TOO_LARGE),
        ] {
            let (status, error) = send(&app, "POST", "/v1/queues", t, Some(body)).await;
            assert_eq!(status, expected);
            assert!(error["error"]["message"].is_string(), "{error}");
        }
        for (body, expected) in [
            (json!({"limit": 0}), StatusCode::UNPROCESSABLE_ENTITY),
            (json!({"limit": 1001}), StatusCode::UNPROCESSABLE_ENTITY),
            (json!({"wait_ms": 30001}), StatusCode::UNPROCESSABLE_ENTITY),
            (json!({"ack_id": "q_other.1.x"}), StatusCode::NOT_FOUND),
        ] {
            assert_eq!(send(&app, "POST", &pull_uri, t, Some(body.to_string())).await.0, expected, "{body}");
        }
        let (status, sub) =
            send(&app, "POST", &subs_uri, t, Some(json!({"event_type": "customer.*", "account": "acct_a"}).to_string())).await;
        assert_eq!((status, &sub["active"]), (StatusCode::CREATED, &json!(true)));

        // a long poll answers when a matching change commits
        let waiting = {
            let (app, uri, token) = (app.clone(), pull_uri.clone(), token.clone());
            tokio::spawn(async move { send(&app, "POST", &uri, Some(&token), Some(json!({"wait_ms": 10_000}).to_string())).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let write = |id: &str, account: &str| crate::store::Write {
            object: "customer".into(),
            id: id.into(),
            account: Some(account.into()),
            mutation: crate::store::Mutation::Upsert(json!({"id": id})),
            origin: crate::store::Origin::Backfill,
            generation: 1,
        };
        let batch = crate::store::Batch {
            source: "stripe".into(),
            writes: vec![write("c1", "acct_b"), write("c2", "acct_a")],
            ..Default::default()
        };
        store.apply(batch).await.unwrap();
        let (status, pulled) = tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("long poll answered").unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(pulled["events"].as_array().unwrap().len(), 1);
        assert_eq!(pulled["events"][0]["payload"]["object_id"], "c2");
        assert_eq!(pulled["events"][0]["type"], "customer.read");
        let ack_id = pulled["ack_id"].as_str().unwrap();
        let (_, next) = send(&app, "POST", &pull_uri, t, Some(json!({"ack_id": ack_id}).to_string())).await;
        assert_eq!((next["events"].as_array().unwrap().len(), &next["ack_id"]), (0, &Value::Null));

        // a revoked token stops working at once
        let id = shop["id"].as_str().unwrap();
        assert_eq!(send(&app, "DELETE", &format!("/v1/apps/{id}"), admin, None).await.0, StatusCode::OK);
        assert_eq!(send(&app, "GET", "/v1/queues", t, None).await.0, StatusCode::UNAUTHORIZED);
        fanout.abort();
    }

    async fn call(app: &Router, method: &str, uri: &str) -> (StatusCode, Value) {
        let request = Request::builder().method(method).uri(uri).body(Body::empty()).unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn every_error_is_json() {
        let (_dir, app) = app().await;
        for (method, uri, status) in [
            ("GET", "/nope", StatusCode::NOT_FOUND),
            ("DELETE", "/v1/sources", StatusCode::METHOD_NOT_ALLOWED),
            ("GET", "/v1/sources/other/wait", StatusCode::NOT_FOUND),
            ("GET", "/v1/sources/stripe/wait?timeout_ms=-1", StatusCode::BAD_REQUEST),
            ("GET", "/v1/sources/stripe/wait?timeout_ms=999999999", StatusCode::BAD_REQUEST),
        ] {
            let (got, body) = call(&app, method, uri).await;
            assert_eq!(got, status, "{method} {uri}");
            assert!(body["error"]["type"].is_string() && body["error"]["message"].is_string(), "{method} {uri}: {body}");
        }
    }

    #[tokio::test]
    async fn wait_times_out_while_no_account_is_known() {
        let (_dir, app) = app().await;
        let (status, body) = call(&app, "GET", "/v1/sources/stripe/wait?timeout_ms=50").await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(body["error"]["type"], "timeout");
        let (status, body) = call(&app, "GET", "/v1/sources").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["sources"][0]["phase"], "backfilling");
        assert!(body["sources"][0]["lag_ms"].is_null());
    }
}

//! The console: a few pages served at `/` from assets compiled into the
//! binary (no network at run time), reading the admin API with the token
//! the login form keeps in the browser's session.
//!
//! - `monitor`: the live overview (every second) and an hour of lag and
//!   throughput per source and sink, in memory
//! - `logbook`: the recent log lines of each source and sink
//! - `assets/`: the page, its script and its styles
//!
//! Its own routes: `GET /v1/console/overview`, `/history`, `/apps`, the
//! overview as server-sent events at `/v1/console/events`, and each
//! source's and sink's recent log lines.

pub mod logbook;
pub mod monitor;

use std::collections::BTreeMap;
use std::convert::Infallible;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::views::{ErrorBody, SubscriptionView};
use crate::api::{Admin, ApiError, AppState, Param};
use crate::store::queues::{App, QueueDepth};

pub use monitor::Monitor;

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/app.css");

/// What the page may load: only its own script, styles and API. Upstream
/// data is shown as text, never as markup, and this stops anything that
/// slipped through from running or phoning out.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The page and its assets (outside the OpenAPI document: not JSON).
pub fn pages() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/", get(index))
        .route("/console/app.js", get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }))
        .route("/console/app.css", get(|| async { asset(STYLE, "text/css; charset=utf-8") }))
        .route("/favicon.ico", get(|| async { axum::http::StatusCode::NO_CONTENT }))
        .route("/v1/console/events", get(events))
}

/// The console's JSON routes (admin token), in the OpenAPI document.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(overview))
        .routes(routes!(history))
        .routes(routes!(apps))
        .routes(routes!(source_logs))
        .routes(routes!(sink_logs))
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// The page. It says whether the admin API is on, so without it the page
/// explains how to turn it on instead of asking for a token.
async fn index(State(state): State<AppState>) -> Response {
    let admin = if state.tokens.admin_enabled() { "on" } else { "off" };
    let mut response = asset("", "text/html; charset=utf-8");
    *response.body_mut() = INDEX.replace("{{ADMIN}}", admin).into();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// The overview, every second, as server-sent events (`event: overview`).
/// The browser reads it with `fetch` (so the token goes in a header, never
/// in the URL).
async fn events(_: Admin, State(state): State<AppState>) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let overviews = state.console.subscribe();
    // the latest at once, then each new one
    let stream = futures::stream::unfold((overviews, true), |(mut overviews, first)| async move {
        if !first {
            overviews.changed().await.ok()?;
        }
        let overview = overviews.borrow_and_update().clone();
        let data = serde_json::to_string(&*overview).unwrap_or_default();
        Some((Ok(Event::default().event("overview").data(data)), (overviews, false)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// Every source and sink now: what the console's overview shows (updated
/// every second; `/v1/console/events` streams it).
#[utoipa::path(get, path = "/v1/console/overview", security(("adminToken" = [])),
    responses((status = 200, body = monitor::Overview), (status = 401, description = "no admin token", body = ErrorBody)))]
async fn overview(_: Admin, State(state): State<AppState>) -> Json<monitor::Overview> {
    Json((*state.console.overview()).clone())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct History {
    /// By series (`source:NAME`, `sink:NAME`): a point every ten seconds,
    /// the last hour, oldest first.
    pub series: BTreeMap<String, Vec<monitor::Point>>,
}

/// Lag and throughput of every source and sink over the last hour (kept in
/// this process's memory).
#[utoipa::path(get, path = "/v1/console/history", security(("adminToken" = [])), responses((status = 200, body = History)))]
async fn history(_: Admin, State(state): State<AppState>) -> Json<History> {
    Json(History { series: state.console.history() })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AppQueues {
    #[serde(flatten)]
    pub app: App,
    /// Accounts that granted the app access.
    pub grants: Vec<String>,
    pub queues: Vec<QueueDepthView>,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ConsoleQueue)]
pub struct QueueDepthView {
    #[serde(flatten)]
    pub queue: QueueDepth,
    pub subscriptions: Vec<SubscriptionView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AppsOverview {
    pub apps: Vec<AppQueues>,
}

/// Every app with its grants and queues: each queue's depth, oldest
/// unacknowledged event, `dropped` and subscriptions.
#[utoipa::path(get, path = "/v1/console/apps", security(("adminToken" = [])), responses((status = 200, body = AppsOverview)))]
async fn apps(_: Admin, State(state): State<AppState>) -> Result<Json<AppsOverview>, ApiError> {
    let internal = |e: crate::store::StoreError| ApiError::Internal(e.to_string());
    let apps = state.store.apps().await.map_err(internal)?;
    let grants = state.store.all_grants().await.map_err(internal)?;
    let depths = state.store.queue_depths().await.map_err(internal)?;
    let subscriptions = state.store.all_subscriptions().await.map_err(internal)?;
    let apps = apps
        .into_iter()
        .map(|app| AppQueues {
            grants: grants.iter().filter(|(id, _)| *id == app.id).map(|(_, account)| account.clone()).collect(),
            queues: depths
                .iter()
                .filter(|q| q.app_id == app.id)
                .map(|q| QueueDepthView {
                    queue: q.clone(),
                    subscriptions: subscriptions.iter().filter(|s| s.queue_id == q.id).map(crate::api::subscription_view).collect(),
                })
                .collect(),
            app,
        })
        .collect();
    Ok(Json(AppsOverview { apps }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Logs {
    /// The newest 200 at most, oldest first (this process's).
    pub lines: Vec<logbook::LogLine>,
}

/// A source's recent log lines in this process.
#[utoipa::path(get, path = "/v1/sources/{name}/logs", security(("adminToken" = [])),
    params(("name" = String, Path, description = "the source")),
    responses((status = 200, body = Logs), (status = 404, description = "no such source", body = ErrorBody)))]
async fn source_logs(_: Admin, State(state): State<AppState>, Param(name): Param<String>) -> Result<Json<Logs>, ApiError> {
    crate::api::configured_source(&state, &name)?;
    Ok(Json(Logs { lines: logbook::recent(&format!("source:{name}")) }))
}

/// A sink's recent log lines in this process.
#[utoipa::path(get, path = "/v1/sinks/{name}/logs", security(("adminToken" = [])),
    params(("name" = String, Path, description = "the sink")),
    responses((status = 200, body = Logs), (status = 404, description = "no such sink", body = ErrorBody)))]
async fn sink_logs(_: Admin, State(state): State<AppState>, Param(name): Param<String>) -> Result<Json<Logs>, ApiError> {
    // the queue fan-out's lines too
    if !state.sinks.iter().any(|s| s.name == name) {
        return Err(ApiError::NotFound(format!("no sink named '{name}'")));
    }
    Ok(Json(Logs { lines: logbook::recent(&format!("sink:{name}")) }))
}

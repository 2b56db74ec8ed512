//! Apps and their pull queues over HTTP. Admin routes (creating apps,
//! granting accounts) take the admin token; every other route takes an app
//! token and sees only that app's queues (another app's queue is 404, never
//! 403: existence is not revealed). Bodies are strict: unknown fields, wrong
//! types and out-of-range values are 422, malformed JSON 400, more than
//! 1 MiB 413.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::IntoResponse;
use axum::{Json, Router, routing::delete, routing::get, routing::post};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::auth::{Admin, bearer};
use super::extract::{Body, Param};
use super::{ApiError, AppState};
use crate::queue::{self, AckIdError};
use crate::store::queues::{App, AppKind, PLATFORM, PullOutcome, Subscription};
use crate::store::{Change, StoreError};

pub const MAX_PULL_LIMIT: usize = 1_000;
pub const DEFAULT_PULL_LIMIT: usize = 100;
pub const MAX_PULL_WAIT_MS: u64 = 30_000;

/// What the queue routes need beyond the store.
pub struct QueueApi {
    max_queues_per_app: usize,
    /// How far back `"from":"earliest"` reaches.
    retention: Duration,
    limiter: DefaultKeyedRateLimiter<String>,
}

impl QueueApi {
    pub fn new(app_rate_limit_per_sec: u32, max_queues_per_app: usize, retention: Duration) -> QueueApi {
        let rate = NonZeroU32::new(app_rate_limit_per_sec).unwrap_or(NonZeroU32::MIN);
        QueueApi { max_queues_per_app, retention, limiter: RateLimiter::keyed(Quota::per_second(rate)) }
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/apps", post(create_app).get(list_apps))
        .route("/v1/apps/{id}", delete(revoke_app))
        .route("/v1/apps/{id}/grants", post(grant))
        .route("/v1/queues", post(create_queue).get(list_queues))
        .route("/v1/queues/{code}", delete(delete_queue))
        .route("/v1/queues/{code}/subscriptions", post(subscribe).get(list_subscriptions))
        .route("/v1/queues/{code}/subscriptions/{subscription}", delete(unsubscribe))
        .route("/v1/queues/{code}/events/pull", post(pull))
        .route("/v1/queues/{code}/events", get(|| async { ApiError::MethodNotAllowed }))
}

fn internal(e: StoreError) -> ApiError {
    ApiError::Internal(e.to_string())
}

impl FromRequestParts<AppState> for App {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or_else(|| ApiError::Unauthorized("app token required (Authorization: Bearer …)".into()))?;
        let app = state.store.app_by_token(&queue::token_hash(token)).await.map_err(internal)?;
        let app = app.ok_or_else(|| ApiError::Unauthorized("unknown or revoked token".into()))?;
        if let Err(not_until) = state.queues.limiter.check_key(&app.id) {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
            return Err(ApiError::RateLimited { retry_after_secs: wait.as_secs().max(1) });
        }
        Ok(app)
    }
}

fn check_text(field: &str, value: &str) -> Result<(), ApiError> {
    crate::ids::check_text(field, value).map_err(|e| ApiError::Unprocessable(e.0))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewApp {
    name: String,
    kind: AppKind,
    #[serde(default)]
    account: Option<String>,
}

async fn create_app(_: Admin, State(state): State<AppState>, Body(body): Body<NewApp>) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (app, token, hash) = queue::new_app(body.name, body.kind, body.account).map_err(|e| ApiError::Unprocessable(e.0))?;
    state.store.create_app(&app, &hash).await.map_err(internal)?;
    tracing::info!(kind = "app_created", app = %app.id, name = %app.name, app_kind = app.kind.as_str(), "app created");
    let mut view = json!(app);
    view["token"] = json!(token);
    Ok((StatusCode::CREATED, Json(view)))
}

async fn list_apps(_: Admin, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({"apps": state.store.apps().await.map_err(internal)?})))
}

async fn revoke_app(_: Admin, State(state): State<AppState>, Param(id): Param<String>) -> Result<Json<Value>, ApiError> {
    if !state.store.revoke_app(&id).await.map_err(internal)? {
        return Err(ApiError::NotFound(format!("no app '{id}'")));
    }
    tracing::info!(kind = "app_revoked", app = %id, "app token revoked");
    Ok(Json(json!({"id": id, "revoked": true})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewGrant {
    account: String,
}

async fn grant(
    _: Admin,
    State(state): State<AppState>,
    Param(id): Param<String>,
    Body(body): Body<NewGrant>,
) -> Result<Json<Value>, ApiError> {
    check_text("account", &body.account)?;
    if !state.store.grant(&id, &body.account).await.map_err(internal)? {
        return Err(ApiError::NotFound(format!("no app '{id}'")));
    }
    Ok(Json(json!({"app": id, "account": body.account})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewQueue {
    name: String,
}

fn queue_view(code: &str, name: &str) -> Value {
    json!({"code": code, "name": name, "status": "ACTIVE"})
}

async fn create_queue(app: App, State(state): State<AppState>, Body(body): Body<NewQueue>) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_text("name", &body.name)?;
    let code = crate::ids::random_id("q_", 16);
    let max = state.queues.max_queues_per_app;
    let Some(queue) = state.store.create_queue(&app.id, &code, &body.name, max).await.map_err(internal)? else {
        return Err(ApiError::Unprocessable(format!("an app may own {max} queues; delete one first")));
    };
    Ok((StatusCode::CREATED, Json(queue_view(&queue.code, &queue.name))))
}

async fn list_queues(app: App, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let queues = state.store.queues(&app.id).await.map_err(internal)?;
    Ok(Json(json!({"queues": queues.iter().map(|q| queue_view(&q.code, &q.name)).collect::<Vec<_>>()})))
}

fn no_queue(code: &str) -> ApiError {
    ApiError::NotFound(format!("no queue '{code}'"))
}

async fn delete_queue(app: App, State(state): State<AppState>, Param(code): Param<String>) -> Result<Json<Value>, ApiError> {
    if !state.store.delete_queue(&app.id, &code).await.map_err(internal)? {
        return Err(no_queue(&code));
    }
    Ok(Json(json!({"code": code, "deleted": true})))
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum From {
    /// Only what commits from now on (the default).
    Now,
    /// Everything still within retention, then what follows.
    Earliest,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSubscription {
    event_type: String,
    account: String,
    #[serde(default)]
    from: Option<From>,
}

fn subscription_view(s: &Subscription) -> Value {
    json!({"code": s.code, "event_type": s.event_type, "account": s.account, "active": true})
}

async fn subscribe(
    app: App,
    State(state): State<AppState>,
    Param(code): Param<String>,
    Body(body): Body<NewSubscription>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_text("event_type", &body.event_type)?;
    check_text("account", &body.account)?;
    if body.event_type.trim_end_matches('*').contains('*') {
        return Err(ApiError::Unprocessable("event_type may hold '*' only at its end ('order.*', '*')".into()));
    }
    let allowed = match app.kind {
        AppKind::Inhouse => app.account.as_deref() == Some(body.account.as_str()),
        AppKind::Public => state.store.granted(&app.id, &body.account).await.map_err(internal)?,
    };
    if !allowed {
        return Err(ApiError::Forbidden(format!("account '{}' has not granted this app access", body.account)));
    }
    let replay = matches!(body.from, Some(From::Earliest));
    let subscription = queue::new_subscription(body.event_type, body.account, replay, state.queues.retention);
    let Some(created) = state.store.subscribe(&app.id, &code, &subscription).await.map_err(internal)? else {
        return Err(no_queue(&code));
    };
    Ok((StatusCode::CREATED, Json(subscription_view(&created))))
}

async fn list_subscriptions(app: App, State(state): State<AppState>, Param(code): Param<String>) -> Result<Json<Value>, ApiError> {
    let list = state.store.subscriptions(&app.id, &code).await.map_err(internal)?.ok_or_else(|| no_queue(&code))?;
    Ok(Json(json!({"subscriptions": list.iter().map(subscription_view).collect::<Vec<_>>()})))
}

async fn unsubscribe(
    app: App,
    State(state): State<AppState>,
    Param((code, subscription)): Param<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    if !state.store.unsubscribe(&app.id, &code, &subscription).await.map_err(internal)? {
        return Err(ApiError::NotFound(format!("no subscription '{subscription}' on queue '{code}'")));
    }
    Ok(Json(json!({"code": subscription, "deleted": true})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PullRequest {
    #[serde(default)]
    ack_id: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    wait_ms: Option<u64>,
}

/// Acknowledge the batch `ack_id` names, then return the next events;
/// with `wait_ms`, wait for one to arrive.
async fn pull(
    app: App,
    State(state): State<AppState>,
    Param(code): Param<String>,
    Body(body): Body<PullRequest>,
) -> Result<axum::response::Response, ApiError> {
    let limit = body.limit.unwrap_or(DEFAULT_PULL_LIMIT);
    if !(1..=MAX_PULL_LIMIT).contains(&limit) {
        return Err(ApiError::Unprocessable(format!("limit must be from 1 to {MAX_PULL_LIMIT}")));
    }
    let wait_ms = body.wait_ms.unwrap_or(0);
    if wait_ms > MAX_PULL_WAIT_MS {
        return Err(ApiError::Unprocessable(format!("wait_ms must be from 0 to {MAX_PULL_WAIT_MS}")));
    }
    let mut ack = match body.ack_id.as_deref().map(|text| queue::parse_ack_id(&code, text)).transpose() {
        Ok(ack) => ack,
        Err(AckIdError::Malformed | AckIdError::Foreign) => {
            return Err(ApiError::NotFound(format!("ack_id was not handed out by queue '{code}'")));
        }
    };
    let deadline = Instant::now() + Duration::from_millis(wait_ms);
    let mut wake = state.store.queue_events();
    loop {
        wake.borrow_and_update();
        let nonce = crate::ids::random_id("", 12);
        let pulled = match state.store.pull(&app.id, &code, ack.take(), limit, nonce).await.map_err(internal)? {
            PullOutcome::Pulled(pulled) => pulled,
            PullOutcome::NoQueue => return Err(no_queue(&code)),
            PullOutcome::UnknownAck => return Err(ApiError::NotFound(format!("ack_id was not handed out by queue '{code}'"))),
            PullOutcome::StaleAck => {
                return Err(ApiError::Conflict(
                    "ack_id was superseded by a later pull of this queue; pull without it to get the unacknowledged events".into(),
                ));
            }
        };
        let now = Instant::now();
        if pulled.events.is_empty() && pulled.dropped == 0 && now < deadline {
            let _waiting = Waiting::start();
            tokio::select! {
                _ = wake.changed() => {}
                _ = tokio::time::sleep(deadline - now) => {}
            }
            continue;
        }
        metrics::counter!("tributary_queue_events_pulled_total").increment(pulled.events.len() as u64);
        let events = pulled.events.iter().map(|(_, change)| EventView::of(change)).collect();
        let ack_id = pulled.ack.map(|a| queue::ack_id(&code, &a));
        let view = PullView { events, ack_id, dropped: pulled.dropped };
        let bytes = serde_json::to_vec(&view).map_err(|e| ApiError::Internal(format!("cannot encode a pull: {e}")))?;
        return Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], bytes).into_response());
    }
}

/// A pull's answer, serialized straight from the changes read (a payload's
/// stored JSON is copied, never parsed into a tree and printed again).
#[derive(Serialize)]
struct PullView<'a> {
    events: Vec<EventView<'a>>,
    ack_id: Option<String>,
    dropped: i64,
}

#[derive(Serialize)]
struct EventView<'a> {
    id: &'a str,
    account: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    created_at: &'a str,
    payload: &'a Change,
}

impl<'a> EventView<'a> {
    fn of(change: &'a Change) -> EventView<'a> {
        EventView {
            id: &change.id,
            account: change.account.as_deref().unwrap_or(PLATFORM),
            kind: &change.kind,
            created_at: &change.committed_at,
            payload: change,
        }
    }
}

/// A long poll parked until an event arrives, counted in the
/// `tributary_queue_pulls_waiting` gauge for as long as it waits (also when
/// the client goes away mid-wait).
struct Waiting;

impl Waiting {
    fn start() -> Waiting {
        metrics::gauge!("tributary_queue_pulls_waiting").increment(1.0);
        Waiting
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        metrics::gauge!("tributary_queue_pulls_waiting").decrement(1.0);
    }
}

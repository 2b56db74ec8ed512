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
use axum::{Json, routing::get};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Admin, bearer};
use super::extract::{Body, Param};
use super::views::{
    Apps, Deleted, ErrorBody, EventView, Granted, NewAppToken, PullView, QueueStatus, QueueView, Queues, Revoked, SubscriptionView,
    Subscriptions,
};
use super::{ApiError, AppState};
use crate::queue::{self, AckIdError};
use crate::store::StoreError;
use crate::store::queues::{App, AppKind, PLATFORM, PullOutcome, Subscription};

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

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_app, list_apps))
        .routes(routes!(revoke_app))
        .routes(routes!(grant))
        .routes(routes!(create_queue, list_queues))
        .routes(routes!(delete_queue))
        .routes(routes!(subscribe, list_subscriptions))
        .routes(routes!(unsubscribe))
        .routes(routes!(pull))
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewApp {
    #[schema(min_length = 1, max_length = 255)]
    name: String,
    kind: AppKind,
    /// An in-house app's one account; a public app has none.
    #[serde(default)]
    account: Option<String>,
}

/// Create an app; its bearer token is in this answer only.
#[utoipa::path(post, path = "/v1/apps", security(("adminToken" = [])), request_body = NewApp,
    responses((status = 201, description = "created", body = NewAppToken)))]
async fn create_app(
    _: Admin,
    State(state): State<AppState>,
    Body(body): Body<NewApp>,
) -> Result<(StatusCode, Json<NewAppToken>), ApiError> {
    let (app, token, hash) = queue::new_app(body.name, body.kind, body.account).map_err(|e| ApiError::Unprocessable(e.0))?;
    state.store.create_app(&app, &hash).await.map_err(internal)?;
    tracing::info!(kind = "app_created", app = %app.id, name = %app.name, app_kind = app.kind.as_str(), "app created");
    Ok((StatusCode::CREATED, Json(NewAppToken { app, token })))
}

/// Every app, revoked ones included.
#[utoipa::path(get, path = "/v1/apps", security(("adminToken" = [])), responses((status = 200, body = Apps)))]
async fn list_apps(_: Admin, State(state): State<AppState>) -> Result<Json<Apps>, ApiError> {
    Ok(Json(Apps { apps: state.store.apps().await.map_err(internal)? }))
}

/// Revoke an app's token (401 from then on).
#[utoipa::path(delete, path = "/v1/apps/{id}", security(("adminToken" = [])), params(("id" = String, Path)),
    responses((status = 200, body = Revoked), (status = 404, description = "no such app", body = ErrorBody)))]
async fn revoke_app(_: Admin, State(state): State<AppState>, Param(id): Param<String>) -> Result<Json<Revoked>, ApiError> {
    if !state.store.revoke_app(&id).await.map_err(internal)? {
        return Err(ApiError::NotFound(format!("no app '{id}'")));
    }
    tracing::info!(kind = "app_revoked", app = %id, "app token revoked");
    Ok(Json(Revoked { id, revoked: true }))
}

#[derive(Deserialize, ToSchema)]
#[schema(as = Grant)]
#[serde(deny_unknown_fields)]
struct NewGrant {
    #[schema(min_length = 1, max_length = 255)]
    account: String,
}

/// An account grants a public app access to its events.
#[utoipa::path(post, path = "/v1/apps/{id}/grants", security(("adminToken" = [])), params(("id" = String, Path)), request_body = NewGrant,
    responses((status = 200, body = Granted), (status = 404, description = "no such app", body = ErrorBody)))]
async fn grant(
    _: Admin,
    State(state): State<AppState>,
    Param(id): Param<String>,
    Body(body): Body<NewGrant>,
) -> Result<Json<Granted>, ApiError> {
    check_text("account", &body.account)?;
    if !state.store.grant(&id, &body.account).await.map_err(internal)? {
        return Err(ApiError::NotFound(format!("no app '{id}'")));
    }
    Ok(Json(Granted { app: id, account: body.account }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewQueue {
    #[schema(min_length = 1, max_length = 255)]
    name: String,
}

fn queue_view(code: &str, name: &str) -> QueueView {
    QueueView { code: code.to_string(), name: name.to_string(), status: QueueStatus::Active }
}

/// Create a queue.
#[utoipa::path(post, path = "/v1/queues", security(("appToken" = [])), request_body = NewQueue,
    responses((status = 201, description = "created", body = QueueView)))]
async fn create_queue(
    app: App,
    State(state): State<AppState>,
    Body(body): Body<NewQueue>,
) -> Result<(StatusCode, Json<QueueView>), ApiError> {
    check_text("name", &body.name)?;
    let code = crate::ids::random_id("q_", 16);
    let max = state.queues.max_queues_per_app;
    let Some(queue) = state.store.create_queue(&app.id, &code, &body.name, max).await.map_err(internal)? else {
        return Err(ApiError::Unprocessable(format!("an app may own {max} queues; delete one first")));
    };
    Ok((StatusCode::CREATED, Json(queue_view(&queue.code, &queue.name))))
}

/// This app's queues.
#[utoipa::path(get, path = "/v1/queues", security(("appToken" = [])), responses((status = 200, body = Queues)))]
async fn list_queues(app: App, State(state): State<AppState>) -> Result<Json<Queues>, ApiError> {
    let queues = state.store.queues(&app.id).await.map_err(internal)?;
    Ok(Json(Queues { queues: queues.iter().map(|q| queue_view(&q.code, &q.name)).collect() }))
}

fn no_queue(code: &str) -> ApiError {
    ApiError::NotFound(format!("no queue '{code}'"))
}

/// Delete a queue with its subscriptions and events.
#[utoipa::path(delete, path = "/v1/queues/{code}", security(("appToken" = [])), params(("code" = String, Path)),
    responses((status = 200, body = Deleted), (status = 404, description = "no such queue for this app", body = ErrorBody)))]
async fn delete_queue(app: App, State(state): State<AppState>, Param(code): Param<String>) -> Result<Json<Deleted>, ApiError> {
    if !state.store.delete_queue(&app.id, &code).await.map_err(internal)? {
        return Err(no_queue(&code));
    }
    Ok(Json(Deleted { code, deleted: true }))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum From {
    /// Only what commits from now on (the default).
    Now,
    /// Everything still within retention, then what follows.
    Earliest,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewSubscription {
    /// An event type, or a prefix ending in `*` (`order.*`, `*`).
    #[schema(min_length = 1, max_length = 255)]
    event_type: String,
    /// An account id, or `platform` for changes without one.
    #[schema(min_length = 1, max_length = 255)]
    account: String,
    /// `now` (the default) or `earliest`.
    #[serde(default)]
    from: Option<From>,
}

pub(crate) fn subscription_view(s: &Subscription) -> SubscriptionView {
    SubscriptionView { code: s.code.clone(), event_type: s.event_type.clone(), account: s.account.clone(), active: true }
}

/// Subscribe the queue to an event type of an account; events flow from
/// now on, or from the oldest kept with `"from":"earliest"`.
#[utoipa::path(post, path = "/v1/queues/{code}/subscriptions", security(("appToken" = [])), params(("code" = String, Path)),
    request_body = NewSubscription,
    responses(
        (status = 201, description = "subscribed", body = SubscriptionView),
        (status = 403, description = "the account has not granted this app access (or is not an in-house app's own)", body = ErrorBody),
        (status = 404, description = "no such queue for this app", body = ErrorBody),
    ))]
async fn subscribe(
    app: App,
    State(state): State<AppState>,
    Param(code): Param<String>,
    Body(body): Body<NewSubscription>,
) -> Result<(StatusCode, Json<SubscriptionView>), ApiError> {
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

/// The queue's subscriptions.
#[utoipa::path(get, path = "/v1/queues/{code}/subscriptions", security(("appToken" = [])), params(("code" = String, Path)),
    responses((status = 200, body = Subscriptions), (status = 404, description = "no such queue for this app", body = ErrorBody)))]
async fn list_subscriptions(app: App, State(state): State<AppState>, Param(code): Param<String>) -> Result<Json<Subscriptions>, ApiError> {
    let list = state.store.subscriptions(&app.id, &code).await.map_err(internal)?.ok_or_else(|| no_queue(&code))?;
    Ok(Json(Subscriptions { subscriptions: list.iter().map(subscription_view).collect() }))
}

/// Unsubscribe.
#[utoipa::path(delete, path = "/v1/queues/{code}/subscriptions/{subscription}", security(("appToken" = [])),
    params(("code" = String, Path), ("subscription" = String, Path)),
    responses((status = 200, body = Deleted), (status = 404, description = "no such queue or subscription", body = ErrorBody)))]
async fn unsubscribe(
    app: App,
    State(state): State<AppState>,
    Param((code, subscription)): Param<(String, String)>,
) -> Result<Json<Deleted>, ApiError> {
    if !state.store.unsubscribe(&app.id, &code, &subscription).await.map_err(internal)? {
        return Err(ApiError::NotFound(format!("no subscription '{subscription}' on queue '{code}'")));
    }
    Ok(Json(Deleted { code: subscription, deleted: true }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PullRequest {
    /// The ack_id of the previous pull: acknowledges that batch.
    #[serde(default)]
    ack_id: Option<String>,
    /// Events at most (default 100).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// How long to wait for an event when none is there (default 0).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 30000)]
    wait_ms: Option<u64>,
}

/// Acknowledge the batch `ack_id` names, then take the next
/// unacknowledged events in commit order; `wait_ms` long-polls.
#[utoipa::path(post, path = "/v1/queues/{code}/events/pull", security(("appToken" = [])), params(("code" = String, Path)),
    request_body = PullRequest,
    responses(
        (status = 200, description = "a batch (empty when none arrived in time)", body = PullView),
        (status = 404, description = "no such queue for this app, or an ack_id it never handed out", body = ErrorBody),
        (status = 409, description = "a stale ack_id: a later pull superseded it", body = ErrorBody),
    ))]
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
        let events = pulled.events.iter().map(|(_, change)| event_view(change)).collect();
        let ack_id = pulled.ack.map(|a| queue::ack_id(&code, &a));
        let view = PullView { events, ack_id, dropped: pulled.dropped };
        let bytes = serde_json::to_vec(&view).map_err(|e| ApiError::Internal(format!("cannot encode a pull: {e}")))?;
        return Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], bytes).into_response());
    }
}

fn event_view(change: &crate::store::Change) -> EventView<'_> {
    EventView {
        id: &change.id,
        account: change.account.as_deref().unwrap_or(PLATFORM),
        kind: &change.kind,
        created_at: &change.committed_at,
        payload: change,
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

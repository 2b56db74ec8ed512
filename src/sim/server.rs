//! HTTP face of the simulator: Stripe's `/v1` routes (auth, accounts,
//! idempotency), the shifts window API (`/v2/shifts`), the marketplace's
//! event queues (`/integration/v1`), fault injection on all of them, and the
//! `/__sim` control routes.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use parking_lot::{Mutex, RwLock};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::data::{NESTED, object_for_resource};
use super::market::{Market, PullBody};
use super::shifts::{Shifts, parse_day};
use super::state::{ApiError, ListParams, PLATFORM, Replay, World};
use crate::stripe_api::form;

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
    /// Event queue batches lead with an event whose payload has no id.
    #[serde(default)]
    pub broken_event: bool,
    /// Resources (`charges`, …) a restricted key (`rk_test_…`) may not
    /// read: answered 403, as Stripe answers a key without the permission.
    #[serde(default)]
    pub restricted: Vec<String>,
}

#[derive(Default)]
struct Stats {
    requests: AtomicU64,
    rate_limited: AtomicU64,
    failed: AtomicU64,
    truncated: AtomicU64,
    lost: AtomicU64,
    /// Writes executed (not replayed) per `Idempotency-Key`: more than one
    /// for a key means a side effect was repeated.
    executed_by_key: Mutex<BTreeMap<String, u64>>,
    /// Requests per route (`GET /v1/customers`, `GET /v1/invoices/{id}/lines`).
    by_route: Mutex<BTreeMap<String, u64>>,
}

pub struct Sim {
    pub world: Mutex<World>,
    /// The shift-planning window API's data.
    pub shifts: Mutex<Shifts>,
    /// The marketplace behind the event queues.
    pub market: Mutex<Market>,
    faults: RwLock<Faults>,
    limiter: RwLock<Option<Arc<DefaultDirectRateLimiter>>>,
    stats: Stats,
    rng: Mutex<StdRng>,
    /// Live mutations per second; the traffic task follows this value.
    pub traffic: watch::Sender<f64>,
}

impl Sim {
    pub fn new(world: World, shifts: Shifts, market: Market, faults: Faults, mutations_per_sec: f64, seed: u64) -> Arc<Self> {
        let sim = Sim {
            world: Mutex::new(world),
            shifts: Mutex::new(shifts),
            market: Mutex::new(market),
            faults: RwLock::new(Faults::default()),
            limiter: RwLock::new(None),
            stats: Stats::default(),
            rng: Mutex::new(StdRng::seed_from_u64(seed ^ 0xfa17)),
            traffic: watch::Sender::new(mutations_per_sec),
        };
        sim.set_faults(faults);
        Arc::new(sim)
    }

    pub fn set_faults(&self, faults: Faults) {
        *self.limiter.write() = faults.rate_limit.and_then(NonZeroU32::new).map(|r| Arc::new(RateLimiter::direct(Quota::per_second(r))));
        *self.faults.write() = faults;
    }

    fn roll(&self, probability: f64) -> bool {
        probability > 0.0 && self.rng.lock().gen_bool(probability.min(1.0))
    }

    /// One tick of live traffic: a Stripe mutation, a shift edit and a
    /// marketplace event.
    pub fn random_mutation(&self) {
        self.world.lock().random_mutation();
        self.shifts.lock().random_mutation();
        self.market.lock().random_event();
    }
}

pub fn router(sim: Arc<Sim>) -> Router {
    Router::new()
        .route("/v1/{*path}", any(stripe_api))
        .route("/v2/shifts", get(shifts))
        .route("/integration/v1/queues", get(list_queues).post(create_queue))
        .route("/integration/v1/queues/{code}/subscriptions", post(subscribe))
        .route("/integration/v1/queues/{code}/events/pull", post(pull))
        .route("/__sim/market", get(market))
        .route("/__sim/shifts", get(shifts_truth))
        .route("/__sim/generate", post(generate))
        .route("/__sim/state", get(state))
        .route("/__sim/stats", get(stats))
        .route("/__sim/event_times", get(event_times))
        .route("/__sim/traffic", post(traffic))
        .route("/__sim/faults", get(get_faults).post(set_faults))
        .with_state(sim)
}

/// A response whose body is already JSON text.
fn text_response(status: u16, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn json_response(status: u16, body: &Value) -> Response {
    text_response(status, body.to_string())
}

fn error_response(error: &ApiError) -> Response {
    json_response(error.status, &error.body())
}

/// `/v1/invoices/in_123/lines` → `GET /v1/invoices/{id}/lines`.
fn route_key(method: &Method, path: &str) -> String {
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

/// What a request must present: Stripe's `sk_test_…` key, or any bearer token.
#[derive(Clone, Copy, PartialEq)]
enum Auth {
    StripeKey,
    Bearer,
}

/// Count the request, then apply what every route shares: latency, auth,
/// the rate limit and injected 500s. `Err` is the answer to send instead.
async fn gate(sim: &Sim, route: String, headers: &HeaderMap, auth: Auth) -> Result<Faults, Response> {
    sim.stats.requests.fetch_add(1, Ordering::Relaxed);
    *sim.stats.by_route.lock().entry(route).or_default() += 1;
    let faults = sim.faults.read().clone();
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }
    let token = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let key_ok = match auth {
        Auth::StripeKey => token.is_some_and(|k| ["sk_test_", "rk_test_"].iter().any(|p| k.starts_with(p) && k.len() > p.len())),
        Auth::Bearer => token.is_some_and(|k| !k.trim().is_empty()),
    };
    if !key_ok || faults.unauthorized {
        let message = match auth {
            Auth::StripeKey => "Invalid API Key provided. Use `Authorization: Bearer sk_test_...`",
            Auth::Bearer => "missing or invalid bearer token",
        };
        return Err(error_response(&ApiError {
            status: 401,
            kind: "invalid_request_error",
            code: None,
            param: None,
            message: message.into(),
        }));
    }
    let limiter = sim.limiter.read().clone();
    if limiter.is_some_and(|l| l.check().is_err()) {
        sim.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
        let mut response = error_response(&ApiError {
            status: 429,
            kind: "rate_limit_error",
            code: Some("rate_limit"),
            param: None,
            message: "Too many requests hit the API too quickly.".into(),
        });
        response.headers_mut().insert(header::RETRY_AFTER, "1".parse().expect("static header"));
        return Err(response);
    }
    if sim.roll(faults.fail_rate) {
        sim.stats.failed.fetch_add(1, Ordering::Relaxed);
        return Err(error_response(&ApiError {
            status: 500,
            kind: "api_error",
            code: None,
            param: None,
            message: "An unknown error occurred (injected).".into(),
        }));
    }
    Ok(faults)
}

/// A successful JSON answer, cut short by the `truncate_rate` fault.
fn answer(sim: &Sim, faults: &Faults, status: u16, body: String) -> Response {
    if status == 200 && sim.roll(faults.truncate_rate) {
        sim.stats.truncated.fetch_add(1, Ordering::Relaxed);
        let cut = body.len() / 2;
        return (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], Body::from(body[..cut].to_string())).into_response();
    }
    text_response(status, body)
}

/// Every Stripe answer carries a `Request-Id` and the `Stripe-Version` it
/// was rendered in (the one asked for, else the simulator's default); an
/// unknown version is refused, as Stripe refuses it.
async fn stripe_api(State(sim): State<Arc<Sim>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
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
    for (name, value) in [("stripe-version", version), ("request-id", request_id)] {
        if let Ok(value) = value.parse() {
            response.headers_mut().insert(name, value);
        }
    }
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

    let restricted_key = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("Bearer rk_"));
    let resource = path.trim_start_matches("/v1/").split('/').next().unwrap_or_default();
    if restricted_key && faults.restricted.iter().any(|r| r == resource) {
        let object = object_for_resource(resource).unwrap_or(resource);
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
    if write
        && let Some(key) = &idempotency_key
        && let Some(replay) = sim.world.lock().replay(&scope, key).cloned()
    {
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

    let result = dispatch(&sim, &method, &path, &scope, &query, &params);
    let (status, body) = match result {
        Ok(body) => (200, body),
        Err(error) => (error.status, error.body().to_string()),
    };
    if let (true, Some(key)) = (write, &idempotency_key) {
        sim.world.lock().remember(&scope, key, Replay { request, status, body: body.clone() });
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

#[derive(Deserialize)]
struct WindowQuery {
    start: Option<String>,
    end: Option<String>,
}

/// `GET /v2/shifts?start=YYYY-MM-DD&end=YYYY-MM-DD`
async fn shifts(State(sim): State<Arc<Sim>>, headers: HeaderMap, Query(q): Query<WindowQuery>) -> Response {
    let faults = match gate(&sim, "GET /v2/shifts".into(), &headers, Auth::Bearer).await {
        Ok(faults) => faults,
        Err(response) => return response,
    };
    match window(&sim, &q, faults.broken_shift) {
        Ok(body) => answer(&sim, &faults, 200, body),
        Err(e) => error_response(&e),
    }
}

/// `GET /__sim/shifts?start=…&end=…`: the same window, as ground truth
/// (no auth, no faults).
async fn shifts_truth(State(sim): State<Arc<Sim>>, Query(q): Query<WindowQuery>) -> Response {
    match window(&sim, &q, false) {
        Ok(body) => text_response(200, body),
        Err(e) => error_response(&e),
    }
}

fn window(sim: &Sim, q: &WindowQuery, broken: bool) -> Result<String, ApiError> {
    let day = |name: &str, text: &Option<String>| {
        text.as_deref().and_then(parse_day).ok_or_else(|| ApiError::invalid(name, format!("{name} must be a day (YYYY-MM-DD)")))
    };
    let (from, to) = match (day("start", &q.start), day("end", &q.end)) {
        (Ok(from), Ok(to)) if from <= to => (from, to),
        (Ok(_), Ok(_)) => return Err(ApiError::invalid("end", "end is before start".into())),
        (Err(e), _) | (_, Err(e)) => return Err(e),
    };
    Ok(sim.shifts.lock().window_json(from, to, broken))
}

/// A marketplace route's JSON body, or the 400 to answer.
fn market_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError {
        status: 400,
        kind: "invalid_request_error",
        code: Some("body_invalid"),
        param: None,
        message: format!("invalid body: {e}"),
    })
}

fn market_answer(sim: &Sim, faults: &Faults, result: Result<String, ApiError>) -> Response {
    match result {
        Ok(body) => answer(sim, faults, 200, body),
        Err(e) => error_response(&e),
    }
}

async fn list_queues(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> Response {
    let faults = match gate(&sim, "GET /integration/v1/queues".into(), &headers, Auth::Bearer).await {
        Ok(faults) => faults,
        Err(response) => return response,
    };
    let body = sim.market.lock().list_queues().to_string();
    answer(&sim, &faults, 200, body)
}

async fn create_queue(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Response {
    let faults = match gate(&sim, "POST /integration/v1/queues".into(), &headers, Auth::Bearer).await {
        Ok(faults) => faults,
        Err(response) => return response,
    };
    let result = market_body(&body).and_then(|body| sim.market.lock().create_queue(body)).map(|v| v.to_string());
    market_answer(&sim, &faults, result)
}

async fn subscribe(State(sim): State<Arc<Sim>>, Path(code): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let faults = match gate(&sim, "POST /integration/v1/queues/{code}/subscriptions".into(), &headers, Auth::Bearer).await {
        Ok(faults) => faults,
        Err(response) => return response,
    };
    let result = market_body(&body).and_then(|body| sim.market.lock().subscribe(&code, body)).map(|v| v.to_string());
    market_answer(&sim, &faults, result)
}

async fn pull(State(sim): State<Arc<Sim>>, Path(code): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let faults = match gate(&sim, "POST /integration/v1/queues/{code}/events/pull".into(), &headers, Auth::Bearer).await {
        Ok(faults) => faults,
        Err(response) => return response,
    };
    let body = if body.is_empty() { Ok(PullBody::default()) } else { market_body(&body) };
    let lose_ack = sim.roll(faults.lose_acks);
    let result = body.and_then(|body| sim.market.lock().pull(&code, body, lose_ack, faults.broken_event));
    market_answer(&sim, &faults, result)
}

/// `GET /__sim/market`: orders, products, every event id, and each queue's
/// counts.
async fn market(State(sim): State<Arc<Sim>>) -> Response {
    let market = sim.market.lock();
    let mut truth = market.truth();
    truth["queues"] = market.queue_stats();
    truth["stats"] = json!(market.stats);
    json_response(200, &truth)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GenerateBody {
    #[serde(default)]
    market_events: usize,
    #[serde(default)]
    shift_edits: usize,
}

/// `POST /__sim/generate {"market_events"?, "shift_edits"?}`: make that many
/// changes at once.
async fn generate(
    State(sim): State<Arc<Sim>>,
    body: Result<axum::Json<GenerateBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let body = match body {
        Ok(axum::Json(body)) => body,
        Err(e) => return json_response(400, &json!({"error": {"type": "invalid_request_error", "message": e.body_text()}})),
    };
    {
        let mut market = sim.market.lock();
        for _ in 0..body.market_events {
            market.random_event();
        }
    }
    sim.shifts.lock().edit_some(body.shift_edits);
    json_response(200, &json!({"market_events": body.market_events, "shift_edits": body.shift_edits}))
}

fn not_found(path: &str) -> ApiError {
    ApiError { status: 404, kind: "invalid_request_error", code: None, param: None, message: format!("Unrecognized request URL ({path}).") }
}

/// Serve one `/v1` request; the answer is JSON text (list pages are
/// serialized straight from the world, without copying its objects).
fn dispatch(sim: &Sim, method: &Method, path: &str, scope: &str, query: &Value, params: &Value) -> Result<String, ApiError> {
    let segments: Vec<&str> = path.trim_start_matches("/v1/").trim_end_matches('/').split('/').collect();
    let mut world = sim.world.lock();
    match (method, segments.as_slice()) {
        (&Method::GET, ["accounts"]) => {
            let accounts: Vec<Value> = world.accounts().iter().rev().cloned().collect();
            Ok(json!({"object": "list", "data": accounts, "has_more": false, "url": "/v1/accounts"}).to_string())
        }
        (&Method::GET, ["events"]) => world.events(scope, &ListParams::from_query(query)?),
        (&Method::GET, ["subscription_items"]) => {
            let subscription = query["subscription"]
                .as_str()
                .ok_or_else(|| ApiError::invalid("subscription", "Missing required param: subscription.".into()))?;
            world.nested(scope, "subscription", subscription, "items", &ListParams::from_query(query)?, path)
        }
        (&Method::GET, [resource, id, field]) => {
            let object = object_for_resource(resource).ok_or_else(|| not_found(path))?;
            if !NESTED.contains(&(object, *field)) {
                return Err(not_found(path));
            }
            world.nested(scope, object, id, field, &ListParams::from_query(query)?, path)
        }
        (_, [resource, rest @ ..]) => {
            let object = object_for_resource(resource).ok_or_else(|| not_found(path))?;
            match (method, rest) {
                (&Method::GET, []) => world.list(scope, object, &ListParams::from_query(query)?, path),
                (&Method::POST, []) => world.create(scope, object, params).map(|v| v.to_string()),
                (&Method::GET, [id]) => world.retrieve(scope, object, id).map(|v| v.to_string()),
                (&Method::POST, [id]) => world.update(scope, object, id, params).map(|v| v.to_string()),
                (&Method::DELETE, [id]) if crate::stripe_api::by_path(resource).is_some_and(|r| r.delete_endpoint) => {
                    world.delete(scope, object, id).map(|v| v.to_string())
                }
                _ => Err(not_found(path)),
            }
        }
        _ => Err(not_found(path)),
    }
}

#[derive(Deserialize)]
struct StateQuery {
    /// `platform` or an account id; absent: every account.
    account: Option<String>,
}

async fn state(State(sim): State<Arc<Sim>>, Query(q): Query<StateQuery>) -> Response {
    let scope = q.account.map(|a| if a == "platform" { PLATFORM.to_string() } else { a });
    let truth = sim.world.lock().truth(scope.as_deref());
    json_response(200, &truth)
}

async fn stats(State(sim): State<Arc<Sim>>) -> Response {
    let s = &sim.stats;
    json_response(
        200,
        &json!({
            "requests": s.requests.load(Ordering::Relaxed),
            "rate_limited": s.rate_limited.load(Ordering::Relaxed),
            "failed": s.failed.load(Ordering::Relaxed),
            "truncated": s.truncated.load(Ordering::Relaxed),
            "lost": s.lost.load(Ordering::Relaxed),
            "executed_by_key": *s.executed_by_key.lock(),
            "by_route": *s.by_route.lock(),
        }),
    )
}

async fn event_times(State(sim): State<Arc<Sim>>) -> Response {
    let times = sim.world.lock().event_times();
    json_response(200, &Value::Object(times))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TrafficBody {
    mutations_per_sec: f64,
}

async fn traffic(State(sim): State<Arc<Sim>>, body: Result<axum::Json<TrafficBody>, axum::extract::rejection::JsonRejection>) -> Response {
    match body {
        Ok(axum::Json(t)) if t.mutations_per_sec >= 0.0 && t.mutations_per_sec.is_finite() => {
            sim.traffic.send_replace(t.mutations_per_sec);
            json_response(200, &json!({"mutations_per_sec": t.mutations_per_sec}))
        }
        Ok(_) => json_response(
            400,
            &json!({"error": {"type": "invalid_request_error", "message": "mutations_per_sec must be a finite number >= 0"}}),
        ),
        Err(e) => json_response(400, &json!({"error": {"type": "invalid_request_error", "message": e.body_text()}})),
    }
}

async fn get_faults(State(sim): State<Arc<Sim>>) -> Response {
    json_response(200, &json!(*sim.faults.read()))
}

async fn set_faults(State(sim): State<Arc<Sim>>, body: Result<axum::Json<Faults>, axum::extract::rejection::JsonRejection>) -> Response {
    match body {
        Ok(axum::Json(faults)) => {
            sim.set_faults(faults.clone());
            json_response(200, &json!(faults))
        }
        Err(e) => json_response(400, &json!({"error": {"type": "invalid_request_error", "message": e.body_text()}})),
    }
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

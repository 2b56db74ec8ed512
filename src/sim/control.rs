//! The `/__sim` control routes: ground truth, counters, live traffic and
//! faults, changed while the simulator runs. No auth and no faults: these are
//! for tests and the demo, never part of an upstream.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Sim;
use super::faults::{Faults, json_response, text_response};
use super::shifts::routes::WindowQuery;
use super::stripe::world::PLATFORM;

pub fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/__sim/market", get(market))
        .route("/__sim/tracker", get(tracker))
        .route("/__sim/shifts", get(shifts_truth))
        .route("/__sim/generate", post(generate))
        .route("/__sim/state", get(state))
        .route("/__sim/stats", get(stats))
        .route("/__sim/event_times", get(event_times))
        .route("/__sim/traffic", post(traffic))
        .route("/__sim/faults", get(get_faults).post(set_faults))
}

/// `GET /__sim/shifts?start=…&end=…`: the same window, as ground truth
/// (no auth, no faults).
async fn shifts_truth(State(sim): State<Arc<Sim>>, Query(q): Query<WindowQuery>) -> Response {
    match q.ask() {
        Ok(ask) => {
            let body = sim.shifts.lock().window_json(&ask, false);
            text_response(200, body)
        }
        Err(message) => json_response(400, &json!({"error": message})),
    }
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

/// `GET /__sim/tracker`: every repository and issue of the tracker.
async fn tracker(State(sim): State<Arc<Sim>>) -> Response {
    json_response(200, &sim.tracker.lock().truth())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GenerateBody {
    #[serde(default)]
    market_events: usize,
    #[serde(default)]
    shift_edits: usize,
    #[serde(default)]
    issue_edits: usize,
}

/// `POST /__sim/generate {"market_events"?, "shift_edits"?, "issue_edits"?}`: make that many
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
    {
        let mut tracker = sim.tracker.lock();
        for _ in 0..body.issue_edits {
            tracker.random_mutation();
        }
    }
    json_response(200, &json!({"market_events": body.market_events, "shift_edits": body.shift_edits, "issue_edits": body.issue_edits}))
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
    let (mutations, (events_pending, events_dropped)) = {
        let world = sim.world.lock();
        (json!(world.mutations), world.hidden_events())
    };
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
            "mutations": mutations,
            // events not shown in /v1/events yet, and never to be
            "events_pending": events_pending,
            "events_dropped": events_dropped,
            // tokens the shifts API's /login issued
            "logins": sim.shifts.lock().logins,
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

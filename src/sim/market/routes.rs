//! The marketplace's event queues: `/integration/v1/queues`, subscriptions
//! and pulls with acknowledgement.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::PullBody;
use crate::sim::Sim;
use crate::sim::error::ApiError;
use crate::sim::faults::{Auth, Faults, answer, error_response, gate};

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

pub async fn list_queues(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> Response {
    let faults = match gate(&sim, "GET /integration/v1/queues".into(), &headers, Auth::Bearer).await {
        Ok(faults) => faults,
        Err(response) => return response,
    };
    let body = sim.market.lock().list_queues().to_string();
    answer(&sim, &faults, 200, body)
}

pub async fn create_queue(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Response {
    let faults = match gate(&sim, "POST /integration/v1/queues".into(), &headers, Auth::Bearer).await {
        Ok(faults) => faults,
        Err(response) => return response,
    };
    let result = market_body(&body).and_then(|body| sim.market.lock().create_queue(body)).map(|v| v.to_string());
    market_answer(&sim, &faults, result)
}

pub async fn subscribe(State(sim): State<Arc<Sim>>, Path(code): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let faults = match gate(&sim, "POST /integration/v1/queues/{code}/subscriptions".into(), &headers, Auth::Bearer).await {
        Ok(faults) => faults,
        Err(response) => return response,
    };
    let result = market_body(&body).and_then(|body| sim.market.lock().subscribe(&code, body)).map(|v| v.to_string());
    market_answer(&sim, &faults, result)
}

pub async fn pull(State(sim): State<Arc<Sim>>, Path(code): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let faults = match gate(&sim, "POST /integration/v1/queues/{code}/events/pull".into(), &headers, Auth::Bearer).await {
        Ok(faults) => faults,
        Err(response) => return response,
    };
    let body = if body.is_empty() { Ok(PullBody::default()) } else { market_body(&body) };
    let lose_ack = sim.roll(faults.lose_acks);
    let result = body.and_then(|body| sim.market.lock().pull(&code, body, lose_ack, faults.broken_event));
    market_answer(&sim, &faults, result)
}

pub async fn list_subscriptions(State(sim): State<Arc<Sim>>, Path(code): Path<String>, headers: HeaderMap) -> Response {
    let faults = match gate(&sim, "GET /integration/v1/queues/{code}/subscriptions".into(), &headers, Auth::Bearer).await {
        Ok(faults) => faults,
        Err(response) => return response,
    };
    let result = sim.market.lock().list_subscriptions(&code).map(|v| v.to_string());
    market_answer(&sim, &faults, result)
}

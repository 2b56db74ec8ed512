//! Tiki's routes: the token endpoint, queues (the app's own token),
//! subscriptions (a seller's token), pulls and acknowledgements, and the
//! order lookup (the order's seller's token).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::oauth::Owner;
use super::{PullBody, TikiError};
use crate::sim::Sim;
use crate::sim::faults::{Auth, Faults, answer, basic, bearer, gate, json_response};

fn refuse(error: &TikiError) -> Response {
    json_response(error.status, &error.body())
}

/// A JSON body, or the 400 to answer.
fn json_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, TikiError> {
    serde_json::from_slice(body).map_err(|e| TikiError::new(400, format!("invalid body: {e}")))
}

fn reply(sim: &Sim, faults: &Faults, result: Result<String, TikiError>) -> Response {
    match result {
        Ok(body) => answer(sim, faults, 200, body),
        Err(e) => refuse(&e),
    }
}

/// The gate (faults, the rate limit), then the owner of the bearer token.
async fn enter(sim: &Sim, route: &str, headers: &HeaderMap) -> Result<(Faults, Owner), Response> {
    let faults = gate(sim, route.into(), headers, Auth::Tiki).await?;
    let owner = bearer(headers).and_then(|token| sim.market.lock().oauth.owner(token).cloned());
    match owner {
        Some(owner) => Ok((faults, owner)),
        None => Err(refuse(&TikiError::new(401, "the access token is missing or expired"))),
    }
}

/// The app's own token, as queues need it.
async fn as_app(sim: &Sim, route: &str, headers: &HeaderMap) -> Result<(Faults, String), Response> {
    match enter(sim, route, headers).await? {
        (faults, Owner::App(client)) => Ok((faults, client)),
        (_, Owner::Seller(_)) => Err(refuse(&TikiError::new(403, "queues belong to the app: use its own token (client credentials)"))),
    }
}

/// A seller's token, as subscriptions and orders need it.
async fn as_seller(sim: &Sim, route: &str, headers: &HeaderMap) -> Result<(Faults, String), Response> {
    match enter(sim, route, headers).await? {
        (faults, Owner::Seller(sid)) => Ok((faults, sid)),
        (_, Owner::App(_)) => Err(refuse(&TikiError::new(401, "the token is not linked to a seller"))),
    }
}

/// `POST /sc/oauth2/token`, form-encoded.
pub async fn token(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Response {
    let faults = match gate(&sim, "POST /sc/oauth2/token".into(), &headers, Auth::Tiki).await {
        Ok(faults) => faults,
        Err(response) => return response,
    };
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let basic = basic(&headers);
    let result = {
        let mut guard = sim.market.lock();
        let market = &mut *guard;
        market.oauth.grant(&form, basic, &mut market.rng)
    };
    match result {
        Ok(answer_body) => answer(&sim, &faults, 200, answer_body.to_string()),
        Err((status, body)) => json_response(status, &body),
    }
}

pub async fn list_queues(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> Response {
    let (faults, app) = match as_app(&sim, "GET /integration/v1/queues", &headers).await {
        Ok(entered) => entered,
        Err(response) => return response,
    };
    let body = sim.market.lock().list_queues(&app).to_string();
    answer(&sim, &faults, 200, body)
}

pub async fn create_queue(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Response {
    let (faults, app) = match as_app(&sim, "POST /integration/v1/queues", &headers).await {
        Ok(entered) => entered,
        Err(response) => return response,
    };
    let result = json_body(&body).and_then(|body| sim.market.lock().create_queue(&app, body)).map(|v| v.to_string());
    reply(&sim, &faults, result)
}

pub async fn subscribe(State(sim): State<Arc<Sim>>, Path(code): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let (faults, sid) = match as_seller(&sim, "POST /integration/v1/queues/{code}/subscriptions", &headers).await {
        Ok(entered) => entered,
        Err(response) => return response,
    };
    let result = json_body(&body).and_then(|body| sim.market.lock().subscribe(&sid, &code, body)).map(|v| v.to_string());
    reply(&sim, &faults, result)
}

/// The app sees every subscription of its queue; a seller its own.
pub async fn list_subscriptions(State(sim): State<Arc<Sim>>, Path(code): Path<String>, headers: HeaderMap) -> Response {
    let (faults, owner) = match enter(&sim, "GET /integration/v1/queues/{code}/subscriptions", &headers).await {
        Ok(entered) => entered,
        Err(response) => return response,
    };
    let sid = match &owner {
        Owner::Seller(sid) => Some(sid.as_str()),
        Owner::App(_) => None,
    };
    let result = sim.market.lock().list_subscriptions(&code, sid).map(|v| v.to_string());
    reply(&sim, &faults, result)
}

pub async fn pull(State(sim): State<Arc<Sim>>, Path(code): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let (faults, app) = match as_app(&sim, "POST /integration/v1/queues/{code}/events/pull", &headers).await {
        Ok(entered) => entered,
        Err(response) => return response,
    };
    let body = if body.is_empty() { Ok(PullBody::default()) } else { json_body(&body) };
    let lose_ack = sim.roll(faults.lose_acks);
    let result = body.and_then(|body| sim.market.lock().pull(&app, &code, body, lose_ack, faults.broken_event));
    reply(&sim, &faults, result)
}

pub async fn ack(State(sim): State<Arc<Sim>>, Path(code): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let (faults, app) = match as_app(&sim, "POST /integration/v1/queues/{code}/events/ack", &headers).await {
        Ok(entered) => entered,
        Err(response) => return response,
    };
    let lose_ack = sim.roll(faults.lose_acks);
    let result = json_body(&body).and_then(|body| sim.market.lock().ack(&app, &code, body, lose_ack)).map(|v| v.to_string());
    reply(&sim, &faults, result)
}

/// `GET /integration/v2/orders/{code}` (`include=…` is accepted and ignored).
pub async fn order(State(sim): State<Arc<Sim>>, Path(code): Path<String>, headers: HeaderMap) -> Response {
    let (faults, sid) = match as_seller(&sim, "GET /integration/v2/orders/{code}", &headers).await {
        Ok(entered) => entered,
        Err(response) => return response,
    };
    if faults.fail_order_lookups {
        return refuse(&TikiError::new(503, "the order service is under maintenance"));
    }
    let result = sim.market.lock().order(&sid, &code).map(|v| v.to_string());
    reply(&sim, &faults, result)
}

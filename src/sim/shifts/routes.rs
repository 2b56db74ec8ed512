//! WhenIWork's routes: `POST /login` and `GET /2/shifts`.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{WindowAsk, parse_bound};
use crate::sim::Sim;
use crate::sim::faults::{Auth, answer, gate, json_response};

/// WhenIWork's error envelope: `{"error": "…", "code": 1000}`.
fn error(status: u16, code: u32, message: &str) -> Response {
    json_response(status, &json!({"error": message, "code": code}))
}

#[derive(Deserialize)]
pub struct WindowQuery {
    pub start: Option<String>,
    pub end: Option<String>,
    pub deleted: Option<String>,
    pub limit: Option<usize>,
}

impl WindowQuery {
    /// The window asked for: `start` defaults to now, `end` to three days
    /// after `start` (as WhenIWork's do).
    pub fn ask(&self) -> Result<WindowAsk, String> {
        let bound = |name: &str, text: &Option<String>, end: bool| match text {
            None => Ok(None),
            Some(text) => parse_bound(text, end).map(Some).ok_or_else(|| format!("{name} is not a date or time: '{text}'")),
        };
        let start = bound("start", &self.start, false)?.unwrap_or_else(chrono::Utc::now);
        let end = bound("end", &self.end, true)?.unwrap_or(start + chrono::Duration::days(3));
        if end < start {
            return Err("end is before start".into());
        }
        Ok(WindowAsk { start, end, deleted: self.deleted.as_deref() == Some("true"), limit: self.limit })
    }
}

/// `POST /login` with a `W-Key` header and `{"email","password"}`: a new
/// token, at the top level of the answer as clients read it.
pub async fn login(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Option<axum::Json<Value>>) -> Response {
    let faults = match gate(&sim, "POST /login".into(), &headers, Auth::WhenIWork).await {
        Ok(faults) => faults,
        Err(response) => return response,
    };
    let key = headers.get("w-key").and_then(|v| v.to_str().ok()).filter(|k| !k.trim().is_empty());
    if key.is_none() {
        return error(401, 1110, "A developer key (W-Key) is required to log in.");
    }
    let field = |name: &str| body.as_ref().and_then(|b| b.get(name)).and_then(Value::as_str).filter(|v| !v.is_empty()).map(str::to_string);
    let (Some(email), Some(_password)) = (field("email"), field("password")) else {
        return error(400, 1100, "email and password are required");
    };
    let token = sim.shifts.lock().login();
    let body = json!({
        "person": {"id": 1, "email": email, "first_name": "Sim", "last_name": "Manager"},
        "token": token,
    });
    answer(&sim, &faults, 200, body.to_string())
}

/// `GET /2/shifts?start=…&end=…[&deleted=true][&limit=N]` with a token
/// from `/login` in `W-Token` or `Authorization: Bearer`.
pub async fn shifts(State(sim): State<Arc<Sim>>, headers: HeaderMap, Query(q): Query<WindowQuery>) -> Response {
    let faults = match gate(&sim, "GET /2/shifts".into(), &headers, Auth::WhenIWork).await {
        Ok(faults) => faults,
        Err(response) => return response,
    };
    let token = headers
        .get("w-token")
        .and_then(|v| v.to_str().ok())
        .or_else(|| headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")));
    if !token.is_some_and(|t| sim.shifts.lock().token_valid(t)) {
        return error(401, 1000, "User login required for this resource.");
    }
    match q.ask() {
        Ok(ask) => {
            let body = sim.shifts.lock().window_json(&ask, faults.broken_shift);
            answer(&sim, &faults, 200, body)
        }
        Err(message) => error(400, 1200, &message),
    }
}

//! The shift-planning window API: `GET /v2/shifts?start=…&end=…`.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;

use super::parse_day;
use crate::sim::Sim;
use crate::sim::error::ApiError;
use crate::sim::faults::{Auth, answer, error_response, gate};

#[derive(Deserialize)]
pub struct WindowQuery {
    pub start: Option<String>,
    pub end: Option<String>,
}

/// `GET /v2/shifts?start=YYYY-MM-DD&end=YYYY-MM-DD`
pub async fn shifts(State(sim): State<Arc<Sim>>, headers: HeaderMap, Query(q): Query<WindowQuery>) -> Response {
    let faults = match gate(&sim, "GET /v2/shifts".into(), &headers, Auth::Bearer).await {
        Ok(faults) => faults,
        Err(response) => return response,
    };
    match window(&sim, &q, faults.broken_shift) {
        Ok(body) => answer(&sim, &faults, 200, body),
        Err(e) => error_response(&e),
    }
}

pub fn window(sim: &Sim, q: &WindowQuery, broken: bool) -> Result<String, ApiError> {
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

//! The tracker's routes, paged as GitHub pages: `page` and `per_page`
//! (default 30, at most 100), the next page in a `Link` header.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::IssueQuery;
use crate::sim::Sim;
use crate::sim::faults::{Auth, Faults, answer, bearer, gate, json_response};

#[derive(Deserialize)]
pub struct ListQuery {
    pub page: Option<usize>,
    pub per_page: Option<usize>,
    pub since: Option<String>,
    pub state: Option<String>,
}

fn error(status: u16, message: &str) -> Response {
    json_response(status, &json!({"message": message, "documentation_url": "https://docs.github.com/rest"}))
}

/// One page of a list, with a `Link` to the next when `more` (on the host
/// the request named).
fn page(sim: &Sim, faults: &Faults, headers: &HeaderMap, path: &str, q: &ListQuery, items: Vec<Value>, more: bool) -> Response {
    let mut response = answer(sim, faults, 200, Value::Array(items).to_string());
    if more {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("per_page", &q.per_page().to_string()).append_pair("page", &(q.page() + 1).to_string());
        if let Some(since) = &q.since {
            query.append_pair("since", since);
        }
        if let Some(state) = &q.state {
            query.append_pair("state", state);
        }
        let link = format!("<http://{host}{path}?{}>; rel=\"next\"", query.finish());
        if let Ok(value) = link.parse() {
            response.headers_mut().insert(header::LINK, value);
        }
    }
    response
}

impl ListQuery {
    fn per_page(&self) -> usize {
        self.per_page.unwrap_or(30).clamp(1, 100)
    }

    fn page(&self) -> usize {
        self.page.unwrap_or(1).max(1)
    }

    fn skip(&self) -> usize {
        (self.page() - 1).saturating_mul(self.per_page())
    }
}

async fn enter(sim: &Sim, route: &str, headers: &HeaderMap) -> Result<Faults, Response> {
    let faults = gate(sim, route.into(), headers, Auth::GitHub).await?;
    if bearer(headers).is_none_or(|t| t.trim().is_empty()) {
        return Err(error(401, "Requires authentication"));
    }
    Ok(faults)
}

pub async fn repos(State(sim): State<Arc<Sim>>, Path(org): Path<String>, headers: HeaderMap, Query(q): Query<ListQuery>) -> Response {
    let faults = match enter(&sim, "GET /orgs/{org}/repos", &headers).await {
        Ok(faults) => faults,
        Err(response) => return response,
    };
    let Some(repos) = sim.tracker.lock().repos(&org) else { return error(404, "Not Found") };
    let more = repos.len() > q.skip() + q.per_page();
    let repos: Vec<Value> = repos.into_iter().skip(q.skip()).take(q.per_page()).collect();
    page(&sim, &faults, &headers, &format!("/orgs/{org}/repos"), &q, repos, more)
}

pub async fn issues(
    State(sim): State<Arc<Sim>>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    let faults = match enter(&sim, "GET /repos/{owner}/{repo}/issues", &headers).await {
        Ok(faults) => faults,
        Err(response) => return response,
    };
    let since = match &q.since {
        None => None,
        Some(text) => match chrono::DateTime::parse_from_rfc3339(text) {
            Ok(at) => Some(at.with_timezone(&chrono::Utc)),
            Err(_) => return error(422, &format!("since '{text}' is not an ISO 8601 time")),
        },
    };
    let query = IssueQuery { since, state: q.state.clone(), skip: q.skip(), limit: q.per_page() };
    let Some((issues, more)) = sim.tracker.lock().issues(&owner, &repo, &query) else { return error(404, "Not Found") };
    page(&sim, &faults, &headers, &format!("/repos/{owner}/{repo}/issues"), &q, issues, more)
}

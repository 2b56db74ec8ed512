//! Writes through to the upstream over HTTP: `POST /v1/sources/{name}/{resource}`
//! (create), `POST …/{resource}/{id}` (update), `DELETE …/{resource}/{id}`,
//! with an app token and an `Idempotency-Key`. The upstream's answer is sent
//! back as it came (status and body); a replayed one carries
//! `Idempotent-Replayed: true`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Router, routing::post};
use serde_json::{Map, Value};

use super::extract::{Param, Params};
use super::{ApiError, AppState};
use crate::store::queues::{App, AppKind, PLATFORM};
use crate::write::{Outcome, WriteError, WriteRequest};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/sources/{name}/{resource}", post(create))
        .route("/v1/sources/{name}/{resource}/{id}", post(update).delete(remove))
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> ApiError {
        match e {
            WriteError::BadRequest(_) => ApiError::BadRequest(e.to_string()),
            WriteError::UnknownSource(_) | WriteError::UnknownResource { .. } => ApiError::NotFound(e.to_string()),
            WriteError::Mismatch => ApiError::Unprocessable(e.to_string()),
            WriteError::InFlight => ApiError::Conflict(e.to_string()),
            WriteError::Upstream(_) => ApiError::BadGateway(e.to_string()),
            WriteError::Store(e) => ApiError::Internal(e.to_string()),
        }
    }
}

/// The account a write acts for: an in-house app's own, or for a public
/// app the one named in `Stripe-Account` that granted it access.
pub(super) async fn account(app: &App, headers: &HeaderMap, state: &AppState) -> Result<Option<String>, ApiError> {
    let named = headers.get("stripe-account").map(|v| v.to_str().map(str::to_string));
    let named = named.transpose().map_err(|_| ApiError::BadRequest("Stripe-Account is not text".into()))?;
    let account = match (app.kind, named) {
        (AppKind::Inhouse, None) => app.account.clone().unwrap_or_else(|| PLATFORM.into()),
        (AppKind::Inhouse, Some(named)) if app.account.as_deref() == Some(named.as_str()) => named,
        (AppKind::Public, Some(named)) if state.store.granted(&app.id, &named).await.map_err(|e| ApiError::Internal(e.to_string()))? => {
            named
        }
        (AppKind::Public, None) => {
            return Err(ApiError::BadRequest("a public app names the account it writes for in Stripe-Account".into()));
        }
        (_, Some(named)) => return Err(ApiError::Forbidden(format!("account '{named}' has not granted this app access"))),
    };
    Ok((account != PLATFORM).then_some(account))
}

/// The client's `Idempotency-Key`, if it sent one.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(key) = headers.get("idempotency-key") else { return Ok(None) };
    let key = key.to_str().map_err(|_| ApiError::BadRequest("Idempotency-Key must be printable text".into()))?;
    Ok(Some(key.to_string()))
}

/// The upstream's answer as it came (status and body), marked when it was
/// replayed from its key.
fn answer(outcome: Outcome) -> Response {
    let status = StatusCode::from_u16(outcome.answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = (status, [(header::CONTENT_TYPE, "application/json")], outcome.answer.body).into_response();
    if outcome.replayed {
        response.headers_mut().insert("idempotent-replayed", header::HeaderValue::from_static("true"));
    }
    response
}

/// What a write without an `Idempotency-Key` gets.
pub(super) enum MissingKey {
    /// 400: Tributary's own write routes require one.
    Refuse,
    /// A key of its own: Stripe's keys are optional.
    Generate,
}

/// Run a write for `app` and answer with the upstream's answer; errors in
/// the caller's shape.
pub(super) async fn write<E: From<ApiError> + From<WriteError>>(
    app: App,
    state: AppState,
    headers: HeaderMap,
    (source, resource, id): (String, String, Option<String>),
    method: &'static str,
    params: Map<String, Value>,
    missing_key: MissingKey,
) -> Result<Response, E> {
    let key = match (idempotency_key(&headers)?, missing_key) {
        (Some(key), _) => key,
        (None, MissingKey::Generate) => format!("auto-{}", crate::ids::random_id("", 24)),
        (None, MissingKey::Refuse) => return Err(ApiError::BadRequest("an Idempotency-Key header is required".into()).into()),
    };
    let account = account(&app, &headers, &state).await?;
    let request = WriteRequest { app_id: app.id, key, source, method, resource, id, params, account };
    Ok(answer(state.writes.execute(request).await?))
}

async fn create(
    app: App,
    State(state): State<AppState>,
    Param((source, resource)): Param<(String, String)>,
    headers: HeaderMap,
    Params(params): Params,
) -> Result<Response, ApiError> {
    write(app, state, headers, (source, resource, None), "POST", params, MissingKey::Refuse).await
}

async fn update(
    app: App,
    State(state): State<AppState>,
    Param((source, resource, id)): Param<(String, String, String)>,
    headers: HeaderMap,
    Params(params): Params,
) -> Result<Response, ApiError> {
    write(app, state, headers, (source, resource, Some(id)), "POST", params, MissingKey::Refuse).await
}

async fn remove(
    app: App,
    State(state): State<AppState>,
    Param((source, resource, id)): Param<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    write(app, state, headers, (source, resource, Some(id)), "DELETE", Map::new(), MissingKey::Refuse).await
}

//! Writes through to the upstream over HTTP: `POST /v1/sources/{name}/{resource}`
//! (create), `POST …/{resource}/{id}` (update), `DELETE …/{resource}/{id}`,
//! with an app token and an `Idempotency-Key`. The upstream's answer is sent
//! back as it came (status and body); a replayed one carries
//! `Idempotent-Replayed: true`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use utoipa::{IntoParams, IntoResponses};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Param, Params};
use super::views::ErrorBody;
use super::{ApiError, AppState};
use crate::store::queues::{App, AppKind, PLATFORM};
use crate::write::{Outcome, WriteError, WriteRequest};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(update, remove))
        .routes(routes!(write_3, remove_3))
        .routes(routes!(write_4, remove_4))
}

/// The account a request acts for.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub(super) struct AccountHeader {
    /// The connected account to act for (a public app must name one that
    /// granted it access).
    #[param(rename = "Stripe-Account")]
    stripe_account: Option<String>,
}

/// A write's key: required on Tributary's own write routes.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
struct KeyHeader {
    /// 1 to 255 characters; the same key and request replays the first answer.
    #[param(rename = "Idempotency-Key", max_length = 255)]
    idempotency_key: String,
}

/// How a write can fail besides its body and token. The Stripe-compatible
/// path answers the same statuses in Stripe's error shape.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub(super) enum WriteErrors {
    /// No Idempotency-Key or a malformed one, a bad object id, a public app
    /// without Stripe-Account, or a malformed body.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// The account has not granted this app access.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// No such source or resource.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// A request with this Idempotency-Key is in progress.
    #[response(status = 409)]
    InFlight(ErrorBody),
    /// The upstream refused the write: its answer, status and body, passed
    /// on as it came and stored under the key.
    #[response(status = "4XX")]
    Refused(#[to_schema] serde_json::Value),
    /// The upstream gave no final answer; retry with the same Idempotency-Key.
    #[response(status = 502)]
    NoAnswer(ErrorBody),
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> ApiError {
        match e {
            WriteError::BadRequest(_) => ApiError::BadRequest(e.to_string()),
            WriteError::UnknownSource(_) | WriteError::UnknownResource { .. } | WriteError::NotWritable { .. } => {
                ApiError::NotFound(e.to_string())
            }
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
    (source, path): (String, String),
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
    let request = WriteRequest { app_id: app.id, key, source, method, path, params, account };
    Ok(answer(state.writes.execute(request).await?))
}

/// Create an object upstream, idempotently; it is in the mirror and the
/// change log when this answers.
#[utoipa::path(post, path = "/v1/sources/{name}/{resource}", security(("appToken" = [])),
    params(("name" = String, Path, description = "the source"), ("resource" = String, Path, description = "`customers`, …"), KeyHeader, AccountHeader),
    request_body(content((Params = "application/json"), (Params = "application/x-www-form-urlencoded"))),
    responses((status = 200, description = "the upstream's answer as it came (Idempotent-Replayed: true when replayed)", body = Object), WriteErrors))]
async fn create(
    app: App,
    State(state): State<AppState>,
    Param((source, resource)): Param<(String, String)>,
    headers: HeaderMap,
    Params(params): Params,
) -> Result<Response, ApiError> {
    write(app, state, headers, (source, resource), "POST", params, MissingKey::Refuse).await
}

/// Update an object upstream (or create in a list whose path has two
/// segments, `checkout/sessions`), idempotently.
#[utoipa::path(post, path = "/v1/sources/{name}/{resource}/{id}", security(("appToken" = [])),
    params(("name" = String, Path), ("resource" = String, Path), ("id" = String, Path), KeyHeader, AccountHeader),
    request_body(content((Params = "application/json"), (Params = "application/x-www-form-urlencoded"))),
    responses((status = 200, description = "the upstream's answer as it came", body = Object), WriteErrors))]
async fn update(
    app: App,
    State(state): State<AppState>,
    Param((source, resource, id)): Param<(String, String, String)>,
    headers: HeaderMap,
    Params(params): Params,
) -> Result<Response, ApiError> {
    write(app, state, headers, (source, format!("{resource}/{id}")), "POST", params, MissingKey::Refuse).await
}

/// Delete an object upstream, idempotently.
#[utoipa::path(delete, path = "/v1/sources/{name}/{resource}/{id}", security(("appToken" = [])),
    params(("name" = String, Path), ("resource" = String, Path), ("id" = String, Path), KeyHeader, AccountHeader),
    responses((status = 200, description = "the upstream's answer as it came", body = Object), WriteErrors))]
async fn remove(
    app: App,
    State(state): State<AppState>,
    Param((source, resource, id)): Param<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    write(app, state, headers, (source, format!("{resource}/{id}")), "DELETE", Map::new(), MissingKey::Refuse).await
}

/// Create in a child list (`customers/cus_1/tax_ids`), or update an object
/// of a list whose path has two segments (`terminal/readers/tmr_1`),
/// idempotently.
#[utoipa::path(post, path = "/v1/sources/{name}/{a}/{b}/{c}", security(("appToken" = [])),
    params(("name" = String, Path), ("a" = String, Path), ("b" = String, Path), ("c" = String, Path), KeyHeader, AccountHeader),
    request_body(content((Params = "application/json"), (Params = "application/x-www-form-urlencoded"))),
    responses((status = 200, description = "the upstream's answer as it came", body = Object), WriteErrors))]
async fn write_3(
    app: App,
    State(state): State<AppState>,
    Param((source, a, b, c)): Param<(String, String, String, String)>,
    headers: HeaderMap,
    Params(params): Params,
) -> Result<Response, ApiError> {
    write(app, state, headers, (source, format!("{a}/{b}/{c}")), "POST", params, MissingKey::Refuse).await
}

/// Delete an object of a list whose path has two segments, idempotently.
#[utoipa::path(delete, path = "/v1/sources/{name}/{a}/{b}/{c}", security(("appToken" = [])),
    params(("name" = String, Path), ("a" = String, Path), ("b" = String, Path), ("c" = String, Path), KeyHeader, AccountHeader),
    responses((status = 200, description = "the upstream's answer as it came", body = Object), WriteErrors))]
async fn remove_3(
    app: App,
    State(state): State<AppState>,
    Param((source, a, b, c)): Param<(String, String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    write(app, state, headers, (source, format!("{a}/{b}/{c}")), "DELETE", Map::new(), MissingKey::Refuse).await
}

/// Update an object of a child list (`customers/cus_1/sources/card_2`),
/// idempotently.
#[utoipa::path(post, path = "/v1/sources/{name}/{a}/{b}/{c}/{d}", security(("appToken" = [])),
    params(("name" = String, Path), ("a" = String, Path), ("b" = String, Path), ("c" = String, Path), ("d" = String, Path), KeyHeader, AccountHeader),
    request_body(content((Params = "application/json"), (Params = "application/x-www-form-urlencoded"))),
    responses((status = 200, description = "the upstream's answer as it came", body = Object), WriteErrors))]
async fn write_4(
    app: App,
    State(state): State<AppState>,
    Param((source, a, b, c, d)): Param<(String, String, String, String, String)>,
    headers: HeaderMap,
    Params(params): Params,
) -> Result<Response, ApiError> {
    write(app, state, headers, (source, format!("{a}/{b}/{c}/{d}")), "POST", params, MissingKey::Refuse).await
}

/// Delete an object of a child list (`customers/cus_1/tax_ids/txi_2`),
/// idempotently.
#[utoipa::path(delete, path = "/v1/sources/{name}/{a}/{b}/{c}/{d}", security(("appToken" = [])),
    params(("name" = String, Path), ("a" = String, Path), ("b" = String, Path), ("c" = String, Path), ("d" = String, Path), KeyHeader, AccountHeader),
    responses((status = 200, description = "the upstream's answer as it came", body = Object), WriteErrors))]
async fn remove_4(
    app: App,
    State(state): State<AppState>,
    Param((source, a, b, c, d)): Param<(String, String, String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    write(app, state, headers, (source, format!("{a}/{b}/{c}/{d}")), "DELETE", Map::new(), MissingKey::Refuse).await
}

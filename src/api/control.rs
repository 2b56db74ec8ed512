//! Operators' routes (admin token): pause and resume sources and sinks,
//! rewind a sink, list, redrive and discard its dead letters, and read the
//! change log by filters. Each request is stored and applied by whichever
//! process runs its target ([`crate::control`]).

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Admin;
use super::extract::{Body, OptionalBody, Param, QueryParams};
use super::views::ErrorBody;
use super::{ApiError, AppState};
use crate::control::{self, ControlError, RewindTo, Rewound};
use crate::store::Change;
use crate::store::controls::{ChangeFilter, StoredDeadLetter, Target};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(rewind))
        .routes(routes!(dead_letters))
        .routes(routes!(redrive))
        .routes(routes!(discard))
        .routes(routes!(pause_sink))
        .routes(routes!(resume_sink))
        .routes(routes!(pause_source))
        .routes(routes!(resume_source))
        .routes(routes!(changes))
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> ApiError {
        match e {
            ControlError::NotFound(m) => ApiError::NotFound(m),
            ControlError::Invalid(m) => ApiError::Unprocessable(m),
            ControlError::Conflict(m) => ApiError::Conflict(m),
            ControlError::Store(e) => ApiError::Internal(e.to_string()),
        }
    }
}

/// The configured sink of that name (not the queue fan-out).
fn sink<'a>(state: &'a AppState, name: &str) -> Result<&'a str, ApiError> {
    state
        .sinks
        .iter()
        .find(|s| s.name == name && s.name != crate::store::queues::FANOUT_READER)
        .map(|s| s.name.as_str())
        .ok_or_else(|| ApiError::NotFound(format!("no sink named '{name}'")))
}

/// 404 unless a source of that name is configured.
pub(crate) fn source(state: &AppState, name: &str) -> Result<(), ApiError> {
    state.registry.get(name).map(|_| ()).ok_or_else(|| ApiError::NotFound(format!("no source named '{name}'")))
}

/// Where to rewind: exactly one of the two.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RewindRequest {
    /// `chg_…`: this change and every one after it is delivered again.
    pub to_change: Option<String>,
    /// RFC 3339: every change committed at or after it is delivered again.
    #[schema(format = DateTime)]
    pub to_time: Option<String>,
}

/// Move a sink's cursor back, so everything from a change (or a time) on
/// is delivered again. The process that runs the sink applies it (at
/// once here, within a second on another instance) and logs `sink_rewound`.
#[utoipa::path(post, path = "/v1/sinks/{name}/rewind", security(("adminToken" = [])), request_body = RewindRequest,
    params(("name" = String, Path, description = "the sink")),
    responses(
        (status = 202, description = "asked for (or nothing to deliver again)", body = Rewound),
        (status = 404, description = "no such sink, or the change is not in the change log (purged)", body = ErrorBody),
        (status = 409, description = "the sink has not delivered that change yet", body = ErrorBody),
        (status = 422, description = "neither or both of to_change and to_time, or one that does not parse", body = ErrorBody),
    ))]
async fn rewind(
    _: Admin,
    State(state): State<AppState>,
    Param(name): Param<String>,
    Body(body): Body<RewindRequest>,
) -> Result<(StatusCode, Json<Rewound>), ApiError> {
    let name = sink(&state, &name)?;
    let to = match (body.to_change, body.to_time) {
        (Some(change), None) => RewindTo::Change(change),
        (None, Some(time)) => RewindTo::Time(time),
        _ => return Err(ApiError::Unprocessable("give exactly one of to_change (chg_…) and to_time (RFC 3339)".into())),
    };
    Ok((StatusCode::ACCEPTED, Json(control::rewind(state.store.as_ref(), name, &to).await?)))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetters {
    pub dead_letters: Vec<StoredDeadLetter>,
    /// Pass as `after` for the next page; null on the last.
    pub next: Option<String>,
}

/// A sink's dead letters, oldest first: the change, its envelope, the last
/// error and how many deliveries were tried.
#[utoipa::path(get, path = "/v1/sinks/{name}/dead_letters", security(("adminToken" = [])),
    params(
        ("name" = String, Path, description = "the sink"),
        ("after" = Option<String>, Query, description = "a dead letter id (dl_…): the page after it"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "default 50"),
    ),
    responses((status = 200, body = DeadLetters), (status = 404, description = "no such sink", body = ErrorBody)))]
async fn dead_letters(
    _: Admin,
    State(state): State<AppState>,
    Param(name): Param<String>,
    QueryParams(query): QueryParams<HashMap<String, String>>,
) -> Result<Json<DeadLetters>, ApiError> {
    let name = sink(&state, &name)?;
    let after = match query.get("after") {
        None => 0,
        Some(id) => crate::store::controls::dead_letter_row(id)
            .ok_or_else(|| ApiError::BadRequest(format!("after must be a dead letter id (dl_…), got '{id}'")))?,
    };
    let limit = limit(&query, 50, 500)?;
    let letters = state.store.dead_letters(name, after, limit + 1).await.map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(page(letters, limit, |l| l.id.clone(), |dead_letters, next| DeadLetters { dead_letters, next })))
}

/// `limit` from the query: `default` without one, at most `max`.
fn limit(query: &HashMap<String, String>, default: usize, max: usize) -> Result<usize, ApiError> {
    match query.get("limit") {
        None => Ok(default),
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::BadRequest(format!("limit must be an integer from 1 to {max}, got '{raw}'"))),
        },
    }
}

/// A page of at most `limit` items from `limit + 1` read, with the cursor
/// of the next page when there is one.
fn page<T, P>(mut items: Vec<T>, limit: usize, id: impl Fn(&T) -> String, build: impl Fn(Vec<T>, Option<String>) -> P) -> P {
    let more = items.len() > limit;
    items.truncate(limit);
    let next = if more { items.last().map(id) } else { None };
    build(items, next)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedriveRequest {
    /// The dead letters (`dl_…`); leave the body out to redrive all.
    pub ids: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RedriveAsked {
    pub sink: String,
    /// Dead letters marked for redrive.
    pub marked: u64,
}

/// Deliver dead letters again: all of the sink's (no body) or those named.
/// The process that runs the sink sends each once between batches; one
/// delivered leaves the dead letters (`dead_letter_redriven`), one that
/// fails again stays with its new error and attempts.
#[utoipa::path(post, path = "/v1/sinks/{name}/dead_letters/redrive", security(("adminToken" = [])),
    request_body(content = Option<RedriveRequest>, description = "leave out to redrive every dead letter"),
    params(("name" = String, Path, description = "the sink")),
    responses(
        (status = 202, description = "marked; the sink's owner delivers them", body = RedriveAsked),
        (status = 404, description = "no such sink", body = ErrorBody),
        (status = 422, description = "an id that is not a dead letter id", body = ErrorBody),
    ))]
async fn redrive(
    _: Admin,
    State(state): State<AppState>,
    Param(name): Param<String>,
    OptionalBody(body): OptionalBody<RedriveRequest>,
) -> Result<(StatusCode, Json<RedriveAsked>), ApiError> {
    let name = sink(&state, &name)?;
    let ids = body.map(|b| b.ids);
    let marked = control::redrive(state.store.as_ref(), name, ids.as_deref()).await?;
    Ok((StatusCode::ACCEPTED, Json(RedriveAsked { sink: name.to_string(), marked })))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Discarded {
    pub id: String,
    pub deleted: bool,
}

/// Delete a dead letter for good: it is never delivered.
#[utoipa::path(delete, path = "/v1/sinks/{name}/dead_letters/{id}", security(("adminToken" = [])),
    params(("name" = String, Path, description = "the sink"), ("id" = String, Path, description = "the dead letter (dl_…)")),
    responses(
        (status = 200, body = Discarded),
        (status = 404, description = "no such sink or dead letter", body = ErrorBody),
        (status = 422, description = "not a dead letter id", body = ErrorBody),
    ))]
async fn discard(_: Admin, State(state): State<AppState>, Param((name, id)): Param<(String, String)>) -> Result<Json<Discarded>, ApiError> {
    let name = sink(&state, &name)?;
    control::discard(state.store.as_ref(), name, &id).await?;
    Ok(Json(Discarded { id, deleted: true }))
}

/// A source or sink paused or resumed.
#[derive(Debug, Serialize, ToSchema)]
pub struct Paused {
    pub name: String,
    /// `source` or `sink`.
    pub target: Target,
    pub paused: bool,
}

async fn set_paused(state: &AppState, target: Target, name: &str, paused: bool) -> Result<Json<Paused>, ApiError> {
    control::set_paused(state.store.as_ref(), target, name, paused).await?;
    Ok(Json(Paused { name: name.to_string(), target, paused }))
}

/// Hold a sink: nothing is delivered to it until it is resumed (changes
/// wait in the change log; other sinks flow). Applied within a second on
/// every instance.
#[utoipa::path(post, path = "/v1/sinks/{name}/pause", security(("adminToken" = [])),
    params(("name" = String, Path, description = "the sink")),
    responses((status = 200, body = Paused), (status = 404, description = "no such sink", body = ErrorBody)))]
async fn pause_sink(_: Admin, State(state): State<AppState>, Param(name): Param<String>) -> Result<Json<Paused>, ApiError> {
    let name = sink(&state, &name)?.to_string();
    set_paused(&state, Target::Sink, &name, true).await
}

/// Deliver to a paused sink again, from where it stopped.
#[utoipa::path(post, path = "/v1/sinks/{name}/resume", security(("adminToken" = [])),
    params(("name" = String, Path, description = "the sink")),
    responses((status = 200, body = Paused), (status = 404, description = "no such sink", body = ErrorBody)))]
async fn resume_sink(_: Admin, State(state): State<AppState>, Param(name): Param<String>) -> Result<Json<Paused>, ApiError> {
    let name = sink(&state, &name)?.to_string();
    set_paused(&state, Target::Sink, &name, false).await
}

/// Stop syncing a source until it is resumed (it resumes from its
/// checkpoint). Applied within a second on every instance.
#[utoipa::path(post, path = "/v1/sources/{name}/pause", security(("adminToken" = [])),
    params(("name" = String, Path, description = "the source")),
    responses((status = 200, body = Paused), (status = 404, description = "no such source", body = ErrorBody)))]
async fn pause_source(_: Admin, State(state): State<AppState>, Param(name): Param<String>) -> Result<Json<Paused>, ApiError> {
    source(&state, &name)?;
    set_paused(&state, Target::Source, &name, true).await
}

/// Sync a paused source again, from its checkpoint.
#[utoipa::path(post, path = "/v1/sources/{name}/resume", security(("adminToken" = [])),
    params(("name" = String, Path, description = "the source")),
    responses((status = 200, body = Paused), (status = 404, description = "no such source", body = ErrorBody)))]
async fn resume_source(_: Admin, State(state): State<AppState>, Param(name): Param<String>) -> Result<Json<Paused>, ApiError> {
    source(&state, &name)?;
    set_paused(&state, Target::Source, &name, false).await
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChangeList {
    /// Newest first.
    pub changes: Vec<Change>,
    /// Pass as `before` for the next (older) page; null on the last.
    pub next: Option<String>,
}

/// The change log, newest first, narrowed by any of the filters. With
/// `object_id` (and `object`), one object's whole history, each step with
/// the fields it changed (`previous_attributes`).
#[utoipa::path(get, path = "/v1/changes", security(("adminToken" = [])),
    params(
        ("source" = Option<String>, Query), ("object" = Option<String>, Query, description = "the object type"),
        ("object_id" = Option<String>, Query), ("op" = Option<String>, Query, description = "read, insert, update or delete"),
        ("type" = Option<String>, Query, description = "the event type"),
        ("since" = Option<String>, Query, description = "RFC 3339: committed at or after"),
        ("until" = Option<String>, Query, description = "RFC 3339: committed before"),
        ("before" = Option<String>, Query, description = "a change id: the page older than it"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "default 100"),
    ),
    responses((status = 200, body = ChangeList), (status = 400, description = "a filter that does not parse", body = ErrorBody)))]
async fn changes(
    _: Admin,
    State(state): State<AppState>,
    QueryParams(query): QueryParams<HashMap<String, String>>,
) -> Result<Json<ChangeList>, ApiError> {
    let filter = change_filter(&query).map_err(ApiError::BadRequest)?;
    let limit = limit(&query, 100, 1_000)?;
    let changes = state.store.find_changes(&filter, limit + 1).await.map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(page(changes, limit, |c| c.id.clone(), |changes, next| ChangeList { changes, next })))
}

/// The change log's filters from query parameters (the console's, the API's).
pub fn change_filter(query: &HashMap<String, String>) -> Result<ChangeFilter, String> {
    let text = |key: &str| query.get(key).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    let time = |key: &str| -> Result<Option<String>, String> {
        text(key)
            .map(|raw| {
                chrono::DateTime::parse_from_rfc3339(&raw)
                    .map(|t| crate::store::timestamp(t.with_timezone(&chrono::Utc)))
                    .map_err(|e| format!("{key} must be an RFC 3339 time, got '{raw}' ({e})"))
            })
            .transpose()
    };
    let before_seq = text("before")
        .map(|id| control::change_seq(&id).ok_or_else(|| format!("before must be a change id (chg_…), got '{id}'")))
        .transpose()?;
    if let Some(op) = text("op")
        && !["read", "insert", "update", "delete"].contains(&op.as_str())
    {
        return Err(format!("op must be read, insert, update or delete, got '{op}'"));
    }
    Ok(ChangeFilter {
        source: text("source"),
        object: text("object"),
        object_id: text("object_id"),
        op: text("op"),
        kind: text("type"),
        since: time("since")?,
        until: time("until")?,
        before_seq,
    })
}

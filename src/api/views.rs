//! What the API answers, as types. The OpenAPI document's schemas are
//! derived from these and the handlers serialize them, so the document and
//! the answers cannot drift apart.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

use crate::delivery::SinkSnapshot;
use crate::source::{Phase, ScopeView};
use crate::store::queues::App;
use crate::store::{Change, Role};

/// Every error of Tributary's own routes.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// `not_found`, `invalid_request`, `unauthorized`, `forbidden`,
    /// `conflict`, `too_large`, `rate_limited`, `timeout`,
    /// `method_not_allowed`, `upstream_error` or `internal_error`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub message: String,
}

/// Every error of the Stripe-compatible path, in Stripe's shape.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = StripeError)]
pub struct StripeErrorBody {
    pub error: StripeErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StripeErrorDetail {
    /// `invalid_request_error`, `idempotency_error` or `api_error`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub message: String,
    /// `resource_missing`, `idempotency_key_in_use`, `rate_limit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
    /// The parameter at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param: Option<&'static str>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Ok,
    Unhealthy,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: HealthStatus,
    /// Which source or sink is stuck on which store error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasons: Option<Vec<String>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Sources {
    pub sources: Vec<SourceView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SourceView {
    pub name: String,
    /// `stripe`, `window` or `event_queue`.
    pub kind: &'static str,
    pub role: Role,
    /// The least advanced phase of any account.
    pub phase: Phase,
    /// The platform's tail cursor.
    pub cursor: Option<String>,
    /// Age of the newest poll every account has applied; null until live.
    pub lag_ms: Option<u64>,
    /// Mirror rows per object type.
    pub objects: BTreeMap<String, u64>,
    /// The platform and every connected account.
    pub accounts: Vec<ScopeView>,
    pub last_error: Option<String>,
    /// Upstream events the source could not store, parked with their
    /// reason and body (`tributary parked`) while the rest flowed on.
    pub parked_events: u64,
    /// Held by an operator: not synced until it is resumed.
    pub paused: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Sinks {
    pub sinks: Vec<SinkView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SinkView {
    #[serde(flatten)]
    pub status: SinkSnapshot,
    /// Dead letters kept for this sink (all processes).
    pub dead_letters: u64,
    /// Changes committed but not yet delivered (exact up to 10,000), from
    /// this process's cursor, or the stored one while another runs the sink.
    pub lag_changes: Option<u64>,
    /// Age of the oldest undelivered change.
    pub lag_ms: Option<u64>,
    /// Held by an operator: nothing is delivered until it is resumed.
    pub paused: bool,
    /// A rewind asked for and not yet applied by the sink's owner.
    pub rewind_pending: bool,
}

/// A reconcile asked for.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReconcileAsked {
    pub source: String,
    #[schema(format = DateTime)]
    pub requested_at: String,
}

/// `/wait` answered: a poll that started after the call is applied.
#[derive(Debug, Serialize, ToSchema)]
pub struct Waited {
    pub source: String,
    pub waited_ms: u64,
}

/// A new app with its token, which is shown only here.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewAppToken {
    #[serde(flatten)]
    pub app: App,
    /// `trb_…`: shown once.
    pub token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Apps {
    pub apps: Vec<App>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Revoked {
    pub id: String,
    pub revoked: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Granted {
    pub app: String,
    pub account: String,
}

/// A queue or a subscription, deleted.
#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    pub code: String,
    pub deleted: bool,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum QueueStatus {
    Active,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Queue)]
pub struct QueueView {
    /// `q_…`
    pub code: String,
    pub name: String,
    pub status: QueueStatus,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Queues {
    pub queues: Vec<QueueView>,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Subscription)]
pub struct SubscriptionView {
    pub code: String,
    /// An event type, or a prefix ending in `*`.
    pub event_type: String,
    /// An account id, or `platform`.
    pub account: String,
    pub active: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Subscriptions {
    pub subscriptions: Vec<SubscriptionView>,
}

/// A pull's answer, serialized straight from the changes read (a payload's
/// stored JSON is copied, never parsed into a tree and printed again).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = PullResponse)]
pub struct PullView<'a> {
    pub events: Vec<EventView<'a>>,
    /// Send it with the next pull to acknowledge this batch; null when empty.
    pub ack_id: Option<String>,
    /// Events retention deleted before they were acknowledged, since the
    /// last pull.
    pub dropped: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Event)]
pub struct EventView<'a> {
    /// The change id: stable across redeliveries.
    pub id: &'a str,
    /// The account, or `platform`.
    pub account: &'a str,
    #[serde(rename = "type")]
    pub kind: &'a str,
    #[schema(format = DateTime)]
    pub created_at: &'a str,
    pub payload: &'a Change,
}

/// A Stripe list object answered from the mirror.
#[derive(Debug, Serialize, ToSchema)]
pub struct StripeList {
    /// Always `list`.
    #[schema(pattern = "^list$")]
    pub object: &'static str,
    /// Stripe objects as mirrored, newest first.
    #[schema(value_type = Vec<Object>)]
    pub data: Vec<serde_json::Value>,
    pub has_more: bool,
    /// The list's Stripe path (`/v1/customers`).
    pub url: String,
}

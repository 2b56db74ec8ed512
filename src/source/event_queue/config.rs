//! Configuration of an `event_queue` source, validated without I/O.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config::error::ConfigError;
use crate::source::declarative::{self, AuthConfig, Path, TimeFormat};
use crate::source::http;

/// Events one pull asks for at most (the upstream's own limit).
pub const MAX_BATCH: usize = 500;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventQueueConfig {
    /// Name used in table names (`{name}_{object}`) and change routing.
    pub name: String,
    /// Base URL of the platform.
    pub base_url: String,
    /// Environment variable holding a bearer token (never the token
    /// itself); used when there is no `auth`.
    #[serde(default = "default_api_key_env")]
    pub api_key_env: String,
    /// How requests authenticate (bearer, header, basic, query, login,
    /// OAuth2); absent: a bearer token from `api_key_env`.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// Headers sent with every request (not secrets: those go in `auth`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Path in the queue list's answer of the queues (`$`: the answer is a
    /// bare array, as Tiki's is).
    #[serde(default = "default_queues_path")]
    pub queues_path: Path,
    /// Path in the subscription list's answer
    /// (`GET {path_prefix}/queues/{code}/subscriptions`) of the
    /// subscriptions: they are listed before any is made, so none is made
    /// twice (each read as `event_type` and the account at `account_path`).
    /// An API without the list (404, 405) falls back to what the source
    /// remembers having made.
    #[serde(default = "default_subscriptions_path")]
    pub subscriptions_path: Path,
    /// Paths into each pulled event: its id, type, account (seller) and
    /// creation time.
    #[serde(default = "default_event_id_path")]
    pub event_id_path: Path,
    #[serde(default = "default_event_type_path")]
    pub event_type_path: Path,
    #[serde(default = "default_account_path")]
    pub account_path: Path,
    #[serde(default = "default_created_at_path")]
    pub created_at_path: Path,
    /// How the creation time is written (`rfc3339`; Tiki: `unix_ms`).
    #[serde(default = "default_created_at_format")]
    pub created_at_format: TimeFormat,
    /// Path in an event of the id of the object it is about.
    #[serde(default = "default_object_id_path")]
    pub object_id_path: Path,
    /// Per event type (a type, or a prefix ending in `*`): the object type
    /// it is about and where its id sits, where they differ from the
    /// payload's `object` (else the type's first word) and `object_id_path`
    /// (`{ "ORDER_*" = { object = "order", id_path = "payload.order_code" } }`).
    #[serde(default)]
    pub objects: BTreeMap<String, ObjectRule>,
    /// Path before `/queues` (`{path_prefix}/queues/{code}/events/pull`).
    #[serde(default = "default_path_prefix")]
    pub path_prefix: String,
    /// Name of the upstream queue to use (created when missing); default:
    /// the source's name.
    #[serde(default)]
    pub queue: Option<String>,
    /// Event types to subscribe the queue to (`order.created`, …).
    pub event_types: Vec<String>,
    /// Accounts to subscribe for, named in each subscription's body
    /// (`{"event_type","account"}`) made with the source's own token;
    /// empty: every account. Not with `sellers`.
    #[serde(default)]
    pub accounts: Vec<String>,
    /// A public app's sellers, each by the id its events carry at
    /// `account_path` (Tiki: the `sid`), with the fields of its own token
    /// laid over `seller_auth` (`{ refresh_token_env = "TIKI_SELLER_A" }`).
    /// Each seller's subscriptions are made with its own token, and its
    /// events' objects fetched with it.
    #[serde(default)]
    pub sellers: BTreeMap<String, toml::Table>,
    /// What every seller's token shares (Tiki: `oauth2_refresh_token` at
    /// the token endpoint with the app's client id and secret).
    #[serde(default)]
    pub seller_auth: Option<toml::Table>,
    /// Events per pull, sent as `limit`; absent: not sent (the upstream's
    /// own batch size) and a pull that brought events is followed by the
    /// next at once.
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Acknowledge each batch with a request of its own
    /// (`POST {path_prefix}{ack_path} {"ack_id"}`, `{code}` the queue's
    /// code) instead of with the next pull.
    #[serde(default)]
    pub ack_path: Option<String>,
    /// Tries of an object's fetch (`objects.*.fetch`) before its event is
    /// parked.
    #[serde(default = "default_fetch_attempts")]
    pub fetch_attempts: u32,
    /// Pause after a pull that returned less than a full batch (a full batch
    /// is followed by the next pull at once).
    #[serde(default = "default_poll_interval_secs")]
    pub poll_interval_secs: u64,
    /// How long event ids are remembered to recognise redelivered batches.
    #[serde(default = "default_retention_days")]
    pub retention_days: u64,
    /// Request budget (token bucket).
    #[serde(default = "http::default_polling_rate_limit")]
    pub rate_limit_per_sec: u32,
    /// Longest pause between retries of a failing request.
    #[serde(default = "http::default_retry_max_backoff_ms")]
    pub retry_max_backoff_ms: u64,
    /// Timeout of one HTTP request.
    #[serde(default = "http::default_request_timeout_ms")]
    pub request_timeout_ms: u64,
}

/// The object an event type is about.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectRule {
    /// The object type (its mirror table is `{name}_{object}`).
    #[serde(default)]
    pub object: Option<String>,
    /// Path in the event of the object's id.
    #[serde(default)]
    pub id_path: Option<Path>,
    /// Fetch the whole object instead of storing the event's payload:
    /// the path of a GET, `{id}` the object's id
    /// (`/integration/v2/orders/{id}`); empty: none. It is sent with the
    /// event's seller's token where there is one.
    #[serde(default)]
    pub fetch: Option<String>,
    /// Where the fetched answer holds the object (default: the answer itself).
    #[serde(default)]
    pub fetch_path: Option<Path>,
}

impl ObjectRule {
    /// The fetch path of an object with this id, if the rule fetches.
    pub fn fetch_path_of(&self, id: &str) -> Option<String> {
        let template = self.fetch.as_deref().filter(|f| !f.is_empty())?;
        Some(template.replace("{id}", &crate::source::http::encode(id)))
    }
}

fn default_queues_path() -> Path {
    Path::field("queues")
}
fn default_subscriptions_path() -> Path {
    Path::field("$")
}
fn default_event_id_path() -> Path {
    Path::field("id")
}
fn default_event_type_path() -> Path {
    Path::field("type")
}
fn default_account_path() -> Path {
    Path::field("account")
}
fn default_created_at_path() -> Path {
    Path::field("created_at")
}
fn default_created_at_format() -> TimeFormat {
    TimeFormat::Rfc3339
}
fn default_object_id_path() -> Path {
    "payload.id".parse().unwrap_or_else(|_| Path::field("id"))
}

fn default_api_key_env() -> String {
    "EVENT_QUEUE_API_KEY".into()
}
fn default_path_prefix() -> String {
    "/integration/v1".into()
}
fn default_fetch_attempts() -> u32 {
    5
}
fn default_poll_interval_secs() -> u64 {
    60
}
fn default_retention_days() -> u64 {
    7
}

declarative::connection_of!(EventQueueConfig);

impl EventQueueConfig {
    /// The rule of an event type: the exact type first, else the longest
    /// matching prefix (`ORDER_*`).
    pub fn rule(&self, kind: &str) -> Option<&ObjectRule> {
        if let Some(rule) = self.objects.get(kind) {
            return Some(rule);
        }
        let prefixed = self.objects.iter().filter_map(|(pattern, rule)| Some((pattern.strip_suffix('*')?, rule)));
        prefixed.filter(|(prefix, _)| kind.starts_with(prefix)).max_by_key(|(prefix, _)| prefix.len()).map(|(_, rule)| rule)
    }

    /// The upstream queue's name.
    pub fn queue_name(&self) -> &str {
        self.queue.as_deref().unwrap_or(&self.name)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(format!("source '{}': {msg}", self.name)));
        if let Err(reason) = self.connection().validate(&declarative::Paginator::None) {
            return invalid(reason);
        }
        if let Err(reason) = self.seller_auths() {
            return invalid(reason);
        }
        if !self.sellers.is_empty() && !self.accounts.is_empty() {
            return invalid("accounts and sellers: each seller's token subscribes its own events; leave accounts out".into());
        }
        if let Some(path) = &self.ack_path
            && !path.starts_with('/')
        {
            return invalid(format!("ack_path '{path}' must start with /"));
        }
        if self.fetch_attempts == 0 {
            return invalid("fetch_attempts must be at least 1".into());
        }
        for (pattern, rule) in &self.objects {
            if let Some(fetch) = rule.fetch.as_deref().filter(|f| !f.is_empty())
                && (!fetch.starts_with('/') || !fetch.contains("{id}"))
            {
                return invalid(format!("objects.{pattern}.fetch '{fetch}' must start with / and hold {{id}}"));
            }
            if pattern.is_empty() || pattern.trim_end_matches('*').contains('*') {
                return invalid(format!("objects: '{pattern}' is not an event type or a prefix ending in *"));
            }
            if let Some(object) = &rule.object
                && let Err(e) = crate::store::ident::mirror_table(&self.name, object)
            {
                return invalid(format!("objects.{pattern}.object '{object}': {e}"));
            }
        }
        if !self.path_prefix.starts_with('/') {
            return invalid(format!("path_prefix '{}' must start with /", self.path_prefix));
        }
        if self.event_types.is_empty() || self.event_types.iter().any(|t| t.trim().is_empty()) {
            return invalid("event_types must name at least one event type".into());
        }
        if self.batch_size.is_some_and(|size| size == 0 || size > MAX_BATCH) {
            return invalid(format!("batch_size must be 1 to {MAX_BATCH}"));
        }
        if self.poll_interval_secs == 0 || self.retention_days == 0 {
            return invalid("poll_interval_secs and retention_days must be above 0".into());
        }
        Ok(())
    }

    /// Every secret the source needs is in the environment.
    pub fn check_env(&self) -> Result<(), ConfigError> {
        self.connection().check_env()?;
        for (sid, auth) in self.seller_auths().map_err(ConfigError::Invalid)? {
            auth.check_env(&format!("sources.{}.sellers.{sid}", self.name))?;
        }
        Ok(())
    }

    /// Each seller's auth: its own fields laid over `seller_auth`.
    pub fn seller_auths(&self) -> Result<Vec<(String, AuthConfig)>, String> {
        self.sellers
            .iter()
            .map(|(sid, own)| {
                let field = format!("sources.{}.sellers.{sid}", self.name);
                if sid.trim().is_empty() {
                    return Err(format!("sources.{}.sellers: a seller's id must not be empty", self.name));
                }
                let table = declarative::preset::merge(self.seller_auth.clone().unwrap_or_default(), own.clone());
                let auth = toml::Value::Table(table)
                    .try_into::<AuthConfig>()
                    .map_err(|e| format!("{field} (over seller_auth): {}", e.message().trim()))?;
                auth.validate(&field)?;
                Ok((sid.clone(), auth))
            })
            .collect()
    }
}

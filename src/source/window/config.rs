//! Configuration of a `window` source, validated without I/O.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config::error::ConfigError;
use crate::source::declarative::{self, AuthConfig, Paginator, Path, TimeFormat};
use crate::source::http;
use crate::store::ident;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// Name used in table names (`{name}_{object}`) and change routing.
    pub name: String,
    /// Base URL of the API.
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
    /// Path of the window query.
    #[serde(default = "default_path")]
    pub path: String,
    /// Query parameters sent with every window request
    /// (`{ unpublished = "true" }`).
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Query parameter names of the window's start and end.
    #[serde(default = "default_start_param")]
    pub start_param: String,
    #[serde(default = "default_end_param")]
    pub end_param: String,
    /// How the start and end are written: `date` (the first and last day)
    /// or a time format (`rfc3339`, …: the first and last second).
    #[serde(default = "default_param_format")]
    pub param_format: TimeFormat,
    /// Longest span one request asks for, in days: a longer window is read
    /// in several requests (0: one request).
    #[serde(default)]
    pub max_span_days: u32,
    /// How the answer is paged (`none`: one answer holds the window).
    #[serde(default)]
    pub paginator: Paginator,
    /// Path in the answer of the item list (`shifts`, `data.items`, `$`).
    #[serde(default = "default_items_path", alias = "items_field")]
    pub items_path: Path,
    /// Object type of the items: the mirror table is `{name}_{object}`.
    #[serde(default = "default_object")]
    pub object: String,
    /// Path in an item of its id (a string or a number).
    #[serde(default = "default_id_path", alias = "id_field")]
    pub id_path: Path,
    /// Path in an item of the time that places it on a day.
    #[serde(default = "default_time_path", alias = "time_field")]
    pub time_path: Path,
    /// How that time is written (`rfc3339`, `rfc2822`, `unix_s`, `unix_ms`,
    /// `date` or a strftime pattern); absent: RFC 3339 or `YYYY-MM-DD`.
    #[serde(default)]
    pub time_format: Option<TimeFormat>,
    /// Related objects the answer side-loads, each mirrored in its own
    /// table: object type to path (`{ user = "users" }`). They are
    /// upserted as they come and never deleted.
    #[serde(default)]
    pub sideloads: BTreeMap<String, Path>,
    /// Path in a side-loaded object of its id.
    #[serde(default = "default_id_path")]
    pub sideload_id_path: Path,
    /// Path in the answer of the ids of items deleted within the window
    /// (WhenIWork's `deleted_ids` with `deleted=true`): deleted here too.
    #[serde(default)]
    pub deleted_ids_path: Option<Path>,
    /// Pause between runs, counted from the end of the previous run.
    #[serde(default = "default_sleep_period_secs")]
    pub sleep_period_secs: u64,
    /// Days before today the window starts.
    #[serde(default = "default_days_prior")]
    pub days_prior: u32,
    /// Days after today the window ends.
    #[serde(default = "default_days_ahead")]
    pub days_ahead: u32,
    /// IANA time zone that decides "today" and an item's day (`UTC`, `Europe/Amsterdam`).
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// Delete mirror rows of items that vanished from a window that still
    /// covers their day (every page and span of the window read first).
    #[serde(default = "crate::config::default_true")]
    pub delete_vanished: bool,
    /// Keep fingerprints in Redis (`redis://…`) instead of the store.
    #[serde(default)]
    pub dedupe_url: Option<String>,
    /// A fingerprint older than this counts as unknown: the item is emitted
    /// again (`op = "read"` when unchanged).
    #[serde(default = "default_expire_secs")]
    pub expire_secs: u64,
    /// Request budget (token bucket).
    #[serde(default = "http::default_polling_rate_limit")]
    pub rate_limit_per_sec: u32,
    /// Longest pause between retries of a failing request or run.
    #[serde(default = "http::default_retry_max_backoff_ms")]
    pub retry_max_backoff_ms: u64,
    /// Timeout of one HTTP request (a window can be large).
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
}

fn default_api_key_env() -> String {
    "WINDOW_API_KEY".into()
}
fn default_path() -> String {
    "/v2/shifts".into()
}
fn default_start_param() -> String {
    "start".into()
}
fn default_end_param() -> String {
    "end".into()
}
fn default_items_path() -> Path {
    Path::field("shifts")
}
fn default_param_format() -> TimeFormat {
    TimeFormat::Date
}
fn default_object() -> String {
    "shift".into()
}
fn default_id_path() -> Path {
    Path::field("id")
}
fn default_time_path() -> Path {
    Path::field("start")
}
fn default_sleep_period_secs() -> u64 {
    300
}
fn default_days_prior() -> u32 {
    7
}
fn default_days_ahead() -> u32 {
    28
}
fn default_timezone() -> String {
    "UTC".into()
}
fn default_expire_secs() -> u64 {
    604_800
}
fn default_request_timeout_ms() -> u64 {
    60_000
}

declarative::connection_of!(WindowConfig);

impl WindowConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(format!("source '{}': {msg}", self.name)));
        if let Err(reason) = self.connection().validate(&self.paginator) {
            return invalid(reason);
        }
        for object in std::iter::once(&self.object).chain(self.sideloads.keys()) {
            if let Err(e) = ident::mirror_table(&self.name, object) {
                return invalid(format!("object '{object}': {e}"));
            }
        }
        if self.sideloads.contains_key(&self.object) {
            return invalid(format!("sideloads: '{}' is the items' own object type", self.object));
        }
        if self.start_param.is_empty() || self.end_param.is_empty() || self.start_param == self.end_param {
            return invalid("start_param and end_param must be two different names".into());
        }
        if !self.path.starts_with('/') {
            return invalid(format!("path '{}' must start with /", self.path));
        }
        if self.sleep_period_secs == 0 || self.expire_secs == 0 {
            return invalid("sleep_period_secs and expire_secs must be above 0".into());
        }
        if let Err(e) = self.timezone() {
            return invalid(e);
        }
        if let Some(url) = &self.dedupe_url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            return invalid("dedupe_url must be redis://… or rediss://…".into());
        }
        Ok(())
    }

    pub fn timezone(&self) -> Result<chrono_tz::Tz, String> {
        self.timezone.parse().map_err(|_| format!("timezone '{}' is not an IANA time zone (e.g. UTC, Europe/Amsterdam)", self.timezone))
    }

    /// Every secret the source needs is in the environment.
    pub fn check_env(&self) -> Result<(), ConfigError> {
        self.connection().check_env()
    }
}

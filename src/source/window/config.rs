//! Configuration of a `window` source, validated without I/O.

use serde::Deserialize;

use crate::config::error::ConfigError;
use crate::source::http::{self, ClientOptions};
use crate::store::ident;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// Name used in table names (`{name}_{object}`) and change routing.
    pub name: String,
    /// Base URL of the API.
    pub base_url: String,
    /// Environment variable holding the bearer token (never the token itself).
    #[serde(default = "default_api_key_env")]
    pub api_key_env: String,
    /// Path of the window query; `start` and `end` are added as days.
    #[serde(default = "default_path")]
    pub path: String,
    /// Query parameter names of the window's first and last day.
    #[serde(default = "default_start_param")]
    pub start_param: String,
    #[serde(default = "default_end_param")]
    pub end_param: String,
    /// Field of the response holding the item list (`{"shifts":[…]}`).
    #[serde(default = "default_items_field")]
    pub items_field: String,
    /// Object type of the items: the mirror table is `{name}_{object}`.
    #[serde(default = "default_object")]
    pub object: String,
    /// Field of an item holding its id (a string or a number).
    #[serde(default = "default_id_field")]
    pub id_field: String,
    /// Field of an item holding the time that places it on a day (RFC 3339
    /// or `YYYY-MM-DD`).
    #[serde(default = "default_time_field")]
    pub time_field: String,
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
    /// covers their day.
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
fn default_items_field() -> String {
    "shifts".into()
}
fn default_object() -> String {
    "shift".into()
}
fn default_id_field() -> String {
    "id".into()
}
fn default_time_field() -> String {
    "start".into()
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

impl WindowConfig {
    pub fn client_options(&self) -> ClientOptions {
        ClientOptions::sequential(&self.name, &self.base_url, self.rate_limit_per_sec, self.request_timeout_ms, self.retry_max_backoff_ms)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(format!("source '{}': {msg}", self.name)));
        if let Err(reason) = self.client_options().validate() {
            return invalid(reason);
        }
        if let Err(e) = ident::mirror_table(&self.name, &self.object) {
            return invalid(format!("object: {e}"));
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

    pub fn api_key(&self) -> Result<String, ConfigError> {
        crate::config::error::secret(&self.api_key_env, &format!("sources.{}.api_key_env", self.name))
    }
}

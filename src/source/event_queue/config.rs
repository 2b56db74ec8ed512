//! Configuration of an `event_queue` source, validated without I/O.

use serde::Deserialize;

use crate::config::error::ConfigError;
use crate::source::http::{self, ClientOptions};

/// Events one pull asks for at most (the upstream's own limit).
pub const MAX_BATCH: usize = 500;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventQueueConfig {
    /// Name used in table names (`{name}_{object}`) and change routing.
    pub name: String,
    /// Base URL of the platform.
    pub base_url: String,
    /// Environment variable holding the bearer token (never the token itself).
    #[serde(default = "default_api_key_env")]
    pub api_key_env: String,
    /// Path before `/queues` (`{path_prefix}/queues/{code}/events/pull`).
    #[serde(default = "default_path_prefix")]
    pub path_prefix: String,
    /// Name of the upstream queue to use (created when missing); default:
    /// the source's name.
    #[serde(default)]
    pub queue: Option<String>,
    /// Event types to subscribe the queue to (`order.created`, …).
    pub event_types: Vec<String>,
    /// Accounts (sellers) to subscribe for; empty: every account.
    #[serde(default)]
    pub accounts: Vec<String>,
    /// Events per pull.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
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

fn default_api_key_env() -> String {
    "EVENT_QUEUE_API_KEY".into()
}
fn default_path_prefix() -> String {
    "/integration/v1".into()
}
fn default_batch_size() -> usize {
    100
}
fn default_poll_interval_secs() -> u64 {
    60
}
fn default_retention_days() -> u64 {
    7
}

impl EventQueueConfig {
    pub fn client_options(&self) -> ClientOptions {
        ClientOptions::sequential(&self.name, &self.base_url, self.rate_limit_per_sec, self.request_timeout_ms, self.retry_max_backoff_ms)
    }

    /// The upstream queue's name.
    pub fn queue_name(&self) -> &str {
        self.queue.as_deref().unwrap_or(&self.name)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(format!("source '{}': {msg}", self.name)));
        if let Err(reason) = self.client_options().validate() {
            return invalid(reason);
        }
        if !self.path_prefix.starts_with('/') {
            return invalid(format!("path_prefix '{}' must start with /", self.path_prefix));
        }
        if self.event_types.is_empty() || self.event_types.iter().any(|t| t.trim().is_empty()) {
            return invalid("event_types must name at least one event type".into());
        }
        if self.batch_size == 0 || self.batch_size > MAX_BATCH {
            return invalid(format!("batch_size must be 1 to {MAX_BATCH}"));
        }
        if self.poll_interval_secs == 0 || self.retention_days == 0 {
            return invalid("poll_interval_secs and retention_days must be above 0".into());
        }
        Ok(())
    }

    pub fn api_key(&self) -> Result<String, ConfigError> {
        crate::config::error::secret(&self.api_key_env, &format!("sources.{}.api_key_env", self.name))
    }
}

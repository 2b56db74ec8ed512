//! `kind = "redis"`: which server and streams.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// The server (`redis://host:6379`).
    pub url: String,
    /// Stream key template: `{source}`, `{object}`, `{account}`.
    #[serde(default = "default_stream")]
    pub stream: String,
    /// Trim each stream to about this many entries (`MAXLEN ~`); absent:
    /// never trimmed.
    #[serde(default)]
    pub maxlen: Option<u64>,
}

fn default_stream() -> String {
    "tributary:{source}:{object}".into()
}

impl RedisConfig {
    pub fn validate(&self) -> Result<(), String> {
        redis::Client::open(self.url.as_str()).map(|_| ()).map_err(|e| format!("url '{}': {e}", self.url))
    }
}

//! `kind = "webhook"`: where to POST and how to sign.

use serde::Deserialize;

use crate::config::error::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The endpoint every change is POSTed to (http or https).
    pub url: String,
    /// Env var holding the `whsec_…` signing secret (Standard Webhooks).
    pub secret_env: String,
    /// Timeout of one POST.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    10_000
}

impl WebhookConfig {
    pub fn validate(&self) -> Result<(), String> {
        match reqwest::Url::parse(&self.url) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.host_str().is_some_and(|h| !h.is_empty()) => {}
            _ => return Err(format!("url '{}' is not an http(s) URL with a host", self.url)),
        }
        if self.timeout_ms == 0 {
            return Err("timeout_ms must be above 0".into());
        }
        Ok(())
    }

    /// The signing key, from the env var `secret_env` names: present and a
    /// `whsec_…` (or bare) base64 secret, or an error naming both.
    pub fn key(&self, sink: &str) -> Result<Vec<u8>, ConfigError> {
        let secret = crate::config::error::secret(&self.secret_env, &format!("sinks.{sink}.secret_env"))?;
        super::decode_secret(&secret).map_err(|e| ConfigError::Invalid(format!("sink '{sink}': {e} (env var {})", self.secret_env)))
    }
}

//! `kind = "nats"`: which server, subjects and JetStream stream.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// The server (`nats://host:4222`).
    pub url: String,
    /// Subject template: `{source}`, `{object}`, `{account}`.
    #[serde(default = "default_subject")]
    pub subject: String,
    /// The JetStream stream holding the subjects (created if missing).
    #[serde(default = "default_jetstream")]
    pub jetstream: String,
}

fn default_subject() -> String {
    "tributary.{source}.{object}".into()
}

fn default_jetstream() -> String {
    "tributary".into()
}

impl NatsConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.url.trim().is_empty() || self.jetstream.trim().is_empty() || self.subject.trim().is_empty() {
            return Err("url, subject and jetstream must not be empty".into());
        }
        Ok(())
    }
}

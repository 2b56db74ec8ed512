//! `[[sinks]]`: one table per sink. Common keys (`name`, `kind`, `filter`,
//! batching and retries) plus the keys of its kind; keys of other kinds are
//! rejected, so a typo never passes silently.

use serde::Deserialize;

use crate::config::ConfigError;
use crate::store::Change;
use crate::store::ident;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    Webhook,
    Redis,
    Nats,
    Kafka,
}

impl SinkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::Webhook => "webhook",
            SinkKind::Redis => "redis",
            SinkKind::Nats => "nats",
            SinkKind::Kafka => "kafka",
        }
    }
}

/// Which changes a sink receives; every list empty or absent means all.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Source names.
    #[serde(default)]
    pub sources: Vec<String>,
    /// Object types (`customer`, `invoice`).
    #[serde(default)]
    pub objects: Vec<String>,
    /// Event types; a trailing `*` matches a prefix (`customer.*`, `*`).
    #[serde(default)]
    pub types: Vec<String>,
}

impl Filter {
    pub fn matches(&self, change: &Change) -> bool {
        let listed = |list: &[String], value: &str| list.is_empty() || list.iter().any(|x| x == value);
        let typed = self.types.is_empty()
            || self.types.iter().any(|t| match t.strip_suffix('*') {
                Some(prefix) => change.kind.starts_with(prefix),
                None => *t == change.kind,
            });
        listed(&self.sources, &change.source) && listed(&self.objects, &change.object) && typed
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Names the sink's cursor and its dead letters.
    pub name: String,
    pub kind: SinkKind,
    #[serde(default)]
    pub filter: Filter,
    /// Changes read and sent per batch.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Tries per batch before the changes are sent one by one and those
    /// still failing are parked as dead letters; absent: retry forever.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Longest pause between retries.
    #[serde(default = "default_retry_max_backoff_ms")]
    pub retry_max_backoff_ms: u64,
    /// webhook: endpoint; redis, nats: server URL.
    #[serde(default)]
    pub url: Option<String>,
    /// webhook: env var holding the `whsec_…` signing secret.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// webhook: timeout of one POST; kafka: how long a record may wait for
    /// the broker's acknowledgement before the batch is retried.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// redis: stream key template (`tributary:{source}:{object}`).
    #[serde(default)]
    pub stream: Option<String>,
    /// redis: trim each stream to about this many entries (`MAXLEN ~`).
    #[serde(default)]
    pub maxlen: Option<u64>,
    /// nats: subject template (`tributary.{source}.{object}`).
    #[serde(default)]
    pub subject: Option<String>,
    /// nats: JetStream stream holding the subjects (created if missing).
    #[serde(default)]
    pub jetstream: Option<String>,
    /// kafka: bootstrap servers (`host:port,host:port`).
    #[serde(default)]
    pub brokers: Option<String>,
    /// kafka: topic template (`tributary.{source}.{object}`).
    #[serde(default)]
    pub topic: Option<String>,
    /// kafka: message encoding, `json` (default) or `avro` (Confluent wire
    /// format, schemas in `schema_registry_url`).
    #[serde(default)]
    pub format: Option<String>,
    /// kafka with `format = "avro"`: the Confluent schema registry's URL;
    /// schemas are registered under the subject `{topic}-value`.
    #[serde(default)]
    pub schema_registry_url: Option<String>,
    /// kafka with `format = "avro"`: the Avro schema (JSON text) of the
    /// `data` of an object type; types not listed get a schema derived from
    /// their objects.
    #[serde(default)]
    pub avro_schemas: Option<std::collections::BTreeMap<String, String>>,
}

fn default_batch_size() -> usize {
    500
}

fn default_retry_max_backoff_ms() -> u64 {
    30_000
}

impl SinkConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(format!("sink '{}': {msg}", self.name)));
        if let Err(e) = ident::source_name(&self.name) {
            return invalid(e.to_string());
        }
        if self.batch_size == 0 || self.retry_max_backoff_ms == 0 || self.max_attempts == Some(0) {
            return invalid("batch_size, retry_max_backoff_ms and max_attempts must be above 0".into());
        }
        let allowed: &[&str] = match self.kind {
            SinkKind::Webhook => &["url", "secret_env", "timeout_ms"],
            SinkKind::Redis => &["url", "stream", "maxlen"],
            SinkKind::Nats => &["url", "subject", "jetstream"],
            SinkKind::Kafka => &["brokers", "topic", "timeout_ms", "format", "schema_registry_url", "avro_schemas"],
        };
        let given = [
            ("url", self.url.is_some()),
            ("secret_env", self.secret_env.is_some()),
            ("timeout_ms", self.timeout_ms.is_some()),
            ("stream", self.stream.is_some()),
            ("maxlen", self.maxlen.is_some()),
            ("subject", self.subject.is_some()),
            ("jetstream", self.jetstream.is_some()),
            ("brokers", self.brokers.is_some()),
            ("topic", self.topic.is_some()),
            ("format", self.format.is_some()),
            ("schema_registry_url", self.schema_registry_url.is_some()),
            ("avro_schemas", self.avro_schemas.is_some()),
        ];
        if let Some((key, _)) = given.iter().find(|(key, set)| *set && !allowed.contains(key)) {
            return invalid(format!("'{key}' does not apply to a {} sink", self.kind.as_str()));
        }
        let required: &[&str] = match self.kind {
            SinkKind::Webhook => &["url", "secret_env"],
            SinkKind::Redis | SinkKind::Nats => &["url"],
            SinkKind::Kafka => &["brokers"],
        };
        if let Some(key) = required.iter().find(|key| !given.iter().any(|(k, set)| k == *key && *set)) {
            return invalid(format!("'{key}' is required for a {} sink", self.kind.as_str()));
        }
        if self.kind == SinkKind::Webhook {
            let url = self.url.as_deref().unwrap_or_default();
            match reqwest::Url::parse(url) {
                Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.host_str().is_some_and(|h| !h.is_empty()) => {}
                _ => return invalid(format!("url '{url}' is not an http(s) URL with a host")),
            }
        }
        self.validate_format()
    }

    /// `format`, and for Avro its registry, topic and given schemas.
    fn validate_format(&self) -> Result<(), ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(format!("sink '{}': {msg}", self.name)));
        match self.format.as_deref() {
            None | Some("json") => {
                if self.schema_registry_url.is_some() || self.avro_schemas.is_some() {
                    return invalid("schema_registry_url and avro_schemas need format = \"avro\"".into());
                }
                Ok(())
            }
            Some("avro") => {
                match self.schema_registry_url.as_deref().map(reqwest::Url::parse) {
                    Some(Ok(url)) if matches!(url.scheme(), "http" | "https") => {}
                    Some(_) => return invalid("schema_registry_url is not an http(s) URL".into()),
                    None => return invalid("format = \"avro\" needs schema_registry_url".into()),
                }
                if !self.topic.as_deref().unwrap_or("{object}").contains("{object}") {
                    return invalid("with format = \"avro\" the topic must contain {object}: one subject per object type".into());
                }
                for (object, text) in self.avro_schemas.iter().flatten() {
                    if let Err(e) = apache_avro::Schema::parse_str(text) {
                        return invalid(format!("avro_schemas.{object}: {e}"));
                    }
                }
                Ok(())
            }
            Some(other) => invalid(format!("format '{other}': use \"json\" or \"avro\"")),
        }
    }

    /// Avro schemas given in config, parsed (validated already).
    pub fn given_schemas(&self) -> std::collections::HashMap<String, serde_json::Value> {
        self.avro_schemas.iter().flatten().filter_map(|(object, text)| Some((object.clone(), serde_json::from_str(text).ok()?))).collect()
    }

    /// The webhook secret's bytes, from the env var `secret_env` names.
    pub fn secret(&self) -> Result<String, ConfigError> {
        crate::config::secret(self.secret_env.as_deref().unwrap_or_default(), &format!("sinks.{}.secret_env", self.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kafka(extra: &str) -> Result<(), ConfigError> {
        let text = format!("name = \"k\"\nkind = \"kafka\"\nbrokers = \"127.0.0.1:9092\"\n{extra}");
        toml::from_str::<SinkConfig>(&text).expect("parses").validate()
    }

    #[test]
    fn avro_needs_a_registry_a_topic_per_object_and_valid_schemas() {
        let registry = "schema_registry_url = \"http://127.0.0.1:8081\"";
        assert!(kafka("").is_ok());
        assert!(kafka("format = \"json\"").is_ok());
        assert!(kafka(&format!("format = \"avro\"\n{registry}")).is_ok());
        let schema = r#"avro_schemas = { shift = '{"type":"record","name":"shift","fields":[{"name":"id","type":"string"}]}' }"#;
        assert!(kafka(&format!("format = \"avro\"\n{registry}\n{schema}")).is_ok());
        for (extra, expected) in [
            ("format = \"protobuf\"".to_string(), "format 'protobuf'"),
            ("format = \"avro\"".to_string(), "needs schema_registry_url"),
            ("format = \"avro\"\nschema_registry_url = \"ftp://x\"".to_string(), "not an http(s) URL"),
            (format!("format = \"avro\"\n{registry}\ntopic = \"all-changes\""), "must contain {object}"),
            (format!("format = \"avro\"\n{registry}\navro_schemas = {{ shift = '{{\"type\":\"rekord\"}}' }}"), "avro_schemas.shift"),
            (registry.to_string(), "need format = \"avro\""),
        ] {
            let error = kafka(&extra).unwrap_err().to_string();
            assert!(error.contains(expected), "{extra}: {error}");
        }
    }
}

//! `[[sinks]]`: one table per sink. Common keys (`name`, `kind`, `filter`,
//! batching and retries) plus the typed keys of its kind (each kind's
//! `config.rs`); keys of other kinds are rejected, so a typo never passes
//! silently.

use serde::Deserialize;

use super::kafka::KafkaConfig;
use super::nats::NatsConfig;
use super::redis::RedisConfig;
use super::webhook::WebhookConfig;
use crate::config::error::ConfigError;
use crate::store::Change;
use crate::store::ident;

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

/// One `[[sinks]]` entry: the keys every sink has, and (flattened, tagged by
/// `kind`) the typed keys of its kind.
#[derive(Debug, Clone, Deserialize)]
pub struct SinkConfig {
    /// Names the sink's cursor and its dead letters.
    pub name: String,
    #[serde(default)]
    pub filter: Filter,
    /// Changes read and sent per batch.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Tries per batch before the changes are sent one by one and those
    /// still failing are parked as dead letters; absent: retry forever (a
    /// change refused for good is parked at once either way).
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Longest pause between retries.
    #[serde(default = "default_retry_max_backoff_ms")]
    pub retry_max_backoff_ms: u64,
    /// The kind and its keys; keys of another kind are refused, so a typo
    /// never passes silently.
    #[serde(flatten)]
    pub kind: SinkKind,
}

/// A sink's kind with its typed config.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SinkKind {
    Webhook(WebhookConfig),
    Redis(RedisConfig),
    Nats(NatsConfig),
    Kafka(KafkaConfig),
}

impl SinkKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            SinkKind::Webhook(_) => "webhook",
            SinkKind::Redis(_) => "redis",
            SinkKind::Nats(_) => "nats",
            SinkKind::Kafka(_) => "kafka",
        }
    }
}

fn default_batch_size() -> usize {
    500
}

fn default_retry_max_backoff_ms() -> u64 {
    30_000
}

impl SinkConfig {
    /// Every check that needs no I/O, once, before anything starts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(format!("sink '{}': {msg}", self.name)));
        if let Err(e) = ident::source_name(&self.name) {
            return invalid(e.to_string());
        }
        if self.batch_size == 0 || self.retry_max_backoff_ms == 0 || self.max_attempts == Some(0) {
            return invalid("batch_size, retry_max_backoff_ms and max_attempts must be above 0".into());
        }
        let checked = match &self.kind {
            SinkKind::Webhook(c) => c.validate(),
            SinkKind::Redis(c) => c.validate(),
            SinkKind::Nats(c) => c.validate(),
            SinkKind::Kafka(c) => c.validate(),
        };
        checked.or_else(invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(text: &str) -> Result<SinkConfig, String> {
        let config: SinkConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    fn kafka(extra: &str) -> Result<SinkConfig, String> {
        sink(&format!("name = \"k\"\nkind = \"kafka\"\nbrokers = \"127.0.0.1:9092\"\n{extra}"))
    }

    #[test]
    fn defaults_live_in_the_config() {
        let SinkKind::Kafka(k) = kafka("").unwrap().kind else { panic!("kafka") };
        assert_eq!((k.topic.as_str(), k.partitions, k.replication_factor, k.timeout_ms), ("tributary.{source}.{object}", 1, 1, 10_000));
        let SinkKind::Kafka(k) = kafka("partitions = 6\nreplication_factor = 3").unwrap().kind else { panic!("kafka") };
        assert_eq!((k.partitions, k.replication_factor), (6, 3));
        let redis = sink("name = \"r\"\nkind = \"redis\"\nurl = \"redis://127.0.0.1\"").unwrap();
        let SinkKind::Redis(r) = redis.kind else { panic!("redis") };
        assert_eq!((r.stream.as_str(), r.maxlen), ("tributary:{source}:{object}", None));
        assert_eq!(redis.batch_size, 500);
    }

    #[test]
    fn typos_and_keys_of_another_kind_are_refused() {
        for (text, expected) in [
            ("name = \"k\"\nkind = \"kafka\"\nbrokers = \"b:1\"\nstream = \"s\"", "stream"),
            ("name = \"k\"\nkind = \"kafka\"\nbrokers = \"b:1\"\nbatch_sise = 5", "batch_sise"),
            ("name = \"w\"\nkind = \"webhook\"\nurl = \"http://x\"", "secret_env"),
            ("name = \"k\"\nkind = \"kafka\"", "brokers"),
            ("name = \"k\"\nkind = \"kafka\"\nbrokers = \"b:1\"\npartitions = 0", "partitions"),
            ("name = \"x\"\nkind = \"carrier_pigeon\"", "carrier_pigeon"),
        ] {
            let error = sink(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
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
            ("format = \"protobuf\"".to_string(), "protobuf"),
            ("format = \"avro\"".to_string(), "needs schema_registry_url"),
            ("format = \"avro\"\nschema_registry_url = \"ftp://x\"".to_string(), "not an http(s) URL"),
            (format!("format = \"avro\"\n{registry}\ntopic = \"all-changes\""), "must contain {object}"),
            (format!("format = \"avro\"\n{registry}\navro_schemas = {{ shift = '{{\"type\":\"rekord\"}}' }}"), "avro_schemas.shift"),
            (registry.to_string(), "need format = \"avro\""),
        ] {
            let error = kafka(&extra).unwrap_err();
            assert!(error.contains(expected), "{extra}: {error}");
        }
    }
}

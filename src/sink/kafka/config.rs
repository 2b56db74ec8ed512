//! `kind = "kafka"`: brokers, topics, encoding.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::sink::encoding::Format;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers (`host:port,host:port`).
    pub brokers: String,
    /// Topic template: `{source}`, `{object}`, `{account}`; topics are
    /// created when first used.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// Partitions of a topic the sink creates.
    #[serde(default = "one")]
    pub partitions: i32,
    /// Replication factor of a topic the sink creates.
    #[serde(default = "one")]
    pub replication_factor: i32,
    /// How long a record (or a topic creation) may wait for the brokers
    /// before the batch is retried.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Message encoding: `json` (the envelope) or `avro` (Confluent wire
    /// format, schemas in `schema_registry_url`).
    #[serde(default)]
    pub format: Format,
    /// With `format = "avro"`: the Confluent schema registry; schemas are
    /// registered under the subject `{topic}-value`.
    #[serde(default)]
    pub schema_registry_url: Option<String>,
    /// With `format = "avro"`: the Avro schema (JSON text) of the `data` of
    /// an object type; types not listed get a schema derived from their
    /// objects.
    #[serde(default)]
    pub avro_schemas: BTreeMap<String, String>,
}

fn default_topic() -> String {
    "tributary.{source}.{object}".into()
}

fn one() -> i32 {
    1
}

fn default_timeout_ms() -> u64 {
    10_000
}

impl KafkaConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.brokers.trim().is_empty() {
            return Err("brokers must name at least one host:port".into());
        }
        if self.partitions < 1 || self.replication_factor < 1 || self.timeout_ms == 0 {
            return Err("partitions, replication_factor and timeout_ms must be at least 1".into());
        }
        match self.format {
            Format::Json => {
                if self.schema_registry_url.is_some() || !self.avro_schemas.is_empty() {
                    return Err("schema_registry_url and avro_schemas need format = \"avro\"".into());
                }
                Ok(())
            }
            Format::Avro => {
                match self.schema_registry_url.as_deref().map(reqwest::Url::parse) {
                    Some(Ok(url)) if matches!(url.scheme(), "http" | "https") => {}
                    Some(_) => return Err("schema_registry_url is not an http(s) URL".into()),
                    None => return Err("format = \"avro\" needs schema_registry_url".into()),
                }
                if !self.topic.contains("{object}") {
                    return Err("with format = \"avro\" the topic must contain {object}: one subject per object type".into());
                }
                for (object, text) in &self.avro_schemas {
                    apache_avro::Schema::parse_str(text).map_err(|e| format!("avro_schemas.{object}: {e}"))?;
                }
                Ok(())
            }
        }
    }

    /// Avro schemas given in config, parsed (validated already).
    pub fn given_schemas(&self) -> std::collections::HashMap<String, serde_json::Value> {
        self.avro_schemas.iter().filter_map(|(object, text)| Some((object.clone(), serde_json::from_str(text).ok()?))).collect()
    }
}

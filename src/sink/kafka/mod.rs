//! The Kafka sink: an idempotent producer keyed by object id.

mod config;
mod log;
mod sink;

pub use config::KafkaConfig;
pub use sink::Kafka;

//! The NATS sink: JetStream publish with server-side dedupe.

mod config;
mod sink;

pub use config::NatsConfig;
pub use sink::JetStream;

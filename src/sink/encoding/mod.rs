//! How a message's body is encoded: the JSON envelope as it is, or Avro in
//! the Confluent wire format (`avro`).

pub mod avro;

use serde::Deserialize;

/// A sink's message encoding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// The JSON envelope.
    #[default]
    Json,
    /// Avro, schemas registered with a Confluent schema registry.
    Avro,
}

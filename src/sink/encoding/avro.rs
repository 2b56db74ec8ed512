//! Avro for the Kafka sink, in the Confluent wire format: a zero byte, the
//! schema's registry id (4 bytes, big-endian), then the Avro binary datum.
//!
//! Each message is a change envelope record; its `data` is a record whose
//! schema is derived from the objects seen (or given in config). Derived
//! fields are nullable (`["null", T]`, default null); when an object brings a
//! new field or another type, the shape is widened (long + double → double;
//! anything else that disagrees → a JSON string) and the new schema is
//! registered under the subject `{topic}-value` before it is used.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use apache_avro::Schema;
use apache_avro::types::Value as Avro;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::sink::SinkError;

/// The shape of JSON values seen at one place of an object.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// Only nulls so far (encoded like `Json`).
    Null,
    Bool,
    Long,
    Double,
    String,
    Array(Box<Shape>),
    /// An object whose keys are all valid Avro names.
    Record(BTreeMap<String, Shape>),
    /// Anything else: the value as JSON text.
    Json,
}

fn avro_name(key: &str) -> bool {
    let mut chars = key.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Shape {
    pub fn of(value: &Value) -> Shape {
        match value {
            Value::Null => Shape::Null,
            Value::Bool(_) => Shape::Bool,
            Value::Number(n) if n.is_i64() => Shape::Long,
            Value::Number(_) => Shape::Double,
            Value::String(_) => Shape::String,
            Value::Array(items) => Shape::Array(Box::new(items.iter().map(Shape::of).fold(Shape::Null, Shape::merge))),
            Value::Object(fields) if fields.keys().all(|k| avro_name(k)) => {
                Shape::Record(fields.iter().map(|(k, v)| (k.clone(), Shape::of(v))).collect())
            }
            Value::Object(_) => Shape::Json,
        }
    }

    /// The narrowest shape both fit.
    pub fn merge(self, other: Shape) -> Shape {
        match (self, other) {
            (a, b) if a == b => a,
            (Shape::Null, x) | (x, Shape::Null) => x,
            (Shape::Long, Shape::Double) | (Shape::Double, Shape::Long) => Shape::Double,
            (Shape::Array(a), Shape::Array(b)) => Shape::Array(Box::new(a.merge(*b))),
            (Shape::Record(mut a), Shape::Record(b)) => {
                for (key, shape) in b {
                    let merged = a.remove(&key).unwrap_or(Shape::Null).merge(shape);
                    a.insert(key, merged);
                }
                Shape::Record(a)
            }
            _ => Shape::Json,
        }
    }

    /// The Avro type of a value of this shape (non-null branch).
    fn schema(&self, name: &str) -> Value {
        match self {
            Shape::Null | Shape::Json | Shape::String => json!("string"),
            Shape::Bool => json!("boolean"),
            Shape::Long => json!("long"),
            Shape::Double => json!("double"),
            Shape::Array(items) => json!({"type": "array", "items": nullable(items.schema(&format!("{name}_item")))}),
            Shape::Record(fields) => {
                let fields: Vec<Value> = fields
                    .iter()
                    .map(|(key, shape)| json!({"name": key, "type": nullable(shape.schema(&format!("{name}_{key}"))), "default": null}))
                    .collect();
                json!({"type": "record", "name": name, "fields": fields})
            }
        }
    }

    /// A JSON value as an Avro value of this shape; `None` when it does not
    /// fit (the shape must widen first).
    fn encode(&self, value: &Value) -> Option<Avro> {
        Some(match (self, value) {
            (_, Value::Null) => Avro::Union(0, Box::new(Avro::Null)),
            (Shape::Null | Shape::Json, v) => Avro::Union(1, Box::new(Avro::String(v.to_string()))),
            (Shape::Bool, Value::Bool(b)) => Avro::Union(1, Box::new(Avro::Boolean(*b))),
            (Shape::Long, Value::Number(n)) => Avro::Union(1, Box::new(Avro::Long(n.as_i64()?))),
            (Shape::Double, Value::Number(n)) => Avro::Union(1, Box::new(Avro::Double(n.as_f64()?))),
            (Shape::String, Value::String(s)) => Avro::Union(1, Box::new(Avro::String(s.clone()))),
            (Shape::Array(items), Value::Array(list)) => {
                Avro::Union(1, Box::new(Avro::Array(list.iter().map(|v| items.encode(v)).collect::<Option<_>>()?)))
            }
            (Shape::Record(fields), Value::Object(map)) => {
                if map.keys().any(|k| !fields.contains_key(k)) {
                    return None;
                }
                let record = fields
                    .iter()
                    .map(|(k, shape)| Some((k.clone(), shape.encode(map.get(k).unwrap_or(&Value::Null))?)))
                    .collect::<Option<_>>()?;
                Avro::Union(1, Box::new(Avro::Record(record)))
            }
            _ => return None,
        })
    }
}

fn nullable(schema: Value) -> Value {
    json!(["null", schema])
}

/// The envelope schema of changes to `object` whose data has `shape`.
pub fn envelope_schema(source: &str, object: &str, data: &Value) -> Value {
    let text = |name: &str| json!({"name": name, "type": "string"});
    let optional = |name: &str| json!({"name": name, "type": ["null", "string"], "default": null});
    json!({
        "type": "record",
        "name": format!("{object}_change"),
        "namespace": format!("tributary.{source}"),
        "fields": [
            text("id"), text("source"), text("object"), text("object_id"), optional("account"), text("op"), text("type"),
            {"name": "data", "type": ["null", data], "default": null},
            optional("previous_attributes"), optional("upstream_event_id"), text("committed_at"),
        ],
    })
}

/// What one subject uses now.
struct Subject {
    /// The derived shape; `None` for a schema given in config.
    shape: Option<Shape>,
    schema: Arc<Schema>,
    id: u32,
}

pub struct AvroEncoder {
    http: reqwest::Client,
    registry: String,
    /// Data schemas given in config, by object type (never widened).
    given: HashMap<String, Value>,
    subjects: Mutex<HashMap<String, Subject>>,
}

impl AvroEncoder {
    pub fn new(registry: &str, given: HashMap<String, Value>) -> Result<Self, SinkError> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| SinkError::Config(format!("schema registry client: {e}")))?;
        Ok(AvroEncoder { http, registry: registry.trim_end_matches('/').to_string(), given, subjects: Mutex::new(HashMap::new()) })
    }

    /// A message body (the JSON envelope) in the Confluent wire format, for
    /// `topic`.
    pub async fn encode(&self, topic: &str, source: &str, object: &str, body: &str) -> Result<Vec<u8>, SinkError> {
        let envelope: Value = serde_json::from_str(body).map_err(|e| SinkError::Rejected(format!("envelope is not json: {e}")))?;
        let data = &envelope["data"];
        let subject = format!("{topic}-value");
        let subjects = self.subjects.lock().await;
        let fits = subjects.get(&subject).and_then(|s| {
            let data = match &s.shape {
                Some(shape) => shape.encode(data),
                None => given_value(&s.schema, data).ok(),
            };
            data.map(|d| (s.id, s.schema.clone(), d))
        });
        let seen = subjects.get(&subject).and_then(|s| s.shape.clone()).unwrap_or(Shape::Null);
        drop(subjects);
        let (id, schema, data) = match fits {
            Some(found) => found,
            None => {
                let (shape, data_schema) = match self.given.get(object) {
                    Some(given) => (None, given.clone()),
                    None => {
                        let widened = seen.merge(Shape::of(data));
                        let schema = widened.schema(object);
                        (Some(widened), schema)
                    }
                };
                let text = envelope_schema(source, object, &data_schema).to_string();
                let schema = Arc::new(Schema::parse_str(&text).map_err(|e| SinkError::Config(format!("avro schema of {object}: {e}")))?);
                let encoded = match &shape {
                    Some(shape) => {
                        shape.encode(data).ok_or_else(|| SinkError::Rejected(format!("{object} does not fit its derived schema")))?
                    }
                    None => given_value(&schema, data)?,
                };
                // the registry is called without the lock: a slow registry
                // holds no other subject up
                let id = self.register(&subject, &text).await?;
                tracing::info!(kind = "schema_registered", subject = %subject, schema_id = id, "registered an avro schema");
                self.subjects.lock().await.insert(subject.clone(), Subject { shape, schema: schema.clone(), id });
                (id, schema, encoded)
            }
        };
        let text = |field: &str| Avro::String(envelope[field].as_str().unwrap_or_default().to_string());
        let optional = |field: &str| match envelope[field].as_str() {
            Some(s) => Avro::Union(1, Box::new(Avro::String(s.to_string()))),
            None => Avro::Union(0, Box::new(Avro::Null)),
        };
        let previous = match &envelope["previous_attributes"] {
            Value::Null => Avro::Union(0, Box::new(Avro::Null)),
            other => Avro::Union(1, Box::new(Avro::String(other.to_string()))),
        };
        let record = Avro::Record(vec![
            ("id".into(), text("id")),
            ("source".into(), text("source")),
            ("object".into(), text("object")),
            ("object_id".into(), text("object_id")),
            ("account".into(), optional("account")),
            ("op".into(), text("op")),
            ("type".into(), text("type")),
            ("data".into(), data),
            ("previous_attributes".into(), previous),
            ("upstream_event_id".into(), optional("upstream_event_id")),
            ("committed_at".into(), text("committed_at")),
        ]);
        let datum =
            apache_avro::to_avro_datum(&schema, record).map_err(|e| SinkError::Rejected(format!("avro encoding of {object}: {e}")))?;
        let mut out = Vec::with_capacity(5 + datum.len());
        out.push(0);
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&datum);
        Ok(out)
    }

    /// `POST /subjects/{subject}/versions`: the registry's id of a schema
    /// (the same schema keeps its id).
    async fn register(&self, subject: &str, schema: &str) -> Result<u32, SinkError> {
        let url = format!("{}/subjects/{subject}/versions", self.registry);
        let response = self
            .http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/vnd.schemaregistry.v1+json")
            .json(&json!({ "schema": schema }))
            .send()
            .await
            .map_err(|e| SinkError::Retryable(format!("schema registry {url}: {e}")))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_server_error() {
            return Err(SinkError::Retryable(format!("schema registry {url}: {status}")));
        }
        match body["id"].as_u64().and_then(|id| u32::try_from(id).ok()) {
            Some(id) if status.is_success() => Ok(id),
            // an incompatible schema is retried: an operator may relax the
            // subject's compatibility; the error says why meanwhile
            _ => Err(SinkError::Retryable(format!("schema registry refused {subject}: {status} {body}"))),
        }
    }
}

/// Data for a schema given in config: resolved by the Avro library against
/// the `data` field's type.
fn given_value(schema: &Schema, data: &Value) -> Result<Avro, SinkError> {
    let Schema::Record(record) = schema else { return Err(SinkError::Config("envelope schema is not a record".into())) };
    let field = record.fields.iter().find(|f| f.name == "data").ok_or_else(|| SinkError::Config("no data field".into()))?;
    Avro::from(data.clone())
        .resolve(&field.schema)
        .map_err(|e| SinkError::Rejected(format!("data does not fit the configured schema: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_widen_and_values_round_trip() {
        let a = json!({"id": "shf_1", "hours": 8, "tags": ["x"], "meta": {"k": 1}, "note": null});
        let b = json!({"id": "shf_2", "hours": 7.5, "tags": [], "meta": {"k": "one"}, "extra": true, "labels": {"a-b": 1}});
        let first = Shape::of(&a);
        assert!(first.encode(&b).is_none(), "b does not fit a's shape");
        let both = first.clone().merge(Shape::of(&b));
        let Shape::Record(fields) = &both else { panic!("a record") };
        assert_eq!(fields["hours"], Shape::Double);
        assert_eq!(fields["note"], Shape::Null);
        assert_eq!(fields["extra"], Shape::Bool);
        assert_eq!(fields["labels"], Shape::Json, "keys that are not avro names make json");
        let Shape::Record(meta) = &fields["meta"] else { panic!("meta is a record") };
        assert_eq!(meta["k"], Shape::Json, "long and string disagree");

        let schema = Schema::parse_str(&envelope_schema("s", "shift", &both.schema("shift")).to_string()).unwrap();
        let Schema::Record(record) = &schema else { panic!() };
        let data_schema = &record.fields.iter().find(|f| f.name == "data").unwrap().schema;
        for value in [&a, &b] {
            let encoded = both.encode(value).expect("fits the merged shape");
            let bytes = apache_avro::to_avro_datum(data_schema, encoded.clone()).unwrap();
            let back = apache_avro::from_avro_datum(data_schema, &mut &bytes[..], None).unwrap();
            assert_eq!(back, encoded);
        }
    }

    #[test]
    fn a_given_schema_takes_the_objects_that_fit_it() {
        let given =
            json!({"type": "record", "name": "shift", "fields": [{"name": "id", "type": "string"}, {"name": "hours", "type": "long"}]});
        let schema = Schema::parse_str(&envelope_schema("s", "shift", &given).to_string()).unwrap();
        assert!(given_value(&schema, &json!({"id": "shf_1", "hours": 8})).is_ok());
        assert!(given_value(&schema, &Value::Null).is_ok(), "a delete has no data");
        let error = given_value(&schema, &json!({"id": "shf_1"})).unwrap_err().to_string();
        assert!(error.contains("does not fit the configured schema"), "{error}");
    }
}

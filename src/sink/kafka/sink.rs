//! Kafka: an idempotent producer (`enable.idempotence`, `acks=all`), the
//! object id as key (per-object order within a partition), the change id in
//! the `tributary-change-id` header, topics from a template and created when
//! first used. A batch counts once the broker acknowledged every record.
//! Bodies are the JSON envelope, or Avro in the Confluent wire format
//! (`format = "avro"`, see [`super::avro`]).

use std::collections::HashSet;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

use super::KafkaConfig;
use super::log::KafkaLog;
use crate::sink::encoding::Format;
use crate::sink::encoding::avro::AvroEncoder;
use crate::sink::{Message, Sink, SinkError};

pub struct Kafka {
    producer: FutureProducer<KafkaLog>,
    admin: AdminClient<KafkaLog>,
    topic: String,
    /// Topics known to exist.
    topics: parking_lot::Mutex<HashSet<String>>,
    /// Of the topics it creates.
    partitions: i32,
    replication_factor: i32,
    /// How long a request waits for the broker (`timeout_ms`).
    timeout: Duration,
    /// With `format = "avro"`: encodes bodies, registers schemas.
    avro: Option<AvroEncoder>,
}

impl Kafka {
    pub fn connect(config: &KafkaConfig) -> Result<Self, SinkError> {
        let brokers = &config.brokers;
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", config.timeout_ms.to_string());
        let producer = client.create_with_context(KafkaLog).map_err(|e| SinkError::Config(format!("kafka producer for {brokers}: {e}")))?;
        let admin = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .create_with_context(KafkaLog)
            .map_err(|e| SinkError::Config(format!("kafka admin for {brokers}: {e}")))?;
        let avro = match (config.format, &config.schema_registry_url) {
            (Format::Avro, Some(registry)) => Some(AvroEncoder::new(registry, config.given_schemas())?),
            _ => None,
        };
        Ok(Kafka {
            producer,
            admin,
            topic: config.topic.clone(),
            partitions: config.partitions,
            replication_factor: config.replication_factor,
            topics: Default::default(),
            timeout: Duration::from_millis(config.timeout_ms),
            avro,
        })
    }

    async fn ensure_topics(&self, batch: &[Message]) -> Result<(), SinkError> {
        let wanted: HashSet<String> = batch.iter().map(|m| m.route(&self.topic)).collect();
        let missing: Vec<String> = wanted.into_iter().filter(|t| !self.topics.lock().contains(t)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        let new: Vec<NewTopic> =
            missing.iter().map(|t| NewTopic::new(t, self.partitions, TopicReplication::Fixed(self.replication_factor))).collect();
        // a broker that cannot be reached fails the attempt within the
        // sink's timeout (librdkafka would wait a minute), so it is retried
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))).request_timeout(Some(self.timeout));
        let results =
            self.admin.create_topics(&new, &options).await.map_err(|e| SinkError::Retryable(format!("kafka create topics: {e}")))?;
        for result in results {
            match result {
                Ok(topic) | Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    self.topics.lock().insert(topic);
                }
                Err((topic, code)) => return Err(SinkError::Retryable(format!("kafka create topic {topic}: {code}"))),
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Sink for Kafka {
    async fn send(&self, batch: &[Message]) -> Result<(), SinkError> {
        self.ensure_topics(batch).await?;
        let topics: Vec<String> = batch.iter().map(|m| m.route(&self.topic)).collect();
        let mut payloads: Vec<Vec<u8>> = Vec::with_capacity(batch.len());
        for (message, topic) in batch.iter().zip(&topics) {
            payloads.push(match &self.avro {
                Some(avro) => avro.encode(topic, &message.source, &message.object, &message.body).await?,
                None => message.body.as_bytes().to_vec(),
            });
        }
        // polled in order by join_all, so records are enqueued in commit order
        let sends = batch.iter().zip(&topics).zip(&payloads).map(|((message, topic), payload)| {
            let headers = OwnedHeaders::new().insert(Header { key: "tributary-change-id", value: Some(message.id.as_bytes()) });
            let record = FutureRecord::to(topic).key(message.key.as_bytes()).payload(payload).headers(headers);
            self.producer.send(record, Duration::from_secs(30))
        });
        for result in futures::future::join_all(sends).await {
            result.map_err(|(e, _)| SinkError::Retryable(format!("kafka produce: {e}")))?;
        }
        Ok(())
    }
}

//! Redis Streams: `XADD` of each message to a stream key from a template,
//! with fields `id` and `envelope`, trimmed with `MAXLEN ~` when configured.
//! A batch is one pipeline; an error retries the whole batch (the same ids).

use redis::aio::ConnectionManager;

use super::RedisConfig;
use crate::sink::{Message, Sink, SinkError};

pub struct RedisStreams {
    connection: ConnectionManager,
    stream: String,
    maxlen: Option<u64>,
}

impl RedisStreams {
    pub async fn connect(config: &RedisConfig) -> Result<Self, SinkError> {
        let client = redis::Client::open(config.url.as_str()).map_err(|e| SinkError::Config(format!("redis url: {e}")))?;
        let connection = ConnectionManager::new(client).await.map_err(|e| SinkError::Retryable(format!("connect to redis: {e}")))?;
        Ok(RedisStreams { connection, stream: config.stream.clone(), maxlen: config.maxlen })
    }
}

#[async_trait::async_trait]
impl Sink for RedisStreams {
    async fn send(&self, batch: &[Message]) -> Result<(), SinkError> {
        let mut pipe = redis::pipe();
        for message in batch {
            let command = pipe.cmd("XADD").arg(message.route(&self.stream));
            if let Some(maxlen) = self.maxlen {
                command.arg("MAXLEN").arg("~").arg(maxlen);
            }
            command.arg("*").arg("id").arg(&message.id).arg("envelope").arg(&message.body).ignore();
        }
        let mut connection = self.connection.clone();
        pipe.query_async::<()>(&mut connection).await.map_err(|e| SinkError::Retryable(format!("redis XADD: {e}")))
    }
}

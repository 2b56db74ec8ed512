//! NATS JetStream: publish each message to a subject from a template with
//! the change id as `Nats-Msg-Id`, so the server drops redeliveries inside
//! its duplicate window; a batch counts once every publish is acknowledged.

use async_nats::jetstream::{self, message::PublishMessage};

use super::NatsConfig;
use crate::sink::{Message, Sink, SinkError};

pub struct JetStream {
    context: jetstream::Context,
    subject: String,
}

/// The subjects a template can produce: every `{…}` becomes a `*` token.
fn subject_filter(template: &str) -> String {
    template.split('.').map(|token| if token.starts_with('{') && token.ends_with('}') { "*" } else { token }).collect::<Vec<_>>().join(".")
}

impl JetStream {
    pub async fn connect(config: &NatsConfig) -> Result<Self, SinkError> {
        let url = &config.url;
        let client = async_nats::connect(url).await.map_err(|e| SinkError::Retryable(format!("connect to nats {url}: {e}")))?;
        let context = jetstream::new(client);
        let (subject, stream) = (config.subject.clone(), config.jetstream.clone());
        context
            .get_or_create_stream(jetstream::stream::Config {
                name: stream.clone(),
                subjects: vec![subject_filter(&subject)],
                ..Default::default()
            })
            .await
            .map_err(|e| SinkError::Retryable(format!("jetstream stream {stream}: {e}")))?;
        Ok(JetStream { context, subject })
    }
}

#[async_trait::async_trait]
impl Sink for JetStream {
    async fn send(&self, batch: &[Message]) -> Result<(), SinkError> {
        let mut acks = Vec::with_capacity(batch.len());
        for message in batch {
            let publish = PublishMessage::build().payload(message.body.clone().into()).message_id(&message.id);
            let ack = self
                .context
                .send_publish(message.route(&self.subject), publish)
                .await
                .map_err(|e| SinkError::Retryable(format!("jetstream publish: {e}")))?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await.map_err(|e| SinkError::Retryable(format!("jetstream ack: {e}")))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn templates_become_stream_filters() {
        assert_eq!(super::subject_filter("tributary.{source}.{object}"), "tributary.*.*");
        assert_eq!(super::subject_filter("events"), "events");
    }
}

//! Webhooks signed per the Standard Webhooks spec: `webhook-id` (the change
//! id), `webhook-timestamp` (unix seconds) and `webhook-signature`
//! (`v1,` + base64 HMAC-SHA256 of `id.timestamp.body` keyed with the decoded
//! `whsec_` secret). A 2xx acknowledges; 410 disables the endpoint; another
//! 4xx (but 408 and 429) refuses that message for good (a dead letter); anything
//! else, timeouts included, is retried.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::WebhookConfig;
use crate::sink::{Message, Sink, SinkError};

pub struct Webhook {
    http: reqwest::Client,
    url: String,
    key: Vec<u8>,
}

/// The key inside a `whsec_…` secret.
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, SinkError> {
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    STANDARD.decode(encoded).map_err(|e| SinkError::Config(format!("the webhook secret is not whsec_ + base64: {e}")))
}

/// `v1,<signature>` of a message.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("hmac takes keys of any length");
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

impl Webhook {
    pub fn new(name: &str, config: &WebhookConfig) -> Result<Self, SinkError> {
        let key = config.key(name).map_err(|e| SinkError::Config(e.to_string()))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .user_agent(concat!("tributary/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SinkError::Config(e.to_string()))?;
        Ok(Webhook { http, url: config.url.clone(), key })
    }
}

#[async_trait::async_trait]
impl Sink for Webhook {
    async fn send(&self, batch: &[Message]) -> Result<(), SinkError> {
        for message in batch {
            let timestamp = chrono::Utc::now().timestamp();
            let response = self
                .http
                .post(&self.url)
                .header("content-type", "application/json")
                .header("webhook-id", &message.id)
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", sign(&self.key, &message.id, timestamp, &message.body))
                .body(message.body.clone())
                .send()
                .await
                .map_err(|e| SinkError::Retryable(format!("POST {}: {e}", self.url)))?;
            let status = response.status();
            if status == reqwest::StatusCode::GONE {
                return Err(SinkError::Disabled(format!("POST {} answered 410 Gone", self.url)));
            }
            let refused_for_good = status.is_client_error()
                && status != reqwest::StatusCode::REQUEST_TIMEOUT
                && status != reqwest::StatusCode::TOO_MANY_REQUESTS;
            if refused_for_good {
                return Err(SinkError::Rejected(format!("POST {} answered {status} to {}", self.url, message.id)));
            }
            if !status.is_success() {
                return Err(SinkError::Retryable(format!("POST {} answered {status}", self.url)));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from the Standard Webhooks specification.
    #[test]
    fn signs_like_the_spec_example() {
        let key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body), "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}

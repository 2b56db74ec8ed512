//! The webhook sink: signed POSTs (Standard Webhooks).

mod config;
mod sink;

pub use config::WebhookConfig;
pub use sink::{Webhook, decode_secret, sign};

//! Find or make the upstream queue, and subscribe it: each subscription
//! once, whoever made it before (another instance, a database restored
//! from a backup, a fresh one on the same upstream).

use serde_json::{Value, json};

use super::{QUEUE_KEY, QueueSourceError, Runner};
use crate::source::http::{Client, ClientError, encode};
use crate::store::{Batch, Checkpoint};

impl Runner {
    /// Find the queue by name (or the code the source remembers), else
    /// make it; then subscribe it to every event type, for every account
    /// or seller configured. Returns the queue's code.
    pub(super) async fn setup(&self) -> Result<String, QueueSourceError> {
        let c = &self.config;
        let queues_path = format!("{}/queues", c.path_prefix);
        let answer = self.client.get(&queues_path, None).await?;
        // a list the answer does not hold would make a queue at every start
        let Some(Value::Array(listed)) = c.queues_path.get(&answer).cloned() else {
            let reason = format!("no list of queues at '{}' in the answer (a bare array is '$')", c.queues_path);
            return Err(ClientError::Shape { url: format!("GET {queues_path}"), reason }.into());
        };
        let saved = self.store.checkpoints(&c.name).await?.remove(QUEUE_KEY).unwrap_or(Value::Null);
        let exists = |code: &str| listed.iter().any(|q| q["code"] == code);
        let (code, mut subscribed) = match saved["code"].as_str() {
            Some(code) if exists(code) => (code.to_string(), saved["subscriptions"].as_array().cloned().unwrap_or_default()),
            _ => match listed.iter().find(|q| q["name"] == c.queue_name()).and_then(|q| q["code"].as_str()) {
                Some(code) => (code.to_string(), Vec::new()),
                None => {
                    let created = self.client.post_json(&queues_path, &json!({"name": c.queue_name()})).await?;
                    let code = created["code"].as_str().ok_or_else(|| ClientError::Shape {
                        url: format!("POST {queues_path}"),
                        reason: "created queue without code".into(),
                    })?;
                    tracing::info!(kind = "queue_created", source = %c.name, queue = %code, name = %c.queue_name(), "created the upstream queue");
                    (code.to_string(), Vec::new())
                }
            },
        };
        let path = format!("{queues_path}/{}/subscriptions", encode(&code));
        self.listed_subscriptions(&path, &mut subscribed).await?;
        // (account, the client that subscribes it, whether the body names it)
        let subscribers: Vec<(Option<&str>, &Client, bool)> = if !self.sellers.is_empty() {
            self.sellers.iter().map(|(sid, client)| (Some(sid.as_str()), client, false)).collect()
        } else if c.accounts.is_empty() {
            vec![(None, &self.client, true)]
        } else {
            c.accounts.iter().map(|a| (Some(a.as_str()), &self.client, true)).collect()
        };
        for event_type in &c.event_types {
            for (account, client, named) in &subscribers {
                let wanted = json!([event_type, account]);
                if subscribed.contains(&wanted) {
                    continue;
                }
                let body = if *named { json!({"event_type": event_type, "account": account}) } else { json!({"event_type": event_type}) };
                let made = client.post_json(&path, &body).await?;
                // a seller's token subscribes that seller: one of another is a misconfiguration
                if !named && let Some(other) = c.account_path.text(&made).filter(|made_for| Some(made_for.as_str()) != *account) {
                    let reason = format!(
                        "the token of seller '{}' subscribed seller '{other}': check that seller's refresh token",
                        account.unwrap_or_default()
                    );
                    return Err(ClientError::Shape { url: format!("POST {path}"), reason }.into());
                }
                subscribed.push(wanted);
                // after each one: a crash here never subscribes twice
                self.save_queue(&code, &subscribed).await?;
            }
        }
        self.save_queue(&code, &subscribed).await?;
        tracing::info!(kind = "queue_ready", source = %c.name, queue = %code, subscriptions = subscribed.len(), "pulling the upstream queue");
        Ok(code)
    }

    /// Add what the upstream lists already to `subscribed`, as
    /// `[event_type, account]` pairs: listed with the source's token, or
    /// where that may not list them (401, 403), with each seller's. An API
    /// without the list (404, 405) leaves what the source remembers.
    async fn listed_subscriptions(&self, path: &str, subscribed: &mut Vec<Value>) -> Result<(), QueueSourceError> {
        let c = &self.config;
        let answers = match self.client.get(path, None).await {
            Ok(answer) => vec![answer],
            Err(e) if matches!(e.status(), Some(401 | 403)) && !self.sellers.is_empty() => {
                let mut answers = Vec::new();
                for client in self.sellers.values() {
                    answers.push(client.get(path, None).await?);
                }
                answers
            }
            Err(e) if matches!(e.status(), Some(404 | 405)) => {
                tracing::info!(source = %c.name, error = %e, "the upstream does not list subscriptions; relying on the ones this source made");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        for answer in answers {
            let list = c.subscriptions_path.get(&answer).and_then(Value::as_array).cloned().unwrap_or_default();
            for subscription in list {
                let Some(event_type) = subscription.get("event_type").and_then(Value::as_str) else { continue };
                let pair = json!([event_type, c.account_path.text(&subscription)]);
                if !subscribed.contains(&pair) {
                    subscribed.push(pair);
                }
            }
        }
        Ok(())
    }

    /// Checkpoint the queue and the subscriptions made for it.
    async fn save_queue(&self, code: &str, subscribed: &[Value]) -> Result<(), QueueSourceError> {
        let checkpoint = Checkpoint::unordered(QUEUE_KEY, json!({"code": code, "subscriptions": subscribed}));
        self.store.apply(Batch { source: self.config.name.clone(), checkpoints: vec![checkpoint], ..Batch::default() }).await?;
        Ok(())
    }
}

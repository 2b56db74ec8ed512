//! The `event_queue` source: an upstream pull queue with acknowledgement
//! (the marketplace "Open Platform" case). Each pull acknowledges the batch
//! before it; a batch is committed to the store together with its ack id
//! and the ids of its events, so:
//!
//! - a crash after the commit acknowledges the batch with the first pull of
//!   the next process (the ack id is in the checkpoint);
//! - a batch that comes again anyway (a crash before the commit, an ack the
//!   upstream lost or refused) is recognised by its event ids and skipped.
//!
//! - `config`: the validated `[[sources]]` entry

pub mod config;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub use config::EventQueueConfig;

use crate::source::declarative;
use crate::source::http::{Client, ClientError, encode};
use crate::source::{Phase, ScopeStatus, SourceStatus};
use crate::store::ledger::{LedgerEntry, LedgerOp, Parked};
use crate::store::{Batch, Checkpoint, Mutation, Origin, Store, StoreError, Write, ident};

/// Checkpoint keys: the ack id of the last batch committed, and the queue
/// with the subscriptions made for it.
const ACK_KEY: &str = "ack_id";
const QUEUE_KEY: &str = "queue";
/// Pause between prunes of remembered event ids.
const PRUNE_EVERY: Duration = Duration::from_secs(3_600);

#[derive(Debug, thiserror::Error)]
pub enum QueueSourceError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// Why an event cannot be stored (it is parked, the queue flows on).
    #[error("{url}: event {index}{}: {reason}", id.as_ref().map(|id| format!(" ({id})")).unwrap_or_default())]
    Event { url: String, index: usize, id: Option<String>, reason: String },
}

/// One pulled event, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: String,
    pub account: Option<String>,
    pub kind: String,
    pub object: String,
    pub object_id: String,
    /// The day it was created (`YYYY-MM-DD`): its ledger entry's day.
    pub day: String,
    pub payload: Value,
}

struct Runner {
    config: EventQueueConfig,
    client: Client,
    store: Arc<dyn Store>,
}

/// Run an event queue source until the task is dropped.
pub async fn run(config: EventQueueConfig, store: Arc<dyn Store>, status: Arc<SourceStatus>) -> Result<(), QueueSourceError> {
    let client = declarative::client(&config.client_options(), &config.auth, &config.api_key_env, store.clone(), "queue")?;
    let scope = status.add_scope(None);
    status.set_scopes_ready();
    let runner = Runner { config, client, store };
    let code = runner.setup().await?;
    runner.pull_forever(&code, &status, &scope).await
}

impl Runner {
    /// Find or create the upstream queue and subscribe it to every event
    /// type and account configured (once: what was made is checkpointed).
    async fn setup(&self) -> Result<String, QueueSourceError> {
        let c = &self.config;
        let queues_path = format!("{}/queues", c.path_prefix);
        let answer = self.client.get(&queues_path, None).await?;
        // a list the answer does not hold would create a queue at every start
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
        // what the upstream holds already, whoever made it (a database
        // restored from a backup, another instance)
        let listed = self.client.get(&format!("{queues_path}/{}/subscriptions", encode(&code)), None).await;
        match listed {
            Ok(answer) => {
                let list = c.subscriptions_path.get(&answer).and_then(Value::as_array).cloned().unwrap_or_default();
                for subscription in list {
                    let Some(event_type) = subscription.get("event_type").and_then(Value::as_str) else { continue };
                    let pair = json!([event_type, c.account_path.text(&subscription)]);
                    if !subscribed.contains(&pair) {
                        subscribed.push(pair);
                    }
                }
            }
            Err(e) if matches!(e.status(), Some(404 | 405)) => {
                tracing::info!(source = %c.name, error = %e, "the upstream does not list subscriptions; relying on the ones this source made");
            }
            Err(e) => return Err(e.into()),
        }
        let accounts: Vec<Option<&str>> =
            if c.accounts.is_empty() { vec![None] } else { c.accounts.iter().map(|a| Some(a.as_str())).collect() };
        for event_type in &c.event_types {
            for account in &accounts {
                let wanted = json!([event_type, account]);
                if subscribed.contains(&wanted) {
                    continue;
                }
                let path = format!("{queues_path}/{}/subscriptions", encode(&code));
                self.client.post_json(&path, &json!({"event_type": event_type, "account": account})).await?;
                subscribed.push(wanted);
                // after each one: a crash here never subscribes twice
                self.save_queue(&code, &subscribed).await?;
            }
        }
        self.save_queue(&code, &subscribed).await?;
        tracing::info!(kind = "queue_ready", source = %c.name, queue = %code, subscriptions = subscribed.len(), "pulling the upstream queue");
        Ok(code)
    }

    /// Checkpoint the queue and the subscriptions made for it.
    async fn save_queue(&self, code: &str, subscribed: &[Value]) -> Result<(), QueueSourceError> {
        let checkpoint = Checkpoint::unordered(QUEUE_KEY, json!({"code": code, "subscriptions": subscribed}));
        self.store.apply(Batch { source: self.config.name.clone(), checkpoints: vec![checkpoint], ..Batch::default() }).await?;
        Ok(())
    }

    async fn pull_forever(&self, code: &str, status: &SourceStatus, scope: &ScopeStatus) -> Result<(), QueueSourceError> {
        let c = &self.config;
        let path = format!("{}/queues/{}/events/pull", c.path_prefix, encode(code));
        let mut ack: Option<String> = self.store.checkpoints(&c.name).await?.get(ACK_KEY).and_then(Value::as_str).map(String::from);
        let mut pruned_at: Option<Instant> = None;
        loop {
            let (round, started) = scope.begin_round();
            let page = match self.client.post_json(&path, &json!({"ack_id": ack, "limit": c.batch_size})).await {
                Ok(page) => page,
                Err(ClientError::Api { code: Some(refused), message, .. }) if refused == "ack_id_invalid" => {
                    // the upstream hands the batch out again; its events are
                    // known and will be skipped
                    tracing::warn!(kind = "ack_refused", source = %c.name, ack_id = ack.as_deref().unwrap_or(""), reason = %message,
                        "the upstream refused the acknowledgement; pulling again without it");
                    ack = None;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let (pulled_events, next_ack) = parse_page(page, &path, c)?;
            let pulled = pulled_events.len();
            let mut events = Vec::with_capacity(pulled);
            let mut parked = Vec::new();
            for item in pulled_events {
                match item {
                    Pulled::Event(event) => events.push(event),
                    Pulled::Parked(p) => {
                        tracing::warn!(kind = "event_parked", source = %c.name, event_id = p.event_id.as_deref().unwrap_or(""),
                            event_type = p.event_type.as_deref().unwrap_or(""), reason = %p.reason,
                            "an event cannot be stored; it is parked with its body, and the queue goes on");
                        parked.push(p);
                    }
                }
            }
            let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
            let known: HashSet<String> = self.store.ledger_known(&c.name, &ids).await?.into_iter().collect();
            let seen_at = chrono::Utc::now().timestamp();
            let mut batch = Batch {
                source: c.name.clone(),
                checkpoints: vec![Checkpoint::unordered(ACK_KEY, next_ack.clone().map_or(Value::Null, Value::String))],
                ..Batch::default()
            };
            let parked_count = parked.len();
            batch.ledger.extend(parked.into_iter().map(LedgerOp::Park));
            let mut fresh = HashSet::new();
            for event in events {
                // known from an earlier commit, or twice in this batch
                if known.contains(&event.id) || !fresh.insert(event.id.clone()) {
                    continue;
                }
                batch.ledger.push(LedgerOp::Put(LedgerEntry { key: event.id.clone(), fingerprint: None, day: event.day, seen_at }));
                let mutation = if event.kind.ends_with(".deleted") { Mutation::Delete } else { Mutation::Upsert(event.payload) };
                batch.writes.push(Write {
                    object: event.object,
                    id: event.object_id,
                    account: event.account,
                    mutation,
                    origin: Origin::Event { id: event.id, kind: event.kind, previous_attributes: None },
                    generation: 0,
                });
            }
            let duplicates = pulled - fresh.len() - parked_count;
            let applied = self.store.apply(batch).await?;
            status.store_health.ok();
            ack = next_ack;
            scope.set_phase(Phase::Live);
            scope.finish_round(round, started);
            status.set_error(None);
            metrics::counter!("tributary_sync_runs_total", "source" => c.name.clone()).increment(1);
            metrics::counter!("tributary_items_fetched_total", "source" => c.name.clone()).increment(pulled as u64);
            metrics::counter!("tributary_items_changed_total", "source" => c.name.clone()).increment(applied.changes);
            metrics::counter!("tributary_events_parked_total", "source" => c.name.clone()).increment(parked_count as u64);
            if pulled > 0 {
                tracing::info!(kind = "queue_batch", source = %c.name, events = pulled, duplicates, parked = parked_count,
                    changes = applied.changes, "stored a batch; it is acknowledged with the next pull");
            }
            if pruned_at.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                self.prune().await;
                pruned_at = Some(Instant::now());
            }
            if pulled >= c.batch_size {
                continue;
            }
            scope.pause(Duration::from_secs(c.poll_interval_secs), crate::source::EARLY_POLL_GAP).await;
        }
    }

    /// Forget event ids older than the retention: the upstream cannot hand
    /// them out again.
    async fn prune(&self) {
        let c = &self.config;
        let cutoff = chrono::Utc::now().date_naive() - chrono::Duration::days(c.retention_days as i64);
        match self.store.prune_ledger(&c.name, &cutoff.format("%Y-%m-%d").to_string()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(kind = "ledger_pruned", source = %c.name, forgotten = n, "forgot old event ids"),
            Err(e) => tracing::warn!(source = %c.name, error = %e, "cannot prune remembered event ids; retrying later"),
        }
    }
}

/// One pulled event: checked and ready to store, or parked with why not.
#[derive(Debug, Clone, PartialEq)]
pub enum Pulled {
    Event(Event),
    Parked(Parked),
}

/// A pull's events, each checked or parked, and the ack id of the batch.
/// Each event's fields are read at the paths the config names. Only an
/// answer that is no batch at all (no events list, no ack id) is an error.
pub fn parse_page(page: Value, url: &str, config: &EventQueueConfig) -> Result<(Vec<Pulled>, Option<String>), QueueSourceError> {
    let shape = |reason: &str| ClientError::Shape { url: url.to_string(), reason: reason.to_string() };
    let Value::Object(mut fields) = page else { return Err(shape("expected an object with events").into()) };
    let next_ack = match fields.remove("ack_id") {
        Some(Value::String(ack)) => Some(ack),
        None | Some(Value::Null) => None,
        Some(_) => return Err(shape("ack_id is not a string").into()),
    };
    // Tiki's clients allow `events: null` for none
    let list = match fields.remove("events") {
        Some(Value::Array(list)) => list,
        Some(Value::Null) => vec![],
        _ => return Err(shape("no events list").into()),
    };
    if !list.is_empty() && next_ack.is_none() {
        return Err(shape("events without an ack_id").into());
    }
    let now = chrono::Utc::now();
    let pulled = list
        .into_iter()
        .enumerate()
        .map(|(index, raw)| match parse_event(&raw, config, now) {
            Ok(event) => Pulled::Event(event),
            Err(reason) => {
                let event_id = config.event_id_path.text(&raw);
                let body = raw.to_string();
                let key = event_id.clone().unwrap_or_else(|| format!("sha256:{}", crate::ids::sha256_hex(&body)));
                let reason = QueueSourceError::Event { url: url.to_string(), index, id: event_id.clone(), reason }.to_string();
                Pulled::Parked(Parked {
                    key,
                    event_id,
                    event_type: config.event_type_path.text(&raw),
                    reason,
                    body,
                    parked_at: crate::store::timestamp(now),
                })
            }
        })
        .collect();
    Ok((pulled, next_ack))
}

/// One event read at the config's paths, or why it cannot be stored.
fn parse_event(raw: &Value, config: &EventQueueConfig, now: chrono::DateTime<chrono::Utc>) -> Result<Event, String> {
    let Some(id) = config.event_id_path.text(raw) else { return Err(format!("no id at '{}'", config.event_id_path)) };
    let Some(kind) = config.event_type_path.text(raw) else { return Err(format!("no type at '{}'", config.event_type_path)) };
    let rule = config.rule(&kind);
    let id_path = rule.and_then(|r| r.id_path.as_ref()).unwrap_or(&config.object_id_path);
    let Some(object_id) = id_path.text(raw) else {
        return Err(format!("no object id at '{id_path}' (a non-empty string or a number)"));
    };
    let payload = raw.get("payload").cloned().unwrap_or(Value::Null);
    if !payload.is_object() {
        return Err("payload is not an object".into());
    }
    let object = match rule.and_then(|r| r.object.clone()) {
        Some(object) => object,
        None => payload["object"].as_str().map(String::from).unwrap_or_else(|| kind.split('.').next().unwrap_or_default().to_string()),
    };
    if let Err(e) = ident::mirror_table(&config.name, &object) {
        return Err(format!("object type: {e}"));
    }
    let created = config.created_at_path.get(raw).and_then(|t| config.created_at_format.parse(t, chrono_tz::UTC));
    Ok(Event {
        id,
        account: config.account_path.text(raw),
        kind,
        object,
        object_id,
        day: created.map_or(now, |at| at.with_timezone(&chrono::Utc)).format("%Y-%m-%d").to_string(),
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(events: Value) -> Value {
        json!({"events": events, "ack_id": "ack_1"})
    }

    fn config(extra: &str) -> EventQueueConfig {
        let text = format!("name = \"market\"\nbase_url = \"http://127.0.0.1:1\"\nevent_types = [\"order.created\"]\n{extra}");
        let config: EventQueueConfig = toml::from_str(&text).unwrap();
        config.validate().unwrap();
        config
    }

    fn stored(pulled: Vec<Pulled>) -> Vec<Event> {
        pulled.into_iter().map(|p| if let Pulled::Event(e) = p { e } else { panic!("parked: {p:?}") }).collect()
    }

    #[test]
    fn events_become_objects_of_their_payload() {
        let good = page(json!([{"id": "oev_1", "account": "seller_001", "type": "order.created", "created_at": "2026-11-22T10:00:00Z",
            "payload": {"id": "ord_1", "object": "order", "total": 5}}]));
        let (pulled, ack) = parse_page(good, "u", &config("")).unwrap();
        let events = stored(pulled);
        assert_eq!(ack.as_deref(), Some("ack_1"));
        assert_eq!((events[0].object.as_str(), events[0].object_id.as_str(), events[0].day.as_str()), ("order", "ord_1", "2026-11-22"));
        assert_eq!(events[0].account.as_deref(), Some("seller_001"));
        let untyped = page(json!([{"id": "oev_2", "type": "product.price_updated", "payload": {"id": 7}}]));
        let events = stored(parse_page(untyped, "u", &config("")).unwrap().0);
        assert_eq!((events[0].object.as_str(), events[0].object_id.as_str()), ("product", "7"));
    }

    /// Tiki's events as its reference note shows them: the seller in `sid`,
    /// `created_at` in epoch milliseconds, payloads without an id (an
    /// order's code, a product's id), `events: null` for none.
    #[test]
    fn tiki_shaped_events_are_read_at_their_paths() {
        let tiki = config(
            "account_path = \"sid\"\ncreated_at_format = \"unix_ms\"\n\
             [objects]\n\"ORDER_*\" = { object = \"order\", id_path = \"payload.order_code\" }\n\
             \"PRODUCT_*\" = { object = \"product\", id_path = \"payload.product_id\" }\n",
        );
        let page_of_two = page(json!([
            {"id": "11795810-aa", "sid": "7433F68", "created_at": 1740401636695_i64, "type": "ORDER_CREATED_SUCCESSFULLY", "version": "v1",
             "payload": {"order_code": "510916693"}},
            {"id": "11795811-bb", "sid": "7433F68", "created_at": "1740401636695", "type": "PRODUCT_INVENTORY_UPDATED", "version": "v2",
             "payload": {"product_id": 42, "quantity_from": 1, "quantity_to": 0}},
        ]));
        let events = stored(parse_page(page_of_two, "u", &tiki).unwrap().0);
        let seen: Vec<(&str, &str, Option<&str>, &str)> =
            events.iter().map(|e| (e.object.as_str(), e.object_id.as_str(), e.account.as_deref(), e.day.as_str())).collect();
        assert_eq!(seen, [("order", "510916693", Some("7433F68"), "2025-02-24"), ("product", "42", Some("7433F68"), "2025-02-24")]);
        assert_eq!(parse_page(json!({"events": null, "ack_id": null}), "u", &tiki).unwrap(), (vec![], None));
        assert_eq!(tiki.rule("ORDER_STATUS_UPDATED").and_then(|r| r.object.as_deref()), Some("order"));
        assert!(tiki.rule("SELLER_UPDATED").is_none());
    }

    /// An event that cannot be stored is parked with its reason and body;
    /// the events beside it are not held up.
    #[test]
    fn bad_events_are_parked_with_their_reason_and_body() {
        for (bad, key, expected) in [
            (json!({"type": "order.created", "payload": {"id": "ord_1"}}), None, "event 0: no id at 'id'"),
            (json!({"id": "oev_1", "payload": {"id": "ord_1"}}), Some("oev_1"), "event 0 (oev_1): no type at 'type'"),
            (json!({"id": "oev_1", "type": "order.created", "payload": "x"}), Some("oev_1"), "no object id"),
            (json!({"id": "oev_1", "type": "order.created", "payload": {"total": 1}}), Some("oev_1"), "no object id at 'payload.id'"),
            (json!({"id": "oev_1", "type": "order.created", "payload": {"id": "o", "object": "x\"; DROP"}}), Some("oev_1"), "object type"),
        ] {
            let good = json!({"id": "oev_9", "type": "order.created", "payload": {"id": "ord_9"}});
            let (pulled, ack) = parse_page(page(json!([bad.clone(), good])), "POST /pull", &config("")).unwrap();
            assert_eq!(ack.as_deref(), Some("ack_1"));
            let Pulled::Parked(parked) = &pulled[0] else { panic!("not parked: {bad}") };
            assert!(parked.reason.contains(expected) && parked.reason.contains("POST /pull"), "{}", parked.reason);
            assert_eq!(serde_json::from_str::<Value>(&parked.body).unwrap(), bad, "the body as it came");
            match key {
                Some(key) => assert_eq!(parked.key, key),
                None => assert!(parked.key.starts_with("sha256:") && parked.key.len() == 71, "{}", parked.key),
            }
            assert!(matches!(&pulled[1], Pulled::Event(e) if e.id == "oev_9"), "the next event is not held up");
        }
        assert!(parse_page(json!({"events": [{"id": "oev_1"}]}), "u", &config("")).is_err(), "events without an ack id");
        assert!(parse_page(json!([]), "u", &config("")).is_err());
        assert_eq!(parse_page(json!({"events": [], "ack_id": null}), "u", &config("")).unwrap(), (vec![], None));
    }

    #[test]
    fn an_object_rule_must_be_a_type_or_a_prefix() {
        let text = "name = \"m\"\nbase_url = \"http://x\"\nevent_types = [\"a\"]\n[objects]\n\"A*B\" = { object = \"a\" }\n";
        let config: EventQueueConfig = toml::from_str(text).unwrap();
        assert!(config.validate().unwrap_err().to_string().contains("'A*B' is not an event type or a prefix ending in *"));
    }
}

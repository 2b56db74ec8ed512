//! Enrichment: an event type whose rule names a `fetch` is stored as the
//! whole object fetched from the upstream (Tiki's thin order events: the
//! order at `GET /integration/v2/orders/{code}`), not as its payload. Each
//! object is fetched once per batch, with its seller's token where the
//! source has one; an object that cannot be fetched (after
//! `fetch_attempts` tries, or refused) parks its events.

use std::collections::HashMap;

use futures::StreamExt;
use serde_json::Value;

use super::parse::{Event, park};
use super::{QueueSourceError, Runner};
use crate::source::http::{ClientError, Extra};
use crate::store::ledger::Parked;

/// Objects fetched at once.
const FETCHES_AT_ONCE: usize = 8;

impl Runner {
    /// Replace each event's payload by its object where its rule fetches
    /// one; events whose object cannot be had are parked instead.
    pub(super) async fn enrich(&self, events: Vec<Event>) -> (Vec<Event>, Vec<Parked>) {
        let c = &self.config;
        // each object once: (account, fetch path) → its events' indices
        let mut wanted: HashMap<(Option<String>, String), Vec<usize>> = HashMap::new();
        for (i, event) in events.iter().enumerate() {
            if let Some(path) = c.rule(&event.kind).and_then(|rule| rule.fetch_path_of(&event.object_id)) {
                wanted.entry((event.account.clone(), path)).or_default().push(i);
            }
        }
        if wanted.is_empty() {
            return (events, Vec::new());
        }
        let events_ref = &events;
        let fetches = futures::stream::iter(wanted).map(|((account, path), indices)| async move {
            let rule = c.rule(&events_ref[indices[0]].kind);
            let fetched = self.fetch(account.as_deref(), &path, rule.and_then(|r| r.fetch_path.as_ref())).await;
            (indices, fetched)
        });
        let results: Vec<(Vec<usize>, Result<Value, QueueSourceError>)> = fetches.buffer_unordered(FETCHES_AT_ONCE).collect().await;
        let mut outcome: Vec<Option<Result<Value, String>>> = vec![None; events.len()];
        for (indices, fetched) in results {
            let fetched = fetched.map_err(|e| e.to_string());
            for i in indices {
                outcome[i] = Some(fetched.clone());
            }
        }
        let mut stored = Vec::with_capacity(events.len());
        let mut parked = Vec::new();
        for (mut event, outcome) in events.into_iter().zip(outcome) {
            match outcome {
                None => stored.push(event),
                Some(Ok(object)) => {
                    event.payload = object;
                    stored.push(event);
                }
                Some(Err(reason)) => {
                    let reason = format!("event {}: fetching {} {}: {reason}", event.id, event.object, event.object_id);
                    tracing::warn!(kind = "event_parked", source = %c.name, event_id = %event.id, event_type = %event.kind, reason = %reason,
                        "an event's object cannot be fetched; it is parked with its body, and the queue goes on");
                    parked.push(park(&event.raw, c, reason));
                }
            }
        }
        (stored, parked)
    }

    /// GET one object with the seller's client (else the source's), and
    /// take it out of the answer.
    async fn fetch(
        &self,
        account: Option<&str>,
        path: &str,
        at: Option<&crate::source::declarative::Path>,
    ) -> Result<Value, QueueSourceError> {
        let client = account.and_then(|a| self.sellers.get(a)).unwrap_or(&self.client);
        let extra = Extra { attempts: Some(self.config.fetch_attempts), ..Extra::default() };
        let answer: Value = client.request(reqwest::Method::GET, path, extra).await?.body;
        let object = match at {
            Some(at) => at.get(&answer).cloned(),
            None => Some(answer),
        };
        match object {
            Some(object @ Value::Object(_)) => Ok(object),
            _ => {
                let at = at.map_or("$".to_string(), |p| p.to_string());
                Err(ClientError::Shape { url: format!("GET {path}"), reason: format!("no object at '{at}' in the answer") }.into())
            }
        }
    }
}

//! A pull's answer read at the config's paths: each event checked and
//! ready to store, or parked with why not.

use serde_json::Value;

use super::{EventQueueConfig, QueueSourceError};
use crate::source::http::ClientError;
use crate::store::ident;
use crate::store::ledger::Parked;

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
    /// What is stored: the payload, or the object fetched for it.
    pub payload: Value,
    /// The event as it came (parked with it if its object cannot be fetched).
    pub raw: Value,
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
                let id = config.event_id_path.text(&raw);
                Pulled::Parked(park(&raw, config, QueueSourceError::Event { url: url.to_string(), index, id, reason }.to_string()))
            }
        })
        .collect();
    Ok((pulled, next_ack))
}

/// An event parked with why it cannot be stored: under its id, or the
/// digest of its body when it has none.
pub fn park(raw: &Value, config: &EventQueueConfig, reason: String) -> Parked {
    let event_id = config.event_id_path.text(raw);
    let body = raw.to_string();
    let key = event_id.clone().unwrap_or_else(|| format!("sha256:{}", crate::ids::sha256_hex(&body)));
    let parked_at = crate::store::timestamp(chrono::Utc::now());
    Parked { key, event_id, event_type: config.event_type_path.text(raw), reason, body, parked_at }
}

/// One event read at the config's paths, or why it cannot be stored.
pub fn parse_event(raw: &Value, config: &EventQueueConfig, now: chrono::DateTime<chrono::Utc>) -> Result<Event, String> {
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
        raw: raw.clone(),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

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

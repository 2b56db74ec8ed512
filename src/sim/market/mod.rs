//! An Open-Platform-style marketplace: sellers' orders and products change,
//! and each change is an event pushed into the integrator's pull queues.
//!
//! - `POST /integration/v1/queues {"name"}` → `{"code","name","status"}`; `GET` lists them
//! - `POST /integration/v1/queues/{code}/subscriptions {"event_type","account"?}`; `GET` lists them
//! - `POST /integration/v1/queues/{code}/events/pull {"ack_id"?,"limit"?}` →
//!   `{"events":[{"id","account","type","created_at","payload"}],"ack_id"}`
//!
//! Delivery is at least once: a pull that does not acknowledge the batch
//! before it (`ack_id`) gets the same events again under a new ack id. An ack
//! id other than the last one handed out is refused (`ack_id_invalid`).

pub mod routes;

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;

/// Event types the marketplace emits.
pub const EVENT_TYPES: &[&str] = &["order.created", "order.updated", "product.price_updated", "product.quantity_updated"];
const STATUSES: &[&str] = &["paid", "packed", "shipped", "delivered"];
const PRODUCTS_PER_SELLER: u64 = 20;
const MAX_PULL: usize = 500;

struct Event {
    id: String,
    account: String,
    kind: &'static str,
    created_at: String,
    payload: Value,
}

struct Subscription {
    code: String,
    event_type: String,
    /// `None`: every seller.
    account: Option<String>,
}

#[derive(Default)]
struct Queue {
    name: String,
    subscriptions: Vec<Subscription>,
    /// Indices into `Market::events`, in arrival order.
    log: Vec<usize>,
    /// Events of `log` acknowledged so far.
    acked: usize,
    /// The batch handed out last and not yet acknowledged: (ack id, end in `log`).
    in_flight: Option<(String, usize)>,
}

/// Counters tests compare against.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct MarketStats {
    pub events: u64,
    pub pulled: u64,
    pub acked: u64,
    /// Events handed out again because their batch was not acknowledged.
    pub redelivered: u64,
    /// Acknowledgements dropped by the `lose_acks` fault.
    pub acks_lost: u64,
}

pub struct Market {
    sellers: Vec<String>,
    products: BTreeMap<String, Value>,
    orders: BTreeMap<String, Value>,
    events: Vec<Event>,
    queues: BTreeMap<String, Queue>,
    next: u64,
    rng: StdRng,
    pub stats: MarketStats,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueBody {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionBody {
    event_type: String,
    #[serde(default)]
    account: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PullBody {
    #[serde(default)]
    ack_id: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

/// Every change of an object raises its `version`, so each event carries a
/// new state.
fn bump(object: &mut Value) {
    object["version"] = json!(object["version"].as_i64().unwrap_or(0) + 1);
}

fn bad_request(code: &'static str, message: String) -> ApiError {
    ApiError { status: 400, kind: "invalid_request_error", code: Some(code), param: None, message }
}

fn queue_missing(code: &str) -> ApiError {
    ApiError {
        status: 404,
        kind: "invalid_request_error",
        code: Some("queue_not_found"),
        param: None,
        message: format!("no queue '{code}'"),
    }
}

impl Market {
    pub fn seeded(seed: u64, sellers: usize) -> Self {
        let mut market = Market {
            sellers: (1..=sellers.max(1)).map(|n| format!("seller_{n:03}")).collect(),
            products: BTreeMap::new(),
            orders: BTreeMap::new(),
            events: Vec::new(),
            queues: BTreeMap::new(),
            next: 1,
            rng: StdRng::seed_from_u64(seed ^ 0x0b_e11),
            stats: MarketStats::default(),
        };
        for seller in market.sellers.clone() {
            for _ in 0..PRODUCTS_PER_SELLER {
                let id = market.id("prd");
                let product = json!({
                    "id": id, "object": "product", "seller": seller,
                    "title": format!("Item {id}"),
                    "price": market.rng.gen_range(100..10_000), "currency": "eur",
                    "quantity": market.rng.gen_range(0..200), "version": 1,
                });
                market.products.insert(id, product);
            }
        }
        market
    }

    fn id(&mut self, prefix: &str) -> String {
        let n = self.next;
        self.next += 1;
        format!("{prefix}_{n:08}")
    }

    /// One random seller event: a new order (3 in 10), an order moving on
    /// (3 in 10), or a product's price or stock changing.
    pub fn random_event(&mut self) {
        let roll: f64 = self.rng.r#gen();
        if roll < 0.3 || (roll < 0.6 && self.orders.is_empty()) {
            let product_ids: Vec<&String> = self.products.keys().collect();
            let product = self.products[product_ids[self.rng.gen_range(0..product_ids.len())]].clone();
            let id = self.id("ord");
            let quantity = self.rng.gen_range(1..4);
            let order = json!({
                "id": id, "object": "order", "seller": product["seller"], "status": "created",
                "lines": [{"product": product["id"], "quantity": quantity, "price": product["price"]}],
                "total": product["price"].as_i64().unwrap_or(0) * quantity, "currency": "eur", "version": 1,
            });
            self.orders.insert(id, order.clone());
            self.emit("order.created", order);
        } else if roll < 0.6 {
            let ids: Vec<&String> = self.orders.keys().collect();
            let id = ids[self.rng.gen_range(0..ids.len())].clone();
            let status = STATUSES[self.rng.gen_range(0..STATUSES.len())];
            let order = self.orders.get_mut(&id).expect("picked from the map");
            order["status"] = json!(status);
            bump(order);
            let order = order.clone();
            self.emit("order.updated", order);
        } else {
            let ids: Vec<&String> = self.products.keys().collect();
            let id = ids[self.rng.gen_range(0..ids.len())].clone();
            let (kind, field, value) = if roll < 0.8 {
                ("product.price_updated", "price", self.rng.gen_range(100..10_000))
            } else {
                ("product.quantity_updated", "quantity", self.rng.gen_range(0..200))
            };
            let product = self.products.get_mut(&id).expect("picked from the map");
            product[field] = json!(value);
            bump(product);
            let product = product.clone();
            self.emit(kind, product);
        }
    }

    fn emit(&mut self, kind: &'static str, payload: Value) {
        let account = payload["seller"].as_str().unwrap_or_default().to_string();
        let id = self.id("oev");
        let index = self.events.len();
        for queue in self.queues.values_mut() {
            if queue.subscriptions.iter().any(|s| s.event_type == kind && s.account.as_ref().is_none_or(|a| *a == account)) {
                queue.log.push(index);
            }
        }
        let created_at = crate::store::timestamp(chrono::Utc::now());
        self.events.push(Event { id, account, kind, created_at, payload });
        self.stats.events += 1;
    }

    pub fn create_queue(&mut self, body: QueueBody) -> Result<Value, ApiError> {
        if body.name.trim().is_empty() || body.name.len() > 100 {
            return Err(bad_request("name_invalid", "name must be 1 to 100 characters".into()));
        }
        let code = self.id("que");
        self.queues.insert(code.clone(), Queue { name: body.name.clone(), ..Queue::default() });
        Ok(json!({"code": code, "name": body.name, "status": "ACTIVE"}))
    }

    pub fn list_queues(&self) -> Value {
        let queues: Vec<Value> = self.queues.iter().map(|(code, q)| json!({"code": code, "name": q.name, "status": "ACTIVE"})).collect();
        json!({ "queues": queues })
    }

    pub fn subscribe(&mut self, code: &str, body: SubscriptionBody) -> Result<Value, ApiError> {
        if !EVENT_TYPES.contains(&body.event_type.as_str()) {
            return Err(bad_request(
                "event_type_invalid",
                format!("unknown event_type '{}' (known: {})", body.event_type, EVENT_TYPES.join(", ")),
            ));
        }
        if let Some(account) = &body.account
            && !self.sellers.contains(account)
        {
            return Err(bad_request("account_invalid", format!("no seller '{account}'")));
        }
        let sub_code = self.id("sub");
        let queue = self.queues.get_mut(code).ok_or_else(|| queue_missing(code))?;
        let response = json!({"code": sub_code, "event_type": body.event_type, "account": body.account, "active": true});
        queue.subscriptions.push(Subscription { code: sub_code, event_type: body.event_type, account: body.account });
        Ok(response)
    }

    /// A queue's subscriptions, as a bare array.
    pub fn list_subscriptions(&self, code: &str) -> Result<Value, ApiError> {
        let queue = self.queues.get(code).ok_or_else(|| queue_missing(code))?;
        let list =
            queue.subscriptions.iter().map(|s| json!({"code": s.code, "event_type": s.event_type, "account": s.account, "active": true}));
        Ok(Value::Array(list.collect()))
    }

    /// A pull: acknowledge the batch named by `ack_id` (unless `lose_ack`),
    /// then hand out the next unacknowledged events under a new ack id
    /// (with `broken`, the first one's payload without its id: a fault).
    pub fn pull(&mut self, code: &str, body: PullBody, lose_ack: bool, broken: bool) -> Result<String, ApiError> {
        let limit = body.limit.unwrap_or(100);
        if limit == 0 || limit > MAX_PULL {
            return Err(bad_request("limit_invalid", format!("limit must be 1 to {MAX_PULL}")));
        }
        let fresh_ack = self.id("ack");
        let queue = self.queues.get_mut(code).ok_or_else(|| queue_missing(code))?;
        if let Some(ack_id) = &body.ack_id {
            match &queue.in_flight {
                Some((current, end)) if current == ack_id => {
                    if lose_ack {
                        self.stats.acks_lost += 1;
                    } else {
                        self.stats.acked += (*end - queue.acked) as u64;
                        queue.acked = *end;
                        queue.in_flight = None;
                    }
                }
                _ => {
                    return Err(bad_request(
                        "ack_id_invalid",
                        format!("ack_id '{ack_id}' is not the last batch handed out by queue '{code}'"),
                    ));
                }
            }
        }
        if let Some((_, end)) = queue.in_flight.take() {
            self.stats.redelivered += (end - queue.acked) as u64;
        }
        let end = (queue.acked + limit).min(queue.log.len());
        let batch = &queue.log[queue.acked..end];
        self.stats.pulled += batch.len() as u64;
        let mut events: Vec<Value> = batch
            .iter()
            .map(|&i| {
                let e = &self.events[i];
                json!({"id": e.id, "account": e.account, "type": e.kind, "created_at": e.created_at, "payload": e.payload})
            })
            .collect();
        if broken && let Some(Value::Object(payload)) = events.first_mut().map(|e| &mut e["payload"]) {
            payload.remove("id");
        }
        let ack_id = if events.is_empty() {
            None
        } else {
            queue.in_flight = Some((fresh_ack.clone(), end));
            Some(fresh_ack)
        };
        Ok(json!({"events": events, "ack_id": ack_id}).to_string())
    }

    /// Per queue: events queued, acknowledged, and handed out unacknowledged.
    pub fn queue_stats(&self) -> Value {
        let queues: serde_json::Map<String, Value> = self
            .queues
            .iter()
            .map(|(code, q)| {
                let in_flight = q.in_flight.as_ref().map_or(0, |(_, end)| end - q.acked);
                let subscriptions = q.subscriptions.len();
                (code.clone(), json!({"queued": q.log.len(), "acked": q.acked, "in_flight": in_flight, "subscriptions": subscriptions}))
            })
            .collect();
        Value::Object(queues)
    }

    /// Current orders and products (`/__sim/market`), as a mirror of the
    /// events should hold them.
    pub fn truth(&self) -> Value {
        json!({
            "order": self.orders.values().collect::<Vec<_>>(),
            "product": self.products.values().collect::<Vec<_>>(),
            "event_ids": self.events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pull(market: &mut Market, code: &str, ack: Option<&str>, limit: usize) -> Value {
        let body = PullBody { ack_id: ack.map(String::from), limit: Some(limit) };
        serde_json::from_str(&market.pull(code, body, false, false).unwrap()).unwrap()
    }

    #[test]
    fn unacknowledged_batches_come_again_and_acks_move_on() {
        let mut market = Market::seeded(1, 2);
        let code = market.create_queue(QueueBody { name: "q".into() }).unwrap()["code"].as_str().unwrap().to_string();
        for kind in EVENT_TYPES {
            market.subscribe(&code, SubscriptionBody { event_type: kind.to_string(), account: None }).unwrap();
        }
        for _ in 0..25 {
            market.random_event();
        }
        let first = pull(&mut market, &code, None, 10);
        let again = pull(&mut market, &code, None, 10);
        assert_eq!(first["events"], again["events"], "no ack: the same batch again");
        assert_eq!(market.stats.redelivered, 10);
        let stale = market.pull(&code, PullBody { ack_id: first["ack_id"].as_str().map(String::from), limit: None }, false, false);
        assert_eq!(stale.unwrap_err().code, Some("ack_id_invalid"));
        let next = pull(&mut market, &code, again["ack_id"].as_str(), 10);
        assert_ne!(next["events"][0]["id"], first["events"][0]["id"]);
        assert_eq!(market.stats.acked, 10);
        let rest = pull(&mut market, &code, next["ack_id"].as_str(), 100);
        assert_eq!(rest["events"].as_array().unwrap().len(), 5);
        let empty = pull(&mut market, &code, rest["ack_id"].as_str(), 100);
        assert!(empty["events"].as_array().unwrap().is_empty() && empty["ack_id"].is_null());
        assert_eq!(market.stats.acked, 25);
    }
}

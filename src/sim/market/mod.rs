//! Tiki's Open Platform as `../shared/reference/tiki-event-queue.md`
//! describes it: sellers' orders and products change, and each change is a
//! thin event in the pull queues subscribed to it.
//!
//! - `oauth`: the token endpoint (the app's client-credentials token, each
//!   seller's token from a refresh token that rotates)
//! - `routes`: queues, subscriptions, pulls, the order lookup
//!
//! The shapes of the note: the queue list is a bare array of
//! `{"code","name","status"}` (codes are UUIDs); a subscription
//! `{"code","active","event_type","sid"}` is made with the seller's token
//! (the seller is the token's); a pull `{"ack_id"}` answers
//! `{"events":[{"id","sid","created_at","type","version","payload"}],"ack_id"}`
//! with `created_at` in epoch milliseconds and payloads that carry an order's
//! code or a product's id but no `id`; the full order is at
//! `GET /integration/v2/orders/{code}`; errors are `{"errors":[…]}`.
//!
//! What the note does not say, the simulator decides (and the `tiki` preset
//! lets a user change): the subscription list is a bare array at
//! `GET …/queues/{code}/subscriptions`; a pull may ask for a `limit`
//! (default 100); `POST …/queues/{code}/events/ack {"ack_id"}` acknowledges
//! without pulling; an order's full shape.
//!
//! Delivery is at least once: a pull that does not acknowledge the batch
//! before it gets the same events again under a new ack id; an ack id other
//! than the last one handed out is refused (400).

pub mod oauth;
pub mod routes;

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::Deserialize;
use serde_json::{Value, json};

use oauth::OAuth;

/// Event types the marketplace emits (the documented ones).
pub const EVENT_TYPES: &[&str] = &[
    "ORDER_CREATED_SUCCESSFULLY",
    "ORDER_STATUS_UPDATED",
    "PRODUCT_PRICE_UPDATED",
    "PRODUCT_MARKET_PRICE_UPDATED",
    "PRODUCT_INVENTORY_UPDATED",
];
const STATUSES: &[&str] = &["seller_confirmed", "picking", "packaging", "ready_to_ship", "shipping", "successful_delivery", "canceled"];
const PRODUCTS_PER_SELLER: usize = 20;
const MAX_PULL: usize = 500;
const DEFAULT_PULL: usize = 100;

/// A refusal in Tiki's shape: `{"errors": [message]}` with its status.
#[derive(Debug, Clone, PartialEq)]
pub struct TikiError {
    pub status: u16,
    pub message: String,
}

impl TikiError {
    pub fn new(status: u16, message: impl Into<String>) -> TikiError {
        TikiError { status, message: message.into() }
    }

    pub fn body(&self) -> Value {
        json!({"errors": [self.message]})
    }
}

struct Event {
    id: String,
    sid: String,
    kind: &'static str,
    version: &'static str,
    created_at: i64,
    payload: Value,
}

struct Subscription {
    code: String,
    event_type: String,
    sid: String,
}

#[derive(Default)]
struct Queue {
    /// The app (client id) that made it.
    owner: String,
    name: String,
    subscriptions: Vec<Subscription>,
    /// Indices into `Market::events`, in arrival order.
    log: Vec<usize>,
    /// Events of `log` acknowledged so far.
    acked: usize,
    /// The batch handed out last and not yet acknowledged: (ack id, end in `log`).
    in_flight: Option<(String, usize)>,
}

struct Product {
    sid: String,
    id: i64,
    sku: String,
    name: String,
    price: i64,
    market_price: i64,
    quantity: i64,
    /// The payload of its last event: what a mirror of its events holds.
    last_payload: Option<Value>,
}

struct Order {
    sid: String,
    /// The order as `GET /integration/v2/orders/{code}` answers it.
    full: Value,
    last_payload: Value,
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
    /// Orders looked up (`GET /integration/v2/orders/{code}`).
    pub order_lookups: u64,
}

pub struct Market {
    sellers: Vec<String>,
    products: Vec<Product>,
    orders: BTreeMap<String, Order>,
    events: Vec<Event>,
    queues: BTreeMap<String, Queue>,
    /// Events handed out broken (the `broken_event` fault): event id → (object, id).
    broken: BTreeMap<String, (&'static str, String)>,
    next_order: u64,
    rng: StdRng,
    pub oauth: OAuth,
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
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PullBody {
    #[serde(default)]
    ack_id: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckBody {
    ack_id: String,
}

fn queue_missing(code: &str) -> TikiError {
    TikiError::new(404, format!("queue '{code}' not found"))
}

/// A UUID (version 4 layout) from the simulator's generator.
fn uuid(rng: &mut StdRng) -> String {
    let n: u128 = rng.r#gen::<u128>() & !(0xf << 76) | (0x4 << 76);
    let hex = format!("{n:032x}");
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Tiki's order times: `YYYY-MM-DD HH:MM:SS` (Vietnam time).
fn order_time() -> String {
    (chrono::Utc::now() + chrono::Duration::hours(7)).format("%Y-%m-%d %H:%M:%S").to_string()
}

impl Market {
    pub fn seeded(seed: u64, sellers: usize) -> Self {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x0b_e11);
        let sellers: Vec<String> = (0..sellers.max(1)).map(|_| format!("{:032X}{:08X}", rng.r#gen::<u128>(), rng.r#gen::<u32>())).collect();
        let mut products = Vec::new();
        for (s, sid) in sellers.iter().enumerate() {
            for p in 0..PRODUCTS_PER_SELLER {
                let id = 270_000_000 + (s * PRODUCTS_PER_SELLER + p) as i64;
                let price = rng.gen_range(10..2_000) * 1_000;
                products.push(Product {
                    sid: sid.clone(),
                    id,
                    sku: format!("{}", 4_000_000_000_000_i64 + id),
                    name: format!("Item {id}"),
                    price,
                    market_price: price + rng.gen_range(0..100) * 1_000,
                    quantity: rng.gen_range(0..200),
                    last_payload: None,
                });
            }
        }
        let oauth = OAuth::new(&sellers, &mut rng);
        Market {
            sellers,
            products,
            orders: BTreeMap::new(),
            events: Vec::new(),
            queues: BTreeMap::new(),
            broken: BTreeMap::new(),
            next_order: 1,
            rng,
            oauth,
            stats: MarketStats::default(),
        }
    }

    /// One random seller event: a new order (3 in 10), an order's status
    /// moving on (3 in 10), or a product's price, market price or stock.
    pub fn random_event(&mut self) {
        let roll: f64 = self.rng.r#gen();
        if roll < 0.3 || (roll < 0.6 && self.orders.is_empty()) {
            self.new_order();
        } else if roll < 0.6 {
            let codes: Vec<&String> = self.orders.keys().collect();
            let code = codes[self.rng.gen_range(0..codes.len())].clone();
            let order = self.orders.get_mut(&code).expect("picked from the map");
            // an update changes the order: never the status it has
            let current = order.full["status"].as_str().unwrap_or_default().to_string();
            let choices: Vec<&&str> = STATUSES.iter().filter(|s| **s != current).collect();
            let status = *choices[self.rng.gen_range(0..choices.len())];
            order.full["status"] = json!(status);
            order.full["updated_at"] = json!(order_time());
            order.last_payload = json!({"order_code": code, "orderCode": code, "status": status});
            let (sid, payload) = (order.sid.clone(), order.last_payload.clone());
            self.emit(sid, "ORDER_STATUS_UPDATED", "v1", payload);
        } else {
            let index = self.rng.gen_range(0..self.products.len());
            let (kind, version) = if roll < 0.75 {
                ("PRODUCT_PRICE_UPDATED", "v1")
            } else if roll < 0.85 {
                ("PRODUCT_MARKET_PRICE_UPDATED", "v1")
            } else {
                ("PRODUCT_INVENTORY_UPDATED", "v2")
            };
            // an event changes the product: never the value it has
            let product = &self.products[index];
            let (price, market_price, stock) = (product.price, product.market_price, product.quantity);
            let mut next = self.rng.gen_range(10..2_000) * 1_000;
            while next == price || next == market_price {
                next += 1_000;
            }
            let quantity = (stock + self.rng.gen_range(1..200)) % 200;
            let product = &mut self.products[index];
            let mut payload = json!({"product_id": product.id, "original_sku": product.sku});
            match kind {
                "PRODUCT_PRICE_UPDATED" => {
                    payload["price_from"] = json!(product.price.to_string());
                    payload["price_to"] = json!(next.to_string());
                    product.price = next;
                }
                "PRODUCT_MARKET_PRICE_UPDATED" => {
                    payload["market_price_from"] = json!(product.market_price.to_string());
                    payload["market_price_to"] = json!(next.to_string());
                    product.market_price = next;
                }
                _ => {
                    payload["warehouse_id"] = json!(1);
                    for field in ["quantity", "quantity_available", "quantity_sellable"] {
                        payload[format!("{field}_from")] = json!(product.quantity);
                        payload[format!("{field}_to")] = json!(quantity);
                    }
                    payload["quantity_reserved_from"] = json!(0);
                    payload["quantity_reserved_to"] = json!(0);
                    product.quantity = quantity;
                }
            }
            product.last_payload = Some(payload.clone());
            let sid = product.sid.clone();
            self.emit(sid, kind, version, payload);
        }
    }

    fn new_order(&mut self) {
        let product = &self.products[self.rng.gen_range(0..self.products.len())];
        let n = self.next_order;
        self.next_order += 1;
        let code = (510_000_000 + n).to_string();
        let quantity = self.rng.gen_range(1..4);
        let total = product.price * quantity;
        let now = order_time();
        let full = json!({
            "id": 180_000_000 + n, "code": code, "status": "queueing", "fulfillment_type": "seller_delivery", "is_rma": false,
            "items": [{
                "id": 390_000_000 + n,
                "product": {"id": product.id, "sku": product.sku, "name": product.name},
                "invoice": {"quantity": quantity, "price": product.price, "row_total": total},
            }],
            "invoice": {"items_count": 1, "items_quantity": quantity, "subtotal": total, "grand_total": total},
            "created_at": now, "updated_at": now,
        });
        let sid = product.sid.clone();
        let last_payload = json!({"order_code": code});
        self.orders.insert(code, Order { sid: sid.clone(), full, last_payload: last_payload.clone() });
        self.emit(sid, "ORDER_CREATED_SUCCESSFULLY", "v1", last_payload);
    }

    fn emit(&mut self, sid: String, kind: &'static str, version: &'static str, payload: Value) {
        let index = self.events.len();
        for queue in self.queues.values_mut() {
            if queue.subscriptions.iter().any(|s| s.event_type == kind && s.sid == sid) {
                queue.log.push(index);
            }
        }
        let id = uuid(&mut self.rng);
        self.events.push(Event { id, sid, kind, version, created_at: now_ms(), payload });
        self.stats.events += 1;
    }

    /// The queue `code`, if the app `owner` made it.
    fn queue_of(&mut self, owner: &str, code: &str) -> Result<&mut Queue, TikiError> {
        self.queues.get_mut(code).filter(|q| q.owner == owner).ok_or_else(|| queue_missing(code))
    }

    pub fn create_queue(&mut self, owner: &str, body: QueueBody) -> Result<Value, TikiError> {
        if body.name.trim().is_empty() || body.name.len() > 100 {
            return Err(TikiError::new(400, "name must be 1 to 100 characters"));
        }
        let code = uuid(&mut self.rng);
        self.queues.insert(code.clone(), Queue { owner: owner.to_string(), name: body.name.clone(), ..Queue::default() });
        Ok(json!({"code": code, "name": body.name, "status": "ACTIVE"}))
    }

    /// The app's queues, as a bare array.
    pub fn list_queues(&self, owner: &str) -> Value {
        let queues = self.queues.iter().filter(|(_, q)| q.owner == owner);
        Value::Array(queues.map(|(code, q)| json!({"code": code, "name": q.name, "status": "ACTIVE"})).collect())
    }

    /// Subscribe the queue to a seller's events of one type.
    pub fn subscribe(&mut self, sid: &str, code: &str, body: SubscriptionBody) -> Result<Value, TikiError> {
        if !EVENT_TYPES.contains(&body.event_type.as_str()) {
            return Err(TikiError::new(400, format!("event_type '{}' is not one of {}", body.event_type, EVENT_TYPES.join(", "))));
        }
        let sub_code = uuid(&mut self.rng);
        let queue = self.queues.get_mut(code).ok_or_else(|| queue_missing(code))?;
        let response = json!({"code": sub_code, "active": true, "event_type": body.event_type, "sid": sid});
        queue.subscriptions.push(Subscription { code: sub_code, event_type: body.event_type, sid: sid.to_string() });
        Ok(response)
    }

    /// A queue's subscriptions (only `sid`'s, when a seller asks), as a bare array.
    pub fn list_subscriptions(&self, code: &str, sid: Option<&str>) -> Result<Value, TikiError> {
        let queue = self.queues.get(code).ok_or_else(|| queue_missing(code))?;
        let mine = queue.subscriptions.iter().filter(|s| sid.is_none_or(|sid| s.sid == sid));
        let list = mine.map(|s| json!({"code": s.code, "active": true, "event_type": s.event_type, "sid": s.sid}));
        Ok(Value::Array(list.collect()))
    }

    /// Acknowledge the batch named by `ack_id` (unless `lose_ack`).
    fn acknowledge(&mut self, owner: &str, code: &str, ack_id: &str, lose_ack: bool) -> Result<(), TikiError> {
        let queue = self.queues.get_mut(code).filter(|q| q.owner == owner).ok_or_else(|| queue_missing(code))?;
        match &queue.in_flight {
            Some((current, end)) if current == ack_id => {
                if lose_ack {
                    self.stats.acks_lost += 1;
                } else {
                    self.stats.acked += (*end - queue.acked) as u64;
                    queue.acked = *end;
                    queue.in_flight = None;
                }
                Ok(())
            }
            _ => Err(TikiError::new(400, format!("ack_id '{ack_id}' is not the last batch handed out by queue '{code}'"))),
        }
    }

    /// `POST …/events/ack {"ack_id"}`.
    pub fn ack(&mut self, owner: &str, code: &str, body: AckBody, lose_ack: bool) -> Result<Value, TikiError> {
        self.acknowledge(owner, code, &body.ack_id, lose_ack)?;
        Ok(json!({}))
    }

    /// A pull: acknowledge the batch named by `ack_id`, then hand out the
    /// next unacknowledged events under a new ack id (with `broken`, the
    /// first one's payload without its order code or product id: a fault).
    pub fn pull(&mut self, owner: &str, code: &str, body: PullBody, lose_ack: bool, broken: bool) -> Result<String, TikiError> {
        let limit = body.limit.unwrap_or(DEFAULT_PULL);
        if limit == 0 || limit > MAX_PULL {
            return Err(TikiError::new(400, format!("limit must be 1 to {MAX_PULL}")));
        }
        if let Some(ack_id) = &body.ack_id {
            self.acknowledge(owner, code, ack_id, lose_ack)?;
        }
        let fresh_ack = uuid(&mut self.rng);
        let queue = self.queue_of(owner, code)?;
        let mut redelivered = 0;
        if let Some((_, end)) = queue.in_flight.take() {
            redelivered = (end - queue.acked) as u64;
        }
        let end = (queue.acked + limit).min(queue.log.len());
        let batch = queue.log[queue.acked..end].to_vec();
        if !batch.is_empty() {
            queue.in_flight = Some((fresh_ack.clone(), end));
        }
        self.stats.redelivered += redelivered;
        self.stats.pulled += batch.len() as u64;
        let mut events: Vec<Value> = batch
            .iter()
            .map(|&i| {
                let e = &self.events[i];
                json!({"id": e.id, "sid": e.sid, "created_at": e.created_at, "type": e.kind, "version": e.version, "payload": e.payload})
            })
            .collect();
        if broken && let Some(event) = events.first_mut() {
            let id = event["id"].as_str().unwrap_or_default().to_string();
            if let Some(Value::Object(payload)) = event.get_mut("payload") {
                let object = match (payload.remove("order_code"), payload.remove("product_id")) {
                    (Some(code), _) => ("order", code.as_str().unwrap_or_default().to_string()),
                    (_, Some(product)) => ("product", product.to_string()),
                    _ => ("unknown", String::new()),
                };
                payload.remove("orderCode");
                self.broken.insert(id, object);
            }
        }
        let ack_id = if events.is_empty() { None } else { Some(fresh_ack) };
        Ok(json!({"events": events, "ack_id": ack_id}).to_string())
    }

    /// `GET /integration/v2/orders/{code}` by the seller `sid`.
    pub fn order(&mut self, sid: &str, code: &str) -> Result<Value, TikiError> {
        self.stats.order_lookups += 1;
        match self.orders.get(code) {
            Some(order) if order.sid == sid => Ok(order.full.clone()),
            _ => Err(TikiError::new(404, format!("order '{code}' not found"))),
        }
    }

    /// Per queue: events queued, acknowledged, handed out unacknowledged,
    /// and subscriptions.
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

    /// Ground truth (`/__sim/market`): each order in full and as its last
    /// event left it, each product as its last event left it, every event
    /// id, and each seller's `sid` with the refresh token its authorization
    /// handed out.
    pub fn truth(&self) -> Value {
        let orders = self.orders.iter().map(|(code, o)| json!({"id": code, "sid": o.sid, "data": o.full, "last_payload": o.last_payload}));
        let products = self
            .products
            .iter()
            .filter_map(|p| Some(json!({"id": p.id.to_string(), "sid": p.sid, "last_payload": p.last_payload.as_ref()?})));
        let sellers = self.oauth.authorized.iter().map(|(sid, token)| json!({"sid": sid, "refresh_token": token}));
        json!({
            "order": orders.collect::<Vec<_>>(),
            "product": products.collect::<Vec<_>>(),
            "event_ids": self.events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            "sellers": sellers.collect::<Vec<_>>(),
            "broken": self.broken.iter().map(|(event, (object, id))| json!({"event_id": event, "object": object, "id": id})).collect::<Vec<_>>(),
            "tokens": self.oauth.stats,
        })
    }

    pub fn sellers(&self) -> &[String] {
        &self.sellers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pull(market: &mut Market, code: &str, ack: Option<&str>, limit: usize) -> Value {
        let body = PullBody { ack_id: ack.map(String::from), limit: Some(limit) };
        serde_json::from_str(&market.pull("app", code, body, false, false).unwrap()).unwrap()
    }

    #[test]
    fn unacknowledged_batches_come_again_and_acks_move_on() {
        let mut market = Market::seeded(1, 2);
        let code = market.create_queue("app", QueueBody { name: "q".into() }).unwrap()["code"].as_str().unwrap().to_string();
        assert_eq!(market.list_queues("app")[0]["code"], code.as_str(), "a bare array");
        assert_eq!(market.list_queues("other app"), json!([]), "another app's queues are not listed");
        for sid in market.sellers().to_vec() {
            for kind in EVENT_TYPES {
                market.subscribe(&sid, &code, SubscriptionBody { event_type: kind.to_string() }).unwrap();
            }
        }
        let sid = market.sellers()[0].clone();
        assert_eq!(market.list_subscriptions(&code, Some(&sid)).unwrap().as_array().unwrap().len(), EVENT_TYPES.len());
        for _ in 0..25 {
            market.random_event();
        }
        let first = pull(&mut market, &code, None, 10);
        let event = &first["events"][0];
        assert!(event["created_at"].is_i64() && event["sid"].as_str().unwrap().len() == 40, "{event}");
        assert!(event["payload"].get("id").is_none(), "payloads carry no id: {event}");
        let again = pull(&mut market, &code, None, 10);
        assert_eq!(first["events"], again["events"], "no ack: the same batch again");
        assert_eq!(market.stats.redelivered, 10);
        let stale = market.pull("app", &code, PullBody { ack_id: first["ack_id"].as_str().map(String::from), limit: None }, false, false);
        assert_eq!(stale.unwrap_err().status, 400);
        let next = pull(&mut market, &code, again["ack_id"].as_str(), 10);
        assert_ne!(next["events"][0]["id"], first["events"][0]["id"]);
        assert_eq!(market.stats.acked, 10);
        // a separate acknowledgement, then a pull without an ack id
        market.ack("app", &code, AckBody { ack_id: next["ack_id"].as_str().unwrap().into() }, false).unwrap();
        let rest = pull(&mut market, &code, None, 100);
        assert_eq!(rest["events"].as_array().unwrap().len(), 5);
        let empty = pull(&mut market, &code, rest["ack_id"].as_str(), 100);
        assert!(empty["events"].as_array().unwrap().is_empty() && empty["ack_id"].is_null());
        assert_eq!(market.stats.acked, 25);
    }

    #[test]
    fn an_order_is_looked_up_by_its_seller_only() {
        let mut market = Market::seeded(2, 2);
        market.new_order();
        let truth = market.truth();
        let (code, sid) = (truth["order"][0]["id"].as_str().unwrap(), truth["order"][0]["sid"].as_str().unwrap());
        assert_eq!(market.order(sid, code).unwrap()["code"], code);
        let other = market.sellers().iter().find(|s| *s != sid).unwrap().clone();
        assert_eq!(market.order(&other, code).unwrap_err().status, 404);
    }
}

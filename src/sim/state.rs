//! The simulator's ground truth: accounts, objects per type, events, and the
//! Stripe semantics over them (cursor pagination, nested lists, idempotency).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Map, Value, json};

use super::data::{self, Gen, NESTED, NESTED_INLINE, RESOURCES, Refs};
use crate::stripe_api::form::coerce;
use crate::stripe_api::{Ending, by_object};

/// Scope key of the platform account (requests without `Stripe-Account`).
pub const PLATFORM: &str = "";

/// An error in Stripe's shape; `status` is the HTTP status.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub kind: &'static str,
    pub code: Option<&'static str>,
    pub param: Option<String>,
    pub message: String,
}

impl ApiError {
    pub fn invalid(param: &str, message: String) -> Self {
        ApiError { status: 400, kind: "invalid_request_error", code: Some("parameter_invalid"), param: Some(param.into()), message }
    }

    pub fn missing(param: &str, object: &str, id: &str) -> Self {
        ApiError {
            status: 404,
            kind: "invalid_request_error",
            code: Some("resource_missing"),
            param: Some(param.into()),
            message: format!("No such {object}: '{id}'"),
        }
    }

    pub fn body(&self) -> Value {
        let mut error = json!({"type": self.kind, "message": self.message});
        if let Some(code) = self.code {
            error["code"] = json!(code);
        }
        if let Some(param) = &self.param {
            error["param"] = json!(param);
        }
        json!({ "error": error })
    }
}

/// `limit`, `starting_after`, `ending_before` of a list request.
#[derive(Debug, Default, Clone)]
pub struct ListParams {
    pub limit: usize,
    pub starting_after: Option<String>,
    pub ending_before: Option<String>,
    /// `status` of lists that filter on it (subscriptions).
    pub status: Option<String>,
    /// `created` (unix seconds): an exact value, or any of
    /// `created[gt|gte|lt|lte]`, as the inclusive span `[from, to]`.
    pub created: Option<(i64, i64)>,
}

/// `created=T` or `created[gt|gte|lt|lte]=T` as an inclusive span.
fn created_span(query: &Value) -> Result<Option<(i64, i64)>, ApiError> {
    let number = |raw: &Value| -> Result<i64, ApiError> {
        let text = raw.as_str().unwrap_or_default();
        text.parse::<i64>().map_err(|_| ApiError::invalid("created", format!("Invalid integer: {text}")))
    };
    match query.get("created") {
        None => Ok(None),
        Some(Value::Object(bounds)) => {
            let (mut from, mut to) = (i64::MIN, i64::MAX);
            for (bound, raw) in bounds {
                let t = number(raw)?;
                match bound.as_str() {
                    "gt" => from = from.max(t.saturating_add(1)),
                    "gte" => from = from.max(t),
                    "lt" => to = to.min(t.saturating_sub(1)),
                    "lte" => to = to.min(t),
                    other => {
                        return Err(ApiError::invalid(
                            &format!("created[{other}]"),
                            format!("Received unknown parameter: created[{other}]"),
                        ));
                    }
                }
            }
            Ok(Some((from, to)))
        }
        Some(exact) => number(exact).map(|t| Some((t, t))),
    }
}

impl ListParams {
    pub fn from_query(query: &Value) -> Result<Self, ApiError> {
        let text = |k: &str| query.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(String::from);
        let limit = match text("limit") {
            None => 10,
            Some(raw) => match raw.parse::<usize>() {
                Ok(n) if (1..=100).contains(&n) => n,
                _ => return Err(ApiError::invalid("limit", format!("Invalid limit: must be an integer between 1 and 100, got '{raw}'"))),
            },
        };
        let starting_after = text("starting_after");
        let ending_before = text("ending_before");
        if starting_after.is_some() && ending_before.is_some() {
            return Err(ApiError::invalid("ending_before", "You may only specify one of starting_after and ending_before".into()));
        }
        // removed from list methods in 2025-03-31.basil: a 400, as Stripe answers
        if query.get("include").and_then(Value::as_array).is_some_and(|a| a.iter().any(|v| v == "total_count")) {
            return Err(ApiError {
                code: Some("property_forbidden"),
                ..ApiError::invalid("include", "total_count is no longer an includable property of lists; use has_more to page".into())
            });
        }
        Ok(ListParams { limit, starting_after, ending_before, status: text("status"), created: created_span(query)? })
    }
}

/// Where a page starts, resolved from the cursor ids.
enum Anchor {
    Top,
    After(u64),
    Before(u64),
}

/// Objects of one type in one account, in creation order.
#[derive(Default)]
struct Table {
    rows: BTreeMap<u64, Value>,
    /// Sequence of every id ever created here, deleted ones too, so a cursor
    /// on a deleted object still pages correctly.
    seq_of: HashMap<String, u64>,
}

struct Event {
    created_ms: i64,
    value: Value,
}

#[derive(Default)]
struct Scope {
    tables: BTreeMap<&'static str, Table>,
    events: BTreeMap<u64, Event>,
    event_seq_of: HashMap<String, u64>,
}

/// A stored response for an idempotency key.
#[derive(Clone)]
pub struct Replay {
    pub request: String,
    pub status: u16,
    /// The first response, byte for byte.
    pub body: String,
}

pub struct World {
    rng: StdRng,
    scopes: BTreeMap<String, Scope>,
    accounts: Vec<Value>,
    next_seq: u64,
    next_event_seq: u64,
    /// Revision stamped into `metadata.rev` by live updates: strictly
    /// increasing, so tests can tell whether a state is older than another.
    next_rev: u64,
    event_retention: Duration,
    idempotency: HashMap<(String, String), Replay>,
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl World {
    pub fn seeded(seed: u64, scale: usize, accounts: usize, event_retention: Duration) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut world = World {
            rng: StdRng::seed_from_u64(seed ^ 0x5eed),
            scopes: BTreeMap::new(),
            accounts: Vec::new(),
            next_seq: 1,
            next_event_seq: 1,
            next_rev: 1,
            event_retention,
            idempotency: HashMap::new(),
        };
        world.scopes.insert(PLATFORM.to_string(), Scope::default());
        for i in 0..accounts {
            let id = data::random_id(&mut rng, "account");
            world.accounts.push(json!({
                "id": id, "object": "account", "business_profile": {"name": format!("Seller {}", i + 1), "url": null},
                "charges_enabled": true, "country": "US", "created": data::seeded_created(i), "default_currency": "usd",
                "details_submitted": true, "email": format!("seller{}@example.com", i + 1), "payouts_enabled": true,
                "type": "custom"
            }));
            world.scopes.insert(id, Scope::default());
        }
        let scope_ids: Vec<String> = world.scopes.keys().cloned().collect();
        let mut customers_per_scope: BTreeMap<String, usize> = BTreeMap::new();
        for _ in 0..scale {
            let scope = &scope_ids[rng.gen_range(0..scope_ids.len())];
            *customers_per_scope.entry(scope.clone()).or_default() += 1;
        }
        let mut index = 0;
        for (scope, customers) in customers_per_scope {
            let mut g = Gen { rng: &mut rng, created: 0 };
            let mut objects = Vec::new();
            let mut prices = Vec::new();
            for _ in 0..customers.div_ceil(10) {
                g.created = data::seeded_created(index);
                index += 1;
                let product = g.product();
                for _ in 0..2 {
                    let price = g.price(product["id"].as_str().unwrap_or_default());
                    prices.push(price["id"].as_str().unwrap_or_default().to_string());
                    objects.push(price);
                }
                objects.push(product);
            }
            let price_refs: Vec<&str> = prices.iter().map(String::as_str).collect();
            for _ in 0..customers {
                g.created = data::seeded_created(index);
                index += 1;
                let customer = g.customer();
                let cus = customer["id"].as_str().unwrap_or_default().to_string();
                objects.push(customer);
                objects.push(g.charge(&cus));
                objects.push(g.payment_intent(&cus));
                let lines = if g.rng.gen_bool(0.03) { g.rng.gen_range(11..=25) } else { g.rng.gen_range(1..=4) };
                objects.push(g.invoice(&cus, lines));
                if g.rng.gen_bool(0.5) {
                    let mut subscription = g.subscription(&cus, &price_refs);
                    // an account's history holds canceled subscriptions,
                    // which Stripe lists only when asked for status=all
                    if g.rng.gen_bool(0.2) {
                        let ended = g.created + 86_400;
                        for (field, value) in [("status", json!("canceled")), ("canceled_at", json!(ended)), ("ended_at", json!(ended))] {
                            subscription[field] = value;
                        }
                    }
                    objects.push(subscription);
                }
            }
            for object in objects {
                world.insert(&scope, object);
            }
        }
        world
    }

    pub fn accounts(&self) -> &[Value] {
        &self.accounts
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.contains_key(scope)
    }

    fn insert(&mut self, scope: &str, object: Value) {
        let kind = table_key(object["object"].as_str().unwrap_or_default());
        let id = object["id"].as_str().unwrap_or_default().to_string();
        let seq = self.next_seq;
        self.next_seq += 1;
        let table = self.scope_mut(scope).tables.entry(kind).or_default();
        table.seq_of.insert(id, seq);
        table.rows.insert(seq, object);
    }

    fn scope_mut(&mut self, scope: &str) -> &mut Scope {
        self.scopes.entry(scope.to_string()).or_default()
    }

    fn table(&self, scope: &str, object: &str) -> Option<&Table> {
        self.scopes.get(scope)?.tables.get(object)
    }

    fn find(&self, scope: &str, object: &str, id: &str) -> Option<&Value> {
        let table = self.table(scope, object)?;
        table.rows.get(table.seq_of.get(id)?)
    }

    fn find_mut(&mut self, scope: &str, object: &str, id: &str) -> Option<&mut Value> {
        let table = self.scopes.get_mut(scope)?.tables.get_mut(object)?;
        let seq = *table.seq_of.get(id)?;
        table.rows.get_mut(&seq)
    }

    /// A page of a list endpoint, serialized (objects are not copied).
    pub fn list(&self, scope: &str, object: &str, params: &ListParams, url: &str) -> Result<String, ApiError> {
        let empty = Table::default();
        let table = self.table(scope, object).unwrap_or(&empty);
        let resolve = |id: &str, param: &str| table.seq_of.get(id).copied().ok_or_else(|| ApiError::missing(param, object, id));
        let anchor = match (&params.starting_after, &params.ending_before) {
            (Some(id), _) => Anchor::After(resolve(id, "starting_after")?),
            (_, Some(id)) => Anchor::Before(resolve(id, "ending_before")?),
            _ => Anchor::Top,
        };
        let listed = |row: &Value| object != "subscription" || subscription_listed(row, params.status.as_deref());
        let (items, has_more) = page_desc_by(&table.rows, anchor, params, |v| v, listed);
        Ok(list_text(url, items.into_iter().map(shown).collect(), has_more))
    }

    pub fn retrieve(&self, scope: &str, object: &str, id: &str) -> Result<Value, ApiError> {
        self.find(scope, object, id).map(render).ok_or_else(|| ApiError::missing("id", object, id))
    }

    /// A page of a nested list (invoice lines, subscription items), in list order.
    pub fn nested(&self, scope: &str, object: &str, id: &str, field: &str, params: &ListParams, url: &str) -> Result<String, ApiError> {
        let parent = self.find(scope, object, id).ok_or_else(|| ApiError::missing("id", object, id))?;
        let items: &[Value] = parent[field]["data"].as_array().map(Vec::as_slice).unwrap_or_default();
        let position = |cursor: &str, param: &str| {
            items.iter().position(|item| item["id"] == cursor).ok_or_else(|| ApiError::missing(param, "item", cursor))
        };
        let (start, end, has_more) = match (&params.starting_after, &params.ending_before) {
            (Some(cursor), _) => {
                let start = position(cursor, "starting_after")? + 1;
                let end = (start + params.limit).min(items.len());
                (start, end, end < items.len())
            }
            (_, Some(cursor)) => {
                let end = position(cursor, "ending_before")?;
                let start = end.saturating_sub(params.limit);
                (start, end, start > 0)
            }
            _ => {
                let end = params.limit.min(items.len());
                (0, end, end < items.len())
            }
        };
        Ok(list_text(url, items[start..end].iter().map(Cow::Borrowed).collect(), has_more))
    }

    pub fn events(&mut self, scope: &str, params: &ListParams) -> Result<String, ApiError> {
        self.expire_events();
        let Some(state) = self.scopes.get(scope) else { return Ok(list_text("/v1/events", vec![], false)) };
        let resolve = |id: &str, param: &str| state.event_seq_of.get(id).copied().ok_or_else(|| ApiError::missing(param, "event", id));
        let anchor = match (&params.starting_after, &params.ending_before) {
            (Some(id), _) => Anchor::After(resolve(id, "starting_after")?),
            (_, Some(id)) => Anchor::Before(resolve(id, "ending_before")?),
            _ => Anchor::Top,
        };
        let (items, has_more) = page_desc_by(&state.events, anchor, params, |e| &e.value, |_| true);
        Ok(list_text("/v1/events", items.into_iter().map(shown_event).collect(), has_more))
    }

    /// Creation time (ms) of every retained event, for lag measurements.
    pub fn event_times(&self) -> Map<String, Value> {
        self.scopes
            .values()
            .flat_map(|s| s.events.values())
            .map(|e| (e.value["id"].as_str().unwrap_or_default().to_string(), json!(e.created_ms)))
            .collect()
    }

    fn expire_events(&mut self) {
        let cutoff = now_ms() - self.event_retention.as_millis() as i64;
        for scope in self.scopes.values_mut() {
            while let Some(entry) = scope.events.first_entry() {
                if entry.get().created_ms >= cutoff {
                    break;
                }
                let event = entry.remove();
                scope.event_seq_of.remove(event.value["id"].as_str().unwrap_or_default());
            }
        }
    }

    fn emit(&mut self, scope: &str, object: &Value, verb: &str, previous: Option<Value>) {
        let kind = object["object"].as_str().unwrap_or_default();
        let prefix = by_object(kind).map_or(kind, |r| r.event_prefix);
        let id = data::random_id(&mut self.rng, "event");
        let created_ms = now_ms();
        let mut event = json!({
            "id": id, "object": "event", "api_version": crate::stripe_api::API_VERSION, "created": created_ms / 1000,
            "data": {"object": object}, "livemode": false, "pending_webhooks": 0,
            "request": {"id": null, "idempotency_key": null}, "type": format!("{prefix}.{verb}")
        });
        if let Some(previous) = previous {
            event["data"]["previous_attributes"] = previous;
        }
        if scope != PLATFORM {
            event["account"] = json!(scope);
        }
        let seq = self.next_event_seq;
        self.next_event_seq += 1;
        let state = self.scope_mut(scope);
        state.event_seq_of.insert(id, seq);
        state.events.insert(seq, Event { created_ms, value: event });
    }

    fn refs(&mut self, scope: &str) -> Refs {
        let customer = self.random_id_of(scope, "customer").unwrap_or_else(|| "cus_none".into());
        let product = self.random_id_of(scope, "product").unwrap_or_else(|| "prod_none".into());
        let prices = self.random_id_of(scope, "price").into_iter().collect::<Vec<_>>();
        Refs { customer, product, prices: if prices.is_empty() { vec!["price_none".into()] } else { prices } }
    }

    fn random_id_of(&mut self, scope: &str, object: &str) -> Option<String> {
        let table = self.scopes.get(scope)?.tables.get(object)?;
        let (&first, _) = table.rows.first_key_value()?;
        let (&last, _) = table.rows.last_key_value()?;
        let pick = self.rng.gen_range(first..=last);
        let (_, value) = table.rows.range(pick..).next()?;
        value["id"].as_str().map(String::from)
    }

    pub fn create(&mut self, scope: &str, object: &str, params: &Value) -> Result<Value, ApiError> {
        let mut refs = self.refs(scope);
        let param_str = |k: &str| params.get(k).and_then(Value::as_str).map(String::from);
        if let Some(customer) = param_str("customer") {
            refs.customer = customer;
        }
        if let Some(product) = param_str("product") {
            refs.product = product;
        }
        if let Some(items) = params.get("items").and_then(Value::as_array) {
            refs.prices = items.iter().filter_map(|i| i["price"].as_str().map(String::from)).collect();
        }
        let mut g = Gen { rng: &mut self.rng, created: now_ms() / 1000 };
        let mut created = data::generate(&mut g, object, &refs);
        let fields: Map<String, Value> = params
            .as_object()
            .map(|m| m.iter().filter(|(k, _)| !matches!(k.as_str(), "items" | "expand")).map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        apply_params(&mut created, &fields)?;
        self.insert(scope, created.clone());
        self.emit(scope, &created, "created", None);
        Ok(render(&created))
    }

    pub fn update(&mut self, scope: &str, object: &str, id: &str, params: &Value) -> Result<Value, ApiError> {
        let fields = params.as_object().cloned().unwrap_or_default();
        let current = self.find_mut(scope, object, id).ok_or_else(|| ApiError::missing("id", object, id))?;
        if !Self::changeable(current) && fields.keys().any(|k| !matches!(k.as_str(), "metadata" | "cancellation_details")) {
            return Err(ApiError {
                code: None,
                ..ApiError::invalid("id", format!("A canceled {object} can only update its cancellation_details and metadata."))
            });
        }
        let previous = apply_params(current, &fields)?;
        let updated = current.clone();
        if !previous.is_empty() {
            self.emit(scope, &updated, "updated", Some(Value::Object(previous)));
        }
        Ok(render(&updated))
    }

    /// `DELETE`: a tombstone for a resource Stripe deletes; a subscription
    /// is canceled instead, and stays.
    pub fn delete(&mut self, scope: &str, object: &str, id: &str) -> Result<Value, ApiError> {
        let missing = || ApiError::missing("id", object, id);
        if by_object(object).is_some_and(|r| r.ending == Ending::Cancels) {
            return self.cancel(scope, object, id);
        }
        let table = self.scopes.get_mut(scope).and_then(|s| s.tables.get_mut(object)).ok_or_else(missing)?;
        let seq = *table.seq_of.get(id).ok_or_else(missing)?;
        let removed = table.rows.remove(&seq).ok_or_else(missing)?;
        self.emit(scope, &removed, "deleted", None);
        Ok(json!({"id": id, "object": object, "deleted": true}))
    }

    fn cancel(&mut self, scope: &str, object: &str, id: &str) -> Result<Value, ApiError> {
        let current = self.find_mut(scope, object, id).ok_or_else(|| ApiError::missing("id", object, id))?;
        if current["status"] == "canceled" {
            return Err(ApiError { code: None, ..ApiError::invalid("id", format!("This {object} is already canceled.")) });
        }
        let now = now_ms() / 1000;
        for (field, value) in [("status", json!("canceled")), ("canceled_at", json!(now)), ("ended_at", json!(now))] {
            current[field] = value;
        }
        let canceled = current.clone();
        self.emit(scope, &canceled, "deleted", None);
        Ok(render(&canceled))
    }

    /// Whether Stripe still lets an object change (a canceled subscription
    /// keeps its state).
    fn changeable(object: &Value) -> bool {
        object["status"] != "canceled"
            || by_object(object["object"].as_str().unwrap_or_default()).is_none_or(|r| r.ending != Ending::Cancels)
    }

    /// One random create, update or delete, as live traffic does.
    pub fn random_mutation(&mut self) {
        let scopes: Vec<String> = self.scopes.keys().cloned().collect();
        let scope = scopes[self.rng.gen_range(0..scopes.len())].clone();
        let resource = RESOURCES[self.rng.gen_range(0..RESOURCES.len())];
        let object = resource.object;
        let roll: f64 = self.rng.r#gen();
        let target = if roll < 0.35 { None } else { self.random_id_of(&scope, object) };
        if target.as_ref().is_some_and(|id| self.find(&scope, object, id).is_some_and(|o| !Self::changeable(o))) {
            return;
        }
        let result = match target {
            None => self.create(&scope, object, &json!({})).map(|_| ()),
            Some(id) if roll > 0.92 && resource.delete_endpoint => self.delete(&scope, object, &id).map(|_| ()),
            Some(id) => {
                let Some(current) = self.find(&scope, object, &id) else { return };
                let current = current.clone();
                let mut changes: Map<String, Value> =
                    data::mutate(&mut self.rng, &current).into_iter().map(|(k, v)| (k.to_string(), v)).collect();
                let rev = self.next_rev;
                self.next_rev += 1;
                changes.insert("metadata".into(), json!({"rev": rev.to_string()}));
                self.update(&scope, object, &id, &Value::Object(changes)).map(|_| ())
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e.message, "sim mutation failed");
        }
    }

    pub fn remember(&mut self, scope: &str, key: &str, replay: Replay) {
        self.idempotency.insert((scope.to_string(), key.to_string()), replay);
    }

    pub fn replay(&self, scope: &str, key: &str) -> Option<&Replay> {
        self.idempotency.get(&(scope.to_string(), key.to_string()))
    }

    /// Every live object by type, nested lists complete; `scope` narrows to
    /// one account (`PLATFORM` for the platform's own).
    pub fn truth(&self, scope: Option<&str>) -> Value {
        let mut out: BTreeMap<&str, Vec<Value>> = RESOURCES.iter().map(|r| (r.object, Vec::new())).collect();
        for (name, state) in &self.scopes {
            if scope.is_some_and(|s| s != name) {
                continue;
            }
            for (object, table) in &state.tables {
                out.entry(object).or_default().extend(table.rows.values().cloned());
            }
        }
        json!(out)
    }
}

fn table_key(object: &str) -> &'static str {
    by_object(object).map_or("other", |r| r.object)
}

/// Apply request parameters to an object; returns the previous values of the
/// fields that changed (Stripe's `previous_attributes`).
fn apply_params(object: &mut Value, fields: &Map<String, Value>) -> Result<Map<String, Value>, ApiError> {
    let mut previous = Map::new();
    for (key, param) in fields {
        if key == "expand" {
            continue;
        }
        if matches!(key.as_str(), "id" | "object" | "created" | "lines" | "items") || object.get(key).is_none() {
            return Err(ApiError {
                status: 400,
                kind: "invalid_request_error",
                code: Some("parameter_unknown"),
                param: Some(key.clone()),
                message: format!("Received unknown parameter: {key}"),
            });
        }
        let old = object[key].clone();
        let new = if key == "metadata" {
            let mut merged = old.as_object().cloned().unwrap_or_default();
            for (k, v) in param.as_object().into_iter().flatten() {
                match v.as_str() {
                    Some("") => merged.remove(k),
                    _ => merged.insert(k.clone(), v.clone()),
                };
            }
            Value::Object(merged)
        } else {
            coerce(param, Some(&old))
        };
        if new != old {
            previous.insert(key.clone(), old);
            object[key] = new;
        }
    }
    Ok(previous)
}

#[derive(serde::Serialize)]
struct ListPage<'a> {
    object: &'static str,
    data: Vec<Cow<'a, Value>>,
    has_more: bool,
    url: &'a str,
}

fn list_text(url: &str, data: Vec<Cow<'_, Value>>, has_more: bool) -> String {
    serde_json::to_string(&ListPage { object: "list", data, has_more, url }).unwrap_or_default()
}

/// Whether a list of subscriptions with `status` shows `row`: by default
/// Stripe hides canceled (and expired incomplete) ones; `all` shows every
/// one, `ended` the canceled and expired ones, another value that status.
fn subscription_listed(row: &Value, status: Option<&str>) -> bool {
    let own = row["status"].as_str().unwrap_or_default();
    let ended = matches!(own, "canceled" | "incomplete_expired");
    match status {
        None => !ended,
        Some("all") => true,
        Some("ended") => ended,
        Some(wanted) => own == wanted,
    }
}

/// Newest-first page around an anchor of the rows `keep` lets through:
/// `After` goes to older items, `Before` returns the `limit` items just
/// newer than the anchor.
fn page_desc_by<'a, T>(
    rows: &'a BTreeMap<u64, T>,
    anchor: Anchor,
    params: &ListParams,
    value: impl Fn(&'a T) -> &'a Value,
    keep: impl Fn(&Value) -> bool,
) -> (Vec<&'a Value>, bool) {
    // rows are kept in creation order, so the `created` span is a run of
    // them: skip to it and stop past it instead of scanning every row
    let (from, to) = params.created.unwrap_or((i64::MIN, i64::MAX));
    let created = |v: &Value| v["created"].as_i64().unwrap_or_default();
    let limit = params.limit;
    let kept = |v: &&'a Value| keep(v);
    let mut items: Vec<&Value> = match anchor {
        Anchor::Top | Anchor::After(_) => {
            let older = match anchor {
                Anchor::After(seq) => rows.range(..seq),
                _ => rows.range(..),
            };
            let in_span = older.rev().map(|(_, v)| value(v)).skip_while(|v| created(v) > to).take_while(|v| created(v) >= from);
            in_span.filter(kept).take(limit + 1).collect()
        }
        Anchor::Before(seq) => {
            let newer = rows.range(seq + 1..).map(|(_, v)| value(v)).skip_while(|v| created(v) < from).take_while(|v| created(v) <= to);
            let mut newer: Vec<&Value> = newer.filter(kept).take(limit + 1).collect();
            let has_more = newer.len() > limit;
            newer.truncate(limit);
            newer.reverse();
            return (newer, has_more);
        }
    };
    let has_more = items.len() > limit;
    items.truncate(limit);
    (items, has_more)
}

/// Whether an object has a nested list longer than the API shows inline.
fn needs_cut(object: &Value) -> bool {
    let kind = object["object"].as_str().unwrap_or_default();
    NESTED.iter().any(|(parent, field)| *parent == kind && object[*field]["data"].as_array().is_some_and(|d| d.len() > NESTED_INLINE))
}

/// `render`, copying only objects that need cutting.
fn shown(object: &Value) -> Cow<'_, Value> {
    if needs_cut(object) { Cow::Owned(render(object)) } else { Cow::Borrowed(object) }
}

fn shown_event(event: &Value) -> Cow<'_, Value> {
    if needs_cut(&event["data"]["object"]) { Cow::Owned(render_event(event)) } else { Cow::Borrowed(event) }
}

/// An object as the API shows it: nested lists cut to the first ten items.
pub fn render(object: &Value) -> Value {
    let mut shown = object.clone();
    let kind = object["object"].as_str().unwrap_or_default();
    for (parent, field) in NESTED {
        if *parent != kind {
            continue;
        }
        if let Some(Value::Array(items)) = shown.get_mut(*field).and_then(|l| l.get_mut("data"))
            && items.len() > NESTED_INLINE
        {
            items.truncate(NESTED_INLINE);
            shown[*field]["has_more"] = json!(true);
        }
    }
    shown
}

fn render_event(event: &Value) -> Value {
    let mut shown = event.clone();
    shown["data"]["object"] = render(&event["data"]["object"]);
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world() -> World {
        World::seeded(7, 200, 2, Duration::from_secs(3600))
    }

    fn params(limit: usize, after: Option<&str>, before: Option<&str>) -> ListParams {
        ListParams { limit, starting_after: after.map(String::from), ending_before: before.map(String::from), status: None, created: None }
    }

    /// Every id a list walk returns for `status`.
    fn walk(world: &World, status: Option<&str>) -> Vec<String> {
        let (mut ids, mut after) = (Vec::new(), None);
        loop {
            let page = ListParams { status: status.map(String::from), ..params(100, after.as_deref(), None) };
            let page = parse(world.list(PLATFORM, "subscription", &page, "/v1/subscriptions").unwrap());
            ids.extend(page["data"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_string()));
            after = ids.last().cloned();
            if page["has_more"] != true {
                return ids;
            }
        }
    }

    #[test]
    fn canceled_subscriptions_stay_and_are_listed_only_when_asked_for() {
        let mut world = world();
        let all = walk(&world, Some("all"));
        let shown = walk(&world, None);
        let canceled = walk(&world, Some("canceled"));
        assert!(!canceled.is_empty(), "the seeded history has canceled subscriptions");
        assert_eq!(shown.len() + canceled.len(), all.len());
        assert!(canceled.iter().all(|id| !shown.contains(id)));
        // DELETE cancels: the subscription stays, canceled, with its event
        let id = shown[0].clone();
        let answer = world.delete(PLATFORM, "subscription", &id).unwrap();
        assert_eq!((answer["id"].as_str(), answer["status"].as_str()), (Some(id.as_str()), Some("canceled")));
        assert_eq!(world.retrieve(PLATFORM, "subscription", &id).unwrap()["status"], "canceled");
        assert!(!walk(&world, None).contains(&id) && walk(&world, Some("all")).contains(&id));
        let events = parse(world.events(PLATFORM, &params(1, None, None)).unwrap());
        assert_eq!(events["data"][0]["type"], "customer.subscription.deleted");
        assert_eq!(events["data"][0]["data"]["object"]["status"], "canceled");
        assert!(world.delete(PLATFORM, "subscription", &id).is_err(), "canceled twice");
        assert!(world.update(PLATFORM, "subscription", &id, &json!({"description": "x"})).is_err(), "a canceled subscription changed");
        world.update(PLATFORM, "subscription", &id, &json!({"metadata": {"note": "kept"}})).unwrap();
    }

    fn parse(text: String) -> Value {
        serde_json::from_str(&text).unwrap()
    }

    fn ids(list: &Value) -> Vec<String> {
        list["data"].as_array().unwrap().iter().map(|o| o["id"].as_str().unwrap().to_string()).collect()
    }

    #[test]
    fn seeding_is_deterministic_and_spread_over_accounts() {
        let (a, b) = (world(), world());
        assert_eq!(a.truth(None), b.truth(None));
        assert_eq!(a.accounts().len(), 2);
        for account in a.accounts() {
            let scope = account["id"].as_str().unwrap();
            assert!(!a.truth(Some(scope))["customer"].as_array().unwrap().is_empty());
        }
        assert!(!a.truth(Some(PLATFORM))["customer"].as_array().unwrap().is_empty());
    }

    #[test]
    fn pagination_walks_every_object_once_newest_first() {
        let w = world();
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = parse(w.list(PLATFORM, "customer", &params(7, after.as_deref(), None), "/v1/customers").unwrap());
            let page_ids = ids(&page);
            after = page_ids.last().cloned();
            seen.extend(page_ids);
            if page["has_more"] == false {
                break;
            }
        }
        let truth = w.truth(Some(PLATFORM));
        let mut expected: Vec<String> =
            truth["customer"].as_array().unwrap().iter().map(|o| o["id"].as_str().unwrap().to_string()).collect();
        expected.reverse();
        assert_eq!(seen, expected);
        // ending_before returns the items just newer than the cursor, newest first
        let before = parse(w.list(PLATFORM, "customer", &params(3, None, Some(&expected[5])), "").unwrap());
        assert_eq!(ids(&before), expected[2..5].to_vec());
        assert_eq!(before["has_more"], true);
    }

    #[test]
    fn invoices_embed_ten_lines_and_the_rest_paginates() {
        let w = world();
        let truth = w.truth(None);
        let big = truth["invoice"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["lines"]["data"].as_array().unwrap().len() > 10)
            .expect("an invoice with more than 10 lines");
        let scope = w.scopes.iter().find(|(_, s)| s.tables["invoice"].seq_of.contains_key(big["id"].as_str().unwrap())).unwrap().0.clone();
        let shown = w.retrieve(&scope, "invoice", big["id"].as_str().unwrap()).unwrap();
        assert_eq!(shown["lines"]["data"].as_array().unwrap().len(), 10);
        assert_eq!(shown["lines"]["has_more"], true);
        let last = shown["lines"]["data"][9]["id"].as_str().unwrap();
        let rest = parse(w.nested(&scope, "invoice", big["id"].as_str().unwrap(), "lines", &params(100, Some(last), None), "").unwrap());
        let all: Vec<String> = ids(&shown["lines"]).into_iter().chain(ids(&rest)).collect();
        assert_eq!(all, ids(&big["lines"]));
    }

    #[test]
    fn updates_emit_events_with_previous_attributes_and_expired_cursors_are_missing() {
        let mut w = World::seeded(1, 20, 0, Duration::from_millis(0));
        let id = w.truth(None)["customer"][0]["id"].as_str().unwrap().to_string();
        w.update(PLATFORM, "customer", &id, &json!({"name": "New Name"})).unwrap();
        let state = &w.scopes[PLATFORM];
        let event = &state.events.values().next().unwrap().value;
        assert_eq!(event["type"], "customer.updated");
        assert_eq!(event["data"]["object"]["name"], "New Name");
        assert!(event["data"]["previous_attributes"]["name"].is_string());
        let event_id = event["id"].as_str().unwrap().to_string();
        std::thread::sleep(Duration::from_millis(2));
        let err = w.events(PLATFORM, &params(10, None, Some(&event_id))).unwrap_err();
        assert_eq!((err.status, err.code), (404, Some("resource_missing")));
    }

    #[test]
    fn unknown_parameters_and_bad_limits_are_rejected() {
        let mut w = world();
        let id = w.truth(Some(PLATFORM))["customer"][0]["id"].as_str().unwrap().to_string();
        let err = w.update(PLATFORM, "customer", &id, &json!({"nonsense": "x"})).unwrap_err();
        assert_eq!(err.code, Some("parameter_unknown"));
        assert!(ListParams::from_query(&json!({"limit": "101"})).is_err());
        assert!(ListParams::from_query(&json!({"limit": "0"})).is_err());
    }
}

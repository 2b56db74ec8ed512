//! The simulated Stripe account's ground truth: the platform and its
//! connected accounts, each with objects of every served type, child lists,
//! events, and Stripe's semantics over them (lists, filters, nested lists,
//! tombstones, cancellation, idempotency).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::LazyLock;
use std::time::Duration;

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Map, Value, json};

use super::expand::{INCLUDABLE, Lookup, expand};
use super::fixtures::{fixtures, served};
use super::list::{Anchor, ApiError, ListParams, list_text, page_desc_by};
use super::seed::{Gen, SPACING, random_id, seeded_created};
use crate::stripe_api::form::coerce;
use crate::stripe_api::{Ending, Follow, NESTED_INLINE, Resource, by_object};

/// Scope key of the platform account (requests without `Stripe-Account`).
pub const PLATFORM: &str = "";

/// Objects of one type in one account, in creation order.
#[derive(Default)]
struct Table {
    rows: BTreeMap<u64, Value>,
    /// Sequence of every id ever created here, deleted ones too, so a cursor
    /// on a deleted object still pages correctly.
    seq_of: HashMap<String, u64>,
    /// Rows of child lists, by the parent they hang from.
    by_parent: HashMap<String, BTreeSet<u64>>,
}

impl Table {
    /// Renumber the rows so that sequence order is creation order (ties
    /// keep their order), reusing the same sequence numbers.
    fn order_by_created(&mut self) {
        let seqs: Vec<u64> = self.rows.keys().copied().collect();
        let mut rows: Vec<(u64, Value)> = std::mem::take(&mut self.rows).into_iter().collect();
        rows.sort_by_key(|(seq, row)| (row["created"].as_i64().unwrap_or_default(), *seq));
        let mut renumbered = HashMap::with_capacity(rows.len());
        for ((old, row), new) in rows.into_iter().zip(seqs) {
            renumbered.insert(old, new);
            self.seq_of.insert(row["id"].as_str().unwrap_or_default().to_string(), new);
            self.rows.insert(new, row);
        }
        for children in self.by_parent.values_mut() {
            *children = children.iter().filter_map(|old| renumbered.get(old).copied()).collect();
        }
    }
}

struct Event {
    created_ms: i64,
    /// When it shows in `/v1/events` (Stripe's list is eventually
    /// consistent: an event may appear after newer ones); `i64::MAX`: never.
    visible_ms: i64,
    value: Value,
}

#[derive(Default)]
struct Account {
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
    /// When it was saved (unix ms): Stripe forgets a key after 24 hours.
    pub saved_ms: i64,
}

/// What an executing request holds, in one account.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Busy {
    Key { scope: String, key: String },
    Object { scope: String, id: String },
}

/// How long Stripe keeps an idempotency key's result.
pub const IDEMPOTENCY_TTL_MS: i64 = 24 * 3600 * 1000;

/// A child list embedded in its parent (invoice `lines`, subscription
/// `items`): the parent's field that holds it.
#[derive(Clone, Copy)]
struct Embed {
    parent: &'static str,
    field: &'static str,
}

/// Child lists that their parents embed, found from the examples' nested
/// list urls (`/v1/invoices/in_…/lines` is `invoices/{id}/lines`).
static EMBEDS: LazyLock<HashMap<&'static str, Embed>> = LazyLock::new(|| {
    let mut embeds = HashMap::new();
    for child in served() {
        let Some(parent) = child.scope.parent else { continue };
        let Some(Value::Object(template)) = fixtures().template(parent) else { continue };
        let id = template.get("id").and_then(Value::as_str).unwrap_or_default();
        for (field, value) in template {
            let Some(url) = value.get("url").and_then(Value::as_str).filter(|_| value["object"] == "list") else { continue };
            let (path, query) = url.trim_start_matches("/v1/").split_once('?').unwrap_or((url.trim_start_matches("/v1/"), ""));
            let matches = if child.scope.in_path {
                child.path.replace("{id}", id) == path
            } else {
                child.path == path && child.scope.filters.iter().any(|(param, _)| query.starts_with(&format!("{param}=")))
            };
            if matches {
                let field: &'static str = Box::leak(field.clone().into_boxed_str());
                embeds.insert(child.path, Embed { parent, field });
            }
        }
    }
    embeds
});

fn embed_of(resource: &Resource) -> Option<Embed> {
    EMBEDS.get(resource.path).copied()
}

/// The fields of `object` that embed child lists.
fn embedded_fields(object: &str) -> impl Iterator<Item = &'static str> + '_ {
    EMBEDS.values().filter(move |e| e.parent == object).map(|e| e.field)
}

pub struct World {
    rng: StdRng,
    scopes: BTreeMap<String, Account>,
    next_seq: u64,
    next_event_seq: u64,
    /// Revision stamped into `metadata.rev` by live updates: strictly
    /// increasing, so tests can tell whether a state is older than another.
    next_rev: u64,
    event_retention: Duration,
    idempotency: HashMap<(String, String), Replay>,
    /// What requests are executing on: an idempotency key (a second
    /// request with it is answered 409) or an object (a second write to it
    /// is answered 429 `lock_timeout`).
    busy: HashSet<Busy>,
    /// The API version new events are rendered at; `None`: the pinned one.
    event_version: Option<String>,
    /// New events show in the list after a random delay up to this (ms).
    event_visibility_delay_ms: u64,
    /// Share of new events that never show (the objects still change).
    drop_events: f64,
    /// Live traffic's mutations per resource path (`/__sim/stats`).
    pub mutations: BTreeMap<&'static str, u64>,
    /// Creation time of the first seeded object.
    history_base: i64,
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The resources most live traffic touches.
const BUSIEST: &[&str] = &["customers", "products", "prices", "subscriptions", "invoices", "charges", "payment_intents"];

/// How many objects of a top-level resource an account with `customers`
/// customers is seeded with.
fn seeded_count(resource: &Resource, customers: usize) -> usize {
    match resource.path {
        "customers" | "charges" | "payment_intents" | "invoices" => customers,
        "subscriptions" => customers.div_ceil(2),
        "products" => customers.div_ceil(10),
        "prices" => customers.div_ceil(10) * 2,
        "accounts" => 0, // the connected accounts, seeded apart
        _ => customers.div_ceil(20),
    }
}

/// How many children a parent is seeded with in a child list.
fn seeded_children(rng: &mut StdRng, resource: &Resource) -> usize {
    match resource.path {
        // a few invoices have more lines than Stripe shows inline
        "invoices/{id}/lines" if rng.gen_bool(0.03) => rng.gen_range(11..=25),
        "invoices/{id}/lines" => rng.gen_range(1..=4),
        "subscription_items" => rng.gen_range(1..=3),
        _ if rng.gen_bool(0.3) => rng.gen_range(1..=2),
        _ => 0,
    }
}

impl World {
    /// A world of `scale` customers (and everything in proportion) over
    /// `accounts` connected accounts, whose history ends by `history_end`
    /// (unix seconds). Objects created within the event retention have
    /// their creation events, as a real account's recent history does.
    pub fn seeded(seed: u64, scale: usize, accounts: usize, event_retention: Duration, history_end: i64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        // at most this many top-level objects (each account's share of a
        // resource is rounded up), one SPACING apart, end by history_end
        let most: usize =
            accounts + served().iter().filter(|r| r.scope.parent.is_none()).map(|r| seeded_count(r, scale) + accounts + 1).sum::<usize>();
        let history_base = history_end - most as i64 * SPACING;
        let mut world = World {
            rng: StdRng::seed_from_u64(seed ^ 0x5eed),
            scopes: BTreeMap::new(),
            next_seq: 1,
            next_event_seq: 1,
            next_rev: 1,
            mutations: BTreeMap::new(),
            event_retention,
            idempotency: HashMap::new(),
            busy: HashSet::new(),
            event_version: None,
            event_visibility_delay_ms: 0,
            drop_events: 0.0,
            history_base,
        };
        world.scopes.insert(PLATFORM.to_string(), Account::default());
        for i in 0..accounts {
            let mut g = Gen { rng: &mut rng, created: seeded_created(history_base, i) };
            let Some(mut account) = g.object("account") else { break };
            account["email"] = json!(format!("seller{}@example.com", i + 1));
            let id = account["id"].as_str().unwrap_or_default().to_string();
            world.insert(PLATFORM, None, account);
            world.scopes.insert(id, Account::default());
        }
        let scope_ids: Vec<String> = world.scopes.keys().cloned().collect();
        let mut customers_per_scope: BTreeMap<String, usize> = BTreeMap::new();
        for _ in 0..scale {
            let scope = &scope_ids[rng.gen_range(0..scope_ids.len())];
            *customers_per_scope.entry(scope.clone()).or_default() += 1;
        }
        let mut index = accounts;
        for (scope, customers) in customers_per_scope {
            world.seed_scope(&mut rng, &scope, customers, &mut index);
        }
        world.seed_events();
        world
    }

    /// The creation events of the objects created within the event
    /// retention, in the order they were created, each with its object as
    /// it is now.
    fn seed_events(&mut self) {
        let cutoff = now_ms() / 1000 - self.event_retention.as_secs() as i64;
        let mut recent: Vec<(i64, String, Value)> = Vec::new();
        for (scope, account) in &self.scopes {
            for row in account.tables.values().flat_map(|t| t.rows.values()) {
                let created = row["created"].as_i64().unwrap_or_default();
                if created >= cutoff {
                    recent.push((created, scope.clone(), row.clone()));
                }
            }
        }
        recent.sort_by_key(|(created, _, _)| *created);
        for (created, scope, object) in recent {
            self.emit_at(&scope, &object, "created", None, created * 1000);
        }
    }

    /// Seed one account: every top-level resource in proportion to its
    /// customers, references pointed at its own objects, then every child
    /// list from its parents.
    fn seed_scope(&mut self, rng: &mut StdRng, scope: &str, customers: usize, index: &mut usize) {
        let mut made = Vec::new();
        for resource in served().iter().filter(|r| r.scope.parent.is_none()) {
            for _ in 0..seeded_count(resource, customers) {
                let mut g = Gen { rng, created: seeded_created(self.history_base, *index) };
                *index += 1;
                if let Some(object) = g.object(resource.object) {
                    made.push(object);
                }
            }
        }
        for object in made {
            self.insert(scope, None, object);
        }
        self.link_all(scope);
        // an account's history holds canceled subscriptions and archived
        // prices, which Stripe lists only when asked
        self.seed_history(scope);
        for child in served().iter().filter(|r| r.scope.parent.is_some()) {
            self.seed_children(rng, scope, child);
        }
        // children were made parent by parent: put every table back in
        // creation order, which lists and `created[…]` filters rely on
        for table in self.scope_mut(scope).tables.values_mut() {
            table.order_by_created();
        }
    }

    fn seed_history(&mut self, scope: &str) {
        let rng = &mut self.rng;
        let Some(account) = self.scopes.get_mut(scope) else { return };
        if let Some(table) = account.tables.get_mut("subscription") {
            for row in table.rows.values_mut().filter(|_| rng.gen_bool(0.2)) {
                let ended = row["created"].as_i64().unwrap_or_default() + 86_400;
                for (field, value) in [("status", json!("canceled")), ("canceled_at", json!(ended)), ("ended_at", json!(ended))] {
                    row[field] = value;
                }
            }
        }
        if let Some(table) = account.tables.get_mut("price") {
            for row in table.rows.values_mut().filter(|_| rng.gen_bool(0.15)) {
                row["active"] = json!(false);
            }
        }
    }

    fn seed_children(&mut self, rng: &mut StdRng, scope: &str, child: &'static Resource) {
        let Some(parent) = child.scope.parent else { return };
        // a list filtered by another field of its parent (an account's
        // `ownership`) has children only under parents that have one
        for (_, field) in child.scope.filters.iter().filter(|(_, f)| *f != "id") {
            let Some(table) = self.scopes.get_mut(scope).and_then(|a| a.tables.get_mut(parent)) else { continue };
            for row in table.rows.values_mut() {
                if row.get(*field).is_some_and(Value::is_null) && rng.gen_bool(0.5) {
                    row[*field] = json!(random_id(rng, &format!("{parent}_{field}")));
                }
            }
        }
        let parents: Vec<(String, i64)> = self
            .table(scope, parent)
            .map(|t| {
                t.rows
                    .values()
                    .filter(|p| child.scope.filters.iter().all(|(_, field)| p[*field].is_string()))
                    .map(|p| (p["id"].as_str().unwrap_or_default().to_string(), p["created"].as_i64().unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default();
        for (parent_id, created) in parents {
            for _ in 0..seeded_children(rng, child) {
                let mut g = Gen { rng, created };
                let Some(mut object) = g.object(child.object) else { return };
                self.link(scope, &mut object);
                set_parent(&mut object, parent, &parent_id);
                self.add_child(scope, child, &parent_id, object);
            }
        }
    }

    /// Add a child to its parent: into the parent's embedded list, or as a
    /// row of its own type that hangs from the parent.
    fn add_child(&mut self, scope: &str, child: &Resource, parent_id: &str, object: Value) {
        match embed_of(child) {
            Some(embed) => {
                if let Some(parent) = self.find_mut(scope, embed.parent, parent_id)
                    && let Some(items) = parent[embed.field]["data"].as_array_mut()
                {
                    items.insert(0, object);
                }
            }
            None => self.insert(scope, Some(parent_id), object),
        }
    }

    /// Point every reference of every row at objects of this account.
    fn link_all(&mut self, scope: &str) {
        let keys: Vec<(&'static str, u64)> = self
            .scopes
            .get(scope)
            .map(|a| a.tables.iter().flat_map(|(object, t)| t.rows.keys().map(move |seq| (*object, *seq))).collect())
            .unwrap_or_default();
        for (object, seq) in keys {
            let Some(mut row) = self.scope_mut(scope).tables.get_mut(object).and_then(|t| t.rows.get(&seq)).cloned() else { continue };
            self.link(scope, &mut row);
            if let Some(slot) = self.scope_mut(scope).tables.get_mut(object).and_then(|t| t.rows.get_mut(&seq)) {
                *slot = row;
            }
        }
    }

    /// Point an object's references (`"customer": "cus_…"`) at random
    /// objects of the same types in this account; a reference to a type
    /// the account has none of keeps the example's value.
    fn link(&mut self, scope: &str, object: &mut Value) {
        let own = object["object"].as_str().unwrap_or_default().to_string();
        let Value::Object(fields) = object else { return };
        for (name, value) in fields.iter_mut() {
            if name == "id" || name == "object" {
                continue;
            }
            let Some(text) = value.as_str() else { continue };
            let types = fixtures().types_of(text);
            // a field named after its type wins (`price_…` is a price or a plan)
            let Some(target) = types.iter().find(|t| *t == name).or_else(|| types.iter().find(|t| **t != own)).or(types.first()) else {
                continue;
            };
            let target = target.clone();
            if let Some(id) = self.random_id_of(scope, &target) {
                *value = json!(id);
            }
        }
    }

    pub fn set_event_version(&mut self, version: Option<String>) {
        self.event_version = version;
    }

    /// New events show after a random delay up to `delay_ms`, and a share
    /// `drop` of them never do.
    pub fn set_event_visibility(&mut self, delay_ms: u64, drop: f64) {
        self.event_visibility_delay_ms = delay_ms;
        self.drop_events = if drop.is_finite() { drop.clamp(0.0, 1.0) } else { 0.0 };
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.contains_key(scope)
    }

    fn insert(&mut self, scope: &str, parent: Option<&str>, object: Value) {
        let Some(kind) = table_key(object["object"].as_str().unwrap_or_default()) else { return };
        let id = object["id"].as_str().unwrap_or_default().to_string();
        let seq = self.next_seq;
        self.next_seq += 1;
        let table = self.scope_mut(scope).tables.entry(kind).or_default();
        table.seq_of.insert(id, seq);
        table.rows.insert(seq, object);
        if let Some(parent) = parent {
            table.by_parent.entry(parent.to_string()).or_default().insert(seq);
        }
    }

    fn scope_mut(&mut self, scope: &str) -> &mut Account {
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

    /// A page of a list: a top-level list, or the children of `parent`.
    pub fn list(&self, scope: &str, resource: &Resource, parent: Option<&str>, params: &ListParams, url: &str) -> Result<String, ApiError> {
        if params.created.is_some() && !resource.created_filter {
            return Err(ApiError::unknown("created"));
        }
        let object = resource.object;
        if let (Some(embed), Some(parent_id)) = (embed_of(resource), parent) {
            return self.nested(scope, embed, parent_id, params, url);
        }
        let empty = Table::default();
        let table = self.table(scope, object).unwrap_or(&empty);
        let resolve = |id: &str, param: &str| table.seq_of.get(id).copied().ok_or_else(|| ApiError::missing(param, object, id));
        let anchor = match (&params.starting_after, &params.ending_before) {
            (Some(id), _) => Anchor::After(resolve(id, "starting_after")?),
            (_, Some(id)) => Anchor::Before(resolve(id, "ending_before")?),
            _ => Anchor::Top,
        };
        let listed = |row: &Value| listed(resource, row, params);
        let limit = if resource.paged { params.limit } else { usize::MAX - 1 };
        let params = ListParams { limit, ..params.clone() };
        // a parent's children are a few rows, gathered first; a top-level
        // list pages the table itself
        let children: BTreeMap<u64, &Value>;
        let (items, has_more) = match parent {
            Some(parent_id) => {
                let parent_type = resource.scope.parent.unwrap_or_default();
                if self.find(scope, parent_type, parent_id).is_none() {
                    return Err(ApiError::missing("id", parent_type, parent_id));
                }
                children = table.by_parent.get(parent_id).into_iter().flatten().filter_map(|s| Some((*s, table.rows.get(s)?))).collect();
                page_desc_by(&children, anchor, &params, |v| *v, |v| listed(v))
            }
            None => page_desc_by(&table.rows, anchor, &params, |v| v, listed),
        };
        let mut items: Vec<Cow<'_, Value>> = items.into_iter().map(shown).collect();
        for path in &params.expand {
            let inner = path.strip_prefix("data.").unwrap_or(path);
            for item in items.iter_mut() {
                expand(item.to_mut(), inner, &InScope { world: self, scope })?;
            }
        }
        Ok(list_text(url, items, has_more))
    }

    /// An answer with the request's `expand[]` applied.
    pub fn expanded(&self, scope: &str, mut answer: Value, paths: &[String]) -> Result<Value, ApiError> {
        for path in paths {
            expand(&mut answer, path, &InScope { world: self, scope })?;
        }
        Ok(answer)
    }

    pub fn retrieve(&self, scope: &str, object: &str, id: &str) -> Result<Value, ApiError> {
        let embedded = || {
            let (embed, parent_id) = self.embedded_at(scope, object, id)?;
            self.find(scope, embed.parent, &parent_id)?[embed.field]["data"].as_array()?.iter().find(|item| item["id"] == id)
        };
        self.find(scope, object, id).or_else(embedded).map(render).ok_or_else(|| ApiError::missing("id", object, id))
    }

    /// The parent holding an embedded child (an invoice's line, a value
    /// list's item): which list embeds it, and the parent's id.
    fn embedded_at(&self, scope: &str, object: &str, id: &str) -> Option<(Embed, String)> {
        let account = self.scopes.get(scope)?;
        EMBEDS.iter().filter(|(path, _)| crate::stripe_api::by_path(path).is_some_and(|r| r.holds(object))).find_map(|(_, embed)| {
            let parents = account.tables.get(embed.parent)?;
            let holds = |p: &&Value| p[embed.field]["data"].as_array().is_some_and(|items| items.iter().any(|i| i["id"] == id));
            let parent = parents.rows.values().find(holds)?;
            Some((*embed, parent["id"].as_str()?.to_string()))
        })
    }

    /// Change an embedded child through its parent: `change` gets the
    /// parent's list of children; the parent's `updated` event carries
    /// the list as it was, as Stripe's do (`customer.subscription.updated`
    /// when an item changes).
    fn change_embedded<T>(
        &mut self,
        scope: &str,
        embed: Embed,
        parent_id: &str,
        change: impl FnOnce(&mut Vec<Value>) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let parent = self.find_mut(scope, embed.parent, parent_id).ok_or_else(|| ApiError::missing("id", embed.parent, parent_id))?;
        let before = render(parent)[embed.field].clone();
        let items = parent[embed.field]["data"].as_array_mut().ok_or_else(|| ApiError::missing("id", embed.parent, parent_id))?;
        let answer = change(items)?;
        let after = render(parent);
        if after[embed.field] != before {
            self.emit(scope, &after, "updated", Some(json!({ embed.field: before })));
        }
        Ok(answer)
    }

    /// A page of an embedded child list (invoice lines), newest first as
    /// the parent holds it.
    fn nested(&self, scope: &str, embed: Embed, id: &str, params: &ListParams, url: &str) -> Result<String, ApiError> {
        let parent = self.find(scope, embed.parent, id).ok_or_else(|| ApiError::missing("id", embed.parent, id))?;
        let items: &[Value] = parent[embed.field]["data"].as_array().map(Vec::as_slice).unwrap_or_default();
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
        let now = now_ms();
        let (items, has_more) = page_desc_by(&state.events, anchor, params, |e| &e.value, |e| e.visible_ms <= now);
        Ok(list_text("/v1/events", items.into_iter().map(shown_event).collect(), has_more))
    }

    /// `GET /v1/events/{id}`: a retained event.
    pub fn event(&self, scope: &str, id: &str) -> Result<Value, ApiError> {
        let state = self.scopes.get(scope).ok_or_else(|| ApiError::missing("id", "event", id))?;
        let seq = state.event_seq_of.get(id).ok_or_else(|| ApiError::missing("id", "event", id))?;
        let now = now_ms();
        state.events.get(seq).filter(|e| e.visible_ms <= now).map(|e| e.value.clone()).ok_or_else(|| ApiError::missing("id", "event", id))
    }

    /// Events not shown in `/v1/events` yet, and those that never will be.
    pub fn hidden_events(&self) -> (usize, usize) {
        let now = now_ms();
        let events = self.scopes.values().flat_map(|s| s.events.values());
        events.fold((0, 0), |(pending, dropped), e| match e.visible_ms {
            i64::MAX => (pending, dropped + 1),
            at if at > now => (pending + 1, dropped),
            _ => (pending, dropped),
        })
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

    /// Record the event Stripe sends for `verb` (`created`, `updated`,
    /// `deleted`) on an object, if it sends one: only real event types, and
    /// none for resources followed without events.
    fn emit(&mut self, scope: &str, object: &Value, verb: &str, previous: Option<Value>) {
        self.emit_at(scope, object, verb, previous, now_ms());
    }

    fn emit_at(&mut self, scope: &str, object: &Value, verb: &str, previous: Option<Value>, created_ms: i64) {
        let kind = object["object"].as_str().unwrap_or_default();
        let Some(resource) = by_object(kind).filter(|r| r.follow.by_events()) else { return };
        let Some(suffix) = event_suffix(resource, verb) else { return };
        let id = random_id(&mut self.rng, "event");
        let version = self.event_version.as_deref().unwrap_or(crate::stripe_api::API_VERSION);
        let mut event = json!({
            "id": id, "object": "event", "api_version": version, "created": created_ms / 1000,
            "data": {"object": render_at(&render(object), version)}, "livemode": false, "pending_webhooks": 0,
            "request": {"id": null, "idempotency_key": null}, "type": format!("{}.{suffix}", resource.event_prefix)
        });
        if let Some(previous) = previous {
            event["data"]["previous_attributes"] = previous;
        }
        if scope != PLATFORM {
            event["account"] = json!(scope);
        }
        let visible_ms = match self.drop_events > 0.0 && self.rng.gen_bool(self.drop_events) {
            true => i64::MAX,
            false if self.event_visibility_delay_ms > 0 => created_ms + self.rng.gen_range(0..=self.event_visibility_delay_ms) as i64,
            false => created_ms,
        };
        let seq = self.next_event_seq;
        self.next_event_seq += 1;
        let state = self.scope_mut(scope);
        state.event_seq_of.insert(id, seq);
        state.events.insert(seq, Event { created_ms, visible_ms, value: event });
    }

    fn random_id_of(&mut self, scope: &str, object: &str) -> Option<String> {
        let table = self.scopes.get(scope)?.tables.get(object)?;
        let (&first, _) = table.rows.first_key_value()?;
        let (&last, _) = table.rows.last_key_value()?;
        let pick = self.rng.gen_range(first..=last);
        let (_, value) = table.rows.range(pick..).next()?;
        value["id"].as_str().map(String::from)
    }

    /// `POST /v1/{path}`: a new object from the example, its references
    /// pointed at this account's objects, the request's fields applied.
    pub fn create(&mut self, scope: &str, resource: &Resource, parent: Option<&str>, params: &Value) -> Result<Value, ApiError> {
        let mut g = Gen { rng: &mut self.rng, created: now_ms() / 1000 };
        let mut created = g.object(resource.object).ok_or_else(|| ApiError::unknown(resource.path))?;
        self.link(scope, &mut created);
        if let (Some(parent_type), Some(parent_id)) = (resource.scope.parent, parent) {
            if self.find(scope, parent_type, parent_id).is_none() {
                return Err(ApiError::missing("id", parent_type, parent_id));
            }
            set_parent(&mut created, parent_type, parent_id);
        }
        if let Some(items) = params.get("items").and_then(Value::as_array) {
            self.subscription_items(scope, &mut created, items)?;
        }
        let fields: Map<String, Value> = params
            .as_object()
            .map(|m| m.iter().filter(|(k, _)| !matches!(k.as_str(), "items" | "expand")).map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        apply_params(&mut created, &fields)?;
        match (embed_of(resource), parent) {
            (Some(embed), Some(parent_id)) => self.change_embedded(scope, embed, parent_id, |items| {
                items.insert(0, created.clone());
                Ok(())
            })?,
            _ => self.insert(scope, parent, created.clone()),
        }
        self.emit(scope, &created, "created", None);
        Ok(render(&created))
    }

    /// A new subscription's items, one per `{price, quantity}` asked for.
    fn subscription_items(&mut self, scope: &str, subscription: &mut Value, asked: &[Value]) -> Result<(), ApiError> {
        let id = subscription["id"].as_str().unwrap_or_default().to_string();
        let created = subscription["created"].clone();
        let mut items = Vec::new();
        for (i, item) in asked.iter().enumerate() {
            let price_id = item["price"].as_str().ok_or_else(|| ApiError::required(&format!("items[{i}][price]")))?;
            let price = self
                .find(scope, "price", price_id)
                .cloned()
                .ok_or_else(|| ApiError::missing(&format!("items[{i}][price]"), "price", price_id))?;
            let mut g = Gen { rng: &mut self.rng, created: created.as_i64().unwrap_or_default() };
            let Some(mut made) = g.object("subscription_item") else { break };
            made["subscription"] = json!(id);
            made["price"] = price;
            if let Some(quantity) = item.get("quantity") {
                made["quantity"] = coerce(quantity, Some(&json!(1)));
            }
            items.push(made);
        }
        if let Some(list) = subscription.get_mut("items") {
            list["data"] = json!(items);
        }
        Ok(())
    }

    pub fn update(&mut self, scope: &str, object: &str, id: &str, params: &Value) -> Result<Value, ApiError> {
        let fields = params.as_object().cloned().unwrap_or_default();
        if self.find(scope, object, id).is_none()
            && let Some((embed, parent_id)) = self.embedded_at(scope, object, id)
        {
            return self.change_embedded(scope, embed, &parent_id, |items| {
                let item = items.iter_mut().find(|i| i["id"] == id).ok_or_else(|| ApiError::missing("id", object, id))?;
                apply_params(item, &fields)?;
                Ok(render(item))
            });
        }
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
    pub fn delete(&mut self, scope: &str, resource: &Resource, id: &str) -> Result<Value, ApiError> {
        let object = resource.object;
        let missing = || ApiError::missing("id", object, id);
        if resource.ending == Ending::Cancels {
            return self.cancel(scope, object, id);
        }
        if self.find(scope, object, id).is_none()
            && let Some((embed, parent_id)) = self.embedded_at(scope, object, id)
        {
            let removed = self.change_embedded(scope, embed, &parent_id, |items| {
                let at = items.iter().position(|i| i["id"] == id).ok_or_else(missing)?;
                Ok(items.remove(at))
            })?;
            if resource.events.deleted {
                self.emit(scope, &removed, "deleted", None);
            }
            return Ok(json!({"id": id, "object": object, "deleted": true}));
        }
        let table = self.scopes.get_mut(scope).and_then(|s| s.tables.get_mut(object)).ok_or_else(missing)?;
        let seq = *table.seq_of.get(id).ok_or_else(missing)?;
        let removed = table.rows.remove(&seq).ok_or_else(missing)?;
        for children in table.by_parent.values_mut() {
            children.remove(&seq);
        }
        let tombstone = json!({"id": id, "object": object, "deleted": true});
        if resource.events.deleted {
            // Stripe's delete events carry the object as it was
            self.emit(scope, &removed, "deleted", None);
        }
        self.delete_children(scope, id);
        Ok(tombstone)
    }

    /// The objects listed only under a deleted parent go with it (a
    /// customer's tax ids and balance transactions, a product's features),
    /// each with its own delete event where its type has one; those a
    /// top-level list also shows (a customer's payment methods) stay,
    /// detached from it.
    fn delete_children(&mut self, scope: &str, parent_id: &str) {
        let mut removed = Vec::new();
        let mut detached = Vec::new();
        if let Some(state) = self.scopes.get_mut(scope) {
            for (kind, table) in state.tables.iter_mut() {
                let top_level = served().iter().any(|r| r.holds(kind) && r.scope.parent.is_none());
                for seq in table.by_parent.remove(parent_id).unwrap_or_default() {
                    if top_level {
                        let Some(child) = table.rows.get_mut(&seq) else { continue };
                        let Value::Object(fields) = child else { continue };
                        let mut previous = Map::new();
                        for (field, value) in fields.iter_mut().filter(|(_, v)| v.as_str() == Some(parent_id)) {
                            previous.insert(field.clone(), value.take());
                        }
                        detached.push((child.clone(), previous));
                    } else if let Some(child) = table.rows.remove(&seq) {
                        table.seq_of.remove(child["id"].as_str().unwrap_or_default());
                        removed.push(child);
                    }
                }
            }
        }
        for (child, previous) in detached {
            self.emit(scope, &child, "updated", Some(Value::Object(previous)));
        }
        for child in removed {
            self.emit(scope, &child, "deleted", None);
        }
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

    /// Whether live traffic may update a resource's objects.
    fn mutable(resource: &Resource) -> bool {
        let events = &resource.events;
        let silently = matches!(resource.follow, Follow::Relist | Follow::Parent);
        resource.update || events.updated || !events.others.is_empty() || silently
    }

    /// Whether Stripe still lets an object change (a canceled subscription
    /// keeps its state).
    fn changeable(object: &Value) -> bool {
        object["status"] != "canceled"
            || by_object(object["object"].as_str().unwrap_or_default()).is_none_or(|r| r.ending != Ending::Cancels)
    }

    /// One random create, update or delete of a served type, as live
    /// traffic does (embedded children change with their parents). Most
    /// traffic is billing's busiest objects, as on a real account; the
    /// rest touches every other served type.
    pub fn random_mutation(&mut self) {
        let scopes: Vec<String> = self.scopes.keys().cloned().collect();
        let scope = scopes[self.rng.gen_range(0..scopes.len())].clone();
        let busy = self.rng.gen_bool(0.8);
        let resources: Vec<&'static Resource> = served()
            .iter()
            .copied()
            .filter(|r| embed_of(r).is_none() && r.path != "accounts" && (!busy || BUSIEST.contains(&r.path)))
            .collect();
        let resource = resources[self.rng.gen_range(0..resources.len())];
        let object = resource.object;
        let roll: f64 = self.rng.r#gen();
        // objects followed by `created` never change once made
        let target = if roll < 0.35 || resource.follow == Follow::Created { None } else { self.random_id_of(&scope, object) };
        if target.as_ref().is_some_and(|id| self.find(&scope, object, id).is_some_and(|o| !Self::changeable(o))) {
            return;
        }
        let result = match target {
            None => {
                let parent = match resource.scope.parent {
                    Some(parent_type) => match self.random_id_of(&scope, parent_type) {
                        // a list filtered by another field of its parent (an
                        // account's `ownership`) has children only under
                        // parents that have one
                        Some(id)
                            if self.find(&scope, parent_type, &id).is_some_and(|p| {
                                resource.scope.filters.iter().all(|(_, field)| *field == "id" || p[*field].is_string())
                            }) =>
                        {
                            Some(id)
                        }
                        _ => return,
                    },
                    None => None,
                };
                self.create(&scope, resource, parent.as_deref(), &json!({})).map(|_| ())
            }
            Some(id) if roll > 0.92 && resource.ending != Ending::Stays => self.delete(&scope, resource, &id).map(|_| ()),
            // an object changes through the API, or through Stripe with an
            // event saying so, or (a list followed without events) silently
            Some(_) if !Self::mutable(resource) => return,
            Some(id) => {
                let Some(current) = self.find(&scope, object, &id) else { return };
                let (described, has_metadata) =
                    (current.get("description").is_some_and(|d| d.is_string() || d.is_null()), current.get("metadata").is_some());
                let mut changes = Map::new();
                if described {
                    changes.insert("description".into(), json!(format!("Revised #{}", self.rng.gen_range(0..10_000))));
                }
                if has_metadata {
                    let rev = self.next_rev;
                    self.next_rev += 1;
                    changes.insert("metadata".into(), json!({"rev": rev.to_string()}));
                }
                if changes.is_empty() {
                    return;
                }
                self.update(&scope, object, &id, &Value::Object(changes)).map(|_| ())
            }
        };
        match result {
            Ok(()) => *self.mutations.entry(resource.path).or_default() += 1,
            Err(e) => tracing::warn!(error = %e.message, resource = resource.path, "sim mutation failed"),
        }
    }

    /// Save a key's result; keys older than a day are forgotten on the way.
    pub fn remember(&mut self, scope: &str, key: &str, replay: Replay) {
        let oldest = replay.saved_ms - IDEMPOTENCY_TTL_MS;
        self.idempotency.retain(|_, r| r.saved_ms > oldest);
        self.idempotency.insert((scope.to_string(), key.to_string()), replay);
    }

    /// A key's saved result, unless it is more than a day old.
    pub fn replay(&self, scope: &str, key: &str, now_ms: i64) -> Option<&Replay> {
        self.idempotency.get(&(scope.to_string(), key.to_string())).filter(|r| now_ms - r.saved_ms < IDEMPOTENCY_TTL_MS)
    }

    /// Whether a request is executing on `what`.
    pub fn is_busy(&self, what: &Busy) -> bool {
        self.busy.contains(what)
    }

    /// Mark `what` as taken by an executing request; `false` when it is already.
    pub fn hold(&mut self, what: Busy) -> bool {
        self.busy.insert(what)
    }

    pub fn release(&mut self, what: &Busy) {
        self.busy.remove(what);
    }

    /// Every live object by type, nested lists complete and embedded
    /// children listed under their own types too; `scope` narrows to one
    /// account (`PLATFORM` for the platform's own).
    pub fn truth(&self, scope: Option<&str>) -> Value {
        let mut out: BTreeMap<&str, Vec<Value>> = served().iter().map(|r| (r.object, Vec::new())).collect();
        for (name, state) in &self.scopes {
            if scope.is_some_and(|s| s != name) {
                continue;
            }
            for (object, table) in &state.tables {
                out.entry(object).or_default().extend(table.rows.values().cloned());
                for field in embedded_fields(object) {
                    for row in table.rows.values() {
                        for child in row[field]["data"].as_array().into_iter().flatten() {
                            let kind = child["object"].as_str().and_then(table_key).unwrap_or("other");
                            out.entry(kind).or_default().push(child.clone());
                        }
                    }
                }
            }
        }
        json!(out)
    }
}

/// What `expand[]` sees: one account of the world.
struct InScope<'a> {
    world: &'a World,
    scope: &'a str,
}

impl Lookup for InScope<'_> {
    fn object(&self, field: &str, id: &str) -> Option<Value> {
        let types = fixtures().types_of(id);
        if types.is_empty() {
            return None;
        }
        // a field named after its type first (`price_…` is a price or a plan)
        let mut types: Vec<&String> = types.iter().collect();
        types.sort_by_key(|t| *t != field);
        let found = types.iter().find_map(|t| self.world.retrieve(self.scope, t, id).ok());
        Some(found.unwrap_or_else(|| json!(id)))
    }

    fn included(&self, parent: &Map<String, Value>, field: &str) -> Option<Value> {
        let object = parent.get("object")?.as_str()?;
        let id = parent.get("id")?.as_str()?;
        if !INCLUDABLE.contains(&(object, field)) {
            return None;
        }
        let url = format!("/v1/{}/{id}/{field}", by_object(object)?.path);
        let first = ListParams { limit: NESTED_INLINE, ..ListParams::default() };
        // its own child list (`customers/{id}/tax_ids`) …
        if let Some(child) =
            served().iter().find(|r| r.scope.parent == Some(object) && r.scope.in_path && r.path.ends_with(&format!("/{field}")))
        {
            return serde_json::from_str(&self.world.list(self.scope, child, Some(id), &first, &url).ok()?).ok();
        }
        // … or the top-level list of that name, filtered on the parent
        let top = served().iter().find(|r| r.path == field)?;
        let table = self.world.table(self.scope, top.object)?;
        let mut rows = table.rows.values().rev().filter(|row| row[object] == id && listed(top, row, &first));
        let data: Vec<Value> = rows.by_ref().take(NESTED_INLINE).map(render).collect();
        Some(json!({"object": "list", "data": data, "has_more": rows.next().is_some(), "url": url}))
    }
}

/// The event suffix Stripe sends for a create, update or delete of one of
/// a resource's objects, if any: its own `.created`/`.updated`/`.deleted`,
/// else one of its lifecycle events (a charge succeeds).
fn event_suffix(resource: &Resource, verb: &str) -> Option<&'static str> {
    let events = &resource.events;
    let own = match verb {
        "created" if events.created => Some("created"),
        "updated" if events.updated => Some("updated"),
        "deleted" if events.deleted || resource.ending == Ending::Cancels => Some("deleted"),
        _ => None,
    };
    own.or_else(|| match verb {
        "deleted" => None,
        _ => events.others.iter().find(|o| **o == "succeeded").or(events.others.first()).copied(),
    })
}

/// The table a type is kept in: types of served resources only.
fn table_key(object: &str) -> Option<&'static str> {
    served().iter().flat_map(|r| r.objects.iter()).find(|o| **o == object).copied()
}

/// Set the field of a child that names its parent (`tax_id.customer`,
/// `person.account`), found by the example's reference or by its name.
fn set_parent(child: &mut Value, parent_type: &str, parent_id: &str) {
    let short = parent_type.rsplit('.').next().unwrap_or(parent_type);
    let Value::Object(fields) = child else { return };
    let field = fields
        .iter()
        .find(|(name, value)| {
            name.as_str() != "id" && value.as_str().is_some_and(|v| fixtures().types_of(v).iter().any(|t| t == parent_type))
        })
        .map(|(name, _)| name.clone())
        .or_else(|| [parent_type, short].into_iter().find(|n| fields.contains_key(*n)).map(String::from));
    if let Some(field) = field {
        fields.insert(field, json!(parent_id));
    }
}

/// Whether a list shows a row, by the filters Stripe applies: subscriptions
/// hide canceled ones unless asked (`status=all`), prices list only active
/// ones unless asked (`active=false`).
fn listed(resource: &Resource, row: &Value, params: &ListParams) -> bool {
    match resource.path {
        "subscriptions" => {
            let own = row["status"].as_str().unwrap_or_default();
            let ended = matches!(own, "canceled" | "incomplete_expired");
            match params.status.as_deref() {
                None => !ended,
                Some("all") => true,
                Some("ended") => ended,
                Some(wanted) => own == wanted,
            }
        }
        "prices" => row["active"] == params.active.unwrap_or(true),
        _ => params.active.is_none_or(|active| row["active"] == active),
    }
}

/// Apply request parameters to an object; returns the previous values of the
/// fields that changed (Stripe's `previous_attributes`).
fn apply_params(object: &mut Value, fields: &Map<String, Value>) -> Result<Map<String, Value>, ApiError> {
    let mut previous = Map::new();
    for (key, param) in fields {
        if key == "expand" {
            continue;
        }
        if matches!(key.as_str(), "id" | "object" | "created") || object.get(key).is_none() || embedded_fields_of(object).any(|f| f == key)
        {
            return Err(ApiError::unknown(key));
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

fn embedded_fields_of(object: &Value) -> impl Iterator<Item = &'static str> + '_ {
    embedded_fields(object["object"].as_str().unwrap_or_default())
}

/// Whether an object has a nested list longer than the API shows inline.
fn needs_cut(object: &Value) -> bool {
    embedded_fields_of(object).any(|field| object[field]["data"].as_array().is_some_and(|d| d.len() > NESTED_INLINE))
}

/// `render`, copying only objects that need cutting.
fn shown(object: &Value) -> Cow<'_, Value> {
    if needs_cut(object) { Cow::Owned(render(object)) } else { Cow::Borrowed(object) }
}

fn shown_event(event: &Value) -> Cow<'_, Value> {
    if needs_cut(&event["data"]["object"]) { Cow::Owned(render_event(event)) } else { Cow::Borrowed(event) }
}

/// An object as the API shows it: embedded lists cut to their first ten.
pub fn render(object: &Value) -> Value {
    let mut shown = object.clone();
    for field in embedded_fields_of(object) {
        if let Some(Value::Array(items)) = shown.get_mut(field).and_then(|l| l.get_mut("data"))
            && items.len() > NESTED_INLINE
        {
            items.truncate(NESTED_INLINE);
            shown[field]["has_more"] = json!(true);
        }
    }
    shown
}

/// An object as an older API version showed it: the fields Stripe has
/// removed since (customers lost their `sources`, `subscriptions` and
/// `tax_ids` lists in 2020-08-27; subscriptions their top-level
/// `current_period_*` and invoices `paid` in 2025-03-31.basil).
fn render_at(object: &Value, version: &str) -> Value {
    let mut shown = object.clone();
    let id = object["id"].as_str().unwrap_or_default();
    let before = |release: &str| version < release;
    match object["object"].as_str().unwrap_or_default() {
        "customer" if before("2020-08-27") => {
            for field in ["sources", "subscriptions", "tax_ids"] {
                shown[field] = json!({"object": "list", "data": [], "has_more": false, "url": format!("/v1/customers/{id}/{field}")});
            }
        }
        "subscription" if before("2025-03-31") => {
            shown["current_period_start"] = object["start_date"].clone();
            shown["current_period_end"] = object["billing_cycle_anchor"].clone();
        }
        "invoice" if before("2025-03-31") => shown["paid"] = json!(object["status"] == "paid"),
        _ => {}
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
    use crate::stripe_api::by_path;

    /// A history long past (2023-11): no event of it is retained.
    const HISTORY_END: i64 = 1_700_500_000;

    fn world() -> World {
        World::seeded(7, 200, 2, Duration::from_secs(3600), HISTORY_END)
    }

    fn params(limit: usize, after: Option<&str>, before: Option<&str>) -> ListParams {
        ListParams { limit, starting_after: after.map(String::from), ending_before: before.map(String::from), ..ListParams::default() }
    }

    fn parse(text: String) -> Value {
        serde_json::from_str(&text).unwrap()
    }

    fn ids(list: &Value) -> Vec<String> {
        list["data"].as_array().unwrap().iter().map(|o| o["id"].as_str().unwrap().to_string()).collect()
    }

    /// Every id a walk of a list returns with `status`.
    fn walk(world: &World, path: &str, status: Option<&str>) -> Vec<String> {
        let resource = by_path(path).unwrap();
        let (mut all, mut after) = (Vec::new(), None);
        loop {
            let page = ListParams { status: status.map(String::from), ..params(100, after.as_deref(), None) };
            let page = parse(world.list(PLATFORM, resource, None, &page, path).unwrap());
            all.extend(ids(&page));
            after = all.last().cloned();
            if page["has_more"] != true {
                return all;
            }
        }
    }

    #[test]
    fn canceled_subscriptions_stay_and_are_listed_only_when_asked_for() {
        let mut world = world();
        let all = walk(&world, "subscriptions", Some("all"));
        let shown = walk(&world, "subscriptions", None);
        let canceled = walk(&world, "subscriptions", Some("canceled"));
        assert!(!canceled.is_empty(), "the seeded history has canceled subscriptions");
        assert_eq!(shown.len() + canceled.len(), all.len());
        assert!(canceled.iter().all(|id| !shown.contains(id)));
        // DELETE cancels: the subscription stays, canceled, with its event
        let subscriptions = by_path("subscriptions").unwrap();
        let id = shown[0].clone();
        let answer = world.delete(PLATFORM, subscriptions, &id).unwrap();
        assert_eq!((answer["id"].as_str(), answer["status"].as_str()), (Some(id.as_str()), Some("canceled")));
        assert_eq!(world.retrieve(PLATFORM, "subscription", &id).unwrap()["status"], "canceled");
        assert!(!walk(&world, "subscriptions", None).contains(&id) && walk(&world, "subscriptions", Some("all")).contains(&id));
        let events = parse(world.events(PLATFORM, &params(1, None, None)).unwrap());
        assert_eq!(events["data"][0]["type"], "customer.subscription.deleted");
        assert_eq!(events["data"][0]["data"]["object"]["status"], "canceled");
        assert!(world.delete(PLATFORM, subscriptions, &id).is_err(), "canceled twice");
        assert!(world.update(PLATFORM, "subscription", &id, &json!({"description": "x"})).is_err(), "a canceled subscription changed");
        world.update(PLATFORM, "subscription", &id, &json!({"metadata": {"note": "kept"}})).unwrap();
    }

    #[test]
    fn archived_prices_are_listed_only_when_asked_for() {
        let world = world();
        let prices = by_path("prices").unwrap();
        let list = |active: Option<bool>| {
            let page = ListParams { active, ..params(100, None, None) };
            ids(&parse(world.list(PLATFORM, prices, None, &page, "/v1/prices").unwrap()))
        };
        let (default, active, archived) = (list(None), list(Some(true)), list(Some(false)));
        assert_eq!(default, active, "the default list shows active prices only");
        assert!(!archived.is_empty() && archived.iter().all(|id| !active.contains(id)));
    }

    #[test]
    fn seeding_is_deterministic_and_spread_over_accounts() {
        let (a, b) = (world(), world());
        assert_eq!(a.truth(None), b.truth(None));
        let accounts: Vec<String> =
            a.truth(Some(PLATFORM))["account"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
        assert_eq!(accounts.len(), 2);
        for scope in &accounts {
            assert!(!a.truth(Some(scope))["customer"].as_array().unwrap().is_empty());
        }
        assert!(!a.truth(Some(PLATFORM))["customer"].as_array().unwrap().is_empty());
        // references point at objects of the same account
        let truth = a.truth(Some(PLATFORM));
        let customers: BTreeSet<&str> = truth["customer"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
        for subscription in truth["subscription"].as_array().unwrap() {
            assert!(customers.contains(subscription["customer"].as_str().unwrap()), "{}", subscription["customer"]);
        }
    }

    #[test]
    fn pagination_walks_every_object_once_newest_first() {
        let w = world();
        let customers = by_path("customers").unwrap();
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = parse(w.list(PLATFORM, customers, None, &params(7, after.as_deref(), None), "/v1/customers").unwrap());
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
        let before = parse(w.list(PLATFORM, customers, None, &params(3, None, Some(&expected[5])), "").unwrap());
        assert_eq!(ids(&before), expected[2..5].to_vec());
        assert_eq!(before["has_more"], true);
    }

    #[test]
    fn invoices_embed_ten_lines_and_the_rest_pages_under_the_invoice() {
        let w = world();
        let truth = w.truth(Some(PLATFORM));
        let big = truth["invoice"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["lines"]["data"].as_array().unwrap().len() > 10)
            .expect("an invoice with more than 10 lines");
        let id = big["id"].as_str().unwrap();
        let shown = w.retrieve(PLATFORM, "invoice", id).unwrap();
        assert_eq!(shown["lines"]["data"].as_array().unwrap().len(), 10);
        assert_eq!(shown["lines"]["has_more"], true);
        let last = shown["lines"]["data"][9]["id"].as_str().unwrap();
        let lines = by_path("invoices/{id}/lines").unwrap();
        let rest = parse(w.list(PLATFORM, lines, Some(id), &params(100, Some(last), None), "").unwrap());
        let all: Vec<String> = ids(&shown["lines"]).into_iter().chain(ids(&rest)).collect();
        assert_eq!(all, ids(&big["lines"]));
        // the lines are objects of their own type in the ground truth too
        let line_ids: BTreeSet<&str> = truth["line_item"].as_array().unwrap().iter().map(|l| l["id"].as_str().unwrap()).collect();
        assert!(all.iter().all(|l| line_ids.contains(l.as_str())));
    }

    /// Children are seeded parent by parent, so a top-level list that
    /// also holds them (tax ids) must still page newest first, and a
    /// `created[gte]` listing must see every object created since.
    #[test]
    fn every_top_level_list_is_in_creation_order() {
        let w = world();
        for resource in served().iter().filter(|r| r.scope.parent.is_none() && r.scope.filters.is_empty()) {
            let page = |created: Option<(i64, i64)>, after: Option<&str>| {
                let params = ListParams { created, active: None, ..params(100, after, None) };
                parse(w.list(PLATFORM, resource, None, &params, resource.path).unwrap())
            };
            let (mut stamps, mut after) = (Vec::new(), None::<String>);
            loop {
                let listed = page(None, after.as_deref());
                stamps.extend(
                    listed["data"].as_array().unwrap().iter().map(|o| (o["created"].as_i64(), o["id"].as_str().unwrap().to_string())),
                );
                after = stamps.last().map(|(_, id)| id.clone());
                if listed["has_more"] != true || !resource.paged {
                    break;
                }
            }
            let times: Vec<i64> = stamps.iter().filter_map(|(t, _)| *t).collect();
            assert!(times.windows(2).all(|w| w[0] >= w[1]), "{} is not newest first", resource.path);
            if resource.created_filter && times.len() > 2 {
                let since = times[times.len() / 2];
                let expected = times.iter().filter(|t| **t >= since).count();
                let (mut seen, mut after) = (0, None::<String>);
                loop {
                    let listed = page(Some((since, i64::MAX)), after.as_deref());
                    let data = listed["data"].as_array().unwrap();
                    seen += data.len();
                    after = data.last().map(|o| o["id"].as_str().unwrap().to_string());
                    if listed["has_more"] != true {
                        break;
                    }
                }
                assert_eq!(seen, expected, "{}: created[gte] missed objects", resource.path);
            }
        }
    }

    /// Objects created within the event retention come with their
    /// creation events, oldest first, and only those.
    #[test]
    fn recent_seeded_objects_have_their_creation_events() {
        let today = now_ms() / 1000 - 60;
        let retention = Duration::from_secs(3 * 3600);
        let mut w = World::seeded(5, 300, 1, retention, today);
        let cutoff = now_ms() / 1000 - retention.as_secs() as i64;
        let truth = w.truth(None);
        let recent: BTreeSet<String> = truth
            .as_object()
            .unwrap()
            .iter()
            .filter(|(object, _)| by_object(object).is_some_and(|r| r.follow.by_events() && event_suffix(r, "created").is_some()))
            .flat_map(|(_, rows)| rows.as_array().unwrap().iter())
            .filter(|row| row["created"].as_i64().is_some_and(|created| created >= cutoff + 5))
            .map(|row| row["id"].as_str().unwrap().to_string())
            .collect();
        assert!(recent.len() > 100, "only {} recent objects", recent.len());
        let mut seen = BTreeSet::new();
        for scope in w.scopes.keys().cloned().collect::<Vec<_>>() {
            let (mut after, mut stamps) = (None::<String>, Vec::new());
            loop {
                let page = parse(w.events(&scope, &params(100, after.as_deref(), None)).unwrap());
                let data = page["data"].as_array().unwrap();
                for event in data {
                    assert!(event["created"].as_i64().unwrap() >= cutoff - 1, "an event older than the retention: {event}");
                    stamps.push(event["created"].as_i64().unwrap());
                    seen.insert(event["data"]["object"]["id"].as_str().unwrap().to_string());
                }
                after = data.last().map(|e| e["id"].as_str().unwrap().to_string());
                if page["has_more"] != true {
                    break;
                }
            }
            assert!(stamps.windows(2).all(|w| w[0] >= w[1]), "{scope}: events are not newest first");
        }
        let missing: Vec<&String> = recent.difference(&seen).collect();
        assert!(missing.is_empty(), "{} recent objects without a creation event: {:?}", missing.len(), &missing[..missing.len().min(5)]);
        // a history long past has none
        let mut old = world();
        assert_eq!(parse(old.events(PLATFORM, &params(10, None, None)).unwrap())["data"], json!([]));
    }

    /// A child its parent embeds (a value list's items) is reached by its
    /// own id, and changing it is an update of the parent.
    #[test]
    fn embedded_children_are_retrieved_updated_and_deleted_by_id() {
        let mut w = world();
        let items = by_path("radar/value_list_items").unwrap();
        assert!(embed_of(items).is_some(), "value list items are embedded in their list");
        let list = w.truth(Some(PLATFORM))["radar.value_list"][0]["id"].as_str().unwrap().to_string();
        let created = w.create(PLATFORM, items, Some(&list), &json!({"value": "10.0.0.1"})).unwrap();
        let id = created["id"].as_str().unwrap();
        assert_eq!(w.retrieve(PLATFORM, items.object, id).unwrap(), created);
        let updated = w.update(PLATFORM, items.object, id, &json!({"value": "10.0.0.2"})).unwrap();
        assert_eq!(updated["value"], "10.0.0.2");
        assert_eq!(w.retrieve(PLATFORM, items.object, id).unwrap()["value"], "10.0.0.2");
        let gone = w.delete(PLATFORM, items, id).unwrap();
        assert_eq!(gone, json!({"id": id, "object": items.object, "deleted": true}));
        assert_eq!(w.retrieve(PLATFORM, items.object, id).unwrap_err().status, 404);
        let parent = w.retrieve(PLATFORM, "radar.value_list", &list).unwrap();
        assert!(parent["list_items"]["data"].as_array().unwrap().iter().all(|i| i["id"] != id));
    }

    #[test]
    fn child_lists_hang_from_their_parents_and_need_their_filters() {
        let mut w = world();
        let truth = w.truth(Some(PLATFORM));
        let customer = truth["customer"][0]["id"].as_str().unwrap().to_string();
        let tax_ids = by_path("customers/{id}/tax_ids").unwrap();
        let created = w.create(PLATFORM, tax_ids, Some(&customer), &json!({})).unwrap();
        assert_eq!(created["customer"], customer.as_str(), "the child names its parent");
        let listed = parse(w.list(PLATFORM, tax_ids, Some(&customer), &params(100, None, None), "").unwrap());
        assert!(ids(&listed).contains(&created["id"].as_str().unwrap().to_string()));
        let err = w.list(PLATFORM, tax_ids, Some("cus_missing"), &params(10, None, None), "").unwrap_err();
        assert_eq!((err.status, err.code), (404, Some("resource_missing")));
        // a list without a created filter refuses one
        let with_created = ListParams { created: Some((0, 10)), ..params(10, None, None) };
        let err = w.list(PLATFORM, by_path("payment_links").unwrap(), None, &with_created, "").unwrap_err();
        assert_eq!(err.code, Some("parameter_unknown"));
    }

    #[test]
    fn updates_emit_events_with_previous_attributes_and_expired_cursors_are_missing() {
        let mut w = World::seeded(1, 20, 0, Duration::from_millis(0), HISTORY_END);
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
    fn events_are_real_types_only() {
        let mut w = World::seeded(3, 40, 0, Duration::from_secs(3600), HISTORY_END);
        for _ in 0..400 {
            w.random_mutation();
        }
        let events = parse(w.events(PLATFORM, &params(100, None, None)).unwrap());
        for event in events["data"].as_array().unwrap() {
            let kind = event["type"].as_str().unwrap();
            let object = event["data"]["object"]["object"].as_str().unwrap();
            let resource = by_object(object).unwrap();
            let suffix =
                kind.strip_prefix(resource.event_prefix).and_then(|s| s.strip_prefix('.')).unwrap_or_else(|| panic!("{kind} for {object}"));
            let known = match suffix {
                "created" => resource.events.created,
                "updated" => resource.events.updated,
                "deleted" => resource.events.deleted,
                other => resource.events.others.contains(&other),
            };
            assert!(known, "{kind}: Stripe sends no such event for {}", resource.path);
            assert_ne!(kind, "charge.deleted");
        }
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

    #[test]
    fn idempotency_keys_are_forgotten_after_a_day() {
        let mut w = world();
        let replay = |saved_ms| Replay { request: "POST /v1/customers {}".into(), status: 200, body: "{}".into(), saved_ms };
        let now = now_ms();
        w.remember(PLATFORM, "old", replay(now - IDEMPOTENCY_TTL_MS - 1));
        w.remember(PLATFORM, "new", replay(now - 1_000));
        assert!(w.replay(PLATFORM, "old", now).is_none(), "a key older than 24 h is free again");
        assert!(w.replay(PLATFORM, "new", now).is_some());
        assert!(w.replay(PLATFORM, "new", now + IDEMPOTENCY_TTL_MS).is_none());
        assert!(w.replay("acct_other", "new", now).is_none(), "keys belong to one account");
        w.remember(PLATFORM, "newer", replay(now));
        assert!(!w.idempotency.contains_key(&(PLATFORM.to_string(), "old".to_string())), "expired keys are dropped");
    }
}

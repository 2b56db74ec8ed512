//! Every list resource of the Stripe API as data (`catalogue.tsv`): how it
//! is scoped, which events follow it, how its objects end, how Tributary
//! follows it and what Stripe lets you write. The source, the simulator and
//! the write path all read this one table.

use std::sync::LazyLock;

/// How a resource's objects end, as Stripe does it. Decided per resource,
/// never from an event's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// No `DELETE` and no delete event: objects stay (charges, payment
    /// intents; a price is archived with `active=false`).
    Stays,
    /// Removed for good: retrieve answers a tombstone
    /// `{"id","object","deleted":true}` and a `*.deleted` event follows.
    Tombstone,
    /// `DELETE` cancels: the object stays, listed with the resource's
    /// passes, and its `*.deleted` event carries it canceled (subscriptions).
    Cancels,
}

/// How Tributary keeps a resource current after its backfill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follow {
    /// Its events carry the objects.
    Events,
    /// Its events, and a periodic re-list for what they miss (objects
    /// created without an event, or events known to be unreliable).
    EventsAndRelist,
    /// Immutable and without events: listed with `created[gte]` from the
    /// newest object seen.
    Created,
    /// Mutable and without events: re-listed periodically.
    Relist,
    /// A child list without events of its own: re-listed when its parent
    /// changes, and periodically.
    Parent,
    /// Not mirrored (`note` says why).
    Never,
}

impl Follow {
    pub fn name(self) -> &'static str {
        match self {
            Follow::Events => "events",
            Follow::EventsAndRelist => "events+relist",
            Follow::Created => "created",
            Follow::Relist => "relist",
            Follow::Parent => "parent",
            Follow::Never => "-",
        }
    }

    /// Whether events of the resource's objects are applied.
    pub fn by_events(self) -> bool {
        matches!(self, Follow::Events | Follow::EventsAndRelist)
    }

    /// Whether the resource is listed again on a schedule.
    pub fn relisted(self) -> bool {
        matches!(self, Follow::EventsAndRelist | Follow::Relist | Follow::Parent)
    }
}

/// Where a list's objects hang: the account itself, or each row of a parent
/// object type, whose id fills the path (`/v1/customers/{id}/tax_ids`) or
/// whose fields fill required filters (`/v1/subscription_items?subscription=…`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// The parent object type whose rows this list is walked from.
    pub parent: Option<&'static str>,
    /// Whether the parent's id is the `{id}` of the path.
    pub in_path: bool,
    /// Required filters: (query parameter, the parent row's field).
    pub filters: Vec<(&'static str, &'static str)>,
}

/// The event types Stripe sends about a resource's objects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Events {
    pub created: bool,
    pub updated: bool,
    pub deleted: bool,
    /// Other suffixes under the same prefix (`paid`, `voided`, …).
    pub others: Vec<&'static str>,
}

impl Events {
    pub fn any(&self) -> bool {
        self.created || self.updated || self.deleted || !self.others.is_empty()
    }
}

/// A list resource of the Stripe API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// The path under `/v1` (`customers`, `checkout/sessions`,
    /// `customers/{id}/tax_ids`): the name used in `resources`.
    pub path: &'static str,
    /// The `object` of its items; several for a union (`bank_account|card`).
    pub objects: Vec<&'static str>,
    /// The first of `objects`: the type the simulator serves and writes.
    pub object: &'static str,
    pub scope: Scope,
    /// Fixed query parameters the list requires (`scope[type]=account`).
    pub fixed: Params,
    /// The prefix of its event types (`customer.subscription`).
    pub event_prefix: &'static str,
    pub events: Events,
    /// Whether the list filters on `created`.
    pub created_filter: bool,
    /// Whether the list pages (`limit`, `starting_after`); a few answer
    /// everything at once.
    pub paged: bool,
    /// One list walk per entry, each with its query (`status=all`;
    /// `active=true`, `active=false`): together they show every object,
    /// the ones Stripe hides by default too. One empty entry when none.
    pub passes: Vec<String>,
    pub ending: Ending,
    /// Whether Stripe serves `DELETE /v1/{path}/{id}`.
    pub delete_endpoint: bool,
    pub follow: Follow,
    pub create: bool,
    pub update: bool,
    /// Why a resource is not mirrored.
    pub note: Option<&'static str>,
}

impl Resource {
    /// Whether Tributary mirrors it.
    pub fn mirrored(&self) -> bool {
        self.follow != Follow::Never
    }

    /// Whether an object of this resource is one of its item types.
    pub fn holds(&self, object: &str) -> bool {
        self.objects.contains(&object)
    }

    /// The list's URL path for one parent row (`/v1/customers/cus_1/tax_ids`),
    /// with the query that scopes it and without paging parameters. `None`
    /// when the parent lacks a field the list needs (no ownership yet).
    /// A child list under its parent's id (`customers/{id}/tax_ids`) as a
    /// field of its parent's own list (`tax_ids` of `/v1/customers`),
    /// where that list pages in one pass: the way to read it expanded.
    pub fn expandable_from(&self) -> Option<(&'static Resource, &'static str)> {
        let parent = self.scope.parent.filter(|_| self.scope.in_path)?;
        let (prefix, field) = self.path.rsplit_once("/{id}/")?;
        let list = catalogue().iter().find(|r| {
            r.path == prefix && r.holds(parent) && r.scope.parent.is_none() && r.scope.filters.is_empty() && r.paged && r.passes.len() == 1
        })?;
        (!field.contains('/')).then_some((list, field))
    }

    pub fn list_path(&self, parent: Option<&serde_json::Value>) -> Option<String> {
        use crate::source::http::encode;
        let field = |name: &str| parent.and_then(|row| row.get(name)).and_then(serde_json::Value::as_str);
        let mut query: Vec<String> = self.fixed.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for (param, name) in &self.scope.filters {
            query.push(format!("{param}={}", encode(field(name)?)));
        }
        let path = if self.scope.in_path { self.path.replace("{id}", &encode(field("id")?)) } else { self.path.to_string() };
        Some(if query.is_empty() { format!("/v1/{path}") } else { format!("/v1/{path}?{}", query.join("&")) })
    }
}

static TABLE: &str = include_str!("catalogue.tsv");

static CATALOGUE: LazyLock<Vec<Resource>> = LazyLock::new(|| match parse(TABLE) {
    Ok(resources) => resources,
    // the table is part of the binary and its test parses it
    Err(e) => panic!("catalogue.tsv: {e}"),
});

/// Every v1 list resource of the Stripe API.
pub fn catalogue() -> &'static [Resource] {
    &CATALOGUE
}

/// Every resource Tributary mirrors.
pub fn mirrored() -> impl Iterator<Item = &'static Resource> {
    catalogue().iter().filter(|r| r.mirrored())
}

/// The resource at `/v1/{path}`.
pub fn by_path(path: &str) -> Option<&'static Resource> {
    catalogue().iter().find(|r| r.path == path)
}

/// The resource that lists `object`s, preferring a top-level list.
/// A request path resolved against the catalogue: its resource, the parent
/// id that fills the resource's `{id}`, and the object id after the list's
/// path (`customers/cus_1/tax_ids/txi_2`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub resource: &'static Resource,
    pub parent: Option<String>,
    pub id: Option<String>,
}

/// Resolve `path` (under `/v1/`, no query) among `resources`: a list's own
/// path wins over a shorter list's path followed by an id
/// (`checkout/sessions` is the sessions list, not the checkout `sessions`).
pub fn resolve(resources: impl IntoIterator<Item = &'static Resource>, path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return None;
    }
    let mut best: Option<(usize, Target)> = None;
    for resource in resources {
        let pattern: Vec<&str> = resource.path.split('/').collect();
        if segments.len() < pattern.len() || segments.len() > pattern.len() + 1 {
            continue;
        }
        let mut parent = None;
        let fits = pattern.iter().zip(&segments).all(|(want, got)| match *want {
            "{id}" => {
                parent = Some(got.to_string());
                true
            }
            literal => literal == *got,
        });
        let literals = pattern.iter().filter(|p| **p != "{id}").count();
        if fits && best.as_ref().is_none_or(|(l, _)| literals > *l) {
            best = Some((literals, Target { resource, parent, id: segments.get(pattern.len()).map(|s| s.to_string()) }));
        }
    }
    best.map(|(_, target)| target)
}

pub fn by_object(object: &str) -> Option<&'static Resource> {
    let mut holding = catalogue().iter().filter(|r| r.holds(object));
    let first = holding.next()?;
    Some(std::iter::once(first).chain(holding).find(|r| r.scope.parent.is_none()).unwrap_or(first))
}

/// Parse the event column: `CUD (+paid,voided) [prefix customer.subscription]`.
fn parse_events(text: &'static str, object: &'static str) -> Result<(Events, &'static str), String> {
    let mut events = Events::default();
    let mut prefix = object;
    let (flags, mut rest) = text.split_once(' ').unwrap_or((text, ""));
    match flags {
        "-" | "n/a" => {}
        flags => {
            for flag in flags.chars() {
                match flag {
                    'C' => events.created = true,
                    'U' => events.updated = true,
                    'D' => events.deleted = true,
                    other => return Err(format!("event flag '{other}' in '{text}'")),
                }
            }
        }
    }
    rest = rest.trim();
    if let Some(inner) = rest.strip_prefix("(+") {
        let (others, after) = inner.split_once(')').ok_or_else(|| format!("unclosed (+ in '{text}'"))?;
        events.others = others.split(',').collect();
        rest = after.trim();
    }
    if let Some(inner) = rest.strip_prefix("[prefix ") {
        prefix = inner.strip_suffix(']').ok_or_else(|| format!("unclosed [prefix in '{text}'"))?;
    } else if !rest.is_empty() {
        return Err(format!("unexpected '{rest}' in events '{text}'"));
    }
    Ok((events, prefix))
}

/// Query parameters as (name, value) pairs.
type Params = Vec<(&'static str, &'static str)>;

fn parse_scope(text: &'static str) -> Result<(Scope, Params), String> {
    let mut scope = Scope::default();
    let mut fixed = Vec::new();
    let mut parent = |object: &'static str| match scope.parent.replace(object) {
        Some(other) if other != object => Err(format!("two parents, {other} and {object}")),
        _ => Ok(()),
    };
    let mut filters = Vec::new();
    let mut in_path = false;
    for part in text.split(' ').filter(|p| *p != "-") {
        if let Some(object) = part.strip_prefix("parent=") {
            parent(object)?;
            in_path = true;
        } else if let Some((param, value)) = part.split_once(':') {
            fixed.push((param, value));
        } else if let Some((param, source)) = part.split_once('=') {
            // `-`: a filter no mirror row can fill (the resource is not mirrored)
            if source != "-" {
                let (object, field) = source.split_once('#').unwrap_or((source, "id"));
                parent(object)?;
                filters.push((param, field));
            }
        } else {
            return Err(format!("scope part '{part}'"));
        }
    }
    scope.in_path = in_path;
    scope.filters = filters;
    Ok((scope, fixed))
}

fn parse(table: &'static str) -> Result<Vec<Resource>, String> {
    let mut resources = Vec::new();
    let mut lines = table.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty());
    let header = lines.next().ok_or("empty table")?;
    let columns: Vec<&str> = header.split('\t').collect();
    let expected = ["path", "object", "scope", "events", "list", "ending", "delete", "follow", "writes", "note"];
    if columns != expected {
        return Err(format!("columns {columns:?}, expected {expected:?}"));
    }
    for line in lines {
        let fields: Vec<&'static str> = line.split('\t').collect();
        let [path, objects, scope, events, list, ending, delete, follow, writes, note] = fields[..] else {
            return Err(format!("'{line}' has {} columns", fields.len()));
        };
        let at = |e: String| format!("{path}: {e}");
        let objects: Vec<&'static str> = objects.split('|').collect();
        let object = objects[0];
        let (events, event_prefix) = parse_events(events, object).map_err(at)?;
        let (scope, fixed) = parse_scope(scope).map_err(at)?;
        let flags: Vec<&str> = list.split(',').filter(|f| *f != "-").collect();
        let mut passes = vec![String::new()];
        for flag in flags.iter().filter(|f| f.contains('=')) {
            let (param, values) = flag.split_once('=').unwrap_or_default();
            passes = values.split('|').map(|v| format!("{param}={v}")).collect();
        }
        if let Some(unknown) = flags.iter().find(|f| !f.contains('=') && !matches!(**f, "created" | "unpaged")) {
            return Err(at(format!("list flag '{unknown}'")));
        }
        let ending = match ending {
            "stays" => Ending::Stays,
            "tombstone" => Ending::Tombstone,
            "cancels" => Ending::Cancels,
            other => return Err(at(format!("ending '{other}'"))),
        };
        let follow = match follow {
            "events" => Follow::Events,
            "events+relist" => Follow::EventsAndRelist,
            "created" => Follow::Created,
            "relist" => Follow::Relist,
            "parent" => Follow::Parent,
            "-" => Follow::Never,
            other => return Err(at(format!("follow '{other}'"))),
        };
        if follow.by_events() && !events.any() {
            return Err(at("followed by events it does not have".into()));
        }
        if follow == Follow::Created && !flags.contains(&"created") {
            return Err(at("followed by created, which it does not filter on".into()));
        }
        if follow == Follow::Parent && scope.parent.is_none() {
            return Err(at("followed by a parent it does not have".into()));
        }
        resources.push(Resource {
            path,
            objects,
            object,
            scope,
            fixed,
            event_prefix,
            events,
            created_filter: flags.contains(&"created"),
            paged: !flags.contains(&"unpaged"),
            passes,
            ending,
            delete_endpoint: delete == "yes",
            follow,
            create: writes.contains('c'),
            update: writes.contains('u'),
            note: (note != "-").then_some(note),
        });
    }
    Ok(resources)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalogue_parses_and_describes_what_stripe_does() {
        let all = catalogue();
        assert_eq!(all.len(), 115, "every v1 list endpoint");
        let subscriptions = by_path("subscriptions").unwrap();
        assert_eq!((subscriptions.event_prefix, subscriptions.ending), ("customer.subscription", Ending::Cancels));
        assert_eq!(subscriptions.passes, ["status=all"]);
        assert_eq!(by_path("prices").unwrap().passes, ["active=true", "active=false"]);
        let tax_ids = by_path("customers/{id}/tax_ids").unwrap();
        assert_eq!(tax_ids.scope, Scope { parent: Some("customer"), in_path: true, filters: vec![] });
        assert_eq!(tax_ids.list_path(Some(&serde_json::json!({"id": "cus_1"}))).unwrap(), "/v1/customers/cus_1/tax_ids");
        let items = by_path("subscription_items").unwrap();
        assert_eq!(items.scope, Scope { parent: Some("subscription"), in_path: false, filters: vec![("subscription", "id")] });
        assert_eq!(items.list_path(Some(&serde_json::json!({"id": "sub_1"}))).unwrap(), "/v1/subscription_items?subscription=sub_1");
        let owners = by_path("financial_connections/accounts/{id}/owners").unwrap();
        let account = serde_json::json!({"id": "fca_1", "ownership": "fcaowns_1"});
        assert_eq!(owners.list_path(Some(&account)).unwrap(), "/v1/financial_connections/accounts/fca_1/owners?ownership=fcaowns_1");
        assert_eq!(owners.list_path(Some(&serde_json::json!({"id": "fca_1", "ownership": null}))), None, "no ownership yet");
        let secrets = by_path("apps/secrets").unwrap();
        assert_eq!(secrets.list_path(None).unwrap(), "/v1/apps/secrets?scope[type]=account");
        assert_eq!(by_path("balance_transactions").unwrap().follow, Follow::Created);
        assert!(!by_path("accounts/{id}/capabilities").unwrap().paged);
        assert_eq!(by_path("customers/{id}/sources").unwrap().objects, ["card", "account", "bank_account", "source"]);
        assert_eq!(by_object("tax_id").unwrap().path, "tax_ids", "the top-level list is preferred");
        assert!(!by_path("events").unwrap().mirrored());
    }

    #[test]
    fn the_table_refuses_what_it_cannot_mean() {
        let header = "path\tobject\tscope\tevents\tlist\tending\tdelete\tfollow\twrites\tnote\n";
        let bad = |row: &'static str| parse(Box::leak(format!("{header}{row}\n").into_boxed_str())).unwrap_err();
        assert!(bad("x\tx\t-\t-\t-\tstays\tno\tevents\t-\t-").contains("events it does not have"));
        assert!(bad("x\tx\t-\t-\t-\tstays\tno\tcreated\t-\t-").contains("does not filter on"));
        assert!(bad("x\tx\t-\tCX\t-\tstays\tno\tevents\t-\t-").contains("event flag 'X'"));
        assert!(bad("x\tx\t-\t-\t-\tgone\tno\trelist\t-\t-").contains("ending 'gone'"));
    }

    #[test]
    fn paths_resolve_to_the_list_with_the_most_literal_segments() {
        let all = || catalogue().iter();
        let t = resolve(all(), "customers/cus_1/tax_ids/txi_2").unwrap();
        assert_eq!((t.resource.path, t.parent.as_deref(), t.id.as_deref()), ("customers/{id}/tax_ids", Some("cus_1"), Some("txi_2")));
        let t = resolve(all(), "checkout/sessions").unwrap();
        assert_eq!((t.resource.path, t.id), ("checkout/sessions", None));
        let t = resolve(all(), "customers/cus_1").unwrap();
        assert_eq!((t.resource.path, t.parent, t.id.as_deref()), ("customers", None, Some("cus_1")));
        assert!(resolve(all(), "widgets").is_none());
        assert!(resolve(all(), "customers//tax_ids").is_none());
        assert!(resolve(all(), "customers/cus_1/tax_ids/txi_2/more").is_none());
    }
}

//! What a batch does to the mirror, decided once for every backend.
//!
//! Given the rows the mirror holds for the batch's objects, [`plan`] walks
//! the writes in order and returns the change log entries to append and the
//! final state of each touched row. Backends only fetch and execute: the
//! meaning of `read`, `insert`, `update`, `delete` and "no change" lives here.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::Value;

use super::{Batch, Mutation, Origin, StoreError, Sweep, ident, previous_attributes};

/// A batch with every upsert serialized and its mirror table named; built on
/// the caller's task, so writer threads and connections only run SQL.
pub struct Prepared {
    pub source: String,
    pub writes: Vec<PreparedWrite>,
    pub sweeps: Vec<(String, Sweep)>,
    pub checkpoints: Vec<PreparedCheckpoint>,
    pub finish: Option<super::writes::Finish>,
    pub handoff: Option<super::writes::Handoff>,
    pub ledger: Vec<super::ledger::LedgerOp>,
}

/// A checkpoint with its value as JSON text.
pub struct PreparedCheckpoint {
    pub key: String,
    pub value: String,
    pub position: Option<super::Position>,
}

pub struct PreparedWrite {
    pub table: String,
    pub object: String,
    pub id: String,
    pub account: Option<String>,
    /// Serialized new state; `None` for a delete. Shared, not copied, by
    /// the change that records it and the row that stores it: a batch's
    /// rows are most of a backfill's memory.
    pub text: Option<Arc<str>>,
    pub created: Option<i64>,
    pub origin: Origin,
    pub generation: i64,
}

impl Prepared {
    /// Mirror tables the batch touches.
    pub fn tables(&self) -> Vec<(String, String)> {
        let mut tables: BTreeMap<&str, &str> = BTreeMap::new();
        for w in &self.writes {
            tables.insert(&w.table, &w.object);
        }
        for (table, sweep) in &self.sweeps {
            tables.insert(table, &sweep.object);
        }
        tables.into_iter().map(|(t, o)| (t.to_string(), o.to_string())).collect()
    }

    /// Ids per table whose current rows the plan needs.
    pub fn ids_by_table(&self) -> BTreeMap<&str, Vec<&str>> {
        let mut ids: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for w in &self.writes {
            let list = ids.entry(&w.table).or_default();
            if !list.contains(&w.id.as_str()) {
                list.push(&w.id);
            }
        }
        ids
    }
}

/// Serialize a batch and validate its identifiers.
pub fn prepare(batch: Batch) -> Result<Prepared, StoreError> {
    let mut writes = Vec::with_capacity(batch.writes.len());
    for write in batch.writes {
        let table = ident::mirror_table(&batch.source, &write.object)?;
        let (text, created) = match write.mutation {
            Mutation::Upsert(data) => {
                let text = serde_json::to_string(&data).map_err(|e| StoreError::CorruptRow {
                    table: table.clone(),
                    id: write.id.clone(),
                    source: e,
                })?;
                (Some(Arc::from(text)), data.get("created").and_then(Value::as_i64))
            }
            Mutation::UpsertText { text, created } => (Some(Arc::from(text)), created),
            Mutation::Delete => (None, None),
        };
        // the JSON tree is dropped here, on the caller's task
        writes.push(PreparedWrite {
            table,
            object: write.object,
            id: write.id,
            account: write.account,
            text,
            created,
            origin: write.origin,
            generation: write.generation,
        });
    }
    let sweeps =
        batch.sweeps.into_iter().map(|s| Ok((ident::mirror_table(&batch.source, &s.object)?, s))).collect::<Result<_, StoreError>>()?;
    let checkpoints = batch
        .checkpoints
        .into_iter()
        .map(|c| PreparedCheckpoint { key: c.key, value: c.value.to_string(), position: c.position })
        .collect();
    Ok(Prepared { source: batch.source, writes, sweeps, checkpoints, finish: batch.finish, handoff: batch.handoff, ledger: batch.ledger })
}

/// A change log entry to append.
#[derive(Debug, Clone, PartialEq)]
pub struct NewChange {
    pub object: String,
    pub object_id: String,
    pub account: Option<String>,
    pub op: &'static str,
    pub kind: String,
    pub data: Option<Arc<str>>,
    pub previous_attributes: Option<String>,
    pub upstream_event_id: Option<String>,
}

impl NewChange {
    fn new(
        object: &str,
        object_id: &str,
        account: Option<&str>,
        op: &'static str,
        origin: &Origin,
        data: Option<&Arc<str>>,
        previous: Option<&Value>,
    ) -> Self {
        let (kind, upstream_event_id, previous) = match origin {
            Origin::Event { id, kind, previous_attributes } => (kind.clone(), Some(id.clone()), previous_attributes.as_ref().or(previous)),
            Origin::Backfill if op == "delete" => (format!("{object}.deleted"), None, previous),
            Origin::Backfill => (format!("{object}.{op}"), None, previous),
            Origin::Reconcile { .. } => (format!("{object}.reconciled"), None, previous),
            Origin::Write | Origin::Poll { .. } => {
                let done = match op {
                    "insert" => "created",
                    "delete" => "deleted",
                    "read" => "read",
                    _ => "updated",
                };
                (format!("{object}.{done}"), None, previous)
            }
        };
        NewChange {
            object: object.to_string(),
            object_id: object_id.to_string(),
            account: account.map(String::from),
            op,
            kind,
            data: data.cloned(),
            previous_attributes: previous.map(Value::to_string),
            upstream_event_id,
        }
    }

    /// The delete a sweep records for a row no backfill saw.
    pub fn swept(sweep: &Sweep, object_id: &str) -> Self {
        NewChange::new(&sweep.object, object_id, sweep.account.as_deref(), "delete", &Origin::Backfill, None, None)
    }
}

/// The final state of one mirror row after a batch.
pub struct RowUpsert {
    pub id: String,
    pub account: Option<String>,
    pub text: Arc<str>,
    pub created: Option<i64>,
    pub generation: i64,
}

/// What to do to one mirror table.
#[derive(Default)]
pub struct TablePlan {
    pub upserts: Vec<RowUpsert>,
    pub deletes: Vec<String>,
    /// Rows that already hold the state: only their generation moves.
    pub touches: Vec<(String, i64)>,
    /// Rows added minus rows removed.
    pub rows_delta: i64,
}

pub struct Plan {
    /// In write order: the change log order.
    pub changes: Vec<NewChange>,
    pub tables: BTreeMap<String, TablePlan>,
    pub unchanged: u64,
    /// Write fences to set (table, id, the state written; `None`: deleted)
    /// or, with `Clear`, to lift.
    pub fences: Vec<(String, String, Fence)>,
}

/// What a batch does to an object's write fence. A write through Tributary
/// puts the upstream's answer in the mirror before the upstream's own events
/// arrive; until the event carrying that state (its echo) comes, events and
/// backfill pages for the object hold older states and are skipped, so the
/// mirror never moves back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fence {
    /// Hold the object at this state (`None`: deleted).
    Set(Option<String>),
    Clear,
}

/// Live fences of the batch's objects: table → id → fenced state.
pub type Fences = HashMap<String, HashMap<String, Option<String>>>;

/// Is `text` (a write's new state, `None` for a delete) the fenced state?
fn same_state(fenced: Option<&str>, text: Option<&str>) -> bool {
    match (fenced, text) {
        (None, None) => true,
        (Some(a), Some(b)) => a == b || serde_json::from_str::<Value>(a).ok() == serde_json::from_str::<Value>(b).ok(),
        _ => false,
    }
}

/// A write that is emitted even when the mirror holds its state already.
fn resends(origin: &Origin) -> bool {
    matches!(origin, Origin::Poll { resend: true })
}

/// Decide a batch against the rows the mirror holds now (`existing`: table →
/// id → serialized data). Rows absent from `existing` do not exist.
pub fn plan(prepared: &Prepared, existing: &HashMap<String, HashMap<String, String>>, fences: &Fences) -> Result<Plan, StoreError> {
    // the state each row is in after the writes so far: (text, last write)
    let mut state: HashMap<(&str, &str), Option<Arc<str>>> = HashMap::new();
    let mut last: HashMap<(&str, &str), &PreparedWrite> = HashMap::new();
    let mut order: Vec<(&str, &str)> = Vec::new();
    let mut changes = Vec::new();
    let mut unchanged = 0;
    // fences as the writes so far leave them; `Some(None)`: lifted
    let mut fenced: HashMap<(&str, &str), Option<Option<Arc<str>>>> = HashMap::new();
    for write in &prepared.writes {
        let key = (write.table.as_str(), write.id.as_str());
        let fence = match fenced.get(&key) {
            Some(fence) => fence.clone(),
            None => fences.get(&write.table).and_then(|ids| ids.get(&write.id)).map(|f| f.as_deref().map(Arc::from)),
        };
        match (&write.origin, fence) {
            (Origin::Write, _) => {
                fenced.insert(key, Some(write.text.clone()));
            }
            (_, Some(state)) if same_state(state.as_deref(), write.text.as_deref()) => {
                // the echo of the write: from here on events apply again
                fenced.insert(key, None);
            }
            (_, Some(_)) => {
                unchanged += 1;
                continue;
            }
            (_, None) => {}
        }
        if let std::collections::hash_map::Entry::Vacant(slot) = state.entry(key) {
            slot.insert(existing.get(&write.table).and_then(|rows| rows.get(&write.id)).map(|row| Arc::from(row.as_str())));
            order.push(key);
        }
        let current = state.get(&key).cloned().flatten();
        if let Origin::Reconcile { expected } = &write.origin
            && !same_state(expected.as_deref(), current.as_deref())
        {
            // the mirror moved since reconcile compared it: the tail's
            unchanged += 1;
            continue;
        }
        last.insert(key, write);
        let account = write.account.as_deref();
        let Some(text) = &write.text else {
            if current.is_none() {
                unchanged += 1;
                continue;
            }
            changes.push(NewChange::new(&write.object, &write.id, account, "delete", &write.origin, None, None));
            state.insert(key, None);
            continue;
        };
        // (the fields that changed, whether the mirror holds this state already)
        let (previous, same) = match &current {
            None => (None, false),
            Some(old) if **old == **text => (None, true),
            Some(old) => {
                let corrupt = |e| StoreError::CorruptRow { table: write.table.clone(), id: write.id.clone(), source: e };
                // a different text may still be the same JSON (key order, jsonb)
                let old: Value = serde_json::from_str(old).map_err(corrupt)?;
                let new: Value = serde_json::from_str(text).map_err(corrupt)?;
                if old == new { (None, true) } else { (previous_attributes(&old, &new), false) }
            }
        };
        if same && !resends(&write.origin) {
            unchanged += 1;
            continue;
        }
        let op = match (&write.origin, &current) {
            (Origin::Backfill, _) => "read",
            (Origin::Poll { resend: true }, Some(_)) if same => "read",
            (_, None) => "insert",
            (_, Some(_)) => "update",
        };
        changes.push(NewChange::new(&write.object, &write.id, account, op, &write.origin, Some(text), previous.as_ref()));
        state.insert(key, Some(text.clone()));
    }

    let mut tables: BTreeMap<String, TablePlan> = BTreeMap::new();
    for key @ (table, id) in order {
        let initial = existing.get(table).and_then(|rows| rows.get(id));
        // a key whose every write was refused (reconcile on a moved row)
        let Some(&write) = last.get(&key) else { continue };
        let plan = tables.entry(table.to_string()).or_default();
        match (initial, &state[&key]) {
            (None, None) => {}
            (Some(_), None) => {
                plan.deletes.push(id.to_string());
                plan.rows_delta -= 1;
            }
            (Some(old), Some(new)) if old.as_str() == &**new => plan.touches.push((id.to_string(), write.generation)),
            (initial, Some(new)) => {
                plan.upserts.push(RowUpsert {
                    id: id.to_string(),
                    account: write.account.clone(),
                    text: new.clone(),
                    created: write.created,
                    generation: write.generation,
                });
                if initial.is_none() {
                    plan.rows_delta += 1;
                }
            }
        }
    }
    // staged jobs become notices after the batch's own changes: `op =
    // insert` of an object named by their type (`write` for `write.completed`)
    for notice in prepared.handoff.iter().flat_map(|h| &h.notices) {
        let object = notice.kind.split('.').next().unwrap_or("notice");
        let id = notice.payload["id"].as_str().unwrap_or_default();
        let account = notice.payload["account"].as_str();
        let payload: Arc<str> = Arc::from(notice.payload.to_string());
        let mut change = NewChange::new(object, id, account, "insert", &Origin::Write, Some(&payload), None);
        change.kind = notice.kind.clone();
        changes.push(change);
    }
    let mut fences: Vec<(String, String, Fence)> = fenced
        .into_iter()
        .map(|((table, id), fence)| {
            (table.to_string(), id.to_string(), fence.map_or(Fence::Clear, |f| Fence::Set(f.as_deref().map(String::from))))
        })
        .collect();
    fences.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    Ok(Plan { changes, tables, unchanged, fences })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Write;
    use serde_json::json;

    fn write(id: &str, mutation: Mutation, origin: Origin) -> Write {
        Write { object: "customer".into(), id: id.into(), account: None, mutation, origin, generation: 1 }
    }

    fn event(id: &str, kind: &str) -> Origin {
        Origin::Event { id: id.into(), kind: kind.into(), previous_attributes: None }
    }

    #[test]
    fn writes_to_one_object_in_one_batch_apply_in_order() {
        let batch = Batch {
            source: "stripe".into(),
            writes: vec![
                write("c1", Mutation::Upsert(json!({"id": "c1", "n": 1})), event("e1", "customer.created")),
                write("c1", Mutation::Upsert(json!({"id": "c1", "n": 2})), event("e2", "customer.updated")),
                write("c1", Mutation::Upsert(json!({"id": "c1", "n": 2})), event("e3", "customer.updated")),
                write("c2", Mutation::Delete, event("e4", "customer.deleted")),
                write("c3", Mutation::Upsert(json!({"id": "c3"})), event("e5", "customer.created")),
                write("c3", Mutation::Delete, event("e6", "customer.deleted")),
            ],
            ..Batch::default()
        };
        let prepared = prepare(batch).unwrap();
        let existing = HashMap::from([("stripe_customer".to_string(), HashMap::from([("c2".to_string(), "{\"id\":\"c2\"}".to_string())]))]);
        let plan = plan(&prepared, &existing, &Fences::new()).unwrap();
        let ops: Vec<(&str, &str)> = plan.changes.iter().map(|c| (c.op, c.object_id.as_str())).collect();
        assert_eq!(ops, [("insert", "c1"), ("update", "c1"), ("delete", "c2"), ("insert", "c3"), ("delete", "c3")]);
        assert_eq!(plan.changes[1].previous_attributes.as_deref(), Some("{\"n\":1}"));
        assert_eq!(plan.unchanged, 1);
        let table = &plan.tables["stripe_customer"];
        assert_eq!(table.upserts.len(), 1);
        assert_eq!(&*table.upserts[0].text, "{\"id\":\"c1\",\"n\":2}");
        assert_eq!(table.deletes, ["c2"]);
        assert_eq!(table.rows_delta, 0);
    }

    /// A write serialized by its source is stored as its text, with its
    /// creation time, and compared with the mirror like any other.
    #[test]
    fn serialized_writes_keep_their_text_and_compare_as_json() {
        let object = json!({"id": "c1", "object": "customer", "created": 7, "name": "Ada"});
        let batch = Batch {
            source: "stripe".into(),
            writes: vec![
                write("c1", Mutation::serialized(&object).unwrap(), Origin::Backfill),
                write("c2", Mutation::UpsertText { text: "{\"id\":\"c2\"}".into(), created: Some(9) }, Origin::Backfill),
            ],
            ..Batch::default()
        };
        let prepared = prepare(batch).unwrap();
        assert_eq!(prepared.writes[0].text.as_deref(), Some(r#"{"id":"c1","object":"customer","created":7,"name":"Ada"}"#));
        assert_eq!((prepared.writes[0].created, prepared.writes[1].created), (Some(7), Some(9)));
        // the mirror holds c1 in another key order: no change; c2 is new
        let existing = HashMap::from([(
            "stripe_customer".to_string(),
            HashMap::from([("c1".to_string(), r#"{"name": "Ada", "created": 7, "object": "customer", "id": "c1"}"#.to_string())]),
        )]);
        let plan = plan(&prepared, &existing, &Fences::new()).unwrap();
        assert_eq!(plan.changes.iter().map(|c| c.object_id.as_str()).collect::<Vec<_>>(), ["c2"]);
    }

    #[test]
    fn same_json_in_another_key_order_is_no_change() {
        let batch = Batch {
            source: "stripe".into(),
            writes: vec![write("c1", Mutation::Upsert(json!({"b": 2, "a": 1})), Origin::Backfill)],
            ..Batch::default()
        };
        let prepared = prepare(batch).unwrap();
        let existing =
            HashMap::from([("stripe_customer".to_string(), HashMap::from([("c1".to_string(), "{\"a\": 1, \"b\": 2}".to_string())]))]);
        let plan = plan(&prepared, &existing, &Fences::new()).unwrap();
        assert!(plan.changes.is_empty());
        assert_eq!(plan.tables["stripe_customer"].touches, [("c1".to_string(), 1)]);
    }

    #[test]
    fn a_write_fences_its_object_until_the_upstream_echoes_it() {
        let written = json!({"id": "c1", "name": "new"});
        let batch = Batch {
            source: "stripe".into(),
            writes: vec![write("c1", Mutation::Upsert(written.clone()), Origin::Write)],
            ..Default::default()
        };
        let written_plan = plan(&prepare(batch).unwrap(), &HashMap::new(), &Fences::new()).unwrap();
        assert_eq!(written_plan.fences, [("stripe_customer".to_string(), "c1".to_string(), Fence::Set(Some(written.to_string())))]);
        assert_eq!(written_plan.changes[0].kind, "customer.created");

        // the tail then brings an older state, then the write's own
        let fences: Fences = [("stripe_customer".to_string(), [("c1".to_string(), Some(written.to_string()))].into())].into();
        let existing = [("stripe_customer".to_string(), [("c1".to_string(), written.to_string())].into())].into();
        let batch = Batch {
            source: "stripe".into(),
            writes: vec![
                write("c1", Mutation::Upsert(json!({"id": "c1", "name": "old"})), event("evt_1", "customer.created")),
                write("c1", Mutation::Upsert(json!({"name": "new", "id": "c1"})), event("evt_2", "customer.updated")),
                write("c1", Mutation::Upsert(json!({"id": "c1", "name": "newer"})), event("evt_3", "customer.updated")),
            ],
            ..Default::default()
        };
        let tail = plan(&prepare(batch).unwrap(), &existing, &fences).unwrap();
        assert_eq!(tail.unchanged, 2, "the older state is skipped, the echo changes nothing");
        assert_eq!(tail.changes.len(), 1);
        assert_eq!(tail.changes[0].upstream_event_id.as_deref(), Some("evt_3"));
        assert_eq!(tail.fences, [("stripe_customer".to_string(), "c1".to_string(), Fence::Clear)]);

        // a deleted object stays deleted until its delete event
        let fences: Fences = [("stripe_customer".to_string(), [("c1".to_string(), None)].into())].into();
        let batch = Batch {
            source: "stripe".into(),
            writes: vec![write("c1", Mutation::Upsert(json!({"id": "c1", "name": "new"})), event("evt_2", "customer.updated"))],
            ..Default::default()
        };
        let stale = plan(&prepare(batch).unwrap(), &HashMap::new(), &fences).unwrap();
        assert!(stale.changes.is_empty() && stale.tables.is_empty());
        assert!(stale.fences.is_empty(), "still fenced");
    }

    /// A repair applies only while the mirror holds the state reconcile
    /// compared: a row the events tail changed (or deleted, or inserted)
    /// since is left as the tail wrote it.
    #[test]
    fn a_repair_applies_only_to_the_state_it_was_compared_with() {
        let reconcile = |expected: Option<&str>| Origin::Reconcile { expected: expected.map(String::from) };
        let held = r#"{"id":"c1","name":"old"}"#;
        let existing = HashMap::from([(
            "stripe_customer".to_string(),
            HashMap::from([("c1".to_string(), held.to_string()), ("c3".to_string(), r#"{"id":"c3"}"#.to_string())]),
        )]);
        let batch = Batch {
            source: "stripe".into(),
            writes: vec![
                // compared with the state held (in another key order): applied
                write("c1", Mutation::Upsert(json!({"id": "c1", "name": "new"})), reconcile(Some(r#"{"name":"old","id":"c1"}"#))),
                // compared while absent, inserted since: left alone
                write("c3", Mutation::Upsert(json!({"id": "c3", "n": 1})), reconcile(None)),
                // compared with a state the mirror no longer holds: left alone
                write("c2", Mutation::Delete, reconcile(Some(r#"{"id":"c2"}"#))),
                // absent and compared absent: inserted
                write("c4", Mutation::Upsert(json!({"id": "c4"})), reconcile(None)),
            ],
            ..Default::default()
        };
        let plan = plan(&prepare(batch).unwrap(), &existing, &Fences::new()).unwrap();
        let done: Vec<(&str, &str, &str)> = plan.changes.iter().map(|c| (c.op, c.object_id.as_str(), c.kind.as_str())).collect();
        assert_eq!(done, [("update", "c1", "customer.reconciled"), ("insert", "c4", "customer.reconciled")]);
        assert_eq!(plan.changes[0].previous_attributes.as_deref(), Some(r#"{"name":"old"}"#));
        assert_eq!(plan.unchanged, 2);
        let table = &plan.tables["stripe_customer"];
        assert_eq!(table.upserts.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(), ["c1", "c4"]);
        assert!(table.deletes.is_empty() && table.touches.is_empty());
    }
}

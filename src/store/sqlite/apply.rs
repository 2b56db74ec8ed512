//! Batches committed by one writer thread: batches queued while it commits
//! go together in the next transaction (group commit); a group that fails
//! is retried batch by batch, so one bad batch cannot fail the others.

use std::collections::{HashMap, HashSet};

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot, watch};

use super::{ledger, notify, writes};
use crate::store::ident::quote;
use crate::store::plan::{self, NewChange, Prepared};
use crate::store::{Applied, StoreError};

/// Batches queued for the writer; beyond this, `apply` waits (backpressure).
pub(super) const QUEUE_DEPTH: usize = 16;
/// Batches committed together in one transaction at most.
const GROUP_MAX: usize = 32;

pub(super) type Job = (Prepared, oneshot::Sender<Result<Applied, StoreError>>);

pub(super) struct Writer {
    pub(super) conn: Connection,
    /// Mirror tables known to exist, so `CREATE TABLE` runs once per type.
    pub(super) known_tables: HashSet<String>,
    /// Bumped after each commit that wrote changes.
    pub(super) committed: watch::Sender<u64>,
}

impl Writer {
    pub(super) fn run(mut self, mut queue: mpsc::Receiver<Job>) {
        while let Some(first) = queue.blocking_recv() {
            let mut group = vec![first];
            while group.len() < GROUP_MAX {
                match queue.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            self.commit_group(group);
        }
    }

    /// Commit a group of batches in one transaction; if that fails, commit
    /// each alone so one bad batch cannot fail the others.
    fn commit_group(&mut self, group: Vec<Job>) {
        if group.len() > 1 {
            let batches: Vec<&Prepared> = group.iter().map(|(b, _)| b).collect();
            let before = self.known_tables.clone();
            match self.transaction(&batches) {
                Ok(results) => {
                    self.announce(&results);
                    for ((_, done), applied) in group.into_iter().zip(results) {
                        let _ = done.send(Ok(applied));
                    }
                    return;
                }
                Err(_) => self.known_tables = before,
            }
        }
        for (batch, done) in group {
            let before = self.known_tables.clone();
            let result = self.transaction(&[&batch]).map(|mut r| r.remove(0));
            match &result {
                Ok(applied) => self.announce(std::slice::from_ref(applied)),
                Err(_) => self.known_tables = before,
            }
            let _ = done.send(result);
        }
    }

    fn announce(&self, results: &[Applied]) {
        notify::committed(&self.committed, results);
    }

    fn transaction(&mut self, batches: &[&Prepared]) -> Result<Vec<Applied>, StoreError> {
        // IMMEDIATE: take the write lock at BEGIN, where the busy timeout
        // waits for the bookkeeping connection; a deferred transaction that
        // upgrades later fails at once with "database is locked"
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let now = chrono::Utc::now();
        let committed_at = crate::store::timestamp(now);
        let mut results = Vec::with_capacity(batches.len());
        // rows added (or removed) per table in this transaction
        let mut row_deltas: HashMap<String, i64> = HashMap::new();
        for batch in batches {
            for (table, object) in batch.tables() {
                ensure_table(&tx, &mut self.known_tables, &batch.source, &object, &table)?;
            }
            let mut existing: HashMap<String, HashMap<String, String>> = HashMap::new();
            for (table, ids) in batch.ids_by_table() {
                let mut stmt = tx.prepare_cached(&format!("SELECT data FROM {} WHERE id = ?1", quote(table)))?;
                let rows = existing.entry(table.to_string()).or_default();
                for id in ids {
                    if let Some(text) = stmt.query_row([id], |r| r.get::<_, String>(0)).optional()? {
                        rows.insert(id.to_string(), text);
                    }
                }
            }
            let fences = writes::fences(&tx, batch, &committed_at)?;
            let plan = plan::plan(batch, &existing, &fences)?;
            writes::save_fences(&tx, &plan.fences, now)?;
            let mut applied = Applied { changes: plan.changes.len() as u64, unchanged: plan.unchanged };
            for (table, table_plan) in &plan.tables {
                let quoted = quote(table);
                let mut upsert = tx.prepare_cached(&format!(
                    "INSERT INTO {quoted} (id, account, data, created, updated_at, _generation) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (id) DO UPDATE SET account = excluded.account, data = excluded.data, created = excluded.created,
                     updated_at = excluded.updated_at, _generation = max(_generation, excluded._generation)"
                ))?;
                for row in &table_plan.upserts {
                    upsert.execute(params![row.id, row.account, &*row.text, row.created, committed_at, row.generation])?;
                }
                let mut touch = tx.prepare_cached(&format!("UPDATE {quoted} SET _generation = ?2 WHERE id = ?1 AND _generation < ?2"))?;
                for (id, generation) in &table_plan.touches {
                    touch.execute(params![id, generation])?;
                }
                let mut delete = tx.prepare_cached(&format!("DELETE FROM {quoted} WHERE id = ?1"))?;
                for id in &table_plan.deletes {
                    delete.execute([id])?;
                }
                *row_deltas.entry(table.clone()).or_default() += table_plan.rows_delta;
            }
            let mut changes = plan.changes;
            for (table, sweep) in &batch.sweeps {
                let quoted = quote(table);
                let stale: Vec<String> = tx
                    .prepare_cached(&format!(
                        "SELECT id FROM {quoted} WHERE account IS ?1 AND _generation < ?2
                     AND (created IS NULL OR ?3 IS NULL OR created < ?3) ORDER BY id"
                    ))?
                    .query_map(params![sweep.account, sweep.below_generation, sweep.created_before], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                let mut delete = tx.prepare_cached(&format!("DELETE FROM {quoted} WHERE id = ?1"))?;
                for id in &stale {
                    delete.execute([id])?;
                    changes.push(NewChange::swept(sweep, id));
                }
                applied.changes += stale.len() as u64;
                *row_deltas.entry(table.clone()).or_default() -= stale.len() as i64;
            }
            let mut insert = tx.prepare_cached(
                "INSERT INTO tributary_changes (source, object, object_id, account, op, type, data, previous_attributes, upstream_event_id, committed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            for c in &changes {
                insert.execute(params![
                    batch.source,
                    c.object,
                    c.object_id,
                    c.account,
                    c.op,
                    c.kind,
                    c.data.as_deref(),
                    c.previous_attributes,
                    c.upstream_event_id,
                    committed_at
                ])?;
            }
            let mut checkpoint = tx.prepare_cached(&format!(
                "INSERT INTO tributary_checkpoints (source, key, value, updated_at, position_major, position_minor)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) {}",
                crate::store::CHECKPOINT_CONFLICT
            ))?;
            for c in &batch.checkpoints {
                let (major, minor) = (c.position.map(|p| p.major), c.position.map(|p| p.minor));
                if checkpoint.execute(params![batch.source, c.key, c.value, committed_at, major, minor])? == 0 {
                    return Err(StoreError::CheckpointBehind { name: batch.source.clone(), key: c.key.clone() });
                }
            }
            if let Some(finish) = &batch.finish {
                writes::finish(&tx, finish, &committed_at)?;
            }
            if let Some(handoff) = &batch.handoff {
                writes::hand_off(&tx, &handoff.jobs)?;
            }
            ledger::apply(&tx, &batch.source, &batch.ledger)?;
            results.push(applied);
        }
        for (table, delta) in row_deltas.into_iter().filter(|(_, d)| *d != 0) {
            tx.prepare_cached("UPDATE tributary_tables SET row_count = row_count + ?1 WHERE table_name = ?2")?
                .execute(params![delta, table])?;
        }
        tx.commit()?;
        Ok(results)
    }
}

fn ensure_table(conn: &Connection, known: &mut HashSet<String>, source: &str, object: &str, table: &str) -> Result<(), StoreError> {
    if known.contains(table) {
        return Ok(());
    }
    let quoted = quote(table);
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {quoted} (
            id TEXT PRIMARY KEY,
            account TEXT,
            data TEXT NOT NULL,
            created INTEGER,
            updated_at TEXT NOT NULL,
            _generation INTEGER NOT NULL DEFAULT 0
        );"
    ))?;
    conn.execute(
        "INSERT OR IGNORE INTO tributary_tables (source, object, table_name) VALUES (?1, ?2, ?3)",
        params![source, object, table],
    )?;
    known.insert(table.to_string());
    Ok(())
}

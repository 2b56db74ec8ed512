//! A batch in one transaction: set-based statements (one per table and kind
//! of write), sent together after the lock they need.

use std::collections::{BTreeMap, HashMap};

use tokio_postgres::types::ToSql;

use super::notify::channel;
use super::{PgStore, pg};
use crate::store::plan::{self, NewChange, RowUpsert};
use crate::store::{Applied, Batch, ErrorKind, StoreError, timestamp};

/// Attempts of a batch refused by a key a concurrent batch took first.
const MAX_ATTEMPTS: u32 = 5;

/// Batches in their transaction at once. Each holds its rows several times
/// over (the batch, the plan, the statements' parameters) while it runs;
/// with one per connection of the pool (16), the backfill benchmark peaked
/// at 175-179 MB; with 4, at 114 MB and a little faster (11,363 objects/s
/// against 9,230-10,209): four writers keep the server busy, more only wait
/// on each other. A small batch (a write-through's result, a fan-out) waits
/// behind at most four others.
pub(super) const CONCURRENT_BATCHES: usize = 4;

/// Bytes of JSON one statement carries at most. Each connection keeps
/// buffers as large as the largest message it sent, and the pool holds
/// `pool_size` connections: a batch of a thousand invoices in one statement
/// left every connection holding megabytes (peak RSS 224 MB in the backfill
/// benchmark, 142 MB with 512 KiB statements).
const STATEMENT_BYTES: usize = 512 * 1024;

/// `rows` in runs of at most [`STATEMENT_BYTES`] (by `size`), in order; a
/// larger row is a run of its own.
fn by_bytes<T>(rows: &[T], size: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let mut runs = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, row) in rows.iter().enumerate() {
        let n = size(row);
        if i > start && bytes + n > STATEMENT_BYTES {
            runs.push(&rows[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += n;
    }
    if start < rows.len() {
        runs.push(&rows[start..]);
    }
    runs
}

/// A replaced row keeps the higher generation: a write through the engine
/// (generation 0) never undoes what the running backfill saw.
const UPSERT_CONFLICT: &str = "ON CONFLICT (id) DO UPDATE SET account = excluded.account, data = excluded.data, created = excluded.created,
     updated_at = excluded.updated_at, _generation = GREATEST(t._generation, excluded._generation)";

impl PgStore {
    /// Commit a batch: its mirror rows, changes, checkpoints, ledger and
    /// write bookkeeping in one transaction, statements sent together.
    pub(super) async fn apply_batch(&self, batch: Batch) -> Result<Applied, StoreError> {
        let prepared = plan::prepare(batch)?;
        for (table, object) in prepared.tables() {
            self.ensure_table(&prepared.source, &object, &table).await?;
        }
        // two batches that insert one new object at once (the same child
        // listed under two parents) both plan an insert; the second is
        // refused by the key, and planned again against the first's row
        let mut attempt = 0;
        loop {
            match self.apply_prepared(&prepared).await {
                Err(e) if e.kind() == ErrorKind::UniqueViolation && attempt < MAX_ATTEMPTS => {
                    attempt += 1;
                    tracing::debug!(source = %prepared.source, attempt, error = %e, "a concurrent batch inserted the same object; planning again");
                }
                other => return other,
            }
        }
    }

    /// One attempt at a prepared batch, in one transaction.
    async fn apply_prepared(&self, prepared: &plan::Prepared) -> Result<Applied, StoreError> {
        let _turn = self.batches.acquire().await.expect("the batch semaphore is never closed");
        let mut client = self.pool.get().await.map_err(pg)?;
        let tx = client.transaction().await.map_err(pg)?;
        // the lock, then the rows and fences the plan needs: sent together
        // (pipelined), run by the server in that order
        let now = timestamp(chrono::Utc::now());
        let ids_by_table = prepared.ids_by_table();
        let reads = ids_by_table.iter().map(|(table, ids)| {
            let tx = &tx;
            async move {
                let statement =
                    tx.prepare_cached(&format!("SELECT id, data::text FROM {} WHERE id = ANY($1)", self.t(table))).await.map_err(pg)?;
                let rows = tx.query(&statement, &[ids]).await.map_err(pg)?;
                Ok::<_, StoreError>((table.to_string(), rows.iter().map(|r| (r.get(0), r.get(1))).collect::<HashMap<String, String>>()))
            }
        });
        let stripes = self.stripe_lock(&tx, prepared).await?;
        let lock = async {
            if let Some((statement, keys)) = &stripes {
                tx.execute(statement, &[keys]).await.map_err(pg)?;
            }
            Ok::<_, StoreError>(())
        };
        let ((), existing, fences) = futures::try_join!(lock, futures::future::try_join_all(reads), self.fences(&tx, prepared, &now))?;
        let existing: HashMap<String, HashMap<String, String>> = existing.into_iter().collect();
        let plan = plan::plan(prepared, &existing, &fences)?;
        let mut applied = Applied { changes: plan.changes.len() as u64, unchanged: plan.unchanged };
        let mut row_deltas: BTreeMap<String, i64> = BTreeMap::new();
        for (table, table_plan) in &plan.tables {
            let quoted = self.t(table);
            // rows the mirror did not hold take a plain insert (the plan read
            // them under this transaction); only replacements need ON CONFLICT
            let (fresh, replaced): (Vec<&RowUpsert>, Vec<&RowUpsert>) =
                table_plan.upserts.iter().partition(|r| !existing.get(table).is_some_and(|rows| rows.contains_key(&r.id)));
            for (rows, conflict) in [(fresh, ""), (replaced, UPSERT_CONFLICT)] {
                for rows in by_bytes(&rows, |r| r.text.len()) {
                    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
                    let accounts: Vec<Option<&str>> = rows.iter().map(|r| r.account.as_deref()).collect();
                    let texts: Vec<&str> = rows.iter().map(|r| &*r.text).collect();
                    let created: Vec<Option<i64>> = rows.iter().map(|r| r.created).collect();
                    let generations: Vec<i64> = rows.iter().map(|r| r.generation).collect();
                    let sql = format!(
                        "INSERT INTO {quoted} AS t (id, account, data, created, updated_at, _generation)
                     SELECT u.id, u.account, u.data::jsonb, u.created, now(), u.generation
                     FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::int8[]) AS u(id, account, data, created, generation)
                     {conflict}"
                    );
                    let statement = tx.prepare_cached(&sql).await.map_err(pg)?;
                    tx.execute(&statement, &[&ids, &accounts, &texts, &created, &generations]).await.map_err(pg)?;
                }
            }
            if !table_plan.touches.is_empty() {
                let ids: Vec<&str> = table_plan.touches.iter().map(|(id, _)| id.as_str()).collect();
                let generations: Vec<i64> = table_plan.touches.iter().map(|(_, g)| *g).collect();
                let sql = format!(
                    "UPDATE {quoted} AS t SET _generation = u.generation FROM UNNEST($1::text[], $2::int8[]) AS u(id, generation)
                     WHERE t.id = u.id AND t._generation < u.generation"
                );
                tx.execute(&sql, &[&ids, &generations]).await.map_err(pg)?;
            }
            if !table_plan.deletes.is_empty() {
                tx.execute(&format!("DELETE FROM {quoted} WHERE id = ANY($1)"), &[&table_plan.deletes]).await.map_err(pg)?;
            }
            *row_deltas.entry(table.clone()).or_default() += table_plan.rows_delta;
        }
        let mut changes = plan.changes;
        for (table, sweep) in &prepared.sweeps {
            let rows = tx
                .query(
                    &format!(
                        "DELETE FROM {} WHERE account IS NOT DISTINCT FROM $1 AND _generation < $2
                         AND (created IS NULL OR $3::int8 IS NULL OR created < $3) RETURNING id",
                        self.t(table)
                    ),
                    &[&sweep.account, &sweep.below_generation, &sweep.created_before],
                )
                .await
                .map_err(pg)?;
            let mut stale: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            stale.sort();
            for id in &stale {
                changes.push(NewChange::swept(sweep, id));
            }
            applied.changes += stale.len() as u64;
            *row_deltas.entry(table.clone()).or_default() -= stale.len() as i64;
        }
        // the rest is independent: sent together (pipelined)
        let fences = self.save_fences(&tx, &plan.fences);
        let change_log = async {
            let size = |c: &NewChange| c.data.as_ref().map_or(0, |d| d.len()) + c.previous_attributes.as_ref().map_or(0, String::len);
            // in order: each statement's changes take the next ids
            for changes in by_bytes(&changes, size) {
                let column = |f: fn(&NewChange) -> Option<&str>| changes.iter().map(f).collect::<Vec<Option<&str>>>();
                let objects = column(|c| Some(&c.object));
                let object_ids = column(|c| Some(&c.object_id));
                let accounts = column(|c| c.account.as_deref());
                let ops = column(|c| Some(c.op));
                let kinds = column(|c| Some(&c.kind));
                let data = column(|c| c.data.as_deref());
                let previous = column(|c| c.previous_attributes.as_deref());
                let events = column(|c| c.upstream_event_id.as_deref());
                let sql = format!(
                    "INSERT INTO {} (source, object, object_id, account, op, type, data, previous_attributes, upstream_event_id)
                 SELECT $1::text, u.object, u.object_id, u.account, u.op, u.kind, u.data::json, u.previous::json, u.event
                 FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[])
                      WITH ORDINALITY AS u(object, object_id, account, op, kind, data, previous, event, position)
                 ORDER BY u.position",
                    self.t("tributary_changes")
                );
                let statement = tx.prepare_cached(&sql).await.map_err(pg)?;
                let params: [&(dyn ToSql + Sync); 9] =
                    [&prepared.source, &objects, &object_ids, &accounts, &ops, &kinds, &data, &previous, &events];
                tx.execute(&statement, &params).await.map_err(pg)?;
            }
            Ok::<_, StoreError>(())
        };
        let checkpoints = async {
            if prepared.checkpoints.is_empty() {
                return Ok(());
            }
            let keys: Vec<&str> = prepared.checkpoints.iter().map(|c| c.key.as_str()).collect();
            let values: Vec<&str> = prepared.checkpoints.iter().map(|c| c.value.as_str()).collect();
            let majors: Vec<Option<i64>> = prepared.checkpoints.iter().map(|c| c.position.map(|p| p.major)).collect();
            let minors: Vec<Option<i64>> = prepared.checkpoints.iter().map(|c| c.position.map(|p| p.minor)).collect();
            let sql = format!(
                "INSERT INTO {table} AS tributary_checkpoints (source, key, value, updated_at, position_major, position_minor)
                 SELECT $1::text, u.key, u.value::jsonb, now(), u.major, u.minor
                 FROM UNNEST($2::text[], $3::text[], $4::int8[], $5::int8[]) AS u(key, value, major, minor) {conflict}",
                table = self.t("tributary_checkpoints"),
                conflict = crate::store::CHECKPOINT_CONFLICT
            );
            let statement = tx.prepare_cached(&sql).await.map_err(pg)?;
            let written = tx.execute(&statement, &[&prepared.source, &keys, &values, &majors, &minors]).await.map_err(pg)?;
            if written < keys.len() as u64 {
                // which one: the first whose stored position is ahead
                let behind = self.checkpoint_behind(&tx, &prepared.source, &prepared.checkpoints).await?;
                return Err(StoreError::CheckpointBehind { name: prepared.source.clone(), key: behind });
            }
            Ok::<_, StoreError>(())
        };
        let finish = async {
            match &prepared.finish {
                Some(finish) => self.finish(&tx, finish).await,
                None => Ok(()),
            }
        };
        let handoff = async {
            match &prepared.handoff {
                Some(handoff) => self.hand_off(&tx, &handoff.jobs).await,
                None => Ok(()),
            }
        };
        // in a fixed order: these rows are shared by concurrent batches
        let row_counts = async {
            for (table, delta) in row_deltas.iter().filter(|(_, d)| **d != 0) {
                let sql =
                    format!("UPDATE {} SET row_count = row_count + $1 WHERE source = $2 AND table_name = $3", self.t("tributary_tables"));
                let statement = tx.prepare_cached(&sql).await.map_err(pg)?;
                tx.execute(&statement, &[delta, &prepared.source, table]).await.map_err(pg)?;
            }
            Ok::<_, StoreError>(())
        };
        let notify = async {
            if applied.changes > 0 {
                // delivered to listeners at commit, in every process
                let statement = tx.prepare_cached("SELECT pg_notify($1, '')").await.map_err(pg)?;
                tx.execute(&statement, &[&channel(&self.schema)]).await.map_err(pg)?;
            }
            Ok::<_, StoreError>(())
        };
        let ledger = self.apply_ledger(&tx, &prepared.source, &prepared.ledger);
        futures::try_join!(fences, change_log, checkpoints, finish, handoff, ledger, row_counts, notify)?;
        tx.commit().await.map_err(pg)?;
        if applied.changes > 0 {
            self.commits.send_modify(|n| *n += 1);
        }
        Ok(applied)
    }

    /// The key of the first checkpoint whose stored position is ahead.
    async fn checkpoint_behind(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        source: &str,
        checkpoints: &[plan::PreparedCheckpoint],
    ) -> Result<String, StoreError> {
        let sql = format!("SELECT position_major, position_minor FROM {} WHERE source = $1 AND key = $2", self.t("tributary_checkpoints"));
        for c in checkpoints {
            let Some(position) = c.position else { continue };
            let row = tx.query_opt(&sql, &[&source, &c.key]).await.map_err(pg)?;
            let stored =
                row.and_then(|r| Some(crate::store::Position { major: r.get::<_, Option<i64>>(0)?, minor: r.get::<_, Option<i64>>(1)? }));
            if stored.is_some_and(|stored| stored > position) {
                return Ok(c.key.clone());
            }
        }
        Ok(checkpoints.first().map(|c| c.key.clone()).unwrap_or_default())
    }

    async fn ensure_table(&self, source: &str, object: &str, table: &str) -> Result<(), StoreError> {
        if self.known_tables.lock().contains(table) {
            return Ok(());
        }
        let mut client = self.pool.get().await.map_err(pg)?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", &[&format!("tributary:table:{}.{table}", self.schema)])
            .await
            .map_err(pg)?;
        let quoted = self.t(table);
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {quoted} (
                id text PRIMARY KEY,
                account text,
                data jsonb NOT NULL,
                created bigint,
                updated_at timestamptz NOT NULL DEFAULT now(),
                _generation bigint NOT NULL DEFAULT 0
            );"
        ))
        .await
        .map_err(pg)?;
        tx.execute(
            &format!("INSERT INTO {} (source, object, table_name) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING", self.t("tributary_tables")),
            &[&source, &object, &table],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        self.known_tables.lock().insert(table.to_string());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_carry_at_most_their_share_of_bytes_in_order() {
        let sizes = [100_000, 300_000, 200_000, 600_000, 10, 10];
        let runs: Vec<Vec<usize>> = by_bytes(&sizes, |n| *n).into_iter().map(<[usize]>::to_vec).collect();
        assert_eq!(runs, vec![vec![100_000, 300_000], vec![200_000], vec![600_000], vec![10, 10]]);
        assert!(by_bytes(&[] as &[usize], |n| *n).is_empty());
        assert_eq!(by_bytes(&[1, 2, 3], |n| *n).len(), 1);
    }
}

//! The embedded backend. SQLite has one writer: a dedicated thread owns the
//! write connection and commits queued batches together (group commit); reads
//! use their own connection, which WAL lets run beside the writer.

mod ledger;
mod mirror;
mod queues;
mod writes;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;
use tokio::sync::{Mutex, mpsc, oneshot, watch};

use super::ident::quote;
use super::migrate as migrations;
use super::plan::{self, NewChange, Prepared};
use super::{Applied, Batch, Change, ChangeCursor, ChangePage, DeadLetter, Lease, MirrorRow, Store, StoreError, change_id, raw_json};

/// Batches queued for the writer; beyond this, `apply` waits (backpressure).
const QUEUE_DEPTH: usize = 16;
/// Batches committed together in one transaction at most.
const GROUP_MAX: usize = 32;

type Job = (Prepared, oneshot::Sender<Result<Applied, StoreError>>);

pub struct SqliteStore {
    jobs: mpsc::Sender<Job>,
    reader: Arc<Mutex<Connection>>,
    /// Delivery bookkeeping (sink cursors, dead letters): small writes beside
    /// the writer thread; SQLite's busy timeout orders them.
    bookkeeping: Arc<Mutex<Connection>>,
    commits: watch::Receiver<u64>,
    /// Bumped after a fan-out added queue events.
    queue_events: Arc<watch::Sender<u64>>,
}

/// Open a connection; `cache_kib` is its page cache.
fn connect(path: &str, cache_kib: i64) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(|e| StoreError::Open { path: path.to_string(), reason: e.to_string() })?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "cache_size", -cache_kib)?;
    // checkpoints every ~32 MB of WAL instead of 4 MB: with the writer's
    // 20 MB cache, backfill otherwise spends a quarter of the writer's time
    // re-reading spilled pages and checkpointing (profiled)
    conn.pragma_update(None, "wal_autocheckpoint", 8_000)?;
    Ok(conn)
}

/// Apply the migrations this database has not had, in one transaction.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch(migrations::VERSION_TABLE)?;
    let applied: Vec<i64> =
        tx.prepare("SELECT version FROM tributary_schema_version")?.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    for migration in migrations::pending(migrations::SQLITE, &applied) {
        tx.execute_batch(migration.sql)?;
        tx.execute(
            "INSERT INTO tributary_schema_version (version, name, applied_at) VALUES (?1, ?2, ?3)",
            params![migration.version, migration.name, super::timestamp(chrono::Utc::now())],
        )?;
        tracing::info!(
            kind = "schema_migrated",
            backend = "sqlite",
            version = migration.version,
            name = migration.name,
            "applied a schema migration"
        );
    }
    tx.commit()?;
    Ok(())
}

impl SqliteStore {
    /// Open (or create) the database file, bring its schema up to date and
    /// start the writer thread.
    pub fn open(path: &str) -> Result<Self, StoreError> {
        let mut writer = connect(path, 20_000)?;
        migrate(&mut writer)?;
        let reader = connect(path, 2_000)?;
        let bookkeeping = connect(path, 2_000)?;
        let (jobs, queue) = mpsc::channel(QUEUE_DEPTH);
        let (committed, commits) = watch::channel(0);
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || Writer { conn: writer, known_tables: HashSet::new(), committed }.run(queue))
            .map_err(|e| StoreError::Open { path: path.to_string(), reason: e.to_string() })?;
        Ok(SqliteStore {
            jobs,
            reader: Arc::new(Mutex::new(reader)),
            bookkeeping: Arc::new(Mutex::new(bookkeeping)),
            commits,
            queue_events: Arc::new(watch::Sender::new(0)),
        })
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        Self::with(&self.reader, f).await
    }

    /// Run `f` on a connection, off the async threads. The connection is
    /// awaited before a blocking thread is taken, so callers queued for it
    /// (a thousand idle long polls) cost futures, not threads.
    async fn with<T: Send + 'static>(
        conn: &Arc<Mutex<Connection>>,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = conn.clone().lock_owned().await;
        tokio::task::spawn_blocking(move || f(&conn)).await.map_err(|_| StoreError::Closed)?
    }
}

/// The columns [`read_change`] reads, of `tributary_changes AS c`.
const CHANGE_COLUMNS: &str =
    "c.id, c.source, c.object, c.object_id, c.account, c.op, c.type, c.data, c.previous_attributes, c.upstream_event_id, c.committed_at";

/// A change from [`CHANGE_COLUMNS`] starting at column `at`.
fn read_change(row: &rusqlite::Row, at: usize) -> Result<Change, StoreError> {
    let seq: i64 = row.get(at)?;
    Ok(Change {
        id: change_id(seq),
        seq,
        cursor: ChangeCursor { xid: 0, seq },
        source: row.get(at + 1)?,
        object: row.get(at + 2)?,
        object_id: row.get(at + 3)?,
        account: row.get(at + 4)?,
        op: row.get(at + 5)?,
        kind: row.get(at + 6)?,
        data: raw_json("tributary_changes", seq, row.get(at + 7)?)?,
        previous_attributes: raw_json("tributary_changes", seq, row.get(at + 8)?)?,
        upstream_event_id: row.get(at + 9)?,
        committed_at: row.get(at + 10)?,
    })
}

/// Store where a change-log reader (a sink, the queue fan-out) stands.
fn save_cursor(conn: &Connection, reader: &str, cursor: ChangeCursor, now: &str) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO tributary_sink_cursors (sink, cursor, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (sink) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at",
    )?
    .execute(params![reader, cursor.to_string(), now])?;
    Ok(())
}

/// Run `f` in an IMMEDIATE transaction (it takes the write lock at once, so
/// it never fails half-way on a busy database): commit on `Ok`.
fn immediate<T>(conn: &Connection, f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = f();
    conn.execute_batch(if result.is_ok() { "COMMIT" } else { "ROLLBACK" })?;
    result
}

fn parse_json(table: &str, id: &str, text: Option<String>) -> Result<Option<Value>, StoreError> {
    text.map(|t| serde_json::from_str(&t)).transpose().map_err(|e| StoreError::CorruptRow {
        table: table.to_string(),
        id: id.to_string(),
        source: e,
    })
}

/// A single process owns everything on SQLite: ownership is never lost.
struct Sole;

#[async_trait::async_trait]
impl Lease for Sole {
    async fn lost(&mut self) -> String {
        std::future::pending().await
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn apply(&self, batch: Batch) -> Result<Applied, StoreError> {
        let (done, result) = oneshot::channel();
        self.jobs.send((plan::prepare(batch)?, done)).await.map_err(|_| StoreError::Closed)?;
        result.await.map_err(|_| StoreError::Closed)?
    }

    async fn checkpoints(&self, source: &str) -> Result<BTreeMap<String, Value>, StoreError> {
        let source = source.to_string();
        self.read(move |conn| {
            let mut stmt = conn.prepare("SELECT key, value FROM tributary_checkpoints WHERE source = ?1")?;
            let rows = stmt.query_map([&source], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            let mut out = BTreeMap::new();
            for row in rows {
                let (key, value) = row?;
                let value = parse_json("tributary_checkpoints", &key, Some(value))?.unwrap_or_default();
                out.insert(key, value);
            }
            Ok(out)
        })
        .await
    }

    async fn object_counts(&self, source: &str) -> Result<BTreeMap<String, u64>, StoreError> {
        let source = source.to_string();
        self.read(move |conn| {
            let mut stmt = conn.prepare("SELECT object, row_count FROM tributary_tables WHERE source = ?1")?;
            let counts = stmt.query_map([&source], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64)))?;
            Ok(counts.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn mirror_rows(&self, source: &str) -> Result<BTreeMap<String, Vec<MirrorRow>>, StoreError> {
        let source = source.to_string();
        self.read(move |conn| {
            let mut stmt = conn.prepare("SELECT object, table_name FROM tributary_tables WHERE source = ?1")?;
            let tables: Vec<(String, String)> = stmt.query_map([&source], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
            let mut out = BTreeMap::new();
            for (object, table) in tables {
                let mut stmt = conn.prepare(&format!("SELECT id, account, data FROM {} ORDER BY id", quote(&table)))?;
                let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?, r.get::<_, String>(2)?)))?;
                let mut list = Vec::new();
                for row in rows {
                    let (id, account, data) = row?;
                    let data = parse_json(&table, &id, Some(data))?.unwrap_or_default();
                    list.push(MirrorRow { id, account, data });
                }
                out.insert(object, list);
            }
            Ok(out)
        })
        .await
    }

    async fn changes_after(&self, cursor: ChangeCursor, limit: usize) -> Result<ChangePage, StoreError> {
        self.read(move |conn| {
            let mut stmt =
                conn.prepare_cached(&format!("SELECT {CHANGE_COLUMNS} FROM tributary_changes AS c WHERE id > ?1 ORDER BY id LIMIT ?2"))?;
            let mut rows = stmt.query(params![cursor.seq, limit as i64])?;
            let mut changes = Vec::new();
            while let Some(row) = rows.next()? {
                changes.push(read_change(row, 0)?);
            }
            let next = changes.last().map(|c| c.cursor).unwrap_or(cursor);
            Ok(ChangePage { changes, next })
        })
        .await
    }

    async fn acquire(&self, _name: &str) -> Result<Box<dyn Lease>, StoreError> {
        Ok(Box::new(Sole))
    }

    async fn sink_cursor(&self, sink: &str) -> Result<Option<ChangeCursor>, StoreError> {
        let sink = sink.to_string();
        self.read(move |conn| {
            let text: Option<String> =
                conn.query_row("SELECT cursor FROM tributary_sink_cursors WHERE sink = ?1", [&sink], |r| r.get(0)).optional()?;
            Ok(text.and_then(|t| ChangeCursor::parse(&t)))
        })
        .await
    }

    async fn advance_sink(&self, sink: &str, cursor: ChangeCursor, dead: Vec<DeadLetter>) -> Result<(), StoreError> {
        let sink = sink.to_string();
        Self::with(&self.bookkeeping, move |conn| {
            let now = super::timestamp(chrono::Utc::now());
            immediate(conn, || {
                for letter in &dead {
                    conn.prepare_cached(
                        "INSERT INTO tributary_dead_letters (sink, change_id, error, envelope, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?
                    .execute(params![sink, letter.change_id, letter.error, letter.envelope, now])?;
                }
                save_cursor(conn, &sink, cursor, &now)
            })
        })
        .await
    }

    async fn dead_letter_count(&self, sink: &str) -> Result<u64, StoreError> {
        let sink = sink.to_string();
        self.read(move |conn| {
            let n: i64 = conn.query_row("SELECT COUNT(*) FROM tributary_dead_letters WHERE sink = ?1", [&sink], |r| r.get(0))?;
            Ok(n as u64)
        })
        .await
    }

    async fn purge_changes(&self, cutoff: &str, through: ChangeCursor, limit: usize) -> Result<u64, StoreError> {
        let cutoff = cutoff.to_string();
        Self::with(&self.bookkeeping, move |conn| {
            let deleted = conn.execute(
                "DELETE FROM tributary_changes WHERE id IN
                 (SELECT id FROM tributary_changes WHERE id <= ?1 AND committed_at < ?2 ORDER BY id LIMIT ?3)",
                params![through.seq, cutoff, limit as i64],
            )?;
            Ok(deleted as u64)
        })
        .await
    }

    fn commits(&self) -> watch::Receiver<u64> {
        self.commits.clone()
    }
}

struct Writer {
    conn: Connection,
    /// Mirror tables known to exist, so `CREATE TABLE` runs once per type.
    known_tables: HashSet<String>,
    /// Bumped after each commit that wrote changes.
    committed: watch::Sender<u64>,
}

impl Writer {
    fn run(mut self, mut queue: mpsc::Receiver<Job>) {
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
        if results.iter().any(|a| a.changes > 0) {
            self.committed.send_modify(|n| *n += 1);
        }
    }

    fn transaction(&mut self, batches: &[&Prepared]) -> Result<Vec<Applied>, StoreError> {
        // IMMEDIATE: take the write lock at BEGIN, where the busy timeout
        // waits for the bookkeeping connection; a deferred transaction that
        // upgrades later fails at once with "database is locked"
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let now = chrono::Utc::now();
        let committed_at = super::timestamp(now);
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
                     updated_at = excluded.updated_at, _generation = excluded._generation"
                ))?;
                for row in &table_plan.upserts {
                    upsert.execute(params![row.id, row.account, row.text, row.created, committed_at, row.generation])?;
                }
                let mut touch = tx.prepare_cached(&format!("UPDATE {quoted} SET _generation = ?2 WHERE id = ?1 AND _generation <> ?2"))?;
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
                    .prepare_cached(&format!("SELECT id FROM {quoted} WHERE account IS ?1 AND _generation < ?2 ORDER BY id"))?
                    .query_map(params![sweep.account, sweep.below_generation], |r| r.get(0))?
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
                    c.data,
                    c.previous_attributes,
                    c.upstream_event_id,
                    committed_at
                ])?;
            }
            let mut checkpoint = tx.prepare_cached(
                "INSERT INTO tributary_checkpoints (source, key, value, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (source, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            )?;
            for (key, value) in &batch.checkpoints {
                checkpoint.execute(params![batch.source, key, value, committed_at])?;
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

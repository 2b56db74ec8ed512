//! The embedded backend. SQLite has one writer: a dedicated thread owns the
//! write connection and commits queued batches together (group commit); reads
//! use their own connection, which WAL lets run beside the writer.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::ident::{self, quote};
use super::{Applied, Batch, Change, Mutation, Origin, Store, StoreError, Sweep, Write, change_id, previous_attributes};

/// Batches queued for the writer; beyond this, `apply` waits (backpressure).
const QUEUE_DEPTH: usize = 16;
/// Batches committed together in one transaction at most.
const GROUP_MAX: usize = 32;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tributary_changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    object TEXT NOT NULL,
    object_id TEXT NOT NULL,
    account TEXT,
    op TEXT NOT NULL,
    type TEXT NOT NULL,
    data TEXT,
    previous_attributes TEXT,
    upstream_event_id TEXT,
    committed_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tributary_checkpoints (
    source TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (source, key)
);
CREATE TABLE IF NOT EXISTS tributary_tables (
    source TEXT NOT NULL,
    object TEXT NOT NULL,
    table_name TEXT NOT NULL,
    -- kept by the writer in each transaction, so counts are O(1)
    row_count INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (source, object)
);
";

/// A batch with each upsert already serialized, so the one writer thread
/// spends its time on SQL only.
struct Prepared {
    batch: Batch,
    texts: Vec<Option<String>>,
}

type Job = (Prepared, oneshot::Sender<Result<Applied, StoreError>>);

fn prepare(batch: Batch) -> Result<Prepared, StoreError> {
    let texts = batch
        .writes
        .iter()
        .map(|w| match &w.mutation {
            Mutation::Upsert(data) => serde_json::to_string(data)
                .map(Some)
                .map_err(|e| StoreError::CorruptRow { table: w.object.clone(), id: w.id.clone(), source: e }),
            Mutation::Delete => Ok(None),
        })
        .collect::<Result<_, _>>()?;
    Ok(Prepared { batch, texts })
}

pub struct SqliteStore {
    jobs: mpsc::Sender<Job>,
    reader: Arc<Mutex<Connection>>,
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

impl SqliteStore {
    /// Open (or create) the database file and start the writer thread.
    pub fn open(path: &str) -> Result<Self, StoreError> {
        let writer = connect(path, 20_000)?;
        writer.execute_batch(SCHEMA)?;
        let reader = connect(path, 2_000)?;
        let (jobs, queue) = mpsc::channel(QUEUE_DEPTH);
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || Writer { conn: writer, known_tables: HashSet::new() }.run(queue))
            .map_err(|e| StoreError::Open { path: path.to_string(), reason: e.to_string() })?;
        Ok(SqliteStore { jobs, reader: Arc::new(Mutex::new(reader)) })
    }

    async fn read<T: Send + 'static>(&self, f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static) -> Result<T, StoreError> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let conn = reader.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&conn)
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn apply(&self, batch: Batch) -> Result<Applied, StoreError> {
        let (done, result) = oneshot::channel();
        self.jobs.send((prepare(batch)?, done)).await.map_err(|_| StoreError::Closed)?;
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
                let value = serde_json::from_str(&value)
                    .map_err(|e| StoreError::CorruptRow { table: "tributary_checkpoints".into(), id: key.clone(), source: e })?;
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

    async fn changes_after(&self, after: i64, limit: usize) -> Result<Vec<Change>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT id, source, object, object_id, account, op, type, data, previous_attributes, upstream_event_id, committed_at
                 FROM tributary_changes WHERE id > ?1 ORDER BY id LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after, limit as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    [r.get::<_, String>(1)?, r.get(2)?, r.get(3)?, r.get(5)?, r.get(6)?, r.get(10)?],
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, Option<String>>(7)?,
                    r.get::<_, Option<String>>(8)?,
                    r.get::<_, Option<String>>(9)?,
                ))
            })?;
            let parse = |seq: i64, text: Option<String>| -> Result<Option<Value>, StoreError> {
                text.map(|t| serde_json::from_str(&t))
                    .transpose()
                    .map_err(|e| StoreError::CorruptRow { table: "tributary_changes".into(), id: seq.to_string(), source: e })
            };
            let mut out = Vec::new();
            for row in rows {
                let (seq, [source, object, object_id, op, kind, committed_at], account, data, previous, event) = row?;
                out.push(Change {
                    id: change_id(seq),
                    seq,
                    source,
                    object,
                    object_id,
                    account,
                    op,
                    kind,
                    data: parse(seq, data)?,
                    previous_attributes: parse(seq, previous)?,
                    upstream_event_id: event,
                    committed_at,
                });
            }
            Ok(out)
        })
        .await
    }
}

struct Writer {
    conn: Connection,
    /// Mirror tables known to exist, so `CREATE TABLE` runs once per type.
    known_tables: HashSet<String>,
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
            if result.is_err() {
                self.known_tables = before;
            }
            let _ = done.send(result);
        }
    }

    fn transaction(&mut self, batches: &[&Prepared]) -> Result<Vec<Applied>, StoreError> {
        let tx = self.conn.transaction()?;
        let committed_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let mut results = Vec::with_capacity(batches.len());
        // rows added (or removed) per table in this transaction
        let mut row_deltas: HashMap<String, i64> = HashMap::new();
        for Prepared { batch, texts } in batches {
            let mut applied = Applied::default();
            for (write, text) in batch.writes.iter().zip(texts) {
                let table = ensure_table(&tx, &mut self.known_tables, &batch.source, &write.object)?;
                let outcome = apply_write(&tx, &table, &batch.source, write, text.as_deref(), &committed_at)?;
                if outcome.changed {
                    applied.changes += 1;
                } else {
                    applied.unchanged += 1;
                }
                *row_deltas.entry(table).or_default() += outcome.rows_delta;
            }
            for sweep in &batch.sweeps {
                let table = ensure_table(&tx, &mut self.known_tables, &batch.source, &sweep.object)?;
                let deleted = apply_sweep(&tx, &table, &batch.source, sweep, &committed_at)?;
                applied.changes += deleted;
                *row_deltas.entry(table).or_default() -= deleted as i64;
            }
            for (key, value) in &batch.checkpoints {
                tx.prepare_cached(
                    "INSERT INTO tributary_checkpoints (source, key, value, updated_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (source, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                )?
                .execute(params![batch.source, key, value.to_string(), committed_at])?;
            }
            results.push(applied);
        }
        for (table, delta) in row_deltas.into_iter().filter(|(_, d)| *d != 0) {
            tx.prepare_cached("UPDATE tributary_tables SET row_count = row_count + ?1 WHERE table_name = ?2")?.execute(params![delta, table])?;
        }
        tx.commit()?;
        Ok(results)
    }
}

fn ensure_table(conn: &Connection, known: &mut HashSet<String>, source: &str, object: &str) -> Result<String, StoreError> {
    let table = ident::mirror_table(source, object)?;
    if known.contains(&table) {
        return Ok(table);
    }
    let quoted = quote(&table);
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {quoted} (
            id TEXT PRIMARY KEY,
            account TEXT,
            data TEXT NOT NULL,
            created INTEGER,
            updated_at TEXT NOT NULL,
            _generation INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX IF NOT EXISTS {} ON {quoted} (account, _generation);",
        quote(&format!("{table}_account_generation"))
    ))?;
    conn.execute(
        "INSERT OR IGNORE INTO tributary_tables (source, object, table_name) VALUES (?1, ?2, ?3)",
        params![source, object, table],
    )?;
    known.insert(table.clone());
    Ok(table)
}

fn insert_change(
    conn: &Connection,
    source: &str,
    object: &str,
    object_id: &str,
    account: Option<&str>,
    op: &str,
    origin: &Origin,
    data: Option<&str>,
    previous: Option<&Value>,
    committed_at: &str,
) -> Result<(), StoreError> {
    let (kind, event_id, previous) = match origin {
        Origin::Backfill => (format!("{object}.{op}"), None, previous.cloned()),
        Origin::Event { id, kind, previous_attributes } => {
            (kind.clone(), Some(id.as_str()), previous_attributes.clone().or_else(|| previous.cloned()))
        }
    };
    let kind = if matches!(origin, Origin::Backfill) && op == "delete" { format!("{object}.deleted") } else { kind };
    conn.prepare_cached(
        "INSERT INTO tributary_changes (source, object, object_id, account, op, type, data, previous_attributes, upstream_event_id, committed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![source, object, object_id, account, op, kind, data, previous.map(|p| p.to_string()), event_id, committed_at])?;
    Ok(())
}

fn current_text(conn: &Connection, table: &str, id: &str) -> Result<Option<String>, StoreError> {
    Ok(conn
        .prepare_cached(&format!("SELECT data FROM {} WHERE id = ?1", quote(table)))?
        .query_row([id], |r| r.get(0))
        .optional()?)
}

struct Outcome {
    /// A change was written to the change log.
    changed: bool,
    /// Rows added to the mirror table (-1 for a delete).
    rows_delta: i64,
}

const UNCHANGED: Outcome = Outcome { changed: false, rows_delta: 0 };

/// Apply one write (`text`: the serialized upsert).
fn apply_write(conn: &Connection, table: &str, source: &str, write: &Write, text: Option<&str>, committed_at: &str) -> Result<Outcome, StoreError> {
    let quoted = quote(table);
    let existing_text = current_text(conn, table, &write.id)?;
    let account = write.account.as_deref();
    let (Mutation::Upsert(data), Some(text)) = (&write.mutation, text) else {
        if existing_text.is_none() {
            return Ok(UNCHANGED);
        }
        conn.prepare_cached(&format!("DELETE FROM {quoted} WHERE id = ?1"))?.execute([&write.id])?;
        insert_change(conn, source, &write.object, &write.id, account, "delete", &write.origin, None, None, committed_at)?;
        return Ok(Outcome { changed: true, rows_delta: -1 });
    };
    // the same text is the same state; different text may still be the same
    // JSON (key order), so only then parse and compare
    let existing: Option<Value> = match &existing_text {
        Some(old) if old == text => None,
        Some(old) => Some(serde_json::from_str(old).map_err(|e| StoreError::CorruptRow { table: table.to_string(), id: write.id.clone(), source: e })?),
        None => None,
    };
    if existing_text.as_deref() == Some(text) || existing.as_ref() == Some(data) {
        conn.prepare_cached(&format!("UPDATE {quoted} SET _generation = ?2 WHERE id = ?1 AND _generation <> ?2"))?
            .execute(params![write.id, write.generation])?;
        return Ok(UNCHANGED);
    }
    conn.prepare_cached(&format!(
        "INSERT INTO {quoted} (id, account, data, created, updated_at, _generation) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (id) DO UPDATE SET account = excluded.account, data = excluded.data, created = excluded.created,
         updated_at = excluded.updated_at, _generation = excluded._generation"
    ))?
    .execute(params![write.id, account, text, data.get("created").and_then(Value::as_i64), committed_at, write.generation])?;
    let op = match (&write.origin, &existing) {
        (Origin::Backfill, _) => "read",
        (_, None) => "insert",
        (_, Some(_)) => "update",
    };
    let previous = existing.as_ref().and_then(|old| previous_attributes(old, data));
    insert_change(conn, source, &write.object, &write.id, account, op, &write.origin, Some(text), previous.as_ref(), committed_at)?;
    Ok(Outcome { changed: true, rows_delta: if existing_text.is_none() { 1 } else { 0 } })
}

/// Delete the rows a finished backfill did not see; returns changes written.
fn apply_sweep(conn: &Connection, table: &str, source: &str, sweep: &Sweep, committed_at: &str) -> Result<u64, StoreError> {
    let quoted = quote(table);
    let stale: Vec<String> = conn
        .prepare_cached(&format!("SELECT id FROM {quoted} WHERE account IS ?1 AND _generation < ?2"))?
        .query_map(params![sweep.account, sweep.below_generation], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for id in &stale {
        conn.prepare_cached(&format!("DELETE FROM {quoted} WHERE id = ?1"))?.execute([id])?;
        insert_change(conn, source, &sweep.object, id, sweep.account.as_deref(), "delete", &Origin::Backfill, None, None, committed_at)?;
    }
    Ok(stale.len() as u64)
}

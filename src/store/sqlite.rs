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

/// A batch with each upsert already serialized (and its JSON tree dropped)
/// on the caller's task, so the one writer thread spends its time on SQL.
struct Prepared {
    batch: Batch,
    rows: Vec<Option<Row>>,
}

/// An upsert's serialized state.
struct Row {
    text: String,
    created: Option<i64>,
}

type Job = (Prepared, oneshot::Sender<Result<Applied, StoreError>>);

fn prepare(mut batch: Batch) -> Result<Prepared, StoreError> {
    let mut rows = Vec::with_capacity(batch.writes.len());
    for write in &mut batch.writes {
        let Mutation::Upsert(data) = &mut write.mutation else {
            rows.push(None);
            continue;
        };
        let data = std::mem::take(data);
        let text = serde_json::to_string(&data).map_err(|e| StoreError::CorruptRow {
            table: write.object.clone(),
            id: write.id.clone(),
            source: e,
        })?;
        rows.push(Some(Row { text, created: data.get("created").and_then(Value::as_i64) }));
    }
    Ok(Prepared { batch, rows })
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

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
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
                let value = serde_json::from_str(&value).map_err(|e| StoreError::CorruptRow {
                    table: "tributary_checkpoints".into(),
                    id: key.clone(),
                    source: e,
                })?;
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
                text.map(|t| serde_json::from_str(&t)).transpose().map_err(|e| StoreError::CorruptRow {
                    table: "tributary_changes".into(),
                    id: seq.to_string(),
                    source: e,
                })
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
        for Prepared { batch, rows } in batches {
            let mut applied = Applied::default();
            for (write, row) in batch.writes.iter().zip(rows) {
                let table = ensure_table(&tx, &mut self.known_tables, &batch.source, &write.object)?;
                let outcome = apply_write(&tx, &table, &batch.source, write, row.as_ref(), &committed_at)?;
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
            tx.prepare_cached("UPDATE tributary_tables SET row_count = row_count + ?1 WHERE table_name = ?2")?
                .execute(params![delta, table])?;
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

/// A change log entry about to be written.
struct NewChange<'a> {
    source: &'a str,
    object: &'a str,
    object_id: &'a str,
    account: Option<&'a str>,
    op: &'a str,
    origin: &'a Origin,
    data: Option<&'a str>,
    /// Computed from the mirror's old row; an event's own wins.
    previous: Option<&'a Value>,
}

fn insert_change(conn: &Connection, change: NewChange<'_>, committed_at: &str) -> Result<(), StoreError> {
    let NewChange { source, object, object_id, account, op, origin, data, previous } = change;
    let (kind, event_id, previous) = match origin {
        Origin::Event { id, kind, previous_attributes } => (kind.clone(), Some(id.as_str()), previous_attributes.as_ref().or(previous)),
        Origin::Backfill if op == "delete" => (format!("{object}.deleted"), None, previous),
        Origin::Backfill => (format!("{object}.{op}"), None, previous),
    };
    conn.prepare_cached(
        "INSERT INTO tributary_changes (source, object, object_id, account, op, type, data, previous_attributes, upstream_event_id, committed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![source, object, object_id, account, op, kind, data, previous.map(|p| p.to_string()), event_id, committed_at])?;
    Ok(())
}

fn current_text(conn: &Connection, table: &str, id: &str) -> Result<Option<String>, StoreError> {
    Ok(conn.prepare_cached(&format!("SELECT data FROM {} WHERE id = ?1", quote(table)))?.query_row([id], |r| r.get(0)).optional()?)
}

struct Outcome {
    /// A change was written to the change log.
    changed: bool,
    /// Rows added to the mirror table (-1 for a delete).
    rows_delta: i64,
}

const UNCHANGED: Outcome = Outcome { changed: false, rows_delta: 0 };

/// Apply one write (`row`: the serialized upsert, `None` for a delete).
fn apply_write(
    conn: &Connection,
    table: &str,
    source: &str,
    write: &Write,
    row: Option<&Row>,
    committed_at: &str,
) -> Result<Outcome, StoreError> {
    let quoted = quote(table);
    let existing_text = current_text(conn, table, &write.id)?;
    let account = write.account.as_deref();
    let Some(Row { text, created }) = row else {
        if existing_text.is_none() {
            return Ok(UNCHANGED);
        }
        conn.prepare_cached(&format!("DELETE FROM {quoted} WHERE id = ?1"))?.execute([&write.id])?;
        let change = NewChange {
            source,
            object: &write.object,
            object_id: &write.id,
            account,
            op: "delete",
            origin: &write.origin,
            data: None,
            previous: None,
        };
        insert_change(conn, change, committed_at)?;
        return Ok(Outcome { changed: true, rows_delta: -1 });
    };
    let corrupt = |e| StoreError::CorruptRow { table: table.to_string(), id: write.id.clone(), source: e };
    // the same text is the same state; a different text may still be the
    // same JSON (key order), so only then parse both and compare
    let previous = match &existing_text {
        None => None,
        Some(old) if old == text => return unchanged(conn, &quoted, write),
        Some(old) => {
            let old: Value = serde_json::from_str(old).map_err(corrupt)?;
            let new: Value = serde_json::from_str(text).map_err(corrupt)?;
            if old == new {
                return unchanged(conn, &quoted, write);
            }
            previous_attributes(&old, &new)
        }
    };
    conn.prepare_cached(&format!(
        "INSERT INTO {quoted} (id, account, data, created, updated_at, _generation) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (id) DO UPDATE SET account = excluded.account, data = excluded.data, created = excluded.created,
         updated_at = excluded.updated_at, _generation = excluded._generation"
    ))?
    .execute(params![write.id, account, text, created, committed_at, write.generation])?;
    let op = match (&write.origin, &existing_text) {
        (Origin::Backfill, _) => "read",
        (_, None) => "insert",
        (_, Some(_)) => "update",
    };
    let change = NewChange {
        source,
        object: &write.object,
        object_id: &write.id,
        account,
        op,
        origin: &write.origin,
        data: Some(text),
        previous: previous.as_ref(),
    };
    insert_change(conn, change, committed_at)?;
    Ok(Outcome { changed: true, rows_delta: if existing_text.is_none() { 1 } else { 0 } })
}

/// The mirror already holds this state: record no change, but remember
/// that this backfill generation saw the row.
fn unchanged(conn: &Connection, quoted: &str, write: &Write) -> Result<Outcome, StoreError> {
    conn.prepare_cached(&format!("UPDATE {quoted} SET _generation = ?2 WHERE id = ?1 AND _generation <> ?2"))?
        .execute(params![write.id, write.generation])?;
    Ok(UNCHANGED)
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
        let change = NewChange {
            source,
            object: &sweep.object,
            object_id: id,
            account: sweep.account.as_deref(),
            op: "delete",
            origin: &Origin::Backfill,
            data: None,
            previous: None,
        };
        insert_change(conn, change, committed_at)?;
    }
    Ok(stale.len() as u64)
}

//! The embedded backend. SQLite has one writer: a dedicated thread owns the
//! write connection and commits queued batches together (group commit); reads
//! use their own connection, which WAL lets run beside the writer.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::ident::{self, quote};
use super::{Applied, Batch, Change, Mutation, Origin, Store, StoreError, Sweep, Write, change_id, previous_attributes};

/// Batches queued for the writer; beyond this, `apply` waits (backpressure).
const QUEUE_DEPTH: usize = 64;
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
    PRIMARY KEY (source, object)
);
";

type Job = (Batch, oneshot::Sender<Result<Applied, StoreError>>);

pub struct SqliteStore {
    jobs: mpsc::Sender<Job>,
    reader: Arc<Mutex<Connection>>,
}

fn connect(path: &str) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(|e| StoreError::Open { path: path.to_string(), reason: e.to_string() })?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(conn)
}

impl SqliteStore {
    /// Open (or create) the database file and start the writer thread.
    pub fn open(path: &str) -> Result<Self, StoreError> {
        let writer = connect(path)?;
        writer.execute_batch(SCHEMA)?;
        let reader = connect(path)?;
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
        self.jobs.send((batch, done)).await.map_err(|_| StoreError::Closed)?;
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
            let mut stmt = conn.prepare("SELECT object, table_name FROM tributary_tables WHERE source = ?1")?;
            let tables: Vec<(String, String)> = stmt.query_map([&source], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
            let mut counts = BTreeMap::new();
            for (object, table) in tables {
                let n: i64 = conn.query_row(&format!("SELECT COUNT(*) FROM {}", quote(&table)), [], |r| r.get(0))?;
                counts.insert(object, n as u64);
            }
            Ok(counts)
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
            let batches: Vec<&Batch> = group.iter().map(|(b, _)| b).collect();
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

    fn transaction(&mut self, batches: &[&Batch]) -> Result<Vec<Applied>, StoreError> {
        let tx = self.conn.transaction()?;
        let committed_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let mut results = Vec::with_capacity(batches.len());
        for batch in batches {
            let mut applied = Applied::default();
            for write in &batch.writes {
                let table = ensure_table(&tx, &mut self.known_tables, &batch.source, &write.object)?;
                if apply_write(&tx, &table, &batch.source, write, &committed_at)? {
                    applied.changes += 1;
                } else {
                    applied.unchanged += 1;
                }
            }
            for sweep in &batch.sweeps {
                let table = ensure_table(&tx, &mut self.known_tables, &batch.source, &sweep.object)?;
                applied.changes += apply_sweep(&tx, &table, &batch.source, sweep, &committed_at)?;
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

fn current_row(conn: &Connection, table: &str, id: &str) -> Result<Option<Value>, StoreError> {
    let text: Option<String> = conn
        .prepare_cached(&format!("SELECT data FROM {} WHERE id = ?1", quote(table)))?
        .query_row([id], |r| r.get(0))
        .optional()?;
    text.map(|t| serde_json::from_str(&t).map_err(|e| StoreError::CorruptRow { table: table.to_string(), id: id.to_string(), source: e }))
        .transpose()
}

/// Apply one write; returns whether it recorded a change.
fn apply_write(conn: &Connection, table: &str, source: &str, write: &Write, committed_at: &str) -> Result<bool, StoreError> {
    ident::object_type(&write.object)?;
    let quoted = quote(table);
    let existing = current_row(conn, table, &write.id)?;
    let account = write.account.as_deref();
    match &write.mutation {
        Mutation::Delete => {
            if existing.is_none() {
                return Ok(false);
            }
            conn.prepare_cached(&format!("DELETE FROM {quoted} WHERE id = ?1"))?.execute([&write.id])?;
            insert_change(conn, source, &write.object, &write.id, account, "delete", &write.origin, None, None, committed_at)?;
            Ok(true)
        }
        Mutation::Upsert(data) => {
            if existing.as_ref() == Some(data) {
                conn.prepare_cached(&format!("UPDATE {quoted} SET _generation = ?2 WHERE id = ?1 AND _generation <> ?2"))?
                    .execute(params![write.id, write.generation])?;
                return Ok(false);
            }
            let text = data.to_string();
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
            insert_change(conn, source, &write.object, &write.id, account, op, &write.origin, Some(&text), previous.as_ref(), committed_at)?;
            Ok(true)
        }
    }
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

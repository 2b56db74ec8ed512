//! The embedded backend. SQLite has one writer: a dedicated thread owns the
//! write connection and commits queued batches together (group commit); reads
//! use their own connection, which WAL lets run beside the writer.
//!
//! The same files as the Postgres backend: `mod` (opening, migrating, small
//! reads), `apply` (the writer thread and its transactions), `changes` (the
//! change log in commit order), `lease` (ownership), `notify` (commits
//! heard by readers), and one file per store trait (`queues`, `writes`,
//! `ledger`, `mirror`).

mod apply;
mod changes;
mod controls;
mod lease;
mod ledger;
mod mirror;
mod notify;
mod queues;
mod writes;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;
use tokio::sync::{Mutex, mpsc, oneshot, watch};

use self::apply::{Job, QUEUE_DEPTH, Writer};
use super::ident::quote;
use super::migrate as migrations;
use super::plan;
use super::{Applied, Batch, ChangeCursor, ChangePage, DeadLetter, Lease, MirrorRow, Store, StoreError};

pub struct SqliteStore {
    jobs: mpsc::Sender<Job>,
    reader: Arc<Mutex<Connection>>,
    /// Delivery bookkeeping (sink cursors, dead letters): small writes beside
    /// the writer thread; SQLite's busy timeout orders them.
    bookkeeping: Arc<Mutex<Connection>>,
    commits: watch::Receiver<u64>,
    /// Bumped after a fan-out added queue events.
    queue_events: Arc<watch::Sender<u64>>,
    /// Bumped after a control row changed in this process (another process
    /// writing to the file is heard by polling).
    controls: Arc<watch::Sender<u64>>,
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
            controls: Arc::new(watch::Sender::new(0)),
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

/// Store where a change-log reader (a sink, the queue fan-out) stands, if
/// its position is still at `epoch` (a rewind moves it on): otherwise
/// [`StoreError::Raced`], and nothing of the transaction may commit.
fn save_cursor(conn: &Connection, reader: &str, epoch: i64, cursor: ChangeCursor, now: &str) -> Result<(), StoreError> {
    let saved = conn
        .prepare_cached(
            "INSERT INTO tributary_sink_cursors (sink, cursor, updated_at, epoch) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (sink) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at
             WHERE tributary_sink_cursors.epoch = excluded.epoch",
        )?
        .execute(params![reader, cursor.to_string(), now, epoch])?;
    if saved == 0 {
        return Err(StoreError::Raced(format!("the cursor of '{reader}' was rewound meanwhile; the batch is delivered again from there")));
    }
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
        self.change_page(cursor, limit).await
    }

    async fn acquire(&self, _name: &str) -> Result<Box<dyn Lease>, StoreError> {
        Ok(Box::new(lease::Sole))
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

    async fn advance_sink(&self, sink: &str, epoch: i64, cursor: ChangeCursor, dead: Vec<DeadLetter>) -> Result<(), StoreError> {
        let sink = sink.to_string();
        Self::with(&self.bookkeeping, move |conn| {
            let now = super::timestamp(chrono::Utc::now());
            immediate(conn, || {
                for letter in &dead {
                    conn.prepare_cached(
                        "INSERT INTO tributary_dead_letters (sink, change_id, error, envelope, created_at, attempts)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )?
                    .execute(params![sink, letter.change_id, letter.error, letter.envelope, now, letter.attempts])?;
                }
                save_cursor(conn, &sink, epoch, cursor, &now)
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
        self.purge(cutoff, through, limit).await
    }

    fn commits(&self) -> watch::Receiver<u64> {
        self.commits.clone()
    }
}

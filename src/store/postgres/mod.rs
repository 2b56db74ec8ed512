//! The production backend. Writes are set-based (one `UNNEST` statement per
//! table and kind of write, not row by row) inside one transaction per batch;
//! every change carries its transaction's `xid8`, and readers page by
//! `(xid, id)` below `pg_snapshot_xmin(pg_current_snapshot())`, so a change
//! from a transaction that commits late is never skipped and never waited
//! for. Sources are owned through session advisory locks held on a dedicated
//! connection.
//!
//! The same files as the SQLite backend: `mod` (opening, migrating, small
//! reads), `apply` (a batch in one transaction), `changes` (the change log
//! in commit order), `lease` (ownership), `notify` (commits heard across
//! processes), and one file per store trait (`queues`, `writes`, `ledger`,
//! `mirror`).

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
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::sync::Arc;

use tokio::sync::watch;
use tokio_postgres::NoTls;

use self::notify::{AbortOnDrop, channel, controls_channel, listen, queue_channel};
use super::ident::{self, quote};
use super::migrate as migrations;
use super::{Applied, Batch, ChangeCursor, ChangePage, DeadLetter, ErrorKind, Lease, MirrorRow, Options, Store, StoreError};

pub struct PgStore {
    pool: Pool,
    schema: String,
    config: tokio_postgres::Config,
    /// Mirror tables known to exist in this process.
    known_tables: parking_lot::Mutex<HashSet<String>>,
    /// Batches applied at once (see [`apply::CONCURRENT_BATCHES`]).
    batches: tokio::sync::Semaphore,
    /// Bumped on every commit with changes, here or (via NOTIFY) elsewhere.
    commits: Arc<watch::Sender<u64>>,
    /// Bumped on every fan-out that added queue events, here or elsewhere.
    queue_events: Arc<watch::Sender<u64>>,
    /// Bumped when a control row changes, here or elsewhere.
    controls: Arc<watch::Sender<u64>>,
    /// The LISTEN task; stopped with the store.
    _listener: AbortOnDrop,
}

/// A Postgres or pool error as a [`StoreError`] that keeps its kind.
pub(crate) fn pg(e: impl std::error::Error + 'static) -> StoreError {
    let error: &(dyn std::error::Error + 'static) = &e;
    // the SQLSTATE, wherever in the chain the server's error sits (a pool
    // error wraps it); no server error at all means no connection
    let postgres = std::iter::successors(Some(error), |e| e.source()).find_map(|e| e.downcast_ref::<tokio_postgres::Error>());
    let kind = match postgres {
        Some(e) => match e.code() {
            Some(code) => ErrorKind::of_sqlstate(code.code()),
            None if e.is_closed() || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>()) => ErrorKind::ConnectionLost,
            None => ErrorKind::Other,
        },
        None if error.is::<deadpool_postgres::PoolError>() => ErrorKind::ConnectionLost,
        None => ErrorKind::Other,
    };
    StoreError::Postgres { message: crate::telemetry::error_chain(error), kind }
}

/// A Postgres-side failure that is no server error (a value it sent that
/// does not parse).
fn pg_other(message: String) -> StoreError {
    StoreError::Postgres { message, kind: ErrorKind::Other }
}

/// `user@host:port/db` of a URL, never its password.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("postgres://{}@{host}:{port}/{}", config.get_user().unwrap_or(""), config.get_dbname().unwrap_or(""))
}

fn parse_config(options: &Options) -> Result<tokio_postgres::Config, StoreError> {
    let mut config: tokio_postgres::Config =
        options.url.parse().map_err(|e| StoreError::Open { path: "postgres url".into(), reason: format!("{e}") })?;
    if config.get_application_name().is_none() {
        config.application_name("tributary");
    }
    config.connect_timeout(Duration::from_secs(5));
    Ok(config)
}

/// Connect once and run `SELECT 1`: reachability, credentials, database.
pub async fn check(options: &Options) -> Result<(), StoreError> {
    ident::schema_name(&options.schema)?;
    let config = parse_config(options)?;
    let open_error = |e: tokio_postgres::Error| StoreError::Open { path: describe(&config), reason: crate::telemetry::error_chain(&e) };
    let (client, connection) = config.connect(NoTls).await.map_err(open_error)?;
    let task = tokio::spawn(connection);
    client.simple_query("SELECT 1").await.map_err(open_error)?;
    drop(client);
    let _ = task.await;
    Ok(())
}

impl PgStore {
    pub async fn open(options: &Options) -> Result<Self, StoreError> {
        ident::schema_name(&options.schema)?;
        let config = parse_config(options)?;
        let manager = Manager::from_config(config.clone(), NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager).max_size(options.pool_size.max(2)).build().map_err(|e| pg_other(e.to_string()))?;
        let (commits, queue_events, controls) =
            (Arc::new(watch::Sender::new(0)), Arc::new(watch::Sender::new(0)), Arc::new(watch::Sender::new(0)));
        let channels = vec![
            (channel(&options.schema), commits.clone()),
            (queue_channel(&options.schema), queue_events.clone()),
            (controls_channel(&options.schema), controls.clone()),
        ];
        let listener = tokio::spawn(listen(config.clone(), channels));
        let store = PgStore {
            pool,
            schema: options.schema.clone(),
            config,
            known_tables: Default::default(),
            batches: tokio::sync::Semaphore::new(apply::CONCURRENT_BATCHES),
            commits,
            queue_events,
            controls,
            _listener: AbortOnDrop(listener),
        };
        store.migrate().await.map_err(|e| StoreError::Open { path: describe(&store.config), reason: e.to_string() })?;
        Ok(store)
    }

    /// Store where a change-log reader (a sink, the queue fan-out) stands, if
    /// its position is still at `epoch` (a rewind moves it on): otherwise
    /// [`StoreError::Raced`], and the transaction must not commit.
    async fn save_cursor(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        reader: &str,
        epoch: i64,
        cursor: ChangeCursor,
    ) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO {0} (sink, cursor, updated_at, epoch) VALUES ($1, $2, now(), $3)
             ON CONFLICT (sink) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at
             WHERE {0}.epoch = excluded.epoch",
            self.t("tributary_sink_cursors")
        );
        let saved = tx.execute(&sql, &[&reader, &cursor.to_string(), &epoch]).await.map_err(pg)?;
        if saved == 0 {
            return Err(StoreError::Raced(format!(
                "the cursor of '{reader}' was rewound meanwhile; the batch is delivered again from there"
            )));
        }
        Ok(())
    }

    /// `"schema"."table"`.
    fn t(&self, table: &str) -> String {
        format!("{}.{}", quote(&self.schema), quote(table))
    }

    /// Create the schema and apply the migrations it has not had, in one
    /// transaction under an advisory lock, so processes starting together
    /// migrate once.
    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.pool.get().await.map_err(pg)?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", &[&format!("tributary:migrate:{}", self.schema)])
            .await
            .map_err(pg)?;
        let schema = quote(&self.schema);
        // the migration files name tables unqualified: they land in the schema
        tx.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema}; SET LOCAL search_path TO {schema}; {}",
            migrations::VERSION_TABLE
        ))
        .await
        .map_err(pg)?;
        let applied: Vec<i64> =
            tx.query("SELECT version FROM tributary_schema_version", &[]).await.map_err(pg)?.iter().map(|r| r.get(0)).collect();
        for migration in migrations::pending(migrations::POSTGRES, &applied) {
            tx.batch_execute(migration.sql).await.map_err(pg)?;
            tx.execute(
                "INSERT INTO tributary_schema_version (version, name, applied_at) VALUES ($1, $2, $3)",
                &[&migration.version, &migration.name, &super::timestamp(chrono::Utc::now())],
            )
            .await
            .map_err(pg)?;
            tracing::info!(kind = "schema_migrated", backend = "postgres", schema = %self.schema, version = migration.version,
                name = migration.name, "applied a schema migration");
        }
        tx.commit().await.map_err(pg)
    }
}

#[async_trait::async_trait]
impl Store for PgStore {
    async fn apply(&self, batch: Batch) -> Result<Applied, StoreError> {
        self.apply_batch(batch).await
    }

    async fn checkpoints(&self, source: &str) -> Result<BTreeMap<String, serde_json::Value>, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let rows = client
            .query(&format!("SELECT key, value::text FROM {} WHERE source = $1", self.t("tributary_checkpoints")), &[&source])
            .await
            .map_err(pg)?;
        let mut out = BTreeMap::new();
        for row in rows {
            let key: String = row.get(0);
            let value: String = row.get(1);
            let value = serde_json::from_str(&value).map_err(|e| StoreError::CorruptRow {
                table: "tributary_checkpoints".into(),
                id: key.clone(),
                source: e,
            })?;
            out.insert(key, value);
        }
        Ok(out)
    }

    async fn object_counts(&self, source: &str) -> Result<BTreeMap<String, u64>, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let rows = client
            .query(&format!("SELECT object, row_count FROM {} WHERE source = $1", self.t("tributary_tables")), &[&source])
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1).max(0) as u64)).collect())
    }

    async fn mirror_rows(&self, source: &str) -> Result<BTreeMap<String, Vec<MirrorRow>>, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let tables = client
            .query(&format!("SELECT object, table_name FROM {} WHERE source = $1", self.t("tributary_tables")), &[&source])
            .await
            .map_err(pg)?;
        let mut out = BTreeMap::new();
        for table in tables {
            let (object, name): (String, String) = (table.get(0), table.get(1));
            let rows =
                client.query(&format!("SELECT id, account, data::text FROM {} ORDER BY id", self.t(&name)), &[]).await.map_err(pg)?;
            let mut list = Vec::with_capacity(rows.len());
            for row in rows {
                let id: String = row.get(0);
                let data: String = row.get(2);
                let data =
                    serde_json::from_str(&data).map_err(|e| StoreError::CorruptRow { table: name.clone(), id: id.clone(), source: e })?;
                list.push(MirrorRow { id, account: row.get(1), data });
            }
            out.insert(object, list);
        }
        Ok(out)
    }

    async fn changes_after(&self, cursor: ChangeCursor, limit: usize) -> Result<ChangePage, StoreError> {
        self.change_page(cursor, limit).await
    }

    async fn sink_cursor(&self, sink: &str) -> Result<Option<ChangeCursor>, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let row = client
            .query_opt(&format!("SELECT cursor FROM {} WHERE sink = $1", self.t("tributary_sink_cursors")), &[&sink])
            .await
            .map_err(pg)?;
        Ok(row.and_then(|r| ChangeCursor::parse(r.get(0))))
    }

    async fn advance_sink(&self, sink: &str, epoch: i64, cursor: ChangeCursor, dead: Vec<DeadLetter>) -> Result<(), StoreError> {
        let mut client = self.pool.get().await.map_err(pg)?;
        let tx = client.transaction().await.map_err(pg)?;
        for letter in &dead {
            tx.execute(
                &format!(
                    "INSERT INTO {} (sink, change_id, error, envelope, attempts) VALUES ($1, $2, $3, $4::text::json, $5)",
                    self.t("tributary_dead_letters")
                ),
                &[&sink, &letter.change_id, &letter.error, &letter.envelope, &(letter.attempts as i32)],
            )
            .await
            .map_err(pg)?;
        }
        self.save_cursor(&tx, sink, epoch, cursor).await?;
        tx.commit().await.map_err(pg)
    }

    async fn dead_letter_count(&self, sink: &str) -> Result<u64, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let row = client
            .query_one(&format!("SELECT COUNT(*) FROM {} WHERE sink = $1", self.t("tributary_dead_letters")), &[&sink])
            .await
            .map_err(pg)?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    async fn purge_changes(&self, cutoff: &str, through: ChangeCursor, limit: usize) -> Result<u64, StoreError> {
        self.purge(cutoff, through, limit).await
    }

    fn commits(&self) -> watch::Receiver<u64> {
        self.commits.subscribe()
    }

    async fn acquire(&self, source: &str) -> Result<Box<dyn Lease>, StoreError> {
        self.lease(source).await
    }
}

//! The production backend. Writes are set-based (one `UNNEST` statement per
//! table and kind of write, not row by row) inside one transaction per batch;
//! every change carries its transaction's `xid8`, and readers page by
//! `(xid, id)` below `pg_snapshot_xmin(pg_current_snapshot())`, so a change
//! from a transaction that commits late is never skipped and never waited
//! for. Sources are owned through session advisory locks held on a dedicated
//! connection.

mod ledger;
mod mirror;
mod queues;
mod writes;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::sync::Arc;

use tokio::sync::{oneshot, watch};
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;

use super::ident::{self, quote};
use super::migrate as migrations;
use super::plan::{self, NewChange, RowUpsert};
use super::{
    Applied, Batch, Change, ChangeCursor, ChangePage, DeadLetter, ErrorKind, Lease, MirrorRow, Options, Store, StoreError, change_id,
    raw_json,
};

const UPSERT_CONFLICT: &str = "ON CONFLICT (id) DO UPDATE SET account = excluded.account, data = excluded.data, created = excluded.created,
     updated_at = excluded.updated_at, _generation = excluded._generation";

/// How often a standby asks for a source's lock, and an owner checks that
/// its lock connection is alive.
const LEASE_POLL: Duration = Duration::from_secs(1);

pub struct PgStore {
    pool: Pool,
    schema: String,
    config: tokio_postgres::Config,
    /// Mirror tables known to exist in this process.
    known_tables: parking_lot::Mutex<HashSet<String>>,
    /// Bumped on every commit with changes, here or (via NOTIFY) elsewhere.
    commits: Arc<watch::Sender<u64>>,
    /// Bumped on every fan-out that added queue events, here or elsewhere.
    queue_events: Arc<watch::Sender<u64>>,
    /// The LISTEN task; stopped with the store.
    _listener: AbortOnDrop,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The NOTIFY channel of a schema's change log.
fn channel(schema: &str) -> String {
    format!("tributary_changes_{schema}")
}

/// The NOTIFY channel of a schema's queue events.
fn queue_channel(schema: &str) -> String {
    format!("tributary_queues_{schema}")
}

/// Follow commits made by any process: LISTEN on a dedicated connection,
/// reconnecting after errors (readers also poll slowly as a safety net).
/// Each channel bumps its own counter.
async fn listen(config: tokio_postgres::Config, channels: Vec<(String, Arc<watch::Sender<u64>>)>) {
    loop {
        if let Ok((client, mut connection)) = config.connect(NoTls).await {
            let bumps = channels.clone();
            let driver = tokio::spawn(async move {
                let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                while let Some(message) = futures::StreamExt::next(&mut messages).await {
                    match message {
                        Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                            if let Some((_, bump)) = bumps.iter().find(|(name, _)| name == n.channel()) {
                                bump.send_modify(|n| *n += 1);
                            }
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            });
            let statements: String = channels.iter().map(|(name, _)| format!("LISTEN {};", quote(name))).collect();
            if client.batch_execute(&statements).await.is_ok() {
                let _ = driver.await;
            } else {
                driver.abort();
            }
        }
        tokio::time::sleep(LEASE_POLL).await;
    }
}

/// The columns [`read_change`] reads, of `tributary_changes AS c`.
const CHANGE_COLUMNS: &str = "c.id, c.xid::text AS xid_text, c.source, c.object, c.object_id, c.account, c.op, c.type, c.data::text,
    c.previous_attributes::text, c.upstream_event_id, (extract(epoch FROM c.committed_at) * 1000000)::int8";

/// A change from [`CHANGE_COLUMNS`] starting at column `at`.
fn read_change(row: &tokio_postgres::Row, at: usize) -> Result<Change, StoreError> {
    let seq: i64 = row.get(at);
    let xid: String = row.get(at + 1);
    Ok(Change {
        id: change_id(seq),
        seq,
        cursor: ChangeCursor { xid: xid.parse().map_err(|_| pg_other(format!("bad xid8 '{xid}'")))?, seq },
        source: row.get(at + 2),
        object: row.get(at + 3),
        object_id: row.get(at + 4),
        account: row.get(at + 5),
        op: row.get(at + 6),
        kind: row.get(at + 7),
        data: raw_json("tributary_changes", seq, row.get(at + 8))?,
        previous_attributes: raw_json("tributary_changes", seq, row.get(at + 9))?,
        upstream_event_id: row.get(at + 10),
        committed_at: micros_timestamp(row.get(at + 11)),
    })
}

/// Microseconds since the epoch as the change log writes times.
fn micros_timestamp(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros).map(super::timestamp).unwrap_or_default()
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
        let (commits, queue_events) = (Arc::new(watch::Sender::new(0)), Arc::new(watch::Sender::new(0)));
        let channels = vec![(channel(&options.schema), commits.clone()), (queue_channel(&options.schema), queue_events.clone())];
        let listener = tokio::spawn(listen(config.clone(), channels));
        let store = PgStore {
            pool,
            schema: options.schema.clone(),
            config,
            known_tables: Default::default(),
            commits,
            queue_events,
            _listener: AbortOnDrop(listener),
        };
        store.migrate().await.map_err(|e| StoreError::Open { path: describe(&store.config), reason: e.to_string() })?;
        Ok(store)
    }

    /// Store where a change-log reader (a sink, the queue fan-out) stands.
    async fn save_cursor(&self, tx: &deadpool_postgres::Transaction<'_>, reader: &str, cursor: ChangeCursor) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO {} (sink, cursor, updated_at) VALUES ($1, $2, now())
             ON CONFLICT (sink) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at",
            self.t("tributary_sink_cursors")
        );
        tx.execute(&sql, &[&reader, &cursor.to_string()]).await.map_err(pg)?;
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

/// Ownership of a source: a session advisory lock on its own connection.
struct AdvisoryLease {
    client: tokio_postgres::Client,
    closed: oneshot::Receiver<String>,
}

#[async_trait::async_trait]
impl Lease for AdvisoryLease {
    async fn lost(&mut self) -> String {
        loop {
            tokio::select! {
                reason = &mut self.closed => return reason.unwrap_or_else(|_| "lock connection closed".into()),
                _ = tokio::time::sleep(LEASE_POLL) => {
                    if let Err(e) = self.client.simple_query("SELECT 1").await {
                        return format!("lock connection failed: {}", crate::telemetry::error_chain(&e));
                    }
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl Store for PgStore {
    async fn apply(&self, batch: Batch) -> Result<Applied, StoreError> {
        let prepared = plan::prepare(batch)?;
        for (table, object) in prepared.tables() {
            self.ensure_table(&prepared.source, &object, &table).await?;
        }
        let mut client = self.pool.get().await.map_err(pg)?;
        let tx = client.transaction().await.map_err(pg)?;
        // the lock, then the rows and fences the plan needs: sent together
        // (pipelined), run by the server in that order
        let now = super::timestamp(chrono::Utc::now());
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
        let stripes = self.stripe_lock(&tx, &prepared).await?;
        let lock = async {
            if let Some((statement, keys)) = &stripes {
                tx.execute(statement, &[keys]).await.map_err(pg)?;
            }
            Ok::<_, StoreError>(())
        };
        let ((), existing, fences) = futures::try_join!(lock, futures::future::try_join_all(reads), self.fences(&tx, &prepared, &now))?;
        let existing: HashMap<String, HashMap<String, String>> = existing.into_iter().collect();
        let plan = plan::plan(&prepared, &existing, &fences)?;
        let mut applied = Applied { changes: plan.changes.len() as u64, unchanged: plan.unchanged };
        let mut row_deltas: BTreeMap<String, i64> = BTreeMap::new();
        for (table, table_plan) in &plan.tables {
            let quoted = self.t(table);
            // rows the mirror did not hold take a plain insert (the plan read
            // them under this transaction); only replacements need ON CONFLICT
            let (fresh, replaced): (Vec<&RowUpsert>, Vec<&RowUpsert>) =
                table_plan.upserts.iter().partition(|r| !existing.get(table).is_some_and(|rows| rows.contains_key(&r.id)));
            for (rows, conflict) in [(fresh, ""), (replaced, UPSERT_CONFLICT)] {
                if rows.is_empty() {
                    continue;
                }
                let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
                let accounts: Vec<Option<&str>> = rows.iter().map(|r| r.account.as_deref()).collect();
                let texts: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
                let created: Vec<Option<i64>> = rows.iter().map(|r| r.created).collect();
                let generations: Vec<i64> = rows.iter().map(|r| r.generation).collect();
                let sql = format!(
                    "INSERT INTO {quoted} (id, account, data, created, updated_at, _generation)
                     SELECT u.id, u.account, u.data::jsonb, u.created, now(), u.generation
                     FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::int8[]) AS u(id, account, data, created, generation)
                     {conflict}"
                );
                let statement = tx.prepare_cached(&sql).await.map_err(pg)?;
                tx.execute(&statement, &[&ids, &accounts, &texts, &created, &generations]).await.map_err(pg)?;
            }
            if !table_plan.touches.is_empty() {
                let ids: Vec<&str> = table_plan.touches.iter().map(|(id, _)| id.as_str()).collect();
                let generations: Vec<i64> = table_plan.touches.iter().map(|(_, g)| *g).collect();
                let sql = format!(
                    "UPDATE {quoted} AS t SET _generation = u.generation FROM UNNEST($1::text[], $2::int8[]) AS u(id, generation)
                     WHERE t.id = u.id AND t._generation <> u.generation"
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
                    &format!("DELETE FROM {} WHERE account IS NOT DISTINCT FROM $1 AND _generation < $2 RETURNING id", self.t(table)),
                    &[&sweep.account, &sweep.below_generation],
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
            if changes.is_empty() {
                return Ok(());
            }
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
            Ok::<_, StoreError>(())
        };
        let checkpoints = async {
            if prepared.checkpoints.is_empty() {
                return Ok(());
            }
            let keys: Vec<&str> = prepared.checkpoints.iter().map(|(k, _)| k.as_str()).collect();
            let values: Vec<&str> = prepared.checkpoints.iter().map(|(_, v)| v.as_str()).collect();
            let sql = format!(
                "INSERT INTO {} (source, key, value, updated_at) SELECT $1::text, u.key, u.value::jsonb, now()
                 FROM UNNEST($2::text[], $3::text[]) AS u(key, value)
                 ON CONFLICT (source, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                self.t("tributary_checkpoints")
            );
            let statement = tx.prepare_cached(&sql).await.map_err(pg)?;
            tx.execute(&statement, &[&prepared.source, &keys, &values]).await.map_err(pg)?;
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
        let client = self.pool.get().await.map_err(pg)?;
        let sql = format!(
            // the xid output is aliased: `ORDER BY xid` must sort by the
            // column, not by its text (where "999" sorts after "1000")
            "SELECT {CHANGE_COLUMNS} FROM {} AS c
             WHERE (c.xid, c.id) > ($1::text::xid8, $2) AND c.xid < pg_snapshot_xmin(pg_current_snapshot())
             ORDER BY c.xid, c.id LIMIT $3",
            self.t("tributary_changes")
        );
        let statement = client.prepare_cached(&sql).await.map_err(pg)?;
        let rows = client.query(&statement, &[&cursor.xid.to_string(), &cursor.seq, &(limit as i64)]).await.map_err(pg)?;
        let changes = rows.iter().map(|row| read_change(row, 0)).collect::<Result<Vec<_>, _>>()?;
        let next = changes.last().map(|c| c.cursor).unwrap_or(cursor);
        Ok(ChangePage { changes, next })
    }

    async fn sink_cursor(&self, sink: &str) -> Result<Option<ChangeCursor>, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let row = client
            .query_opt(&format!("SELECT cursor FROM {} WHERE sink = $1", self.t("tributary_sink_cursors")), &[&sink])
            .await
            .map_err(pg)?;
        Ok(row.and_then(|r| ChangeCursor::parse(r.get(0))))
    }

    async fn advance_sink(&self, sink: &str, cursor: ChangeCursor, dead: Vec<DeadLetter>) -> Result<(), StoreError> {
        let mut client = self.pool.get().await.map_err(pg)?;
        let tx = client.transaction().await.map_err(pg)?;
        for letter in &dead {
            tx.execute(
                &format!(
                    "INSERT INTO {} (sink, change_id, error, envelope) VALUES ($1, $2, $3, $4::text::json)",
                    self.t("tributary_dead_letters")
                ),
                &[&sink, &letter.change_id, &letter.error, &letter.envelope],
            )
            .await
            .map_err(pg)?;
        }
        self.save_cursor(&tx, sink, cursor).await?;
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
        let client = self.pool.get().await.map_err(pg)?;
        let changes = self.t("tributary_changes");
        let sql = format!(
            "DELETE FROM {changes} WHERE id IN
             (SELECT id FROM {changes} WHERE (xid, id) <= ($1::text::xid8, $2) AND committed_at < $3::text::timestamptz
              ORDER BY xid, id LIMIT $4)"
        );
        let deleted = client.execute(&sql, &[&through.xid.to_string(), &through.seq, &cutoff, &(limit as i64)]).await.map_err(pg)?;
        Ok(deleted)
    }

    fn commits(&self) -> watch::Receiver<u64> {
        self.commits.subscribe()
    }

    async fn acquire(&self, source: &str) -> Result<Box<dyn Lease>, StoreError> {
        let (client, connection) = self.config.connect(NoTls).await.map_err(pg)?;
        let (closed_tx, closed) = oneshot::channel();
        tokio::spawn(async move {
            let reason = match connection.await {
                Ok(()) => "lock connection closed".to_string(),
                Err(e) => format!("lock connection lost: {}", crate::telemetry::error_chain(&e)),
            };
            let _ = closed_tx.send(reason);
        });
        let key = format!("tributary:source:{}:{source}", self.schema);
        let mut first = true;
        loop {
            let row = client.query_one("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", &[&key]).await.map_err(pg)?;
            if row.get::<_, bool>(0) {
                return Ok(Box::new(AdvisoryLease { client, closed }));
            }
            if first {
                tracing::info!(kind = "source_standby", source, "another process owns this source; standing by to take over");
                first = false;
            }
            tokio::time::sleep(LEASE_POLL).await;
        }
    }
}

//! Idempotency keys on Postgres. Phase 1 inserts the key or locks its row
//! (`FOR UPDATE`), so two requests with one key take turns deciding; a
//! key's last phase commits with the mirror write ([`finish`]).

use deadpool_postgres::Transaction;
use tokio_postgres::Row;

use super::{PgStore, pg};
use crate::store::StoreError;
use crate::store::plan::{Fence, Fences, Prepared};
use crate::store::writes::{Answer, Begin, Finish, KeyRecord, KeyRequest, RecoveryPoint, StagedJob, WriteStore, decide};

/// Advisory lock stripes objects fall into (a power of two).
const STRIPES: u64 = 64;

/// The same number for the same text in every process.
fn stable_hash(text: &str) -> u64 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(text.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().unwrap_or_default())
}

/// A new key and the upstream's recorded answer commit without waiting for
/// the disk: a crash that loses them only sends the write upstream again,
/// under the same derived key, so the upstream replays its answer.
const NOT_DURABLE: &str = "SET LOCAL synchronous_commit = off";

const KEY_COLUMNS: &str = "app_id, key, source, method, path, params, fingerprint, account, recovery_point, locked_at,
    upstream_status, upstream_body, response_status, response_body, created_at, updated_at";

fn answer(status: Option<i32>, body: Option<String>) -> Option<Answer> {
    Some(Answer { status: u16::try_from(status?).ok()?, body: body? })
}

fn read_key(row: &Row) -> KeyRecord {
    KeyRecord {
        request: KeyRequest {
            app_id: row.get(0),
            key: row.get(1),
            source: row.get(2),
            method: row.get(3),
            path: row.get(4),
            params: row.get(5),
            fingerprint: row.get(6),
            account: row.get(7),
        },
        // an unknown point is treated as the earliest: redoing is safe
        recovery_point: RecoveryPoint::parse(row.get(8)).unwrap_or(RecoveryPoint::Started),
        locked_at: row.get(9),
        upstream: answer(row.get(10), row.get(11)),
        response: answer(row.get(12), row.get(13)),
        created_at: row.get(14),
        updated_at: row.get(15),
    }
}

impl PgStore {
    /// A write's last phase and a source's batch may touch the same object
    /// at once; each must plan against the other's committed row. Objects
    /// fall into `STRIPES` advisory locks: a write takes its object's stripe
    /// alone, a source's batch shares the stripes of its objects, always in
    /// ascending order. Two batches may still insert one new object at
    /// once; the second is refused by the key and planned again
    /// (`apply_batch`).
    ///
    /// Returns the lock's statement, prepared, and its keys: executing a
    /// prepared statement is sent on its first poll, so pipelined after it
    /// the batch's reads run once the lock is held.
    pub(super) async fn stripe_lock(
        &self,
        tx: &Transaction<'_>,
        batch: &Prepared,
    ) -> Result<Option<(tokio_postgres::Statement, Vec<i64>)>, StoreError> {
        let base = stable_hash(&format!("tributary-apply:{}", self.schema)) & !(STRIPES - 1);
        let mut stripes: Vec<i64> =
            batch.writes.iter().map(|w| (base | (stable_hash(&format!("{}:{}", w.table, w.id)) & (STRIPES - 1))) as i64).collect();
        stripes.sort_unstable();
        stripes.dedup();
        if stripes.is_empty() {
            return Ok(None);
        }
        let sql = if batch.finish.is_some() {
            "SELECT pg_advisory_xact_lock(k) FROM unnest($1::int8[]) AS k"
        } else {
            "SELECT pg_advisory_xact_lock_shared(k) FROM unnest($1::int8[]) AS k"
        };
        let statement = tx.prepare_cached(sql).await.map_err(pg)?;
        Ok(Some((statement, stripes)))
    }

    /// Staged jobs leave as their notices enter the change log; one already
    /// gone means another instance's enqueuer took it, and nothing is written.
    pub(super) async fn hand_off(&self, tx: &Transaction<'_>, jobs: &[i64]) -> Result<(), StoreError> {
        let sql = format!("DELETE FROM {} WHERE id = ANY($1)", self.t("tributary_staged_jobs"));
        let deleted = tx.execute(&sql, &[&jobs]).await.map_err(pg)?;
        if deleted != jobs.len() as u64 {
            return Err(StoreError::Raced(format!("{} of {} staged jobs were handed on already", jobs.len() as u64 - deleted, jobs.len())));
        }
        Ok(())
    }

    /// Live fences of the objects a batch writes.
    pub(super) async fn fences(&self, tx: &Transaction<'_>, batch: &Prepared, now: &str) -> Result<Fences, StoreError> {
        let mut out = Fences::new();
        let sql = format!(
            "SELECT id, state FROM {} WHERE table_name = $1 AND id = ANY($2) AND expires_at > $3",
            self.t("tributary_write_fences")
        );
        let statement = tx.prepare_cached(&sql).await.map_err(pg)?;
        for (table, ids) in batch.ids_by_table() {
            for row in tx.query(&statement, &[&table, &ids, &now]).await.map_err(pg)? {
                out.entry(table.to_string()).or_default().insert(row.get(0), row.get(1));
            }
        }
        Ok(out)
    }

    /// Set and lift fences as a plan says.
    pub(super) async fn save_fences(&self, tx: &Transaction<'_>, fences: &[(String, String, Fence)]) -> Result<(), StoreError> {
        let table = self.t("tributary_write_fences");
        let expires = crate::store::timestamp(chrono::Utc::now() + chrono::Duration::seconds(crate::store::writes::FENCE_SECS));
        for (mirror, id, fence) in fences {
            match fence {
                Fence::Set(state) => {
                    let sql = format!(
                        "INSERT INTO {table} (table_name, id, state, expires_at) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (table_name, id) DO UPDATE SET state = excluded.state, expires_at = excluded.expires_at"
                    );
                    let upsert = tx.prepare_cached(&sql).await.map_err(pg)?;
                    tx.execute(&upsert, &[mirror, id, state, &expires]).await.map_err(pg)?
                }
                Fence::Clear => {
                    let delete = tx.prepare_cached(&format!("DELETE FROM {table} WHERE table_name = $1 AND id = $2")).await.map_err(pg)?;
                    tx.execute(&delete, &[mirror, id]).await.map_err(pg)?
                }
            };
        }
        Ok(())
    }

    /// The key's last phase, inside the mirror write's transaction.
    pub(super) async fn finish(&self, tx: &Transaction<'_>, finish: &Finish) -> Result<(), StoreError> {
        let now = crate::store::timestamp(chrono::Utc::now());
        let status = i32::from(finish.response.status);
        let sql = format!(
            "UPDATE {} SET recovery_point = 'finished', response_status = $3, response_body = $4, locked_at = NULL, updated_at = $5
             WHERE app_id = $1 AND key = $2",
            self.t("tributary_idempotency_keys")
        );
        let update = tx.prepare_cached(&sql).await.map_err(pg)?;
        tx.execute(&update, &[&finish.app_id, &finish.key, &status, &finish.response.body, &now]).await.map_err(pg)?;
        let stage = format!("INSERT INTO {} (kind, payload) VALUES ($1, $2::text::jsonb)", self.t("tributary_staged_jobs"));
        let stage = tx.prepare_cached(&stage).await.map_err(pg)?;
        for job in &finish.jobs {
            tx.execute(&stage, &[&job.kind, &job.payload.to_string()]).await.map_err(pg)?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl WriteStore for PgStore {
    async fn begin_write(&self, request: &KeyRequest, now: &str, lock_expired_before: &str) -> Result<Begin, StoreError> {
        let keys = self.t("tributary_idempotency_keys");
        let mut client = self.pool.get().await.map_err(pg)?;
        // a new key: one round trip (the transaction's statements sent
        // together, its commit not waited on disk); a known one: a
        // transaction that locks the key's row
        let insert = client
            .prepare_cached(&format!(
                "INSERT INTO {keys} (app_id, key, source, method, path, params, fingerprint, account, recovery_point, locked_at,
                 created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'started', $9, $9, $9)
                 ON CONFLICT (app_id, key) DO NOTHING"
            ))
            .await
            .map_err(pg)?;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 9] = [
            &request.app_id,
            &request.key,
            &request.source,
            &request.method,
            &request.path,
            &request.params,
            &request.fingerprint,
            &request.account,
            &now,
        ];
        // all three are sent on the first poll, so the transaction always ends
        let begin = format!("BEGIN; {NOT_DURABLE}");
        let (_, inserted, _) =
            futures::try_join!(client.batch_execute(&begin), client.execute(&insert, &params), client.batch_execute("COMMIT"))
                .map_err(pg)?;
        if inserted == 1 {
            return Ok(Begin::Proceed(Box::new(KeyRecord {
                request: request.clone(),
                recovery_point: RecoveryPoint::Started,
                locked_at: Some(now.to_string()),
                upstream: None,
                response: None,
                created_at: now.to_string(),
                updated_at: now.to_string(),
            })));
        }
        let tx = client.transaction().await.map_err(pg)?;
        let row = tx
            .query_one(
                &format!("SELECT {KEY_COLUMNS} FROM {keys} WHERE app_id = $1 AND key = $2 FOR UPDATE"),
                &[&request.app_id, &request.key],
            )
            .await
            .map_err(pg)?;
        let begin = decide(&read_key(&row), request, |at| at < lock_expired_before);
        if let Begin::Proceed(_) = &begin {
            tx.execute(
                &format!("UPDATE {keys} SET locked_at = $3, updated_at = $3 WHERE app_id = $1 AND key = $2"),
                &[&request.app_id, &request.key, &now],
            )
            .await
            .map_err(pg)?;
        }
        tx.commit().await.map_err(pg)?;
        Ok(begin)
    }

    async fn record_upstream(&self, app_id: &str, key: &str, upstream: &Answer, now: &str) -> Result<(), StoreError> {
        let mut client = self.pool.get().await.map_err(pg)?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.batch_execute(NOT_DURABLE).await.map_err(pg)?;
        let sql = format!(
            "UPDATE {} SET recovery_point = 'upstream_called', upstream_status = $3, upstream_body = $4, updated_at = $5
             WHERE app_id = $1 AND key = $2 AND recovery_point = 'started'",
            self.t("tributary_idempotency_keys")
        );
        tx.execute(&sql, &[&app_id, &key, &i32::from(upstream.status), &upstream.body, &now]).await.map_err(pg)?;
        tx.commit().await.map_err(pg)
    }

    async fn abandoned_keys(&self, before: &str, limit: usize) -> Result<Vec<KeyRecord>, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM {} WHERE recovery_point <> 'finished' AND updated_at < $1 ORDER BY updated_at LIMIT $2",
            self.t("tributary_idempotency_keys")
        );
        let rows = client.query(&sql, &[&before, &(limit as i64)]).await.map_err(pg)?;
        Ok(rows.iter().map(read_key).collect())
    }

    async fn reap_keys(&self, before: &str, now: &str) -> Result<(u64, u64), StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let keys = self.t("tributary_idempotency_keys");
        let row = client
            .query_one(
                &format!(
                    "WITH reaped AS (DELETE FROM {keys} WHERE created_at < $1 RETURNING recovery_point)
                     SELECT COUNT(*), COUNT(*) FILTER (WHERE recovery_point <> 'finished') FROM reaped"
                ),
                &[&before],
            )
            .await
            .map_err(pg)?;
        client.execute(&format!("DELETE FROM {} WHERE expires_at < $1", self.t("tributary_write_fences")), &[&now]).await.map_err(pg)?;
        Ok((row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64))
    }

    async fn staged_jobs(&self, limit: usize) -> Result<Vec<(i64, StagedJob)>, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let sql = format!("SELECT id, kind, payload::text FROM {} ORDER BY id LIMIT $1", self.t("tributary_staged_jobs"));
        let rows = client.query(&sql, &[&(limit as i64)]).await.map_err(pg)?;
        let mut jobs = Vec::new();
        for row in rows {
            let (id, text): (i64, String) = (row.get(0), row.get(2));
            let payload = serde_json::from_str(&text).map_err(|e| StoreError::CorruptRow {
                table: "tributary_staged_jobs".into(),
                id: id.to_string(),
                source: e,
            })?;
            jobs.push((id, StagedJob { kind: row.get(1), payload }));
        }
        Ok(jobs)
    }

    async fn release_key(&self, app_id: &str, key: &str, now: &str) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let sql =
            format!("UPDATE {} SET locked_at = NULL, updated_at = $3 WHERE app_id = $1 AND key = $2", self.t("tributary_idempotency_keys"));
        client.execute(&sql, &[&app_id, &key, &now]).await.map_err(pg)?;
        Ok(())
    }
}

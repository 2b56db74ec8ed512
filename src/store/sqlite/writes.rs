//! Idempotency keys on SQLite: small transactions on the bookkeeping
//! connection; a key's last phase commits with the mirror write on the
//! writer thread ([`finish`]).

use rusqlite::{Connection, OptionalExtension, params};

use super::{SqliteStore, immediate};
use crate::store::StoreError;
use crate::store::plan::{Fence, Fences, Prepared};
use crate::store::writes::{Answer, Begin, Finish, KeyRecord, KeyRequest, RecoveryPoint, StagedJob, WriteStore, decide};

const KEY_COLUMNS: &str = "app_id, key, source, method, path, params, fingerprint, account, recovery_point, locked_at,
    upstream_status, upstream_body, response_status, response_body, created_at, updated_at";

fn answer(status: Option<i64>, body: Option<String>) -> Option<Answer> {
    Some(Answer { status: u16::try_from(status?).ok()?, body: body? })
}

fn read_key(row: &rusqlite::Row) -> rusqlite::Result<KeyRecord> {
    let point: String = row.get(8)?;
    Ok(KeyRecord {
        request: KeyRequest {
            app_id: row.get(0)?,
            key: row.get(1)?,
            source: row.get(2)?,
            method: row.get(3)?,
            path: row.get(4)?,
            params: row.get(5)?,
            fingerprint: row.get(6)?,
            account: row.get(7)?,
        },
        // an unknown point is treated as the earliest: redoing is safe
        recovery_point: RecoveryPoint::parse(&point).unwrap_or(RecoveryPoint::Started),
        locked_at: row.get(9)?,
        upstream: answer(row.get(10)?, row.get(11)?),
        response: answer(row.get(12)?, row.get(13)?),
        created_at: row.get(14)?,
        updated_at: row.get(15)?,
    })
}

/// Live fences of the objects a batch writes.
pub(super) fn fences(conn: &Connection, batch: &Prepared, now: &str) -> Result<Fences, StoreError> {
    let mut out = Fences::new();
    let mut stmt = conn.prepare_cached("SELECT state FROM tributary_write_fences WHERE table_name = ?1 AND id = ?2 AND expires_at > ?3")?;
    for (table, ids) in batch.ids_by_table() {
        for id in ids {
            if let Some(state) = stmt.query_row(params![table, id, now], |r| r.get::<_, Option<String>>(0)).optional()? {
                out.entry(table.to_string()).or_default().insert(id.to_string(), state);
            }
        }
    }
    Ok(out)
}

/// Set and lift fences as a plan says; a fence lasts `FENCE_SECS`.
pub(super) fn save_fences(
    conn: &Connection,
    fences: &[(String, String, Fence)],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), StoreError> {
    let expires = crate::store::timestamp(now + chrono::Duration::seconds(crate::store::writes::FENCE_SECS));
    for (table, id, fence) in fences {
        match fence {
            Fence::Set(state) => conn
                .prepare_cached(
                    "INSERT INTO tributary_write_fences (table_name, id, state, expires_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (table_name, id) DO UPDATE SET state = excluded.state, expires_at = excluded.expires_at",
                )?
                .execute(params![table, id, state, expires])?,
            Fence::Clear => {
                conn.prepare_cached("DELETE FROM tributary_write_fences WHERE table_name = ?1 AND id = ?2")?.execute(params![table, id])?
            }
        };
    }
    Ok(())
}

/// Staged jobs leave as their notices enter the change log; one already
/// gone means another enqueuer took it, and nothing is written.
pub(super) fn hand_off(conn: &Connection, jobs: &[i64]) -> Result<(), StoreError> {
    let mut delete = conn.prepare_cached("DELETE FROM tributary_staged_jobs WHERE id = ?1")?;
    for id in jobs {
        if delete.execute([id])? != 1 {
            return Err(StoreError::Raced(format!("staged job {id} was handed on already")));
        }
    }
    Ok(())
}

/// The key's last phase, inside the writer's transaction.
pub(super) fn finish(conn: &Connection, finish: &Finish, now: &str) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE tributary_idempotency_keys SET recovery_point = 'finished', response_status = ?3, response_body = ?4,
         locked_at = NULL, updated_at = ?5 WHERE app_id = ?1 AND key = ?2",
    )?
    .execute(params![finish.app_id, finish.key, finish.response.status, finish.response.body, now])?;
    let mut stage = conn.prepare_cached("INSERT INTO tributary_staged_jobs (kind, payload, created_at) VALUES (?1, ?2, ?3)")?;
    for job in &finish.jobs {
        stage.execute(params![job.kind, job.payload.to_string(), now])?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl WriteStore for SqliteStore {
    async fn begin_write(&self, request: &KeyRequest, now: &str, lock_expired_before: &str) -> Result<Begin, StoreError> {
        let (request, now, expired) = (request.clone(), now.to_string(), lock_expired_before.to_string());
        Self::with(&self.bookkeeping, move |conn| {
            immediate(conn, || {
                let existing = conn
                    .prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM tributary_idempotency_keys WHERE app_id = ?1 AND key = ?2"))?
                    .query_row(params![request.app_id, request.key], read_key)
                    .optional()?;
                let Some(existing) = existing else {
                    conn.prepare_cached(
                        "INSERT INTO tributary_idempotency_keys (app_id, key, source, method, path, params, fingerprint, account,
                         recovery_point, locked_at, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'started', ?9, ?9, ?9)",
                    )?
                    .execute(params![
                        request.app_id,
                        request.key,
                        request.source,
                        request.method,
                        request.path,
                        request.params,
                        request.fingerprint,
                        request.account,
                        now
                    ])?;
                    let record = KeyRecord {
                        request,
                        recovery_point: RecoveryPoint::Started,
                        locked_at: Some(now.clone()),
                        upstream: None,
                        response: None,
                        created_at: now.clone(),
                        updated_at: now,
                    };
                    return Ok(Begin::Proceed(Box::new(record)));
                };
                let begin = decide(&existing, &request, |at| at < expired.as_str());
                if let Begin::Proceed(_) = &begin {
                    conn.prepare_cached(
                        "UPDATE tributary_idempotency_keys SET locked_at = ?3, updated_at = ?3 WHERE app_id = ?1 AND key = ?2",
                    )?
                    .execute(params![request.app_id, request.key, now])?;
                }
                Ok(begin)
            })
        })
        .await
    }

    async fn record_upstream(&self, app_id: &str, key: &str, upstream: &Answer, now: &str) -> Result<(), StoreError> {
        let (app_id, key, upstream, now) = (app_id.to_string(), key.to_string(), upstream.clone(), now.to_string());
        Self::with(&self.bookkeeping, move |conn| {
            conn.prepare_cached(
                "UPDATE tributary_idempotency_keys SET recovery_point = 'upstream_called', upstream_status = ?3, upstream_body = ?4,
                 updated_at = ?5 WHERE app_id = ?1 AND key = ?2 AND recovery_point = 'started'",
            )?
            .execute(params![app_id, key, upstream.status, upstream.body, now])?;
            Ok(())
        })
        .await
    }

    async fn abandoned_keys(&self, before: &str, limit: usize) -> Result<Vec<KeyRecord>, StoreError> {
        let before = before.to_string();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {KEY_COLUMNS} FROM tributary_idempotency_keys WHERE recovery_point <> 'finished' AND updated_at < ?1
                 ORDER BY updated_at LIMIT ?2"
            ))?;
            let keys = stmt.query_map(params![before, limit as i64], read_key)?.collect::<Result<Vec<_>, _>>()?;
            Ok(keys)
        })
        .await
    }

    async fn reap_keys(&self, before: &str, now: &str) -> Result<(u64, u64), StoreError> {
        let (before, now) = (before.to_string(), now.to_string());
        Self::with(&self.bookkeeping, move |conn| {
            immediate(conn, || {
                let unfinished: i64 = conn.query_row(
                    "SELECT COUNT(*) FROM tributary_idempotency_keys WHERE created_at < ?1 AND recovery_point <> 'finished'",
                    [&before],
                    |r| r.get(0),
                )?;
                let deleted = conn.execute("DELETE FROM tributary_idempotency_keys WHERE created_at < ?1", [&before])?;
                conn.execute("DELETE FROM tributary_write_fences WHERE expires_at < ?1", [&now])?;
                Ok((deleted as u64, unfinished as u64))
            })
        })
        .await
    }

    async fn staged_jobs(&self, limit: usize) -> Result<Vec<(i64, StagedJob)>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached("SELECT id, kind, payload FROM tributary_staged_jobs ORDER BY id LIMIT ?1")?;
            let rows = stmt.query_map([limit as i64], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?;
            let mut jobs = Vec::new();
            for row in rows {
                let (id, kind, payload) = row?;
                let payload = super::parse_json("tributary_staged_jobs", &id.to_string(), Some(payload))?.unwrap_or_default();
                jobs.push((id, StagedJob { kind, payload }));
            }
            Ok(jobs)
        })
        .await
    }

    async fn release_key(&self, app_id: &str, key: &str, now: &str) -> Result<(), StoreError> {
        let (app_id, key, now) = (app_id.to_string(), key.to_string(), now.to_string());
        Self::with(&self.bookkeeping, move |conn| {
            conn.prepare_cached("UPDATE tributary_idempotency_keys SET locked_at = NULL, updated_at = ?3 WHERE app_id = ?1 AND key = ?2")?
                .execute(params![app_id, key, now])?;
            Ok(())
        })
        .await
    }
}

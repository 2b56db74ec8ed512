//! Where a `window` source keeps the fingerprint of each item it emitted: in
//! the store's ledger (the default, committed with the mirror write), or in
//! Redis under `tributary:{source}:{id}` with a TTL of `expire_secs`.

use std::collections::HashMap;

use redis::aio::ConnectionManager;

use crate::store::ledger::LedgerEntry;

/// Keys per Redis round trip.
const REDIS_CHUNK: usize = 5_000;

pub enum Dedupe {
    Store,
    Redis { conn: ConnectionManager, prefix: String },
}

impl Dedupe {
    pub async fn connect(url: Option<&str>, source: &str) -> Result<Dedupe, redis::RedisError> {
        let Some(url) = url else { return Ok(Dedupe::Store) };
        let client = redis::Client::open(url)?;
        let conn = ConnectionManager::new(client).await?;
        Ok(Dedupe::Redis { conn, prefix: format!("tributary:{source}:") })
    }

    /// Whether fingerprints are written to the ledger.
    pub fn in_store(&self) -> bool {
        matches!(self, Dedupe::Store)
    }

    /// The live fingerprint of each key (`None`: unknown or expired).
    /// `ledger` holds the store's entries of the window; `fresh_after` is
    /// the oldest `seen_at` that has not expired.
    pub async fn fingerprints(
        &self,
        keys: &[&str],
        ledger: &HashMap<String, LedgerEntry>,
        fresh_after: i64,
    ) -> Result<Vec<Option<String>>, redis::RedisError> {
        match self {
            Dedupe::Store => {
                Ok(keys.iter().map(|k| ledger.get(*k).filter(|e| e.seen_at >= fresh_after).and_then(|e| e.fingerprint.clone())).collect())
            }
            Dedupe::Redis { conn, prefix } => {
                let mut out = Vec::with_capacity(keys.len());
                for chunk in keys.chunks(REDIS_CHUNK) {
                    let names: Vec<String> = chunk.iter().map(|k| format!("{prefix}{k}")).collect();
                    let values: Vec<Option<String>> = redis::cmd("MGET").arg(&names).query_async(&mut conn.clone()).await?;
                    out.extend(values);
                }
                Ok(out)
            }
        }
    }

    /// After a commit: remember what was emitted, forget what was deleted
    /// (Redis only; the store's ledger committed with the batch).
    pub async fn remember(&self, emitted: &[(String, String)], forgotten: &[String], expire_secs: u64) -> Result<(), redis::RedisError> {
        let Dedupe::Redis { conn, prefix } = self else { return Ok(()) };
        for chunk in emitted.chunks(REDIS_CHUNK) {
            let mut pipe = redis::pipe();
            for (key, fingerprint) in chunk {
                pipe.cmd("SET").arg(format!("{prefix}{key}")).arg(fingerprint).arg("EX").arg(expire_secs).ignore();
            }
            pipe.query_async::<()>(&mut conn.clone()).await?;
        }
        for chunk in forgotten.chunks(REDIS_CHUNK) {
            let names: Vec<String> = chunk.iter().map(|k| format!("{prefix}{k}")).collect();
            redis::cmd("DEL").arg(&names).query_async::<()>(&mut conn.clone()).await?;
        }
        Ok(())
    }
}

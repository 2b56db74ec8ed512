//! The source ledger on SQLite: written by the writer thread inside a
//! batch's transaction, read on the reader connection.

use rusqlite::{Connection, params};

use super::SqliteStore;
use crate::store::StoreError;
use crate::store::ledger::{LedgerEntry, LedgerOp, LedgerStore, Parked};

/// A batch's ledger operations, inside its transaction.
pub(super) fn apply(conn: &Connection, source: &str, ops: &[LedgerOp]) -> Result<(), StoreError> {
    let mut put = conn.prepare_cached(
        "INSERT INTO tributary_ledger (source, key, fingerprint, day, seen_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (source, key) DO UPDATE SET fingerprint = excluded.fingerprint, day = excluded.day, seen_at = excluded.seen_at",
    )?;
    let mut remove = conn.prepare_cached("DELETE FROM tributary_ledger WHERE source = ?1 AND key = ?2")?;
    let mut park = conn.prepare_cached(
        "INSERT INTO tributary_parked (source, key, event_id, event_type, reason, body, parked_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (source, key) DO NOTHING",
    )?;
    let mut unpark = conn.prepare_cached("DELETE FROM tributary_parked WHERE source = ?1 AND key = ?2")?;
    for op in ops {
        match op {
            LedgerOp::Put(e) => put.execute(params![source, e.key, e.fingerprint, e.day, e.seen_at])?,
            LedgerOp::Remove(key) => remove.execute(params![source, key])?,
            LedgerOp::Park(p) => park.execute(params![source, p.key, p.event_id, p.event_type, p.reason, p.body, p.parked_at])?,
            LedgerOp::Unpark(key) => unpark.execute(params![source, key])?,
        };
    }
    Ok(())
}

#[async_trait::async_trait]
impl LedgerStore for SqliteStore {
    async fn ledger_range(&self, source: &str, from: &str, to: &str) -> Result<Vec<LedgerEntry>, StoreError> {
        let (source, from, to) = (source.to_string(), from.to_string(), to.to_string());
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT key, fingerprint, day, seen_at FROM tributary_ledger WHERE source = ?1 AND day >= ?2 AND day <= ?3",
            )?;
            let rows = stmt.query_map(params![source, from, to], |r| {
                Ok(LedgerEntry { key: r.get(0)?, fingerprint: r.get(1)?, day: r.get(2)?, seen_at: r.get(3)? })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn ledger_known(&self, source: &str, keys: &[String]) -> Result<Vec<String>, StoreError> {
        let (source, keys) = (source.to_string(), keys.to_vec());
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached("SELECT 1 FROM tributary_ledger WHERE source = ?1 AND key = ?2")?;
            let mut known = Vec::new();
            for key in keys {
                if stmt.exists(params![source, key])? {
                    known.push(key);
                }
            }
            Ok(known)
        })
        .await
    }

    async fn prune_ledger(&self, source: &str, before_day: &str) -> Result<u64, StoreError> {
        let (source, before_day) = (source.to_string(), before_day.to_string());
        Self::with(&self.bookkeeping, move |conn| {
            Ok(conn.execute("DELETE FROM tributary_ledger WHERE source = ?1 AND day < ?2", params![source, before_day])? as u64)
        })
        .await
    }

    async fn parked(&self, source: &str) -> Result<Vec<Parked>, StoreError> {
        let source = source.to_string();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT key, event_id, event_type, reason, body, parked_at FROM tributary_parked WHERE source = ?1 ORDER BY parked_at, key",
            )?;
            let rows = stmt.query_map(params![source], |r| {
                Ok(Parked {
                    key: r.get(0)?,
                    event_id: r.get(1)?,
                    event_type: r.get(2)?,
                    reason: r.get(3)?,
                    body: r.get(4)?,
                    parked_at: r.get(5)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn parked_count(&self, source: &str) -> Result<u64, StoreError> {
        let source = source.to_string();
        self.read(move |conn| {
            Ok(conn.query_row("SELECT count(*) FROM tributary_parked WHERE source = ?1", params![source], |r| r.get::<_, i64>(0))? as u64)
        })
        .await
    }
}

//! The source ledger on Postgres: written inside a batch's transaction
//! (one set-based statement per kind of operation).

use deadpool_postgres::Transaction;

use super::{PgStore, pg};
use crate::store::StoreError;
use crate::store::ledger::{LedgerEntry, LedgerOp, LedgerStore, Parked};

impl PgStore {
    /// A batch's ledger operations, inside its transaction.
    pub(super) async fn apply_ledger(&self, tx: &Transaction<'_>, source: &str, ops: &[LedgerOp]) -> Result<(), StoreError> {
        let puts: Vec<&LedgerEntry> = ops.iter().filter_map(|op| if let LedgerOp::Put(e) = op { Some(e) } else { None }).collect();
        let removes: Vec<&str> = ops.iter().filter_map(|op| if let LedgerOp::Remove(k) = op { Some(k.as_str()) } else { None }).collect();
        if !removes.is_empty() {
            let sql = format!("DELETE FROM {} WHERE source = $1 AND key = ANY($2)", self.t("tributary_ledger"));
            let statement = tx.prepare_cached(&sql).await.map_err(pg)?;
            tx.execute(&statement, &[&source, &removes]).await.map_err(pg)?;
        }
        let unparked: Vec<&str> = ops.iter().filter_map(|op| if let LedgerOp::Unpark(k) = op { Some(k.as_str()) } else { None }).collect();
        if !unparked.is_empty() {
            let sql = format!("DELETE FROM {} WHERE source = $1 AND key = ANY($2)", self.t("tributary_parked"));
            let statement = tx.prepare_cached(&sql).await.map_err(pg)?;
            tx.execute(&statement, &[&source, &unparked]).await.map_err(pg)?;
        }
        let parked: Vec<&Parked> = ops.iter().filter_map(|op| if let LedgerOp::Park(p) = op { Some(p) } else { None }).collect();
        if !parked.is_empty() {
            let column = |f: fn(&Parked) -> Option<&str>| parked.iter().map(|p| f(p)).collect::<Vec<Option<&str>>>();
            let sql = format!(
                "INSERT INTO {} (source, key, event_id, event_type, reason, body, parked_at)
                 SELECT $1::text, u.key, u.event_id, u.event_type, u.reason, u.body, u.parked_at
                 FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[]) AS u(key, event_id, event_type, reason, body, parked_at)
                 ON CONFLICT (source, key) DO NOTHING",
                self.t("tributary_parked")
            );
            let statement = tx.prepare_cached(&sql).await.map_err(pg)?;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [
                &source,
                &column(|p| Some(&p.key)),
                &column(|p| p.event_id.as_deref()),
                &column(|p| p.event_type.as_deref()),
                &column(|p| Some(&p.reason)),
                &column(|p| Some(&p.body)),
                &column(|p| Some(&p.parked_at)),
            ];
            tx.execute(&statement, &params).await.map_err(pg)?;
        }
        if puts.is_empty() {
            return Ok(());
        }
        // one row per key: the last put of a key wins, as on SQLite
        let mut last: std::collections::HashMap<&str, &LedgerEntry> = std::collections::HashMap::new();
        for e in &puts {
            last.insert(&e.key, e);
        }
        let entries: Vec<&LedgerEntry> = last.into_values().collect();
        let keys: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
        let fingerprints: Vec<Option<&str>> = entries.iter().map(|e| e.fingerprint.as_deref()).collect();
        let days: Vec<&str> = entries.iter().map(|e| e.day.as_str()).collect();
        let seen: Vec<i64> = entries.iter().map(|e| e.seen_at).collect();
        let sql = format!(
            "INSERT INTO {} (source, key, fingerprint, day, seen_at)
             SELECT $1::text, u.key, u.fingerprint, u.day, u.seen_at FROM UNNEST($2::text[], $3::text[], $4::text[], $5::int8[]) AS u(key, fingerprint, day, seen_at)
             ON CONFLICT (source, key) DO UPDATE SET fingerprint = excluded.fingerprint, day = excluded.day, seen_at = excluded.seen_at",
            self.t("tributary_ledger")
        );
        let statement = tx.prepare_cached(&sql).await.map_err(pg)?;
        tx.execute(&statement, &[&source, &keys, &fingerprints, &days, &seen]).await.map_err(pg)?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl LedgerStore for PgStore {
    async fn ledger_range(&self, source: &str, from: &str, to: &str) -> Result<Vec<LedgerEntry>, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let sql = format!(
            "SELECT key, fingerprint, day, seen_at FROM {} WHERE source = $1 AND day >= $2 AND day <= $3",
            self.t("tributary_ledger")
        );
        let rows = client.query(&sql, &[&source, &from, &to]).await.map_err(pg)?;
        Ok(rows.iter().map(|r| LedgerEntry { key: r.get(0), fingerprint: r.get(1), day: r.get(2), seen_at: r.get(3) }).collect())
    }

    async fn ledger_known(&self, source: &str, keys: &[String]) -> Result<Vec<String>, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let sql = format!("SELECT key FROM {} WHERE source = $1 AND key = ANY($2)", self.t("tributary_ledger"));
        let rows = client.query(&sql, &[&source, &keys]).await.map_err(pg)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn prune_ledger(&self, source: &str, before_day: &str) -> Result<u64, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let sql = format!("DELETE FROM {} WHERE source = $1 AND day < $2", self.t("tributary_ledger"));
        client.execute(&sql, &[&source, &before_day]).await.map_err(pg)
    }

    async fn parked(&self, source: &str) -> Result<Vec<Parked>, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let sql = format!(
            "SELECT key, event_id, event_type, reason, body, parked_at FROM {} WHERE source = $1 ORDER BY parked_at, key",
            self.t("tributary_parked")
        );
        let rows = client.query(&sql, &[&source]).await.map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| Parked {
                key: r.get(0),
                event_id: r.get(1),
                event_type: r.get(2),
                reason: r.get(3),
                body: r.get(4),
                parked_at: r.get(5),
            })
            .collect())
    }

    async fn parked_count(&self, source: &str) -> Result<u64, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let sql = format!("SELECT count(*) FROM {} WHERE source = $1", self.t("tributary_parked"));
        Ok(client.query_one(&sql, &[&source]).await.map_err(pg)?.get::<_, i64>(0) as u64)
    }
}

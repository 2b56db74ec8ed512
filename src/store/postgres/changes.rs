//! The change log read in commit order: `(xid8, id)` below
//! `pg_snapshot_xmin(pg_current_snapshot())`, and purged behind the
//! slowest reader.

use super::{PgStore, pg, pg_other};
use crate::store::{Change, ChangeCursor, ChangePage, StoreError, change_id, raw_json};

/// The columns [`read_change`] reads, of `tributary_changes AS c`.
pub(super) const CHANGE_COLUMNS: &str =
    "c.id, c.xid::text AS xid_text, c.source, c.object, c.object_id, c.account, c.op, c.type, c.data::text,
    c.previous_attributes::text, c.upstream_event_id, (extract(epoch FROM c.committed_at) * 1000000)::int8";

/// A change from [`CHANGE_COLUMNS`] starting at column `at`.
pub(super) fn read_change(row: &tokio_postgres::Row, at: usize) -> Result<Change, StoreError> {
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
pub(super) fn micros_timestamp(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros).map(crate::store::timestamp).unwrap_or_default()
}

impl PgStore {
    /// Changes after `cursor` in commit order, below the oldest running
    /// transaction.
    pub(super) async fn change_page(&self, cursor: ChangeCursor, limit: usize) -> Result<ChangePage, StoreError> {
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

    pub(super) async fn purge(&self, cutoff: &str, through: ChangeCursor, limit: usize) -> Result<u64, StoreError> {
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
}

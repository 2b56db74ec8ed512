//! The change log read in commit order (one writer: id order is commit
//! order), and purged behind the slowest reader.

use rusqlite::params;

use super::SqliteStore;
use crate::store::{Change, ChangeCursor, ChangePage, StoreError, change_id, raw_json};

/// The columns [`read_change`] reads, of `tributary_changes AS c`.
pub(super) const CHANGE_COLUMNS: &str =
    "c.id, c.source, c.object, c.object_id, c.account, c.op, c.type, c.data, c.previous_attributes, c.upstream_event_id, c.committed_at";

/// A change from [`CHANGE_COLUMNS`] starting at column `at`.
pub(super) fn read_change(row: &rusqlite::Row, at: usize) -> Result<Change, StoreError> {
    let seq: i64 = row.get(at)?;
    Ok(Change {
        id: change_id(seq),
        seq,
        cursor: ChangeCursor { xid: 0, seq },
        source: row.get(at + 1)?,
        object: row.get(at + 2)?,
        object_id: row.get(at + 3)?,
        account: row.get(at + 4)?,
        op: row.get(at + 5)?,
        kind: row.get(at + 6)?,
        data: raw_json("tributary_changes", seq, row.get(at + 7)?)?,
        previous_attributes: raw_json("tributary_changes", seq, row.get(at + 8)?)?,
        upstream_event_id: row.get(at + 9)?,
        committed_at: row.get(at + 10)?,
    })
}

impl SqliteStore {
    /// Changes after `cursor`: SQLite has one writer, so id order is commit
    /// order.
    pub(super) async fn change_page(&self, cursor: ChangeCursor, limit: usize) -> Result<ChangePage, StoreError> {
        self.read(move |conn| {
            let mut stmt =
                conn.prepare_cached(&format!("SELECT {CHANGE_COLUMNS} FROM tributary_changes AS c WHERE id > ?1 ORDER BY id LIMIT ?2"))?;
            let mut rows = stmt.query(params![cursor.seq, limit as i64])?;
            let mut changes = Vec::new();
            while let Some(row) = rows.next()? {
                changes.push(read_change(row, 0)?);
            }
            let next = changes.last().map(|c| c.cursor).unwrap_or(cursor);
            Ok(ChangePage { changes, next })
        })
        .await
    }

    pub(super) async fn purge(&self, cutoff: &str, through: ChangeCursor, limit: usize) -> Result<u64, StoreError> {
        let cutoff = cutoff.to_string();
        Self::with(&self.bookkeeping, move |conn| {
            let deleted = conn.execute(
                "DELETE FROM tributary_changes WHERE id IN
                 (SELECT id FROM tributary_changes WHERE id <= ?1 AND committed_at < ?2 ORDER BY id LIMIT ?3)",
                params![through.seq, cutoff, limit as i64],
            )?;
            Ok(deleted as u64)
        })
        .await
    }
}

//! Operators' requests, dead letters and filtered change-log reads on
//! SQLite: writes on the bookkeeping connection (beside delivery's cursor
//! writes, which it orders), reads on the reader.

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::watch;

use super::changes::{CHANGE_COLUMNS, read_change};
use super::{SqliteStore, immediate};
use crate::store::controls::{
    Backlog, ChangeFilter, Control, ControlStore, Redriven, SinkPosition, StoredDeadLetter, Target, dead_letter_id,
};
use crate::store::{Change, ChangeCursor, StoreError, timestamp};

fn now() -> String {
    timestamp(chrono::Utc::now())
}

/// Make sure the control row exists, so the update after it has a row.
fn ensure_row(conn: &Connection, target: Target, name: &str) -> Result<(), StoreError> {
    conn.prepare_cached("INSERT INTO tributary_controls (kind, name, updated_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING")?
        .execute(params![target.as_str(), name, now()])?;
    Ok(())
}

const DEAD_LETTER_COLUMNS: &str = "id, change_id, error, attempts, envelope, created_at, redrive_requested_at IS NOT NULL";

fn read_dead_letter(row: &rusqlite::Row) -> rusqlite::Result<StoredDeadLetter> {
    let id: i64 = row.get(0)?;
    Ok(StoredDeadLetter {
        id: dead_letter_id(id),
        row: id,
        change_id: row.get(1)?,
        error: row.get(2)?,
        attempts: row.get(3)?,
        envelope: row.get(4)?,
        created_at: row.get(5)?,
        redrive_requested: row.get(6)?,
    })
}

impl SqliteStore {
    fn bump_controls(&self) {
        self.controls.send_modify(|n| *n += 1);
    }

    async fn dead_letters_where(
        &self,
        sink: &str,
        condition: &'static str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<StoredDeadLetter>, StoreError> {
        let sink = sink.to_string();
        self.read(move |conn| {
            let sql = format!(
                "SELECT {DEAD_LETTER_COLUMNS} FROM tributary_dead_letters WHERE sink = ?1 AND id > ?2 {condition} ORDER BY id LIMIT ?3"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params![sink, after, limit as i64], read_dead_letter)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }
}

#[async_trait::async_trait]
impl ControlStore for SqliteStore {
    async fn controls(&self) -> Result<Vec<Control>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached("SELECT kind, name, paused, rewind_to, redrives FROM tributary_controls")?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, bool>(2)?, r.get::<_, Option<String>>(3)?, r.get(4)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (kind, name, paused, rewind_to, redrives) = row?;
                let Some(target) = Target::parse(&kind) else { continue };
                out.push(Control { target, name, paused, rewind_to: rewind_to.as_deref().and_then(ChangeCursor::parse), redrives });
            }
            Ok(out)
        })
        .await
    }

    async fn set_paused(&self, target: Target, name: &str, paused: bool) -> Result<(), StoreError> {
        let name = name.to_string();
        Self::with(&self.bookkeeping, move |conn| {
            immediate(conn, || {
                ensure_row(conn, target, &name)?;
                conn.execute(
                    "UPDATE tributary_controls SET paused = ?3, updated_at = ?4 WHERE kind = ?1 AND name = ?2",
                    params![target.as_str(), name, paused, now()],
                )?;
                Ok(())
            })
        })
        .await?;
        self.bump_controls();
        Ok(())
    }

    async fn request_rewind(&self, sink: &str, to: ChangeCursor) -> Result<(), StoreError> {
        let sink = sink.to_string();
        Self::with(&self.bookkeeping, move |conn| {
            immediate(conn, || {
                ensure_row(conn, Target::Sink, &sink)?;
                conn.execute(
                    "UPDATE tributary_controls SET rewind_to = ?2, updated_at = ?3 WHERE kind = 'sink' AND name = ?1",
                    params![sink, to.to_string(), now()],
                )?;
                Ok(())
            })
        })
        .await?;
        self.bump_controls();
        Ok(())
    }

    async fn apply_rewind(&self, sink: &str, to: ChangeCursor) -> Result<bool, StoreError> {
        let sink = sink.to_string();
        let applied = Self::with(&self.bookkeeping, move |conn| {
            immediate(conn, || {
                let cleared = conn.execute(
                    "UPDATE tributary_controls SET rewind_to = NULL, updated_at = ?3 WHERE kind = 'sink' AND name = ?1 AND rewind_to = ?2",
                    params![sink, to.to_string(), now()],
                )?;
                if cleared == 0 {
                    return Ok(false);
                }
                let epoch: i64 = conn
                    .query_row("SELECT epoch FROM tributary_sink_cursors WHERE sink = ?1", [&sink], |r| r.get(0))
                    .optional()?
                    .unwrap_or(0);
                conn.execute(
                    "INSERT INTO tributary_sink_cursors (sink, cursor, updated_at, epoch) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (sink) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at, epoch = excluded.epoch",
                    params![sink, to.to_string(), now(), epoch + 1],
                )?;
                Ok(true)
            })
        })
        .await?;
        self.bump_controls();
        Ok(applied)
    }

    async fn sink_position(&self, sink: &str) -> Result<SinkPosition, StoreError> {
        let sink = sink.to_string();
        // the bookkeeping connection: the cursor as delivery last wrote it
        Self::with(&self.bookkeeping, move |conn| {
            let row: Option<(String, i64)> = conn
                .query_row("SELECT cursor, epoch FROM tributary_sink_cursors WHERE sink = ?1", [&sink], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            Ok(row
                .map(|(cursor, epoch)| SinkPosition { cursor: ChangeCursor::parse(&cursor).unwrap_or(ChangeCursor::START), epoch })
                .unwrap_or_default())
        })
        .await
    }

    async fn change_cursor(&self, seq: i64) -> Result<Option<ChangeCursor>, StoreError> {
        self.read(move |conn| {
            let found = conn.query_row("SELECT 1 FROM tributary_changes WHERE id = ?1", [seq], |_| Ok(())).optional()?;
            Ok(found.map(|()| ChangeCursor { xid: 0, seq }))
        })
        .await
    }

    async fn first_change_since(&self, at: &str) -> Result<Option<ChangeCursor>, StoreError> {
        let at = at.to_string();
        self.read(move |conn| {
            let seq: Option<i64> = conn.query_row("SELECT min(id) FROM tributary_changes WHERE committed_at >= ?1", [&at], |r| r.get(0))?;
            Ok(seq.map(|seq| ChangeCursor { xid: 0, seq }))
        })
        .await
    }

    async fn dead_letters(&self, sink: &str, after: i64, limit: usize) -> Result<Vec<StoredDeadLetter>, StoreError> {
        self.dead_letters_where(sink, "", after, limit).await
    }

    async fn request_redrive(&self, sink: &str, rows: Option<&[i64]>) -> Result<u64, StoreError> {
        let (sink, rows) = (sink.to_string(), rows.map(<[i64]>::to_vec));
        let marked = Self::with(&self.bookkeeping, move |conn| {
            immediate(conn, || {
                let at = now();
                let marked = match rows {
                    None => {
                        conn.execute("UPDATE tributary_dead_letters SET redrive_requested_at = ?2 WHERE sink = ?1", params![sink, at])?
                    }
                    Some(rows) => {
                        let mut stmt =
                            conn.prepare_cached("UPDATE tributary_dead_letters SET redrive_requested_at = ?3 WHERE sink = ?1 AND id = ?2")?;
                        let mut marked = 0;
                        for row in rows {
                            marked += stmt.execute(params![sink, row, at])?;
                        }
                        marked
                    }
                };
                ensure_row(conn, Target::Sink, &sink)?;
                conn.execute(
                    "UPDATE tributary_controls SET redrives = redrives + 1, updated_at = ?2 WHERE kind = 'sink' AND name = ?1",
                    params![sink, at],
                )?;
                Ok(marked as u64)
            })
        })
        .await?;
        self.bump_controls();
        Ok(marked)
    }

    async fn redrive_requested(&self, sink: &str, limit: usize) -> Result<Vec<StoredDeadLetter>, StoreError> {
        self.dead_letters_where(sink, "AND redrive_requested_at IS NOT NULL", 0, limit).await
    }

    async fn finish_redrive(&self, sink: &str, row: i64, outcome: Redriven) -> Result<(), StoreError> {
        let sink = sink.to_string();
        Self::with(&self.bookkeeping, move |conn| {
            match outcome {
                Redriven::Delivered => {
                    conn.execute("DELETE FROM tributary_dead_letters WHERE sink = ?1 AND id = ?2", params![sink, row])?
                }
                Redriven::Failed { error, attempts } => conn.execute(
                    "UPDATE tributary_dead_letters SET error = ?3, attempts = attempts + ?4, redrive_requested_at = NULL
                     WHERE sink = ?1 AND id = ?2",
                    params![sink, row, error, attempts],
                )?,
            };
            Ok(())
        })
        .await
    }

    async fn discard_dead_letter(&self, sink: &str, row: i64) -> Result<bool, StoreError> {
        let sink = sink.to_string();
        Self::with(&self.bookkeeping, move |conn| {
            Ok(conn.execute("DELETE FROM tributary_dead_letters WHERE sink = ?1 AND id = ?2", params![sink, row])? > 0)
        })
        .await
    }

    async fn backlog(&self, cursor: ChangeCursor, max: usize) -> Result<Backlog, StoreError> {
        self.read(move |conn| {
            let count: i64 = conn.query_row(
                "SELECT count(*) FROM (SELECT 1 FROM tributary_changes WHERE id > ?1 LIMIT ?2)",
                params![cursor.seq, max as i64],
                |r| r.get(0),
            )?;
            let oldest: Option<String> = conn
                .query_row("SELECT committed_at FROM tributary_changes WHERE id > ?1 ORDER BY id LIMIT 1", [cursor.seq], |r| r.get(0))
                .optional()?;
            Ok(Backlog { count: count as u64, oldest_committed_at: oldest })
        })
        .await
    }

    async fn find_changes(&self, filter: &ChangeFilter, limit: usize) -> Result<Vec<Change>, StoreError> {
        let filter = filter.clone();
        self.read(move |conn| {
            let mut sql = format!("SELECT {CHANGE_COLUMNS} FROM tributary_changes AS c WHERE 1 = 1");
            let mut values: Vec<rusqlite::types::Value> = Vec::new();
            let text = |value: &Option<String>| value.clone().map(rusqlite::types::Value::Text);
            for (column, value) in [
                ("c.source = ?", text(&filter.source)),
                ("c.object = ?", text(&filter.object)),
                ("c.object_id = ?", text(&filter.object_id)),
                ("c.op = ?", text(&filter.op)),
                ("c.type = ?", text(&filter.kind)),
                ("c.committed_at >= ?", text(&filter.since)),
                ("c.committed_at < ?", text(&filter.until)),
                ("c.id < ?", filter.before_seq.map(rusqlite::types::Value::Integer)),
            ] {
                if let Some(value) = value {
                    sql.push_str(" AND ");
                    sql.push_str(column);
                    values.push(value);
                }
            }
            sql.push_str(&format!(" ORDER BY c.id DESC LIMIT {}", limit.min(10_000)));
            let mut stmt = conn.prepare(&sql)?;
            let mut rows = stmt.query(rusqlite::params_from_iter(values))?;
            let mut changes = Vec::new();
            while let Some(row) = rows.next()? {
                changes.push(read_change(row, 0)?);
            }
            Ok(changes)
        })
        .await
    }

    fn controls_changed(&self) -> watch::Receiver<u64> {
        self.controls.subscribe()
    }
}

//! Operators' requests, dead letters and filtered change-log reads on
//! Postgres. A control write notifies every process, so the owner of a
//! source or sink hears it at once.

use tokio::sync::watch;
use tokio_postgres::types::ToSql;

use super::changes::{CHANGE_COLUMNS, micros_timestamp, read_change};
use super::notify::controls_channel;
use super::{PgStore, pg, pg_other};
use crate::store::controls::{
    Backlog, ChangeFilter, Control, ControlStore, Redriven, SinkPosition, StoredDeadLetter, Target, dead_letter_id,
};
use crate::store::{Change, ChangeCursor, StoreError};

const DEAD_LETTER_COLUMNS: &str = "id, change_id, error, attempts::int8, envelope::text,
    (extract(epoch FROM created_at) * 1000000)::int8, redrive_requested_at IS NOT NULL";

fn read_dead_letter(row: &tokio_postgres::Row) -> StoredDeadLetter {
    StoredDeadLetter {
        id: dead_letter_id(row.get(0)),
        row: row.get(0),
        change_id: row.get(1),
        error: row.get(2),
        attempts: row.get(3),
        envelope: row.get(4),
        created_at: micros_timestamp(row.get(5)),
        redrive_requested: row.get(6),
    }
}

fn parse_xid(text: &str) -> Result<u64, StoreError> {
    text.parse().map_err(|_| pg_other(format!("bad xid8 '{text}'")))
}

impl PgStore {
    /// Commit a change to the control rows and tell every process (this one
    /// at once, the others by NOTIFY).
    async fn announce(&self, tx: deadpool_postgres::Transaction<'_>) -> Result<(), StoreError> {
        tx.execute("SELECT pg_notify($1, '')", &[&controls_channel(&self.schema)]).await.map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        self.controls.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Run `sql` (a change to a control row) in a transaction that makes
    /// sure the row exists first and notifies every process on commit.
    async fn control_write(&self, target: Target, name: &str, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        let mut client = self.pool.get().await.map_err(pg)?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.execute(
            &format!("INSERT INTO {} (kind, name) VALUES ($1, $2) ON CONFLICT DO NOTHING", self.t("tributary_controls")),
            &[&target.as_str(), &name],
        )
        .await
        .map_err(pg)?;
        let changed = tx.execute(sql, params).await.map_err(pg)?;
        self.announce(tx).await?;
        Ok(changed)
    }

    async fn dead_letters_where(&self, sink: &str, condition: &str, after: i64, limit: usize) -> Result<Vec<StoredDeadLetter>, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let sql = format!(
            "SELECT {DEAD_LETTER_COLUMNS} FROM {} WHERE sink = $1 AND id > $2 {condition} ORDER BY id LIMIT $3",
            self.t("tributary_dead_letters")
        );
        let rows = client.query(&sql, &[&sink, &after, &(limit as i64)]).await.map_err(pg)?;
        Ok(rows.iter().map(read_dead_letter).collect())
    }
}

#[async_trait::async_trait]
impl ControlStore for PgStore {
    async fn controls(&self) -> Result<Vec<Control>, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let sql = format!("SELECT kind, name, paused, rewind_to, redrives FROM {}", self.t("tributary_controls"));
        let rows = client.query(&sql, &[]).await.map_err(pg)?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                Some(Control {
                    target: Target::parse(row.get(0))?,
                    name: row.get(1),
                    paused: row.get(2),
                    rewind_to: row.get::<_, Option<&str>>(3).and_then(ChangeCursor::parse),
                    redrives: row.get(4),
                })
            })
            .collect())
    }

    async fn set_paused(&self, target: Target, name: &str, paused: bool) -> Result<(), StoreError> {
        let sql = format!("UPDATE {} SET paused = $3, updated_at = now() WHERE kind = $1 AND name = $2", self.t("tributary_controls"));
        self.control_write(target, name, &sql, &[&target.as_str(), &name, &paused]).await?;
        Ok(())
    }

    async fn request_rewind(&self, sink: &str, to: ChangeCursor) -> Result<(), StoreError> {
        let sql =
            format!("UPDATE {} SET rewind_to = $2, updated_at = now() WHERE kind = 'sink' AND name = $1", self.t("tributary_controls"));
        self.control_write(Target::Sink, sink, &sql, &[&sink, &to.to_string()]).await?;
        Ok(())
    }

    async fn apply_rewind(&self, sink: &str, to: ChangeCursor) -> Result<bool, StoreError> {
        let mut client = self.pool.get().await.map_err(pg)?;
        let tx = client.transaction().await.map_err(pg)?;
        let cleared = tx
            .execute(
                &format!(
                    "UPDATE {} SET rewind_to = NULL, updated_at = now() WHERE kind = 'sink' AND name = $1 AND rewind_to = $2",
                    self.t("tributary_controls")
                ),
                &[&sink, &to.to_string()],
            )
            .await
            .map_err(pg)?;
        if cleared == 0 {
            return Ok(false);
        }
        tx.execute(
            &format!(
                "INSERT INTO {0} (sink, cursor, updated_at, epoch) VALUES ($1, $2, now(), 1)
                 ON CONFLICT (sink) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at, epoch = {0}.epoch + 1",
                self.t("tributary_sink_cursors")
            ),
            &[&sink, &to.to_string()],
        )
        .await
        .map_err(pg)?;
        self.announce(tx).await?;
        Ok(true)
    }

    async fn sink_position(&self, sink: &str) -> Result<SinkPosition, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let sql = format!("SELECT cursor, epoch FROM {} WHERE sink = $1", self.t("tributary_sink_cursors"));
        let row = client.query_opt(&sql, &[&sink]).await.map_err(pg)?;
        Ok(row
            .map(|r| SinkPosition { cursor: ChangeCursor::parse(r.get(0)).unwrap_or(ChangeCursor::START), epoch: r.get(1) })
            .unwrap_or_default())
    }

    async fn change_cursor(&self, seq: i64) -> Result<Option<ChangeCursor>, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let sql = format!("SELECT xid::text FROM {} WHERE id = $1", self.t("tributary_changes"));
        let row = client.query_opt(&sql, &[&seq]).await.map_err(pg)?;
        row.map(|r| Ok(ChangeCursor { xid: parse_xid(r.get(0))?, seq })).transpose()
    }

    async fn first_change_since(&self, at: &str) -> Result<Option<ChangeCursor>, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let sql = format!(
            "SELECT xid::text AS xid_text, id FROM {} WHERE committed_at >= $1::text::timestamptz ORDER BY xid, id LIMIT 1",
            self.t("tributary_changes")
        );
        let row = client.query_opt(&sql, &[&at]).await.map_err(pg)?;
        row.map(|r| Ok(ChangeCursor { xid: parse_xid(r.get(0))?, seq: r.get(1) })).transpose()
    }

    async fn dead_letters(&self, sink: &str, after: i64, limit: usize) -> Result<Vec<StoredDeadLetter>, StoreError> {
        self.dead_letters_where(sink, "", after, limit).await
    }

    async fn request_redrive(&self, sink: &str, rows: Option<&[i64]>) -> Result<u64, StoreError> {
        let mut client = self.pool.get().await.map_err(pg)?;
        let tx = client.transaction().await.map_err(pg)?;
        let letters = self.t("tributary_dead_letters");
        let marked = match rows {
            None => tx.execute(&format!("UPDATE {letters} SET redrive_requested_at = now() WHERE sink = $1"), &[&sink]).await,
            Some(rows) => {
                let rows = rows.to_vec();
                tx.execute(&format!("UPDATE {letters} SET redrive_requested_at = now() WHERE sink = $1 AND id = ANY($2)"), &[&sink, &rows])
                    .await
            }
        }
        .map_err(pg)?;
        let controls = self.t("tributary_controls");
        tx.execute(
            &format!(
                "INSERT INTO {controls} (kind, name, redrives) VALUES ('sink', $1, 1)
                 ON CONFLICT (kind, name) DO UPDATE SET redrives = {controls}.redrives + 1, updated_at = now()"
            ),
            &[&sink],
        )
        .await
        .map_err(pg)?;
        self.announce(tx).await?;
        Ok(marked)
    }

    async fn redrive_requested(&self, sink: &str, limit: usize) -> Result<Vec<StoredDeadLetter>, StoreError> {
        self.dead_letters_where(sink, "AND redrive_requested_at IS NOT NULL", 0, limit).await
    }

    async fn finish_redrive(&self, sink: &str, row: i64, outcome: Redriven) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let letters = self.t("tributary_dead_letters");
        match outcome {
            Redriven::Delivered => client.execute(&format!("DELETE FROM {letters} WHERE sink = $1 AND id = $2"), &[&sink, &row]).await,
            Redriven::Failed { error, attempts } => client
                .execute(
                    &format!(
                        "UPDATE {letters} SET error = $3, attempts = attempts + $4, redrive_requested_at = NULL WHERE sink = $1 AND id = $2"
                    ),
                    &[&sink, &row, &error, &(attempts as i32)],
                )
                .await,
        }
        .map_err(pg)?;
        Ok(())
    }

    async fn discard_dead_letter(&self, sink: &str, row: i64) -> Result<bool, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let sql = format!("DELETE FROM {} WHERE sink = $1 AND id = $2", self.t("tributary_dead_letters"));
        Ok(client.execute(&sql, &[&sink, &row]).await.map_err(pg)? > 0)
    }

    async fn backlog(&self, cursor: ChangeCursor, max: usize) -> Result<Backlog, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        // what a reader can see: below the oldest running transaction
        let visible = "(xid, id) > ($1::text::xid8, $2) AND xid < pg_snapshot_xmin(pg_current_snapshot())";
        let changes = self.t("tributary_changes");
        let count = format!("SELECT count(*) FROM (SELECT 1 FROM {changes} WHERE {visible} LIMIT $3) AS b");
        let row = client.query_one(&count, &[&cursor.xid.to_string(), &cursor.seq, &(max as i64)]).await.map_err(pg)?;
        let oldest =
            format!("SELECT (extract(epoch FROM committed_at) * 1000000)::int8 FROM {changes} WHERE {visible} ORDER BY xid, id LIMIT 1");
        let first = client.query_opt(&oldest, &[&cursor.xid.to_string(), &cursor.seq]).await.map_err(pg)?;
        Ok(Backlog { count: row.get::<_, i64>(0) as u64, oldest_committed_at: first.map(|r| micros_timestamp(r.get(0))) })
    }

    async fn find_changes(&self, filter: &ChangeFilter, limit: usize) -> Result<Vec<Change>, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let mut sql = format!("SELECT {CHANGE_COLUMNS} FROM {} AS c WHERE true", self.t("tributary_changes"));
        let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
        let conditions: [(&str, Option<Box<dyn ToSql + Sync + Send>>); 8] = [
            ("c.source = $", filter.source.clone().map(|v| Box::new(v) as _)),
            ("c.object = $", filter.object.clone().map(|v| Box::new(v) as _)),
            ("c.object_id = $", filter.object_id.clone().map(|v| Box::new(v) as _)),
            ("c.op = $", filter.op.clone().map(|v| Box::new(v) as _)),
            ("c.type = $", filter.kind.clone().map(|v| Box::new(v) as _)),
            ("c.committed_at >= $", filter.since.clone().map(|v| Box::new(v) as _)),
            ("c.committed_at < $", filter.until.clone().map(|v| Box::new(v) as _)),
            ("c.id < $", filter.before_seq.map(|v| Box::new(v) as _)),
        ];
        for (condition, value) in conditions {
            let Some(value) = value else { continue };
            params.push(value);
            let cast = if condition.starts_with("c.committed_at") { "::text::timestamptz" } else { "" };
            sql.push_str(&format!(" AND {condition}{}{cast}", params.len()));
        }
        sql.push_str(&format!(" ORDER BY c.id DESC LIMIT {}", limit.min(10_000)));
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
        let rows = client.query(&sql, &refs).await.map_err(pg)?;
        rows.iter().map(|row| read_change(row, 0)).collect()
    }

    fn controls_changed(&self) -> watch::Receiver<u64> {
        self.controls.subscribe()
    }
}

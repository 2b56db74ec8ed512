//! The built-in pull queues on SQLite: small transactions on the
//! bookkeeping connection, beside the writer thread.

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::watch;

use super::changes::{CHANGE_COLUMNS, read_change};
use super::{SqliteStore, immediate, save_cursor};
use crate::store::queues::{
    Ack, App, AppKind, DEPTH_COUNT_MAX, Entry, PullOutcome, Pulled, Queue, QueueDepth, QueueState, QueueStore, Subscription,
};
use crate::store::{ChangeCursor, StoreError, timestamp};

fn now() -> String {
    timestamp(chrono::Utc::now())
}

fn read_app(row: &rusqlite::Row) -> rusqlite::Result<App> {
    let kind: String = row.get(2)?;
    Ok(App {
        id: row.get(0)?,
        name: row.get(1)?,
        kind: AppKind::parse(&kind).unwrap_or(AppKind::Public),
        account: row.get(3)?,
        created_at: row.get(4)?,
        revoked: row.get::<_, Option<String>>(5)?.is_some(),
    })
}

const APP_COLUMNS: &str = "id, name, kind, account, created_at, revoked_at";
const SUBSCRIPTION_COLUMNS: &str = "code, queue_id, event_type, account, start_at, replay, created_at";

fn read_subscription(row: &rusqlite::Row) -> rusqlite::Result<Subscription> {
    Ok(Subscription {
        code: row.get(0)?,
        queue_id: row.get(1)?,
        event_type: row.get(2)?,
        account: row.get(3)?,
        start_at: row.get(4)?,
        replay: row.get(5)?,
        created_at: row.get(6)?,
    })
}

/// The id of an app's queue.
fn queue_id(conn: &Connection, app_id: &str, code: &str) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT id FROM tributary_queues WHERE app_id = ?1 AND code = ?2")?
        .query_row(params![app_id, code], |r| r.get(0))
        .optional()?)
}

fn load_state(conn: &Connection, app_id: &str, code: &str) -> Result<Option<QueueState>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, acked_through, batches, pending_batch, pending_nonce, pending_through, acked_batch, acked_nonce, dropped
         FROM tributary_queues WHERE app_id = ?1 AND code = ?2",
    )?;
    let state = stmt
        .query_row(params![app_id, code], |r| {
            let pending = match (r.get::<_, Option<i64>>(3)?, r.get::<_, Option<String>>(4)?, r.get::<_, Option<i64>>(5)?) {
                (Some(batch), Some(nonce), Some(through)) => Some((Ack { batch, nonce }, through)),
                _ => None,
            };
            let acked = match (r.get::<_, Option<i64>>(6)?, r.get::<_, Option<String>>(7)?) {
                (Some(batch), Some(nonce)) => Some(Ack { batch, nonce }),
                _ => None,
            };
            Ok(QueueState { id: r.get(0)?, acked_through: r.get(1)?, batches: r.get(2)?, pending, acked, dropped: r.get(8)? })
        })
        .optional()?;
    Ok(state)
}

fn save_state(conn: &Connection, state: &QueueState) -> Result<(), StoreError> {
    let (pending_batch, pending_nonce, pending_through) = match &state.pending {
        Some((ack, through)) => (Some(ack.batch), Some(ack.nonce.as_str()), Some(*through)),
        None => (None, None, None),
    };
    conn.prepare_cached(
        "UPDATE tributary_queues SET acked_through = ?2, batches = ?3, pending_batch = ?4, pending_nonce = ?5, pending_through = ?6,
         acked_batch = ?7, acked_nonce = ?8, dropped = ?9 WHERE id = ?1",
    )?
    .execute(params![
        state.id,
        state.acked_through,
        state.batches,
        pending_batch,
        pending_nonce,
        pending_through,
        state.acked.as_ref().map(|a| a.batch),
        state.acked.as_ref().map(|a| a.nonce.as_str()),
        state.dropped
    ])?;
    Ok(())
}

#[async_trait::async_trait]
impl QueueStore for SqliteStore {
    async fn create_app(&self, app: &App, token_hash: &str) -> Result<(), StoreError> {
        let (app, token_hash) = (app.clone(), token_hash.to_string());
        Self::with(&self.bookkeeping, move |conn| {
            conn.execute(
                "INSERT INTO tributary_apps (id, name, kind, account, token_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![app.id, app.name, app.kind.as_str(), app.account, token_hash, app.created_at],
            )?;
            Ok(())
        })
        .await
    }

    async fn apps(&self) -> Result<Vec<App>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!("SELECT {APP_COLUMNS} FROM tributary_apps ORDER BY created_at, id"))?;
            let apps = stmt.query_map([], read_app)?.collect::<Result<Vec<_>, _>>()?;
            Ok(apps)
        })
        .await
    }

    async fn app_by_token(&self, token_hash: &str) -> Result<Option<App>, StoreError> {
        let token_hash = token_hash.to_string();
        self.read(move |conn| {
            let mut stmt =
                conn.prepare_cached(&format!("SELECT {APP_COLUMNS} FROM tributary_apps WHERE token_hash = ?1 AND revoked_at IS NULL"))?;
            Ok(stmt.query_row([token_hash], read_app).optional()?)
        })
        .await
    }

    async fn revoke_app(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_string();
        Self::with(&self.bookkeeping, move |conn| {
            let found =
                conn.execute("UPDATE tributary_apps SET revoked_at = coalesce(revoked_at, ?2) WHERE id = ?1", params![id, now()])?;
            Ok(found > 0)
        })
        .await
    }

    async fn grant(&self, app_id: &str, account: &str) -> Result<bool, StoreError> {
        let (app_id, account) = (app_id.to_string(), account.to_string());
        Self::with(&self.bookkeeping, move |conn| {
            let added = conn.execute(
                "INSERT INTO tributary_app_grants (app_id, account, created_at) SELECT id, ?2, ?3 FROM tributary_apps WHERE id = ?1
                 ON CONFLICT DO NOTHING",
                params![app_id, account, now()],
            )?;
            let exists: bool = conn.query_row("SELECT EXISTS (SELECT 1 FROM tributary_apps WHERE id = ?1)", [&app_id], |r| r.get(0))?;
            Ok(added > 0 || exists)
        })
        .await
    }

    async fn granted(&self, app_id: &str, account: &str) -> Result<bool, StoreError> {
        let (app_id, account) = (app_id.to_string(), account.to_string());
        self.read(move |conn| {
            let granted = conn
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM tributary_app_grants WHERE app_id = ?1 AND account = ?2)")?
                .query_row(params![app_id, account], |r| r.get(0))?;
            Ok(granted)
        })
        .await
    }

    async fn create_queue(&self, app_id: &str, code: &str, name: &str, max: usize) -> Result<Option<Queue>, StoreError> {
        let (app_id, code, name) = (app_id.to_string(), code.to_string(), name.to_string());
        Self::with(&self.bookkeeping, move |conn| {
            immediate(conn, || {
                let count: i64 = conn.query_row("SELECT COUNT(*) FROM tributary_queues WHERE app_id = ?1", [&app_id], |r| r.get(0))?;
                if count as usize >= max {
                    return Ok(None);
                }
                let created_at = now();
                conn.execute(
                    "INSERT INTO tributary_queues (code, app_id, name, created_at) VALUES (?1, ?2, ?3, ?4)",
                    params![code, app_id, name, created_at],
                )?;
                Ok(Some(Queue { code, name, created_at }))
            })
        })
        .await
    }

    async fn queues(&self, app_id: &str) -> Result<Vec<Queue>, StoreError> {
        let app_id = app_id.to_string();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached("SELECT code, name, created_at FROM tributary_queues WHERE app_id = ?1 ORDER BY id")?;
            let queues = stmt
                .query_map([app_id], |r| Ok(Queue { code: r.get(0)?, name: r.get(1)?, created_at: r.get(2)? }))?
                .collect::<Result<_, _>>()?;
            Ok(queues)
        })
        .await
    }

    async fn delete_queue(&self, app_id: &str, code: &str) -> Result<bool, StoreError> {
        let (app_id, code) = (app_id.to_string(), code.to_string());
        Self::with(&self.bookkeeping, move |conn| {
            immediate(conn, || {
                let Some(id) = queue_id(conn, &app_id, &code)? else { return Ok(false) };
                conn.execute("DELETE FROM tributary_subscriptions WHERE queue_id = ?1", [id])?;
                conn.execute("DELETE FROM tributary_queue_events WHERE queue_id = ?1", [id])?;
                conn.execute("DELETE FROM tributary_queues WHERE id = ?1", [id])?;
                Ok(true)
            })
        })
        .await
    }

    async fn subscribe(&self, app_id: &str, queue: &str, subscription: &Subscription) -> Result<Option<Subscription>, StoreError> {
        let (app_id, queue, mut subscription) = (app_id.to_string(), queue.to_string(), subscription.clone());
        Self::with(&self.bookkeeping, move |conn| {
            immediate(conn, || {
                let Some(id) = queue_id(conn, &app_id, &queue)? else { return Ok(None) };
                subscription.queue_id = id;
                let s = &subscription;
                conn.execute(
                    &format!("INSERT INTO tributary_subscriptions ({SUBSCRIPTION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
                    params![s.code, s.queue_id, s.event_type, s.account, s.start_at, s.replay, s.created_at],
                )?;
                Ok(Some(subscription))
            })
        })
        .await
    }

    async fn subscriptions(&self, app_id: &str, queue: &str) -> Result<Option<Vec<Subscription>>, StoreError> {
        let (app_id, queue) = (app_id.to_string(), queue.to_string());
        self.read(move |conn| {
            let Some(id) = queue_id(conn, &app_id, &queue)? else { return Ok(None) };
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {SUBSCRIPTION_COLUMNS} FROM tributary_subscriptions WHERE queue_id = ?1 ORDER BY rowid"
            ))?;
            Ok(Some(stmt.query_map([id], read_subscription)?.collect::<Result<_, _>>()?))
        })
        .await
    }

    async fn unsubscribe(&self, app_id: &str, queue: &str, code: &str) -> Result<bool, StoreError> {
        let (app_id, queue, code) = (app_id.to_string(), queue.to_string(), code.to_string());
        Self::with(&self.bookkeeping, move |conn| {
            let Some(id) = queue_id(conn, &app_id, &queue)? else { return Ok(false) };
            Ok(conn.execute("DELETE FROM tributary_subscriptions WHERE queue_id = ?1 AND code = ?2", params![id, code])? > 0)
        })
        .await
    }

    async fn all_subscriptions(&self) -> Result<Vec<Subscription>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!("SELECT {SUBSCRIPTION_COLUMNS} FROM tributary_subscriptions ORDER BY rowid"))?;
            Ok(stmt.query_map([], read_subscription)?.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn fan_out(
        &self,
        replays: &[Subscription],
        through: ChangeCursor,
        entries: &[Entry],
        cursor: ChangeCursor,
    ) -> Result<(), StoreError> {
        let (replays, entries) = (replays.to_vec(), entries.to_vec());
        let added = Self::with(&self.bookkeeping, move |conn| {
            immediate(conn, || {
                let mut added = 0;
                for s in &replays {
                    // `substr(type, 1, n) = prefix`, not LIKE: a prefix may hold `%` or `_`
                    let (prefix, exact) = s.type_filter();
                    added += conn.execute(
                        "INSERT OR IGNORE INTO tributary_queue_events (queue_id, change_seq, committed_at)
                         SELECT ?1, id, committed_at FROM tributary_changes
                         WHERE id <= ?2 AND committed_at >= ?3 AND coalesce(account, 'platform') = ?4
                           AND (?5 IS NULL AND substr(type, 1, length(?6)) = ?6 OR type = ?5)
                         ORDER BY id",
                        params![s.queue_id, through.seq, s.start_at, s.account, exact, prefix],
                    )?;
                    conn.execute("UPDATE tributary_subscriptions SET replay = 0 WHERE code = ?1", [&s.code])?;
                }
                let mut insert = conn.prepare_cached(
                    "INSERT OR IGNORE INTO tributary_queue_events (queue_id, change_seq, committed_at) VALUES (?1, ?2, ?3)",
                )?;
                for e in &entries {
                    added += insert.execute(params![e.queue_id, e.change_seq, e.committed_at])?;
                }
                save_cursor(conn, crate::store::queues::FANOUT_READER, 0, cursor, &now())?;
                Ok(added)
            })
        })
        .await?;
        if added > 0 {
            self.queue_events.send_modify(|n| *n += 1);
        }
        Ok(())
    }

    async fn pull(&self, app_id: &str, queue: &str, ack: Option<Ack>, limit: usize, nonce: String) -> Result<PullOutcome, StoreError> {
        let (app_id, queue) = (app_id.to_string(), queue.to_string());
        Self::with(&self.bookkeeping, move |conn| {
            immediate(conn, || {
                let Some(mut state) = load_state(conn, &app_id, &queue)? else { return Ok(PullOutcome::NoQueue) };
                if let Err(outcome) = state.acknowledge(ack.as_ref()) {
                    return Ok(outcome);
                }
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT e.id, {CHANGE_COLUMNS} FROM tributary_queue_events AS e JOIN tributary_changes AS c ON c.id = e.change_seq
                     WHERE e.queue_id = ?1 AND e.id > ?2 ORDER BY e.id LIMIT ?3"
                ))?;
                let mut rows = stmt.query(params![state.id, state.acked_through, limit as i64])?;
                let mut events = Vec::new();
                while let Some(row) = rows.next()? {
                    events.push((row.get::<_, i64>(0)?, read_change(row, 1)?));
                }
                let ack = state.hand_out(&events, nonce);
                let dropped = std::mem::take(&mut state.dropped);
                save_state(conn, &state)?;
                Ok(PullOutcome::Pulled(Pulled { events, ack, dropped }))
            })
        })
        .await
    }

    async fn purge_queue_events(&self, cutoff: &str, limit: usize) -> Result<(u64, Vec<(String, i64)>), StoreError> {
        let cutoff = cutoff.to_string();
        Self::with(&self.bookkeeping, move |conn| {
            immediate(conn, || {
                conn.execute(
                    "CREATE TEMP TABLE IF NOT EXISTS purged_queue_events (id INTEGER PRIMARY KEY, queue_id INTEGER NOT NULL)",
                    [],
                )?;
                conn.execute("DELETE FROM purged_queue_events", [])?;
                conn.execute(
                    "INSERT INTO purged_queue_events (id, queue_id)
                     SELECT id, queue_id FROM tributary_queue_events WHERE committed_at < ?1 ORDER BY committed_at LIMIT ?2",
                    params![cutoff, limit as i64],
                )?;
                // what a consumer never acknowledged is dropped: count it
                let mut stmt = conn.prepare(
                    "SELECT q.code, q.id, COUNT(*) FROM purged_queue_events AS p JOIN tributary_queues AS q ON q.id = p.queue_id
                     WHERE p.id > q.acked_through GROUP BY q.id",
                )?;
                let dropped: Vec<(String, i64, i64)> =
                    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<Result<_, _>>()?;
                for (_, id, count) in &dropped {
                    conn.execute("UPDATE tributary_queues SET dropped = dropped + ?2 WHERE id = ?1", params![id, count])?;
                }
                let deleted =
                    conn.execute("DELETE FROM tributary_queue_events WHERE id IN (SELECT id FROM purged_queue_events)", [])? as u64;
                Ok((deleted, dropped.into_iter().map(|(code, _, count)| (code, count)).collect()))
            })
        })
        .await
    }

    async fn queue_depths(&self) -> Result<Vec<QueueDepth>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT q.id, q.app_id, q.code, q.name, q.created_at, q.dropped,
                    (SELECT count(*) FROM (SELECT 1 FROM tributary_queue_events AS e WHERE e.queue_id = q.id AND e.id > q.acked_through LIMIT ?1)),
                    (SELECT e.committed_at FROM tributary_queue_events AS e WHERE e.queue_id = q.id AND e.id > q.acked_through ORDER BY e.id LIMIT 1)
                 FROM tributary_queues AS q ORDER BY q.app_id, q.id",
            )?;
            let rows = stmt.query_map([DEPTH_COUNT_MAX], |r| {
                Ok(QueueDepth {
                    id: r.get(0)?,
                    app_id: r.get(1)?,
                    code: r.get(2)?,
                    name: r.get(3)?,
                    created_at: r.get(4)?,
                    dropped: r.get(5)?,
                    depth: r.get::<_, i64>(6)? as u64,
                    oldest_unacked_at: r.get(7)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn all_grants(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached("SELECT app_id, account FROM tributary_app_grants ORDER BY app_id, account")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    fn queue_events(&self) -> watch::Receiver<u64> {
        self.queue_events.subscribe()
    }
}

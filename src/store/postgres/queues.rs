//! The built-in pull queues on Postgres. A pull locks its queue's row
//! (`FOR UPDATE`), so concurrent pulls of one queue take turns while pulls
//! of different queues run side by side. Retention deletes in batches by
//! the `committed_at` index.

use tokio::sync::watch;
use tokio_postgres::Row;

use super::changes::{CHANGE_COLUMNS, micros_timestamp, read_change};
use super::notify::queue_channel;
use super::{PgStore, pg};
use crate::store::queues::{
    Ack, App, AppKind, DEPTH_COUNT_MAX, Entry, FANOUT_READER, PullOutcome, Pulled, Queue, QueueDepth, QueueState, QueueStore, Subscription,
};
use crate::store::{ChangeCursor, StoreError};

const APP_COLUMNS: &str = "id, name, kind, account, (extract(epoch FROM created_at) * 1000000)::int8, revoked_at IS NOT NULL";
const SUBSCRIPTION_COLUMNS: &str = "code, queue_id, event_type, account, (extract(epoch FROM start_at) * 1000000)::int8, replay, \
     (extract(epoch FROM created_at) * 1000000)::int8";

fn read_app(row: &Row) -> App {
    App {
        id: row.get(0),
        name: row.get(1),
        kind: AppKind::parse(row.get(2)).unwrap_or(AppKind::Public),
        account: row.get(3),
        created_at: micros_timestamp(row.get(4)),
        revoked: row.get(5),
    }
}

fn read_subscription(row: &Row) -> Subscription {
    Subscription {
        code: row.get(0),
        queue_id: row.get(1),
        event_type: row.get(2),
        account: row.get(3),
        start_at: micros_timestamp(row.get(4)),
        replay: row.get(5),
        created_at: micros_timestamp(row.get(6)),
    }
}

fn read_state(row: &Row) -> QueueState {
    let pending = match (row.get::<_, Option<i64>>(3), row.get::<_, Option<String>>(4), row.get::<_, Option<i64>>(5)) {
        (Some(batch), Some(nonce), Some(through)) => Some((Ack { batch, nonce }, through)),
        _ => None,
    };
    let acked = match (row.get::<_, Option<i64>>(6), row.get::<_, Option<String>>(7)) {
        (Some(batch), Some(nonce)) => Some(Ack { batch, nonce }),
        _ => None,
    };
    QueueState { id: row.get(0), acked_through: row.get(1), batches: row.get(2), pending, acked, dropped: row.get(8) }
}

impl PgStore {
    async fn queue_id(&self, client: &impl deadpool_postgres::GenericClient, app_id: &str, code: &str) -> Result<Option<i64>, StoreError> {
        let sql = format!("SELECT id FROM {} WHERE app_id = $1 AND code = $2", self.t("tributary_queues"));
        Ok(client.query_opt(&sql, &[&app_id, &code]).await.map_err(pg)?.map(|r| r.get(0)))
    }
}

#[async_trait::async_trait]
impl QueueStore for PgStore {
    async fn create_app(&self, app: &App, token_hash: &str) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let sql = format!(
            "INSERT INTO {} (id, name, kind, account, token_hash, created_at) VALUES ($1, $2, $3, $4, $5, $6::text::timestamptz)",
            self.t("tributary_apps")
        );
        client.execute(&sql, &[&app.id, &app.name, &app.kind.as_str(), &app.account, &token_hash, &app.created_at]).await.map_err(pg)?;
        Ok(())
    }

    async fn apps(&self) -> Result<Vec<App>, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let sql = format!("SELECT {APP_COLUMNS} FROM {} ORDER BY created_at, id", self.t("tributary_apps"));
        Ok(client.query(&sql, &[]).await.map_err(pg)?.iter().map(read_app).collect())
    }

    async fn app_by_token(&self, token_hash: &str) -> Result<Option<App>, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let sql = format!("SELECT {APP_COLUMNS} FROM {} WHERE token_hash = $1 AND revoked_at IS NULL", self.t("tributary_apps"));
        let statement = client.prepare_cached(&sql).await.map_err(pg)?;
        Ok(client.query_opt(&statement, &[&token_hash]).await.map_err(pg)?.as_ref().map(read_app))
    }

    async fn revoke_app(&self, id: &str) -> Result<bool, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let sql = format!("UPDATE {} SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1", self.t("tributary_apps"));
        Ok(client.execute(&sql, &[&id]).await.map_err(pg)? > 0)
    }

    async fn grant(&self, app_id: &str, account: &str) -> Result<bool, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let sql = format!(
            "WITH app AS (SELECT id FROM {apps} WHERE id = $1),
                  added AS (INSERT INTO {grants} (app_id, account) SELECT id, $2 FROM app ON CONFLICT DO NOTHING)
             SELECT EXISTS (SELECT 1 FROM app)",
            apps = self.t("tributary_apps"),
            grants = self.t("tributary_app_grants")
        );
        Ok(client.query_one(&sql, &[&app_id, &account]).await.map_err(pg)?.get(0))
    }

    async fn granted(&self, app_id: &str, account: &str) -> Result<bool, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let sql = format!("SELECT EXISTS (SELECT 1 FROM {} WHERE app_id = $1 AND account = $2)", self.t("tributary_app_grants"));
        Ok(client.query_one(&sql, &[&app_id, &account]).await.map_err(pg)?.get(0))
    }

    async fn create_queue(&self, app_id: &str, code: &str, name: &str, max: usize) -> Result<Option<Queue>, StoreError> {
        let mut client = self.pool.get().await.map_err(pg)?;
        let tx = client.transaction().await.map_err(pg)?;
        // one app's queue creations take turns, so the limit holds
        tx.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", &[&format!("tributary:queues:{}:{app_id}", self.schema)])
            .await
            .map_err(pg)?;
        let queues = self.t("tributary_queues");
        let count: i64 = tx.query_one(&format!("SELECT COUNT(*) FROM {queues} WHERE app_id = $1"), &[&app_id]).await.map_err(pg)?.get(0);
        if count as usize >= max {
            tx.rollback().await.map_err(pg)?;
            return Ok(None);
        }
        let row = tx
            .query_one(
                &format!(
                    "INSERT INTO {queues} (code, app_id, name) VALUES ($1, $2, $3) RETURNING (extract(epoch FROM created_at) * 1000000)::int8"
                ),
                &[&code, &app_id, &name],
            )
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(Some(Queue { code: code.to_string(), name: name.to_string(), created_at: micros_timestamp(row.get(0)) }))
    }

    async fn queues(&self, app_id: &str) -> Result<Vec<Queue>, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let sql = format!(
            "SELECT code, name, (extract(epoch FROM created_at) * 1000000)::int8 FROM {} WHERE app_id = $1 ORDER BY id",
            self.t("tributary_queues")
        );
        let rows = client.query(&sql, &[&app_id]).await.map_err(pg)?;
        Ok(rows.iter().map(|r| Queue { code: r.get(0), name: r.get(1), created_at: micros_timestamp(r.get(2)) }).collect())
    }

    async fn delete_queue(&self, app_id: &str, code: &str) -> Result<bool, StoreError> {
        let mut client = self.pool.get().await.map_err(pg)?;
        let tx = client.transaction().await.map_err(pg)?;
        let Some(id) = self.queue_id(&tx, app_id, code).await? else {
            tx.rollback().await.map_err(pg)?;
            return Ok(false);
        };
        for table in ["tributary_subscriptions", "tributary_queue_events"] {
            tx.execute(&format!("DELETE FROM {} WHERE queue_id = $1", self.t(table)), &[&id]).await.map_err(pg)?;
        }
        tx.execute(&format!("DELETE FROM {} WHERE id = $1", self.t("tributary_queues")), &[&id]).await.map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(true)
    }

    async fn subscribe(&self, app_id: &str, queue: &str, subscription: &Subscription) -> Result<Option<Subscription>, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let Some(id) = self.queue_id(&client, app_id, queue).await? else { return Ok(None) };
        let s = Subscription { queue_id: id, ..subscription.clone() };
        let sql = format!(
            "INSERT INTO {} (code, queue_id, event_type, account, start_at, replay, created_at)
             VALUES ($1, $2, $3, $4, $5::text::timestamptz, $6, $7::text::timestamptz)",
            self.t("tributary_subscriptions")
        );
        client
            .execute(&sql, &[&s.code, &s.queue_id, &s.event_type, &s.account, &s.start_at, &s.replay, &s.created_at])
            .await
            .map_err(pg)?;
        Ok(Some(s))
    }

    async fn subscriptions(&self, app_id: &str, queue: &str) -> Result<Option<Vec<Subscription>>, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let Some(id) = self.queue_id(&client, app_id, queue).await? else { return Ok(None) };
        let sql = format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM {} WHERE queue_id = $1 ORDER BY created_at, code",
            self.t("tributary_subscriptions")
        );
        Ok(Some(client.query(&sql, &[&id]).await.map_err(pg)?.iter().map(read_subscription).collect()))
    }

    async fn unsubscribe(&self, app_id: &str, queue: &str, code: &str) -> Result<bool, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let Some(id) = self.queue_id(&client, app_id, queue).await? else { return Ok(false) };
        let sql = format!("DELETE FROM {} WHERE queue_id = $1 AND code = $2", self.t("tributary_subscriptions"));
        Ok(client.execute(&sql, &[&id, &code]).await.map_err(pg)? > 0)
    }

    async fn all_subscriptions(&self) -> Result<Vec<Subscription>, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let sql = format!("SELECT {SUBSCRIPTION_COLUMNS} FROM {} ORDER BY created_at, code", self.t("tributary_subscriptions"));
        let statement = client.prepare_cached(&sql).await.map_err(pg)?;
        Ok(client.query(&statement, &[]).await.map_err(pg)?.iter().map(read_subscription).collect())
    }

    async fn queue_depths(&self) -> Result<Vec<QueueDepth>, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let (queues, events) = (self.t("tributary_queues"), self.t("tributary_queue_events"));
        let sql = format!(
            "SELECT q.id, q.app_id, q.code, q.name, (extract(epoch FROM q.created_at) * 1000000)::int8, q.dropped::int8,
                (SELECT count(*) FROM (SELECT 1 FROM {events} AS e WHERE e.queue_id = q.id AND e.id > q.acked_through LIMIT $1) AS b),
                (SELECT (extract(epoch FROM e.committed_at) * 1000000)::int8 FROM {events} AS e
                 WHERE e.queue_id = q.id AND e.id > q.acked_through ORDER BY e.id LIMIT 1)
             FROM {queues} AS q ORDER BY q.app_id, q.id"
        );
        let rows = client.query(&sql, &[&DEPTH_COUNT_MAX]).await.map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| QueueDepth {
                id: r.get(0),
                app_id: r.get(1),
                code: r.get(2),
                name: r.get(3),
                created_at: micros_timestamp(r.get(4)),
                dropped: r.get(5),
                depth: r.get::<_, i64>(6) as u64,
                oldest_unacked_at: r.get::<_, Option<i64>>(7).map(micros_timestamp),
            })
            .collect())
    }

    async fn all_grants(&self) -> Result<Vec<(String, String)>, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let sql = format!("SELECT app_id, account FROM {} ORDER BY app_id, account", self.t("tributary_app_grants"));
        Ok(client.query(&sql, &[]).await.map_err(pg)?.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn fan_out(
        &self,
        replays: &[Subscription],
        through: ChangeCursor,
        entries: &[Entry],
        cursor: ChangeCursor,
    ) -> Result<(), StoreError> {
        let mut client = self.pool.get().await.map_err(pg)?;
        let tx = client.transaction().await.map_err(pg)?;
        let (events, changes) = (self.t("tributary_queue_events"), self.t("tributary_changes"));
        let mut added = 0;
        for s in replays {
            let (prefix, exact) = s.type_filter();
            // `left(type, n) = prefix`, not LIKE: a prefix may hold `%` or `_`
            let sql = format!(
                "INSERT INTO {events} (queue_id, change_seq, committed_at)
                 SELECT $1, id, committed_at FROM {changes}
                 WHERE (xid, id) <= ($2::text::xid8, $3) AND committed_at >= $4::text::timestamptz AND coalesce(account, 'platform') = $5
                   AND ($6::text IS NULL AND left(type, length($7)) = $7 OR type = $6)
                 ORDER BY xid, id
                 ON CONFLICT DO NOTHING"
            );
            added += tx
                .execute(&sql, &[&s.queue_id, &through.xid.to_string(), &through.seq, &s.start_at, &s.account, &exact, &prefix])
                .await
                .map_err(pg)?;
            tx.execute(&format!("UPDATE {} SET replay = false WHERE code = $1", self.t("tributary_subscriptions")), &[&s.code])
                .await
                .map_err(pg)?;
        }
        if !entries.is_empty() {
            let queue_ids: Vec<i64> = entries.iter().map(|e| e.queue_id).collect();
            let seqs: Vec<i64> = entries.iter().map(|e| e.change_seq).collect();
            let times: Vec<&str> = entries.iter().map(|e| e.committed_at.as_str()).collect();
            let sql = format!(
                "INSERT INTO {events} (queue_id, change_seq, committed_at)
                 SELECT u.queue_id, u.seq, u.at::timestamptz FROM UNNEST($1::int8[], $2::int8[], $3::text[]) WITH ORDINALITY AS u(queue_id, seq, at, n)
                 ORDER BY u.n
                 ON CONFLICT DO NOTHING"
            );
            let statement = tx.prepare_cached(&sql).await.map_err(pg)?;
            added += tx.execute(&statement, &[&queue_ids, &seqs, &times]).await.map_err(pg)?;
        }
        self.save_cursor(&tx, FANOUT_READER, 0, cursor).await?;
        if added > 0 {
            tx.execute("SELECT pg_notify($1, '')", &[&queue_channel(&self.schema)]).await.map_err(pg)?;
        }
        tx.commit().await.map_err(pg)?;
        if added > 0 {
            self.queue_events.send_modify(|n| *n += 1);
        }
        Ok(())
    }

    async fn pull(&self, app_id: &str, queue: &str, ack: Option<Ack>, limit: usize, nonce: String) -> Result<PullOutcome, StoreError> {
        let mut client = self.pool.get().await.map_err(pg)?;
        let tx = client.transaction().await.map_err(pg)?;
        let queues = self.t("tributary_queues");
        let lock = tx
            .prepare_cached(&format!(
                "SELECT id, acked_through, batches, pending_batch, pending_nonce, pending_through, acked_batch, acked_nonce, dropped
                 FROM {queues} WHERE app_id = $1 AND code = $2 FOR UPDATE"
            ))
            .await
            .map_err(pg)?;
        let Some(row) = tx.query_opt(&lock, &[&app_id, &queue]).await.map_err(pg)? else {
            tx.rollback().await.map_err(pg)?;
            return Ok(PullOutcome::NoQueue);
        };
        let mut state = read_state(&row);
        if let Err(outcome) = state.acknowledge(ack.as_ref()) {
            // ended here, not left to drop: the row lock must go at once
            tx.rollback().await.map_err(pg)?;
            return Ok(outcome);
        }
        let read = tx
            .prepare_cached(&format!(
                "SELECT e.id, {CHANGE_COLUMNS} FROM {} AS e JOIN {} AS c ON c.id = e.change_seq
                 WHERE e.queue_id = $1 AND e.id > $2 ORDER BY e.id LIMIT $3",
                self.t("tributary_queue_events"),
                self.t("tributary_changes")
            ))
            .await
            .map_err(pg)?;
        let rows = tx.query(&read, &[&state.id, &state.acked_through, &(limit as i64)]).await.map_err(pg)?;
        let events = rows.iter().map(|row| Ok((row.get::<_, i64>(0), read_change(row, 1)?))).collect::<Result<Vec<_>, StoreError>>()?;
        let ack = state.hand_out(&events, nonce);
        let dropped = std::mem::take(&mut state.dropped);
        let (pending_batch, pending_nonce, pending_through) = match &state.pending {
            Some((ack, through)) => (Some(ack.batch), Some(ack.nonce.as_str()), Some(*through)),
            None => (None, None, None),
        };
        let save = tx
            .prepare_cached(&format!(
                "UPDATE {queues} SET acked_through = $2, batches = $3, pending_batch = $4, pending_nonce = $5, pending_through = $6,
                 acked_batch = $7, acked_nonce = $8, dropped = $9 WHERE id = $1"
            ))
            .await
            .map_err(pg)?;
        let (acked_batch, acked_nonce) = (state.acked.as_ref().map(|a| a.batch), state.acked.as_ref().map(|a| a.nonce.as_str()));
        tx.execute(
            &save,
            &[
                &state.id,
                &state.acked_through,
                &state.batches,
                &pending_batch,
                &pending_nonce,
                &pending_through,
                &acked_batch,
                &acked_nonce,
                &state.dropped,
            ],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(PullOutcome::Pulled(Pulled { events, ack, dropped }))
    }

    async fn purge_queue_events(&self, cutoff: &str, limit: usize) -> Result<(u64, Vec<(String, i64)>), StoreError> {
        let mut client = self.pool.get().await.map_err(pg)?;
        let tx = client.transaction().await.map_err(pg)?;
        let (events, queues) = (self.t("tributary_queue_events"), self.t("tributary_queues"));
        // a batch by the committed_at index; what a consumer never
        // acknowledged is counted as dropped on its queue
        let sql = format!(
            "WITH purged AS (
                 DELETE FROM {events} WHERE id IN
                     (SELECT id FROM {events} WHERE committed_at < $1::text::timestamptz ORDER BY committed_at LIMIT $2)
                 RETURNING id, queue_id),
             counted AS (SELECT queue_id, COUNT(*) FILTER (WHERE p.id > q.acked_through) AS dropped
                         FROM purged AS p JOIN {queues} AS q ON q.id = p.queue_id GROUP BY queue_id),
             marked AS (UPDATE {queues} AS q SET dropped = q.dropped + c.dropped FROM counted AS c
                        WHERE q.id = c.queue_id AND c.dropped > 0 RETURNING q.code, c.dropped)
             SELECT (SELECT COUNT(*) FROM purged), coalesce((SELECT json_agg(json_build_array(code, dropped)) FROM marked)::text, '[]')"
        );
        let row = tx.query_one(&sql, &[&cutoff, &(limit as i64)]).await.map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        let deleted: i64 = row.get(0);
        let dropped: Vec<(String, i64)> = serde_json::from_str(row.get(1)).map_err(|e| super::pg_other(e.to_string()))?;
        Ok((deleted as u64, dropped))
    }

    fn queue_events(&self) -> watch::Receiver<u64> {
        self.queue_events.subscribe()
    }
}

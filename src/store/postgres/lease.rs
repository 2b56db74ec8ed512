//! Ownership of a source (or sink) across processes: a session advisory lock
//! held on a connection of its own; losing the connection loses the lease.

use std::time::Duration;

use tokio::sync::oneshot;
use tokio_postgres::NoTls;

use super::{PgStore, pg};
use crate::store::{Lease, StoreError};

/// How often a standby asks for a source's lock, and an owner checks that
/// its lock connection is alive.
pub(super) const LEASE_POLL: Duration = Duration::from_secs(1);

/// Ownership of a source: a session advisory lock on its own connection.
struct AdvisoryLease {
    client: tokio_postgres::Client,
    closed: oneshot::Receiver<String>,
}

#[async_trait::async_trait]
impl Lease for AdvisoryLease {
    async fn lost(&mut self) -> String {
        loop {
            tokio::select! {
                reason = &mut self.closed => return reason.unwrap_or_else(|_| "lock connection closed".into()),
                _ = tokio::time::sleep(LEASE_POLL) => {
                    if let Err(e) = self.client.simple_query("SELECT 1").await {
                        return format!("lock connection failed: {}", crate::telemetry::error_chain(&e));
                    }
                }
            }
        }
    }
}

impl PgStore {
    /// Wait until this process holds `source`'s advisory lock.
    pub(super) async fn lease(&self, source: &str) -> Result<Box<dyn Lease>, StoreError> {
        let (client, connection) = self.config.connect(NoTls).await.map_err(pg)?;
        let (closed_tx, closed) = oneshot::channel();
        tokio::spawn(async move {
            let reason = match connection.await {
                Ok(()) => "lock connection closed".to_string(),
                Err(e) => format!("lock connection lost: {}", crate::telemetry::error_chain(&e)),
            };
            let _ = closed_tx.send(reason);
        });
        let key = format!("tributary:source:{}:{source}", self.schema);
        let mut first = true;
        loop {
            let row = client.query_one("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", &[&key]).await.map_err(pg)?;
            if row.get::<_, bool>(0) {
                return Ok(Box::new(AdvisoryLease { client, closed }));
            }
            if first {
                tracing::info!(kind = "source_standby", source, "another process owns this source; standing by to take over");
                first = false;
            }
            tokio::time::sleep(LEASE_POLL).await;
        }
    }
}

//! Commits made by any process, heard here: `NOTIFY` on commit, `LISTEN` on
//! a dedicated connection that reconnects after errors (readers also poll
//! slowly as a safety net).

use std::sync::Arc;

use tokio::sync::watch;
use tokio_postgres::NoTls;

use super::lease::LEASE_POLL;
use crate::store::ident::quote;

/// A task stopped when its handle is dropped (the LISTEN task, with its store).
pub(super) struct AbortOnDrop(pub(super) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The NOTIFY channel of a schema's change log.
pub(super) fn channel(schema: &str) -> String {
    format!("tributary_changes_{schema}")
}

/// The NOTIFY channel of a schema's queue events.
pub(super) fn queue_channel(schema: &str) -> String {
    format!("tributary_queues_{schema}")
}

/// The NOTIFY channel of a schema's control rows.
pub(super) fn controls_channel(schema: &str) -> String {
    format!("tributary_controls_{schema}")
}

/// Follow commits made by any process: LISTEN on a dedicated connection,
/// reconnecting after errors (readers also poll slowly as a safety net).
/// Each channel bumps its own counter.
pub(super) async fn listen(config: tokio_postgres::Config, channels: Vec<(String, Arc<watch::Sender<u64>>)>) {
    loop {
        if let Ok((client, mut connection)) = config.connect(NoTls).await {
            let bumps = channels.clone();
            let driver = tokio::spawn(async move {
                let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                while let Some(message) = futures::StreamExt::next(&mut messages).await {
                    match message {
                        Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                            if let Some((_, bump)) = bumps.iter().find(|(name, _)| name == n.channel()) {
                                bump.send_modify(|n| *n += 1);
                            }
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            });
            let statements: String = channels.iter().map(|(name, _)| format!("LISTEN {};", quote(name))).collect();
            if client.batch_execute(&statements).await.is_ok() {
                let _ = driver.await;
            } else {
                driver.abort();
            }
        }
        tokio::time::sleep(LEASE_POLL).await;
    }
}

//! Operators steer what runs: pause and resume a source or sink, rewind a
//! sink to a change or a time, redrive or discard its dead letters.
//!
//! A request is a row in the database ([`crate::store::controls`]), written
//! by the API, the console or the CLI from any process. Whichever process
//! runs the source or sink applies it: each engine follows the rows
//! ([`follow`]); its supervisor stops a paused runtime and applies a rewind
//! before delivery starts again; delivery redrives dead letters between
//! batches. So a rewind works the same with one instance or several on
//! Postgres, and from a CLI beside a running engine.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

use crate::store::controls::{Control, Target, dead_letter_row};
use crate::store::{ChangeCursor, Store, StoreError};

/// How often the control rows are read again when no notification came
/// (another process writing to a SQLite file is heard only this way).
const POLL: Duration = Duration::from_secs(1);

/// Every control row, as this process last read them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Controls {
    rows: HashMap<(Target, String), Control>,
}

impl Controls {
    pub fn new(rows: Vec<Control>) -> Controls {
        Controls { rows: rows.into_iter().map(|c| ((c.target, c.name.clone()), c)).collect() }
    }

    fn get(&self, target: Target, name: &str) -> Option<&Control> {
        self.rows.get(&(target, name.to_string()))
    }

    pub fn paused(&self, target: Target, name: &str) -> bool {
        self.get(target, name).is_some_and(|c| c.paused)
    }

    /// A sink's rewind not applied yet.
    pub fn rewind_to(&self, sink: &str) -> Option<ChangeCursor> {
        self.get(Target::Sink, sink).and_then(|c| c.rewind_to)
    }

    /// How many redrives of a sink's dead letters were asked for, ever.
    pub fn redrives(&self, sink: &str) -> i64 {
        self.get(Target::Sink, sink).map_or(0, |c| c.redrives)
    }
}

/// Follow the control rows: the receiver holds the latest; the future
/// (spawned by the engine) keeps it current.
pub fn follow(store: Arc<dyn Store>) -> (watch::Receiver<Arc<Controls>>, impl Future<Output = ()> + Send) {
    let (sender, receiver) = watch::channel(Arc::new(Controls::default()));
    let task = async move {
        let mut changed = store.controls_changed();
        loop {
            changed.borrow_and_update();
            match store.controls().await {
                Ok(rows) => {
                    let controls = Controls::new(rows);
                    sender.send_if_modified(|current| {
                        if **current == controls {
                            return false;
                        }
                        *current = Arc::new(controls);
                        true
                    });
                }
                Err(e) => tracing::warn!(kind = "controls_unreadable", error = %e, "cannot read the operators' requests; retrying"),
            }
            tokio::select! {
                _ = changed.changed() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    };
    (receiver, task)
}

/// Controls that never change (an API served without an engine: tests,
/// benchmarks).
pub fn fixed(controls: Controls) -> watch::Receiver<Arc<Controls>> {
    watch::channel(Arc::new(controls)).1
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    /// The request makes no sense in the current state (a rewind forward).
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ControlError {
    pub fn kind(&self) -> &'static str {
        match self {
            ControlError::NotFound(_) => "not_found",
            ControlError::Invalid(_) => "invalid_request",
            ControlError::Conflict(_) => "conflict",
            ControlError::Store(_) => "store",
        }
    }
}

/// Where a rewind goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RewindTo {
    /// `chg_…`: this change and everything after it is delivered again.
    Change(String),
    /// RFC 3339: every change committed at or after it is delivered again.
    Time(String),
}

/// A rewind asked for.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Rewound {
    pub sink: String,
    /// The first change delivered again (`null`: none is, the sink has
    /// delivered nothing since the time).
    pub first_change: Option<String>,
    /// The position the cursor moves to (opaque).
    pub cursor: String,
    /// The position the cursor had when the rewind was asked for.
    pub cursor_before: String,
    /// `requested` (the process that runs the sink applies it within a
    /// second) or `nothing_to_redeliver`.
    pub status: &'static str,
}

/// The sequence number of a `chg_…` id.
pub fn change_seq(id: &str) -> Option<i64> {
    id.strip_prefix("chg_")?.parse().ok().filter(|n| *n > 0)
}

/// Ask for a sink's cursor to move back, so everything from the point on is
/// delivered again.
pub async fn rewind(store: &dyn Store, sink: &str, to: &RewindTo) -> Result<Rewound, ControlError> {
    let before = store.sink_position(sink).await?.cursor;
    let first = match to {
        RewindTo::Change(id) => {
            let seq = change_seq(id).ok_or_else(|| ControlError::Invalid(format!("'{id}' is not a change id (chg_…)")))?;
            let cursor = store.change_cursor(seq).await?;
            Some(cursor.ok_or_else(|| {
                ControlError::NotFound(format!("change {id} is not in the change log (never written, or purged after its retention)"))
            })?)
        }
        RewindTo::Time(text) => {
            let at = chrono::DateTime::parse_from_rfc3339(text)
                .map_err(|e| ControlError::Invalid(format!("to_time '{text}' is not an RFC 3339 time ({e})")))?;
            store.first_change_since(&crate::store::timestamp(at.with_timezone(&chrono::Utc))).await?
        }
    };
    let unchanged = |status| Rewound {
        sink: sink.to_string(),
        first_change: None,
        cursor: before.to_string(),
        cursor_before: before.to_string(),
        status,
    };
    let Some(first) = first else {
        return Ok(unchanged("nothing_to_redeliver"));
    };
    // just before the first change: it is delivered again
    let target = ChangeCursor { seq: first.seq - 1, ..first };
    if target >= before {
        if matches!(to, RewindTo::Time(_)) {
            return Ok(unchanged("nothing_to_redeliver"));
        }
        return Err(ControlError::Conflict(format!(
            "sink '{sink}' has not delivered {} yet: a rewind moves a cursor back",
            crate::store::change_id(first.seq)
        )));
    }
    store.request_rewind(sink, target).await?;
    let first_change = crate::store::change_id(first.seq);
    tracing::info!(kind = "sink_rewind_requested", sink, first_change = %first_change, cursor = %target, cursor_before = %before,
        "rewind asked for; the process that runs the sink applies it");
    Ok(Rewound {
        sink: sink.to_string(),
        first_change: Some(first_change),
        cursor: target.to_string(),
        cursor_before: before.to_string(),
        status: "requested",
    })
}

/// Ask for dead letters to be delivered again (every one of the sink's
/// when `ids` is `None`); returns how many were marked.
pub async fn redrive(store: &dyn Store, sink: &str, ids: Option<&[String]>) -> Result<u64, ControlError> {
    let rows = ids.map(|ids| ids.iter().map(|id| dead_letter(id)).collect::<Result<Vec<i64>, _>>()).transpose()?;
    let marked = store.request_redrive(sink, rows.as_deref()).await?;
    if ids.is_some_and(|ids| marked < ids.len() as u64) {
        tracing::warn!(
            kind = "dead_letter_redrive_requested",
            sink,
            marked,
            asked = ids.map_or(0, <[String]>::len),
            "some of the dead letters named are not the sink's (discarded, or redriven already)"
        );
    }
    tracing::info!(kind = "dead_letter_redrive_requested", sink, marked, "redrive asked for; the process that runs the sink delivers them");
    Ok(marked)
}

/// The row of a dead letter id, or why it is none.
fn dead_letter(id: &str) -> Result<i64, ControlError> {
    dead_letter_row(id).ok_or_else(|| ControlError::Invalid(format!("'{id}' is not a dead letter id (dl_…)")))
}

/// Delete a dead letter for good.
pub async fn discard(store: &dyn Store, sink: &str, id: &str) -> Result<(), ControlError> {
    let row = dead_letter(id)?;
    if !store.discard_dead_letter(sink, row).await? {
        return Err(ControlError::NotFound(format!("sink '{sink}' has no dead letter {id}")));
    }
    tracing::info!(kind = "dead_letter_discarded", sink, dead_letter = id, "dead letter discarded");
    Ok(())
}

/// Pause or resume a source or sink, wherever it runs.
pub async fn set_paused(store: &dyn Store, target: Target, name: &str, paused: bool) -> Result<(), ControlError> {
    store.set_paused(target, name, paused).await?;
    let kind = match (target, paused) {
        (Target::Source, true) => "source_paused",
        (Target::Source, false) => "source_resumed",
        (Target::Sink, true) => "sink_paused",
        (Target::Sink, false) => "sink_resumed",
    };
    let done = if paused { "paused; it stops within a second wherever it runs" } else { "resumed; it starts again within a second" };
    match target {
        Target::Source => tracing::info!(kind, source = name, "{done}"),
        Target::Sink => tracing::info!(kind, sink = name, "{done}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_ids_parse_to_their_sequence() {
        assert_eq!(change_seq("chg_00000000000000000042"), Some(42));
        assert_eq!(change_seq("chg_7"), Some(7));
        assert_eq!(change_seq("chg_0"), None);
        assert_eq!(change_seq("chg_-3"), None);
        assert_eq!(change_seq("42"), None);
        assert_eq!(change_seq("dl_4"), None);
    }
}

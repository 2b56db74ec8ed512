//! The recent log lines of each source and sink, kept in memory for the
//! console: a `tracing` layer files every event that names a `source` or a
//! `sink` under it (the supervisor names a sink `sink:NAME`), the newest
//! [`KEPT`] per name.

use std::collections::{HashMap, VecDeque};
use std::sync::OnceLock;

use parking_lot::Mutex;
use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

/// Lines kept per source or sink.
const KEPT: usize = 200;

/// One log line.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LogLine {
    /// RFC 3339.
    pub at: String,
    pub level: String,
    /// The line's `kind`, if it has one.
    pub kind: Option<String>,
    pub message: String,
    /// Every other field, as text.
    pub fields: Vec<(String, String)>,
}

#[derive(Default)]
struct Book {
    lines: HashMap<String, VecDeque<LogLine>>,
}

fn book() -> &'static Mutex<Book> {
    static BOOK: OnceLock<Mutex<Book>> = OnceLock::new();
    BOOK.get_or_init(Default::default)
}

/// The recent lines of a source (`source:NAME`) or sink (`sink:NAME`),
/// oldest first.
pub fn recent(key: &str) -> Vec<LogLine> {
    book().lock().lines.get(key).map(|lines| lines.iter().cloned().collect()).unwrap_or_default()
}

/// The layer that fills the book.
pub struct Layer;

#[derive(Default)]
struct Fields {
    message: String,
    kind: Option<String>,
    source: Option<String>,
    sink: Option<String>,
    rest: Vec<(String, String)>,
}

impl Fields {
    fn record(&mut self, field: &Field, value: String) {
        match field.name() {
            "message" => self.message = value,
            "kind" => self.kind = Some(value),
            "source" => self.source = Some(value),
            "sink" => self.sink = Some(value),
            name => self.rest.push((name.to_string(), value)),
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(field, value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record(field, format!("{value:?}"));
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Layer {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let key = match (&fields.sink, &fields.source) {
            (Some(sink), _) => format!("sink:{sink}"),
            // the supervisor names a sink by its lease, `sink:NAME`
            (None, Some(source)) if source.starts_with("sink:") => source.clone(),
            (None, Some(source)) => format!("source:{source}"),
            (None, None) => return,
        };
        let line = LogLine {
            at: crate::store::timestamp(chrono::Utc::now()),
            level: event.metadata().level().to_string(),
            kind: fields.kind,
            message: fields.message,
            fields: fields.rest,
        };
        let mut book = book().lock();
        let lines = book.lines.entry(key).or_default();
        if lines.len() == KEPT {
            lines.pop_front();
        }
        lines.push_back(line);
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn lines_are_filed_under_the_source_or_sink_they_name_the_newest_kept() {
        let subscriber = tracing_subscriber::registry().with(Layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(kind = "backfill_started", source = "book_stripe", generation = 1, "backfill started");
            tracing::warn!(kind = "delivery_retry", sink = "book_hooks", attempt = 2, "delivery failed; retrying");
            // the supervisor names a sink by its lease
            tracing::info!(kind = "source_acquired", source = "sink:book_hooks", "this process owns it");
            tracing::info!(kind = "engine_started", "no source, no sink: not filed");
            for n in 0..KEPT + 5 {
                tracing::info!(source = "book_busy", n, "line");
            }
        });
        let stripe = recent("source:book_stripe");
        assert_eq!(stripe.len(), 1);
        assert_eq!((stripe[0].kind.as_deref(), stripe[0].message.as_str()), (Some("backfill_started"), "backfill started"));
        assert_eq!(stripe[0].fields, [("generation".to_string(), "1".to_string())]);
        let hooks = recent("sink:book_hooks");
        assert_eq!(hooks.iter().map(|l| l.kind.clone().unwrap()).collect::<Vec<_>>(), ["delivery_retry", "source_acquired"]);
        assert_eq!(hooks[0].level, "WARN");
        let busy = recent("source:book_busy");
        assert_eq!(busy.len(), KEPT);
        assert_eq!(busy[0].fields, [("n".to_string(), "5".to_string())], "the oldest went first");
        assert!(recent("source:nothing").is_empty());
    }
}

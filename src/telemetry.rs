//! Logs and metrics. Logs go to stdout: human-readable on a terminal, one
//! JSON object per line otherwise, with lifecycle lines carrying a `kind`.
//! Metrics are Prometheus counters and gauges rendered at `/metrics`, and
//! with `[metrics] statsd` also pushed to StatsD ([`statsd`]).

pub mod statsd;

use std::io::IsTerminal;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use metrics_util::layers::FanoutBuilder;
use tracing_subscriber::EnvFilter;

/// Install the log subscriber once; `default_level` applies unless
/// `RUST_LOG` says otherwise.
/// Every line that names a source or sink is also kept for the console
/// ([`crate::console::logbook`]).
pub fn init_logging(default_level: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let registry = tracing_subscriber::registry().with(filter).with(crate::console::logbook::Layer);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stdout);
    let _ = if std::io::stdout().is_terminal() {
        registry.with(fmt.compact()).try_init()
    } else {
        registry.with(fmt.json().flatten_event(true).with_current_span(false).with_span_list(false)).try_init()
    };
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus recorder.
pub fn metrics() -> PrometheusHandle {
    HANDLE.get_or_init(|| install(None)).clone()
}

/// Install the process-wide recorders before anything records: Prometheus,
/// and StatsD when configured. Installing twice keeps the first (tests run
/// several engines in one process); a StatsD push asked for then is
/// reported, not silently dropped.
pub fn install_metrics(statsd: Option<statsd::StatsdOptions>) -> PrometheusHandle {
    let mut installed_now = false;
    let handle = HANDLE
        .get_or_init(|| {
            installed_now = true;
            install(statsd.clone())
        })
        .clone();
    if !installed_now && let Some(options) = statsd {
        tracing::warn!(address = %options.address, "metrics were set up earlier in this process; not pushing to statsd");
    }
    handle
}

fn install(statsd: Option<statsd::StatsdOptions>) -> PrometheusHandle {
    let prometheus = PrometheusBuilder::new().build_recorder();
    let handle = prometheus.handle();
    let pusher = statsd.and_then(|options| match statsd::StatsdRecorder::start(options.clone()) {
        Ok(recorder) => {
            tracing::info!(kind = "statsd_started", address = %options.address, "pushing metrics to statsd");
            Some(recorder)
        }
        Err(e) => {
            tracing::error!(address = %options.address, error = %e, "cannot start the statsd push");
            None
        }
    });
    // another recorder may already be installed (tests in one process)
    let installed = match pusher {
        Some(pusher) => {
            metrics::set_global_recorder(FanoutBuilder::default().add_recorder(prometheus).add_recorder(pusher).build()).is_ok()
        }
        None => metrics::set_global_recorder(prometheus).is_ok(),
    };
    if !installed {
        tracing::debug!("a metrics recorder was installed already");
    }
    handle
}

/// An error with its causes (reqwest's own text is only "error sending
/// request"), each said once.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chain_says_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer: address in use")]
        struct Outer(#[source] std::io::Error);
        let error = Outer(std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use"));
        assert_eq!(error_chain(&error), "outer: address in use");
        let error = Outer(std::io::Error::other("disk full"));
        assert_eq!(error_chain(&error), "outer: address in use: disk full");
    }
}

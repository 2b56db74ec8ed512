//! Logs and metrics. Logs go to stdout: human-readable on a terminal, one
//! JSON object per line otherwise, with lifecycle lines carrying a `kind`.
//! Metrics are Prometheus counters and gauges rendered at `/metrics`.

use std::io::IsTerminal;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Install the log subscriber once; `default_level` applies unless
/// `RUST_LOG` says otherwise.
pub fn init_logging(default_level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stdout);
    let _ = if std::io::stdout().is_terminal() {
        builder.compact().try_init()
    } else {
        builder.json().flatten_event(true).with_current_span(false).with_span_list(false).try_init()
    };
}

/// The process-wide Prometheus recorder.
pub fn metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // another recorder may already be installed (tests in one process)
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

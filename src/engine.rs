//! The engine: opens the store, starts every source and the HTTP API, and
//! runs until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::api::queues::QueueApi;
use crate::api::{self, AppState};
use crate::config::{Config, ConfigError, SourceConfig};
use crate::control::{self, Controls};
use crate::delivery::{self, SinkStatus};
use crate::queue;
use crate::source::{Registry, SourceStatus, event_queue, stripe, window};
use crate::store::controls::Target;
use crate::store::queues::FANOUT_READER;
use crate::store::{self, Store, StoreError};

/// Pause before retrying a source whose ownership could not be taken or
/// whose runtime stopped on its own.
const RESTART_PAUSE: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("api server: {0}")]
    Serve(std::io::Error),
}

/// A started engine: sources are syncing and the API is bound.
pub struct Engine {
    pub registry: Arc<Registry>,
    pub api_addr: SocketAddr,
    listener: TcpListener,
    state: AppState,
    tasks: JoinSet<()>,
}

impl Engine {
    /// Validate secrets, open the store, bind the API and start every source.
    pub async fn start(config: Config) -> Result<Engine, EngineError> {
        config.check_env()?;
        let listener =
            TcpListener::bind(config.api.listen).await.map_err(|source| EngineError::Listen { addr: config.api.listen, source })?;
        Self::start_with_listener(config, listener).await
    }

    pub async fn start_with_listener(config: Config, listener: TcpListener) -> Result<Engine, EngineError> {
        let api_addr = listener.local_addr().map_err(EngineError::Serve)?;
        // before any source or sink records a metric
        let metrics = crate::telemetry::install_metrics(config.metrics.statsd());
        let store = store::open(&config.database.options()).await?;
        let registry = Arc::new(Registry::default());
        let writes = Arc::new(crate::write::Writes::new(store.clone(), &config)?);
        let mut tasks = JoinSet::new();
        let (controls, follow) = control::follow(store.clone());
        tasks.spawn(follow);
        for source in config.sources {
            let status = SourceStatus::new(source.name(), source.kind());
            registry.add(status.clone());
            source.check_env()?;
            match source {
                SourceConfig::Stripe(c) => {
                    let api_key = c.api_key()?;
                    let run = move |store, status| stripe::run(c.clone(), api_key.clone(), store, status);
                    tasks.spawn(supervise(store.clone(), controls.clone(), status, run));
                }
                SourceConfig::Window(c) => {
                    let run = move |store, status| window::run(c.clone(), store, status);
                    tasks.spawn(supervise(store.clone(), controls.clone(), status, run));
                }
                SourceConfig::EventQueue(c) => {
                    let run = move |store, status| event_queue::run(c.clone(), store, status);
                    tasks.spawn(supervise(store.clone(), controls.clone(), status, run));
                }
                SourceConfig::Rest(c) => {
                    let run = move |store, status| crate::source::rest::run(c.clone(), store, status);
                    tasks.spawn(supervise(store.clone(), controls.clone(), status, run));
                }
            }
        }
        let mut sinks = Vec::new();
        // the change log's readers: every sink and the queue fan-out
        let mut readers: Vec<String> = config.sinks.iter().map(|s| s.name.clone()).collect();
        readers.push(FANOUT_READER.to_string());
        let retention = Duration::from_secs(config.delivery.retention_days.saturating_mul(86_400));
        let purge_every = Duration::from_secs(config.delivery.purge_interval_secs);
        tasks.spawn(crate::retention::run(store.clone(), readers, retention, purge_every));
        let fanout = SinkStatus::new(FANOUT_READER, "queues");
        sinks.push(fanout.clone());
        tasks.spawn(supervise(store.clone(), controls.clone(), fanout, queue::fanout::run));
        for sink in config.sinks {
            let status = SinkStatus::new(&sink.name, sink.kind.as_str());
            sinks.push(status.clone());
            let sink_controls = controls.clone();
            let run = move |store, status| delivery::run(sink.clone(), store, status, sink_controls.clone());
            tasks.spawn(supervise(store.clone(), controls.clone(), status, run));
        }
        let tokens = api::Tokens::new(config.api.admin_token()?.as_deref(), config.api.read_token()?.as_deref());
        let queues = QueueApi::new(config.api.app_rate_limit_per_sec, config.api.max_queues_per_app, retention);
        let state = AppState {
            registry: registry.clone(),
            sinks: Arc::new(sinks),
            store,
            metrics,
            queues: Arc::new(queues),
            writes: writes.clone(),
            tokens: Arc::new(tokens),
            controls,
            console: crate::console::Monitor::new(),
        };
        tasks.spawn(state.console.clone().run(state.clone()));
        let ttl = Duration::from_secs(config.writes.idempotency_ttl_hours.saturating_mul(3_600));
        tasks.spawn(crate::write::maintenance::run(writes, ttl));
        tasks.spawn(crate::source::record_lag_forever(registry.clone()));
        tracing::info!(kind = "engine_started", api = %api_addr, "engine started");
        Ok(Engine { registry, api_addr, listener, state, tasks })
    }

    /// The store this engine writes to.
    pub fn store(&self) -> Arc<dyn crate::store::Store> {
        self.state.store.clone()
    }

    /// Serve the API until `shutdown` resolves, then stop every source.
    pub async fn serve(mut self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), EngineError> {
        let result = axum::serve(self.listener, api::router(self.state)).with_graceful_shutdown(shutdown).await;
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        tracing::info!(kind = "engine_stopped", "engine stopped");
        result.map_err(EngineError::Serve)
    }
}

/// What the supervisor needs of a source's or a sink's status.
trait Supervised: Send + Sync + 'static {
    /// The ownership key: one process at a time runs it.
    fn lease_name(&self) -> String;
    /// What operators pause (and, for a sink, rewind) it as; `None`: not
    /// steerable (the queue fan-out).
    fn control(&self) -> Option<(Target, String)>;
    fn set_owner(&self, owner: bool);
    fn set_error(&self, error: Option<String>);
    fn store_health(&self) -> &crate::store::StoreHealth;
    /// Forget what the stopped runtime reported.
    fn reset(&self);
}

impl Supervised for SourceStatus {
    fn lease_name(&self) -> String {
        self.name.clone()
    }
    fn control(&self) -> Option<(Target, String)> {
        Some((Target::Source, self.name.clone()))
    }
    fn set_owner(&self, owner: bool) {
        SourceStatus::set_owner(self, owner)
    }
    fn set_error(&self, error: Option<String>) {
        SourceStatus::set_error(self, error)
    }
    fn store_health(&self) -> &crate::store::StoreHealth {
        &self.store_health
    }
    fn reset(&self) {
        SourceStatus::reset(self)
    }
}

impl Supervised for SinkStatus {
    fn lease_name(&self) -> String {
        format!("sink:{}", self.name)
    }
    fn control(&self) -> Option<(Target, String)> {
        (self.name != FANOUT_READER).then(|| (Target::Sink, self.name.clone()))
    }
    fn set_owner(&self, owner: bool) {
        SinkStatus::set_owner(self, owner)
    }
    fn set_error(&self, error: Option<String>) {
        SinkStatus::set_error(self, error)
    }
    fn store_health(&self) -> &crate::store::StoreHealth {
        &self.store_health
    }
    fn reset(&self) {
        SinkStatus::set_owner(self, false)
    }
}

/// Run a source (or sink) whenever this process owns it and no operator
/// paused it: take ownership (waiting while another process has it), run
/// until ownership is lost or an operator pauses it (or rewinds the sink),
/// then stand by again. It resumes from its checkpoint wherever it runs next.
async fn supervise<S, F, Fut, E>(store: Arc<dyn Store>, mut controls: watch::Receiver<Arc<Controls>>, status: Arc<S>, run: F)
where
    S: Supervised,
    F: Fn(Arc<dyn Store>, Arc<S>) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::error::Error + 'static,
{
    let name = status.lease_name();
    let control = status.control();
    // what stops the runtime: a pause, or a sink's rewind to apply
    let held = |c: &Controls| control.as_ref().is_some_and(|(target, name)| c.paused(*target, name));
    let interrupted =
        |c: &Controls| held(c) || control.as_ref().is_some_and(|(target, name)| *target == Target::Sink && c.rewind_to(name).is_some());
    // a failure to take the lease says the store is unreachable; taking it
    // says it is back (a failed write is cleared only by a write)
    let mut acquire_failed = false;
    loop {
        if held(&controls.borrow()) {
            let resumed = controls.wait_for(|c| !held(c)).await.is_ok();
            if !resumed {
                return;
            }
            tracing::info!(kind = "resume_applied", source = %name, "resumed; starting again");
        }
        let mut lease = match store.acquire(&name).await {
            Ok(lease) => {
                if std::mem::take(&mut acquire_failed) {
                    status.store_health().ok();
                }
                lease
            }
            Err(e) => {
                tracing::error!(kind = "source_error", source = %name, error = %e, "cannot take ownership of the source; retrying");
                status.set_error(Some(e.to_string()));
                status.store_health().failed(&e);
                acquire_failed = true;
                tokio::time::sleep(RESTART_PAUSE).await;
                continue;
            }
        };
        if held(&controls.borrow()) {
            continue;
        }
        if let Some((Target::Sink, sink)) = &control
            && let Err(e) = apply_rewind(store.as_ref(), sink, &mut controls).await
        {
            tracing::error!(kind = "source_error", source = %name, error = %e, "cannot apply the rewind; retrying");
            status.set_error(Some(e.to_string()));
            tokio::time::sleep(RESTART_PAUSE).await;
            continue;
        }
        status.set_owner(true);
        tracing::info!(kind = "source_acquired", source = %name, "this process owns it");
        tokio::select! {
            result = run(store.clone(), status.clone()) => {
                if let Err(e) = result {
                    tracing::error!(kind = "source_error", source = %name, error = %e, "source stopped");
                    status.set_error(Some(e.to_string()));
                    status.store_health().failed_if_store(&e);
                }
                tokio::time::sleep(RESTART_PAUSE).await;
            }
            reason = lease.lost() => {
                tracing::warn!(kind = "source_lost", source = %name, reason = %reason, "ownership of the source lost; stopping it");
                status.set_error(Some(format!("ownership lost: {reason}")));
            }
            paused = async { controls.wait_for(|c| interrupted(c)).await.is_ok_and(|c| held(&c)) } => {
                tracing::info!(kind = if paused { "pause_applied" } else { "rewind_received" }, source = %name,
                    "{}", if paused { "paused by an operator; stopped until resumed" } else { "rewind asked for; restarting from the new position" });
            }
        }
        status.reset();
    }
}

/// Move a sink's cursor where an operator asked, before its delivery
/// starts (this process holds the sink).
async fn apply_rewind(store: &dyn Store, sink: &str, controls: &mut watch::Receiver<Arc<Controls>>) -> Result<(), StoreError> {
    let Some(to) = controls.borrow().rewind_to(sink) else { return Ok(()) };
    let before = store.sink_position(sink).await?.cursor;
    if store.apply_rewind(sink, to).await? {
        tracing::info!(kind = "sink_rewound", sink, cursor = %to, cursor_before = %before,
            first_change = %crate::store::change_id(to.seq + 1), "sink rewound: every change after the cursor is delivered again");
    }
    // the request is gone from the database; wait until this process has
    // read that, or the runtime would stop again for the same request
    let seen = async { controls.wait_for(|c| c.rewind_to(sink) != Some(to)).await.is_ok() };
    let _ = tokio::time::timeout(Duration::from_secs(5), seen).await;
    Ok(())
}

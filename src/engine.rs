//! The engine: opens the store, starts every source and the HTTP API, and
//! runs until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::api::queues::QueueApi;
use crate::api::{self, AppState};
use crate::config::{Config, ConfigError, SourceConfig};
use crate::delivery::{self, SinkStatus};
use crate::queue;
use crate::source::{Registry, SourceStatus, event_queue, stripe, window};
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
        for source in config.sources {
            let status = SourceStatus::new(source.name(), source.kind());
            registry.add(status.clone());
            source.check_env()?;
            match source {
                SourceConfig::Stripe(c) => {
                    let api_key = c.api_key()?;
                    let run = move |store, status| stripe::run(c.clone(), api_key.clone(), store, status);
                    tasks.spawn(supervise(store.clone(), status, run));
                }
                SourceConfig::Window(c) => {
                    let run = move |store, status| window::run(c.clone(), store, status);
                    tasks.spawn(supervise(store.clone(), status, run));
                }
                SourceConfig::EventQueue(c) => {
                    let run = move |store, status| event_queue::run(c.clone(), store, status);
                    tasks.spawn(supervise(store.clone(), status, run));
                }
                SourceConfig::Rest(c) => {
                    let run = move |store, status| crate::source::rest::run(c.clone(), store, status);
                    tasks.spawn(supervise(store.clone(), status, run));
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
        tasks.spawn(supervise(store.clone(), fanout, queue::fanout::run));
        for sink in config.sinks {
            let status = SinkStatus::new(&sink.name, sink.kind.as_str());
            sinks.push(status.clone());
            let run = move |store, status| delivery::run(sink.clone(), store, status);
            tasks.spawn(supervise(store.clone(), status, run));
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
        };
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

/// Run a source (or sink) whenever this process owns it: take ownership
/// (waiting while another process has it), run until ownership is lost, then
/// stand by again. It resumes from its checkpoint wherever it runs next.
async fn supervise<S, F, Fut, E>(store: Arc<dyn Store>, status: Arc<S>, run: F)
where
    S: Supervised,
    F: Fn(Arc<dyn Store>, Arc<S>) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::error::Error + 'static,
{
    let name = status.lease_name();
    // a failure to take the lease says the store is unreachable; taking it
    // says it is back (a failed write is cleared only by a write)
    let mut acquire_failed = false;
    loop {
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
        }
        status.reset();
    }
}

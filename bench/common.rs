//! What the benchmarks share: a change log of ~1 KB customer objects, and
//! percentiles.
#![allow(dead_code)] // each benchmark uses a part of this

use std::sync::Arc;
use std::time::Duration;

// the allocator of the `tributary` binary, so the figures are its own
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use serde_json::json;
use tributary::api::{self, AppState, queues::QueueApi};
use tributary::config::Config;
use tributary::queue;
use tributary::store::queues::AppKind;
use tributary::store::{Batch, ChangeCursor, Mutation, Options, Origin, Store, StoreError, Write, testing};
use tributary::write::Writes;

/// `count` new customers (~1 KB each) numbered from `from`, as backfilled.
pub fn batch(from: usize, count: usize) -> Batch {
    let writes = (from..from + count)
        .map(|i| Write {
            object: "customer".into(),
            id: format!("cus_{i:08}"),
            account: None,
            mutation: Mutation::Upsert(json!({"id": format!("cus_{i:08}"), "object": "customer", "email": format!("user{i}@example.com"),
                "description": "x".repeat(800), "metadata": {"rev": i.to_string()}, "created": 1_700_000_000 + i as i64})),
            origin: Origin::Backfill,
            generation: 1,
        })
        .collect();
    Batch { source: "bench".into(), writes, ..Batch::default() }
}

/// Write `changes` changes (ids from `from`) in commits of 1,000; returns
/// the cursor past the last.
pub async fn fill(store: &dyn Store, from: usize, changes: usize) -> Result<ChangeCursor, StoreError> {
    for start in (from..from + changes).step_by(1000) {
        store.apply(batch(start, 1000.min(from + changes - start))).await?;
    }
    end_of_log(store).await
}

/// The cursor past the newest change.
pub async fn end_of_log(store: &dyn Store) -> Result<ChangeCursor, StoreError> {
    let mut end = ChangeCursor::START;
    loop {
        let page = store.changes_after(end, 10_000).await?;
        if page.changes.is_empty() {
            return Ok(end);
        }
        end = page.next;
    }
}

/// Where a benchmark's store lives: a SQLite file in `dir`, or a throwaway
/// Postgres schema (dropped with the guard) with a pool for concurrency.
pub fn options(backend: &str, dir: &std::path::Path) -> (Option<testing::Schema>, Options) {
    if backend == "sqlite" {
        return (None, Options::url(&format!("sqlite://{}", dir.join("bench.db").display())));
    }
    let (schema, mut options) = testing::options();
    options.pool_size = 24;
    (Some(schema), options)
}

/// Serve Tributary's API over `store` on a loopback port, configured by
/// `config` (TOML: the sources writes go to); returns its base URL.
pub async fn serve_api(store: Arc<dyn Store>, config: &str) -> anyhow::Result<String> {
    let config = Config::parse(config, "bench.toml")?;
    let writes = Arc::new(Writes::new(store.clone(), &config)?);
    let queues = Arc::new(QueueApi::new(1_000_000, 1_000, Duration::from_secs(7 * 86_400)));
    let state = AppState {
        registry: Default::default(),
        sinks: Default::default(),
        store,
        metrics: tributary::telemetry::metrics(),
        queues,
        writes,
        tokens: Default::default(),
        controls: tributary::control::fixed(Default::default()),
        console: tributary::console::Monitor::new(),
    };
    serve(api::router(state)).await
}

/// Serve `router` on a loopback port; its base URL.
pub async fn serve(router: axum::Router) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(url)
}

/// An in-house app of the platform: (id, token).
pub async fn platform_app(store: &dyn Store) -> anyhow::Result<(String, String)> {
    let (app, token, hash) = queue::new_app("bench".into(), AppKind::Inhouse, Some("platform".into()))?;
    store.create_app(&app, &hash).await?;
    Ok((app.id, token))
}

/// The `p` quantile (0..1) of sorted samples, in ms to 0.1.
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    let at = sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)];
    (at.as_secs_f64() * 10_000.0).round() / 10.0
}

/// A `rest` source of the simulator's issue tracker: its repositories, then
/// each one's issues, 100 a page by `Link` headers. `settings` are more
/// keys of the source; `issues` more keys of the issue list.
#[allow(dead_code)]
pub fn tracker_source(name: &str, sim: &str, settings: &str, issues: &str) -> String {
    format!(
        r#"[[sources]]
name = "{name}"
kind = "rest"
base_url = "{sim}"
api_key_env = "REST_BENCH_TOKEN"
paginator = {{ kind = "link_header" }}
{settings}
[[sources.resources]]
name = "repo"
path = "/orgs/acme/repos"
[[sources.resources]]
name = "issue"
path = "/repos/{{owner}}/{{repo}}/issues"
parent = "repo"
params = {{ owner = "owner.login", repo = "name" }}
query = {{ state = "all", per_page = "100" }}
{issues}
"#
    )
}

//! Rest source benchmark, one JSON line per backend: a simulator serving
//! ISSUES issues (default 100,000) over 3 repositories, and the source's
//! runs over them (repositories, then each one's issues, 100 a page by
//! `Link` headers): the first run (every issue new, a full read), an
//! incremental run where nothing changed, one after 1% of the issues
//! changed, and a full read again (every issue compared, nothing changed).
//!
//!     rest [ISSUES] [sqlite|postgres|all]

#[path = "common.rs"]
mod common;

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use tributary::config::{Config, SourceConfig};
use tributary::sim::{Sim, SimArgs};
use tributary::source::rest::Runner;
use tributary::store;

async fn start_sim(issues: usize) -> anyhow::Result<(String, Arc<Sim>)> {
    let args = SimArgs { listen: "127.0.0.1:0".parse()?, scale: 10, accounts: 0, shifts: 10, issues, ..SimArgs::defaults() };
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let url = format!("http://{}", listener.local_addr()?);
    let sim = args.build();
    tokio::spawn(tributary::sim::serve(sim.clone(), listener, std::future::pending()));
    Ok((url, sim))
}

/// A source whose full refresh is due only when `full` says.
fn runner(name: &str, sim: &str, store: Arc<dyn store::Store>) -> anyhow::Result<Runner> {
    let text = common::tracker_source(
        name,
        sim,
        "rate_limit_per_sec = 100000\nfull_refresh_every_secs = 3600",
        "incremental = { param = \"since\", field = \"updated_at\", lookback_secs = 5 }",
    );
    let config = Config::parse(&text, "bench.toml")?;
    let Some(SourceConfig::Rest(rest)) = config.sources.into_iter().next() else { anyhow::bail!("a rest source") };
    Ok(Runner::new(rest, store)?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let issues: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(100_000);
    let which = std::env::args().nth(2).unwrap_or_else(|| "all".into());
    let (sim_url, sim) = start_sim(issues).await?;
    for backend in ["sqlite", "postgres"] {
        if which != "all" && which != backend {
            continue;
        }
        let dir = tempfile::tempdir()?;
        let (_schema, options) = common::options(backend, dir.path());
        let store = store::open(&options).await?;
        let name = format!("bench_{}", rand::random::<u32>());
        let runner = runner(&name, &sim_url, store)?;
        let mut figures = serde_json::Map::new();
        let start = chrono::Utc::now();
        let cases = [
            ("first_full", 0, start),
            ("unchanged", 0, start),
            ("one_percent_changed", issues / 100, start),
            ("full_again", 0, start + chrono::Duration::hours(2)),
        ];
        for (case, edits, now) in cases {
            {
                let mut tracker = sim.tracker.lock();
                for _ in 0..edits {
                    tracker.random_mutation();
                }
            }
            let started = Instant::now();
            let report = runner.run_once(now).await?;
            let seconds = started.elapsed().as_secs_f64();
            figures.insert(
                case.into(),
                json!({
                    "run_ms": (seconds * 1000.0).round(),
                    "items_per_sec": (report.fetched as f64 / seconds).round(),
                    "fetched": report.fetched, "changes": report.changes, "deleted": report.deleted, "requests": report.requests,
                    "full_lists": report.full,
                }),
            );
        }
        println!("{}", json!({"bench": "rest_run", "backend": backend, "issues": issues, "runs": figures}));
    }
    Ok(())
}

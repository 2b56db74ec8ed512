//! Window source benchmark, one JSON line per case: a simulator serving
//! SHIFTS shifts (default 50,000) in one window, and the source's runs over
//! it on SQLite and Postgres, with fingerprints in the store or in Redis:
//! the first run (every shift new), a run where nothing changed, and a run
//! after 1% of the shifts were edited. `fetch_ms` is one plain GET and parse
//! of the same window, the share of a run the upstream and HTTP take.
//!
//! The source is the WhenIWork preset (login, a window read a week at a
//! time, side-loads), so it reads WHENIWORK_API_KEY, WHENIWORK_EMAIL and
//! WHENIWORK_PASSWORD (bench/run.sh sets them).
//!
//!     window [SHIFTS] [sqlite|postgres|all]   (Redis from TRIBUTARY_TEST_REDIS)
//!
//! WINDOW_BENCH_EXTRA adds lines to the source's table (`max_span_days = 0`,
//! `sideloads = {}`: one request, no side-loads).

#[path = "common.rs"]
mod common;

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use tributary::config::{Config, SourceConfig};
use tributary::sim::shifts::{SEED_DAYS_AFTER, SEED_DAYS_BEFORE};
use tributary::sim::{Sim, SimArgs};
use tributary::source::window::Runner;
use tributary::store;

async fn start_sim(shifts: usize) -> anyhow::Result<(String, Arc<Sim>)> {
    let args = SimArgs { listen: "127.0.0.1:0".parse()?, scale: 10, accounts: 0, shifts, ..SimArgs::defaults() };
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let url = format!("http://{}", listener.local_addr()?);
    let sim = args.build();
    tokio::spawn(tributary::sim::serve(sim.clone(), listener, std::future::pending()));
    Ok((url, sim))
}

async fn runner(name: &str, sim: &str, dedupe: Option<&str>, store: Arc<dyn store::Store>) -> anyhow::Result<Runner> {
    let mut dedupe = dedupe.map(|url| format!("dedupe_url = \"{url}\"\n")).unwrap_or_default();
    dedupe.push_str(&std::env::var("WINDOW_BENCH_EXTRA").map(|extra| format!("{extra}\n")).unwrap_or_default());
    // the window covers every shift the sim seeded
    let text = format!(
        "[[sources]]\nname = \"{name}\"\npreset = \"wheniwork\"\nbase_url = \"{sim}\"\ndays_prior = {SEED_DAYS_BEFORE}\ndays_ahead = {SEED_DAYS_AFTER}\nrate_limit_per_sec = 1000\n{dedupe}[sources.auth]\nurl = \"{sim}/login\"\n"
    );
    let config = Config::parse(&text, "bench.toml")?;
    let Some(SourceConfig::Window(window)) = config.sources.into_iter().next() else { anyhow::bail!("a window source") };
    Ok(Runner::new(window, store).await?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let shifts: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(50_000);
    let which = std::env::args().nth(2).unwrap_or_else(|| "all".into());
    let redis = std::env::var("TRIBUTARY_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let (sim_url, sim) = start_sim(shifts).await?;

    let today = chrono::Utc::now().date_naive();
    let window =
        format!("start={}&end={}", today - chrono::Duration::days(SEED_DAYS_BEFORE), today + chrono::Duration::days(SEED_DAYS_AFTER));
    let http = reqwest::Client::new();
    let login = json!({"email": "bench@example.com", "password": "bench"});
    let token: serde_json::Value = http.post(format!("{sim_url}/login")).header("W-Key", "bench").json(&login).send().await?.json().await?;
    let token = token["token"].as_str().unwrap_or_default().to_string();
    let started = Instant::now();
    let body: serde_json::Value = http.get(format!("{sim_url}/2/shifts?{window}")).header("W-Token", token).send().await?.json().await?;
    let fetch_ms = started.elapsed().as_millis();
    let in_window = body["shifts"].as_array().map_or(0, Vec::len);

    for backend in ["sqlite", "postgres"] {
        if which != "all" && which != backend {
            continue;
        }
        for dedupe in [None, Some(redis.as_str())] {
            let dir = tempfile::tempdir()?;
            let (_schema, options) = common::options(backend, dir.path());
            let store = store::open(&options).await?;
            let name = format!("bench_{}", rand::random::<u32>());
            let runner = runner(&name, &sim_url, dedupe, store).await?;
            let mut figures = serde_json::Map::new();
            for (case, edits) in [("first", 0), ("unchanged", 0), ("one_percent_changed", in_window / 100)] {
                sim.shifts.lock().edit_some(edits);
                let started = Instant::now();
                let report = runner.run_once(chrono::Utc::now()).await?;
                let seconds = started.elapsed().as_secs_f64();
                figures.insert(
                    case.into(),
                    json!({
                        "run_ms": (seconds * 1000.0).round(),
                        "items_per_sec": (report.fetched as f64 / seconds).round(),
                        "fetched": report.fetched, "new": report.new, "changed": report.changed, "skipped": report.skipped,
                        "changes": report.changes, "requests": report.requests,
                    }),
                );
            }
            println!(
                "{}",
                json!({
                    "bench": "window_run", "backend": backend, "dedupe": if dedupe.is_some() { "redis" } else { "store" },
                    "shifts": in_window, "fetch_ms": fetch_ms, "runs": figures,
                })
            );
            if dedupe.is_some() {
                let client = redis::Client::open(redis.as_str())?;
                let mut conn = client.get_multiplexed_async_connection().await?;
                let keys: Vec<String> = redis::cmd("KEYS").arg(format!("tributary:{name}:*")).query_async(&mut conn).await?;
                for chunk in keys.chunks(10_000) {
                    redis::cmd("DEL").arg(chunk).query_async::<()>(&mut conn).await?;
                }
            }
        }
    }
    Ok(())
}

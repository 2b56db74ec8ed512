//! Console benchmark: how fast the console's pages answer with SOURCES
//! sources and as many sinks configured (default 100), over a change log
//! of CHANGES changes (default 100,000), on SQLite. The engine runs in this
//! process against the simulator's issue tracker (one `rest` source per
//! sink, each sink a webhook to a receiver here that takes the source's
//! changes). Each page is timed as the browser loads it: its requests at
//! once, 30 times; one JSON line with p50, p95 and max per page.
//!
//!     console [SOURCES] [CHANGES]

#[path = "common.rs"]
mod common;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tributary::config::Config;
use tributary::engine::Engine;
use tributary::sim::SimArgs;

const TOKEN: &str = "bench-admin-token";
const SAMPLES: usize = 30;

fn config(db: &str, sim: &str, hooks: &str, count: usize) -> String {
    let mut text =
        format!("[database]\nurl = \"sqlite://{db}\"\n[api]\nlisten = \"127.0.0.1:0\"\nadmin_token_env = \"BENCH_ADMIN_TOKEN\"\n");
    for n in 0..count {
        text.push_str(&common::tracker_source(&format!("r{n:03}"), sim, "poll_interval_secs = 30", ""));
        text.push_str(&format!(
            "[[sinks]]\nname = \"s{n:03}\"\nkind = \"webhook\"\nurl = \"{hooks}\"\nsecret_env = \"BENCH_WEBHOOK_SECRET\"\n\
             filter = {{ sources = [\"r{n:03}\"] }}\n"
        ));
    }
    text
}

async fn get(client: &reqwest::Client, url: String) -> anyhow::Result<()> {
    let response = client.get(&url).bearer_auth(TOKEN).send().await?;
    anyhow::ensure!(response.status().is_success(), "{url}: {}", response.status());
    response.bytes().await?;
    Ok(())
}

/// Time to the first event of the live stream.
async fn first_event(client: &reqwest::Client, url: String) -> anyhow::Result<()> {
    let mut response = client.get(&url).bearer_auth(TOKEN).send().await?;
    anyhow::ensure!(response.status().is_success(), "{url}: {}", response.status());
    response.chunk().await?;
    Ok(())
}

fn summary(mut times: Vec<f64>) -> Value {
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    json!({ "p50_ms": at(0.5), "p95_ms": at(0.95), "max_ms": at(1.0) })
}

#[allow(unsafe_code)]
fn main() -> anyhow::Result<()> {
    for (var, value) in
        [("BENCH_ADMIN_TOKEN", TOKEN), ("REST_BENCH_TOKEN", "bench"), ("BENCH_WEBHOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    {
        // SAFETY: before the runtime starts, no other thread exists
        unsafe { std::env::set_var(var, value) };
    }
    tokio::runtime::Runtime::new()?.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let count: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(100);
    let changes: usize = std::env::args().nth(2).map(|s| s.parse()).transpose()?.unwrap_or(100_000);
    let args = SimArgs { listen: "127.0.0.1:0".parse()?, scale: 10, accounts: 0, shifts: 10, issues: 30, ..SimArgs::defaults() };
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let sim = format!("http://{}", listener.local_addr()?);
    tokio::spawn(tributary::sim::serve(args.build(), listener, std::future::pending()));
    let hooks =
        common::serve(axum::Router::new().route("/hooks", axum::routing::post(|| async { axum::http::StatusCode::NO_CONTENT }))).await?;

    let dir = tempfile::tempdir()?;
    let db = dir.path().join("console.db");
    // a change log of some size, already delivered
    let store = tributary::store::open(&tributary::store::Options::url(&format!("sqlite://{}", db.display()))).await?;
    let end = common::fill(store.as_ref(), 0, changes).await?;
    for n in 0..count {
        store.advance_sink(&format!("s{n:03}"), 0, end, vec![]).await?;
    }
    drop(store);

    let config = Config::parse(&config(&db.display().to_string(), &sim, &format!("{hooks}/hooks"), count), "bench.toml")?;
    let engine_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let engine = Engine::start_with_listener(config, engine_listener).await?;
    let api = format!("http://{}", engine.api_addr);
    tokio::spawn(engine.serve(std::future::pending()));

    // every source has run once and every sink caught up
    let client = reqwest::Client::new();
    let started = Instant::now();
    loop {
        let overview: Value = client.get(format!("{api}/v1/console/overview")).bearer_auth(TOKEN).send().await?.json().await?;
        let sources = overview["sources"].as_array().map_or(0, |s| s.iter().filter(|s| s["phase"] == "live").count());
        let caught_up = overview["sinks"].as_array().map_or(0, |s| s.iter().filter(|s| s["lag_changes"] == 0).count());
        if sources == count && caught_up == count + 1 {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(300),
            "not settled after 5 minutes: {sources} sources live, {caught_up} sinks caught up"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let settled_secs = started.elapsed().as_secs_f64();

    let u = |path: &str| format!("{api}{path}");
    let pages: Vec<(&str, Vec<String>)> = vec![
        ("shell", vec![u("/"), u("/console/app.js"), u("/console/app.css")]),
        ("overview", vec![u("/v1/console/history"), u("/v1/console/overview")]),
        ("source", vec![u("/v1/sources"), u("/v1/sources/r050/logs")]),
        ("sink", vec![u("/v1/console/history"), u("/v1/sinks/s050/dead_letters?limit=200"), u("/v1/sinks/s050/logs")]),
        ("changes", vec![u("/v1/changes?limit=100")]),
        ("changes_filtered", vec![u("/v1/changes?source=bench&object=customer&op=read&limit=100")]),
        // a filter nothing matches reads the whole log: the worst case
        ("changes_none_match", vec![u("/v1/changes?op=delete&limit=100")]),
        ("object_history", vec![u(&format!("/v1/changes?source=bench&object=customer&object_id=cus_{:08}&limit=1000", changes / 2))]),
        ("apps", vec![u("/v1/console/apps")]),
    ];
    let mut figures = serde_json::Map::new();
    for (name, urls) in &pages {
        let mut times = Vec::with_capacity(SAMPLES);
        for _ in 0..SAMPLES {
            let start = Instant::now();
            futures::future::try_join_all(urls.iter().map(|url| get(&client, url.clone()))).await?;
            times.push(start.elapsed().as_secs_f64() * 1000.0);
        }
        figures.insert(name.to_string(), summary(times));
    }
    let mut times = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let start = Instant::now();
        first_event(&client, u("/v1/console/events")).await?;
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    figures.insert("live_first_event".into(), summary(times));
    let worst = figures.values().filter_map(|f| f["p95_ms"].as_f64()).fold(0.0, f64::max);
    println!(
        "{}",
        json!({
            "bench": "console", "backend": "sqlite", "sources": count, "sinks": count, "changes": changes,
            "settled_secs": settled_secs, "pages": figures, "worst_p95_ms": worst, "under_100_ms": worst < 100.0,
        })
    );
    Ok(())
}

//! Delivery benchmarks, printing one JSON line each:
//! - throughput: a change log pre-filled with N changes (default 500,000,
//!   ~1 KB objects, SQLite) delivered to Kafka, NATS and Redis, one sink at
//!   a time: changes/s from start to the sink's cursor reaching the end;
//! - latency: changes committed at 1,000/s (batches of 10 every 10 ms) to a
//!   Redis, NATS or Kafka sink: commit → sink acknowledged (cursor passed
//!   it), p50 and p99.
//!
//!     delivery [CHANGES]   (services as in scripts/ensure-services.sh)

#[path = "common.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::batch;
use serde_json::json;
use tributary::delivery::{self, SinkStatus};
use tributary::sink::SinkConfig;
use tributary::store::{self, ChangeCursor, Options, Store};

fn sink(kind: &str, tag: &str) -> SinkConfig {
    let toml = match kind {
        "kafka" => format!(
            "name = \"bench_{kind}\"\nkind = \"kafka\"\nbrokers = \"127.0.0.1:19092\"\ntopic = \"{tag}.{{source}}.{{object}}\"\nbatch_size = 2000"
        ),
        "nats" => format!(
            "name = \"bench_{kind}\"\nkind = \"nats\"\nurl = \"nats://127.0.0.1:4222\"\nsubject = \"{tag}.{{source}}.{{object}}\"\njetstream = \"{tag}\"\nbatch_size = 2000"
        ),
        _ => format!(
            "name = \"bench_{kind}\"\nkind = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\nstream = \"{tag}:{{source}}:{{object}}\"\nmaxlen = 100000\nbatch_size = 2000"
        ),
    };
    toml::from_str(&toml).expect("bench sink config")
}

async fn run_sink(config: SinkConfig, store: Arc<dyn Store>) -> (Arc<SinkStatus>, tokio::task::JoinHandle<()>) {
    let status = SinkStatus::new(&config.name, config.kind.as_str());
    let (s, st) = (store.clone(), status.clone());
    let task = tokio::spawn(async move {
        if let Err(e) = delivery::run(config, s, st, tributary::control::fixed(Default::default())).await {
            eprintln!("sink stopped: {e}");
        }
    });
    (status, task)
}

/// Remove what a run left in the shared Redis and NATS (the bench's Kafka
/// broker lives in memory).
async fn cleanup(kind: &str, tag: &str) {
    match kind {
        "nats" => {
            if let Ok(client) = async_nats::connect("nats://127.0.0.1:4222").await {
                let _ = async_nats::jetstream::new(client).delete_stream(tag).await;
            }
        }
        "redis" => {
            if let Ok(mut conn) = redis::Client::open("redis://127.0.0.1:6379").and_then(|c| c.get_connection()) {
                let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{tag}:*")).query(&mut conn).unwrap_or_default();
                if !keys.is_empty() {
                    let _: Result<(), _> = redis::cmd("DEL").arg(keys).query(&mut conn);
                }
            }
        }
        _ => {}
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let changes: usize = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(500_000);
    let dir = tempfile::tempdir()?;
    let store = store::open(&Options::url(&format!("sqlite://{}", dir.path().join("bench.db").display()))).await?;
    let mut end = common::fill(store.as_ref(), 0, changes).await?;
    let tag = format!("bench{}", std::process::id());
    for kind in ["kafka", "nats", "redis"] {
        let started = Instant::now();
        let (status, task) = run_sink(sink(kind, &tag), store.clone()).await;
        while status.cursor() != Some(end) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let seconds = started.elapsed().as_secs_f64();
        task.abort();
        cleanup(kind, &tag).await;
        println!(
            "{}",
            json!({"bench": "delivery_throughput", "sink": kind, "changes": changes, "seconds": (seconds * 100.0).round() / 100.0,
            "changes_per_sec": (changes as f64 / seconds).round(), "target_changes_per_sec": if kind == "nats" { None } else { Some(50_000) }})
        );
    }

    // latency: 1,000 changes/s while each sink is caught up; ids never
    // repeat (an unchanged object writes no change)
    let mut next_id = changes + 1_000_000;
    for kind in ["redis", "nats", "kafka"] {
        let config = sink(kind, &format!("{tag}lat"));
        let name = config.name.clone();
        store.advance_sink(&name, 0, end, vec![]).await?;
        let (status, task) = run_sink(config, store.clone()).await;
        // a watcher checks the sink's cursor every 0.2 ms: a batch's latency
        // ends when the cursor passes its last change
        let pending: Arc<parking_lot::Mutex<std::collections::VecDeque<(ChangeCursor, Instant)>>> = Default::default();
        let (watched, watcher_status) = (pending.clone(), status.clone());
        let watcher = tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let acked = watcher_status.cursor().unwrap_or(ChangeCursor::START);
                {
                    let mut queue = watched.lock();
                    while queue.front().is_some_and(|(cursor, _)| *cursor <= acked) {
                        let (_, at) = queue.pop_front().expect("front checked");
                        latencies.push(at.elapsed());
                    }
                }
                if latencies.len() >= 1000 {
                    return latencies;
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        });
        let mut ticker = tokio::time::interval(Duration::from_millis(10));
        for _ in 0..1000 {
            ticker.tick().await;
            let committed = Instant::now();
            store.apply(batch(next_id, 10)).await?;
            next_id += 10;
            let page = store.changes_after(end, 100).await?;
            if let Some(last) = page.changes.last() {
                end = last.cursor;
                pending.lock().push_back((end, committed));
            }
        }
        let mut latencies = watcher.await?;
        task.abort();
        cleanup(kind, &format!("{tag}lat")).await;
        latencies.sort();
        println!(
            "{}",
            json!({"bench": "delivery_latency", "sink": kind, "changes_per_sec": 1000, "samples": latencies.len(),
            "p50_ms": common::percentile_ms(&latencies, 0.5), "p99_ms": common::percentile_ms(&latencies, 0.99), "target_p99_ms": 50})
        );
    }
    Ok(())
}

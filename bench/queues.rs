//! Built-in pull queue benchmarks over real HTTP (the API served on a
//! loopback port in this process), one JSON line each, on SQLite and on
//! Postgres:
//! - `queue_pull_ack`: N changes fanned out to C queues (C = 1 and 8), one
//!   consumer per queue pulling batches of 100 and acknowledging each with
//!   the next pull: events/s over all consumers; the fan-out's rows/s too;
//! - `queue_wake`: a long poll parked on an empty queue, one change
//!   committed: commit returned → pull answered, p50 and p99 (on Postgres
//!   also with the fan-out in another store instance, woken by NOTIFY);
//! - `queue_fanout_100`: changes subscribed by 100 queues: bytes the queue
//!   rows take per change next to the change log's, and one consumer's pull
//!   rate on one of those queues.
//!
//!     queues [CHANGES] [sqlite|postgres|all]   (Postgres from TRIBUTARY_TEST_PG)

#[path = "common.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tributary::delivery::SinkStatus;
use tributary::queue;
use tributary::store::queues::FANOUT_READER;
use tributary::store::{self, ChangeCursor, Options, Store, testing};

/// A store with the API served over it, and an app to pull with.
struct Rig {
    store: Arc<dyn Store>,
    api: String,
    app_id: String,
    token: String,
    backend: &'static str,
    /// Keeps a Postgres schema until the bench ends.
    schema: Option<testing::Schema>,
    dir: tempfile::TempDir,
}

impl Rig {
    async fn new(backend: &'static str) -> anyhow::Result<Rig> {
        let dir = tempfile::tempdir()?;
        let (schema, options) = common::options(backend, dir.path());
        let store = store::open(&options).await?;
        let api = common::serve_api(store.clone(), "").await?;
        let (app_id, token) = common::platform_app(store.as_ref()).await?;
        Ok(Rig { store, api, app_id, token, backend, schema, dir })
    }

    /// `count` queues, each subscribed to every customer change.
    async fn queues(&self, count: usize) -> anyhow::Result<Vec<String>> {
        let mut codes = Vec::new();
        for i in 0..count {
            let code = tributary::ids::random_id("q_", 16);
            self.store.create_queue(&self.app_id, &code, &format!("bench {i}"), 1_000).await?.expect("under the queue limit");
            let subscription = queue::new_subscription("customer.*".into(), "platform".into(), false, Duration::ZERO);
            self.store.subscribe(&self.app_id, &code, &subscription).await?.expect("the queue exists");
            codes.push(code);
        }
        Ok(codes)
    }

    /// Run the fan-out until it has passed `end`; returns its rows/s.
    async fn fan_out_to(&self, end: ChangeCursor, rows: usize) -> anyhow::Result<f64> {
        let status = SinkStatus::new(FANOUT_READER, "queues");
        let started = Instant::now();
        let task = tokio::spawn(queue::fanout::run(self.store.clone(), status.clone()));
        while status.cursor() != Some(end) {
            anyhow::ensure!(!task.is_finished(), "the fan-out stopped");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        task.abort();
        Ok(rows as f64 / started.elapsed().as_secs_f64())
    }
}

#[derive(serde::Deserialize)]
struct Batch {
    events: Vec<Box<serde_json::value::RawValue>>,
    ack_id: Option<String>,
}

/// Pull `expected` events from one queue, acknowledging each batch with the
/// next pull.
async fn consume(client: reqwest::Client, url: String, token: String, expected: usize) -> anyhow::Result<usize> {
    let (mut received, mut ack): (usize, Value) = (0, Value::Null);
    loop {
        let response = client.post(&url).bearer_auth(&token).json(&json!({"ack_id": ack, "limit": 100})).send().await?;
        anyhow::ensure!(response.status().is_success(), "pull answered {}", response.status());
        // split into events, as a consumer would, without building trees
        let batch: Batch = serde_json::from_slice(&response.bytes().await?)?;
        let events = batch.events.len();
        received += events;
        ack = batch.ack_id.map_or(Value::Null, Value::String);
        if events == 0 {
            anyhow::ensure!(received == expected, "drained after {received} of {expected} events");
            return Ok(received);
        }
    }
}

/// Every queue drained by its own consumer at once: events/s.
async fn drain_all(rig: &Rig, codes: &[String], per_queue: usize) -> anyhow::Result<f64> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
    let started = Instant::now();
    let consumers: Vec<_> = codes
        .iter()
        .map(|code| {
            let url = format!("{}/v1/queues/{code}/events/pull", rig.api);
            tokio::spawn(consume(client.clone(), url, rig.token.clone(), per_queue))
        })
        .collect();
    let mut total = 0;
    for consumer in consumers {
        total += consumer.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

async fn pull_ack(backend: &'static str, changes: usize) -> anyhow::Result<()> {
    for consumers in [1, 8] {
        let rig = Rig::new(backend).await?;
        let codes = rig.queues(consumers).await?;
        let end = common::fill(rig.store.as_ref(), 0, changes).await?;
        let fan_out_rows_per_sec = rig.fan_out_to(end, changes * consumers).await?;
        let events_per_sec = drain_all(&rig, &codes, changes).await?;
        println!(
            "{}",
            json!({"bench": "queue_pull_ack", "backend": rig.backend, "consumers": consumers, "batch": 100,
                "events": changes * consumers, "events_per_sec": events_per_sec.round(),
                "fan_out_rows_per_sec": fan_out_rows_per_sec.round(),
                "target_events_per_sec": if backend == "postgres" { Some(30_000) } else { None }})
        );
    }
    Ok(())
}

/// Long polls parked on `api`, woken by changes committed through `writer`
/// and fanned out by `feeder` (the same store, or another instance).
async fn wake(rig: &Rig, feeder: Arc<dyn Store>, api: &str, samples: usize) -> anyhow::Result<(f64, f64)> {
    let code = rig.queues(1).await?.remove(0);
    let status = SinkStatus::new(FANOUT_READER, "queues");
    let start = common::end_of_log(rig.store.as_ref()).await?;
    feeder.advance_sink(FANOUT_READER, 0, start, vec![]).await?;
    let fanout = tokio::spawn(queue::fanout::run(feeder, status));
    let client = reqwest::Client::new();
    let url = format!("{api}/v1/queues/{code}/events/pull");
    let mut ack = Value::Null;
    let mut latencies = Vec::new();
    for i in 0..samples {
        let request = client.post(&url).bearer_auth(&rig.token).json(&json!({"ack_id": ack, "wait_ms": 10_000})).send();
        let pull = tokio::spawn(async move {
            let response = request.await?;
            let batch: Value = response.json().await?;
            Ok::<_, anyhow::Error>((batch, Instant::now()))
        });
        // the poll parks (and acknowledges the previous event) first
        tokio::time::sleep(Duration::from_millis(20)).await;
        rig.store.apply(common::batch(10_000_000 + i, 1)).await?;
        let committed = Instant::now();
        let (batch, answered) = pull.await??;
        anyhow::ensure!(batch["events"].as_array().is_some_and(|e| e.len() == 1), "woken without the event: {batch}");
        latencies.push(answered.saturating_duration_since(committed));
        ack = batch["ack_id"].clone();
    }
    fanout.abort();
    latencies.sort();
    Ok((common::percentile_ms(&latencies, 0.5), common::percentile_ms(&latencies, 0.99)))
}

async fn wake_latency(backend: &'static str) -> anyhow::Result<()> {
    const SAMPLES: usize = 200;
    let rig = Rig::new(backend).await?;
    let (p50, p99) = wake(&rig, rig.store.clone(), &rig.api, SAMPLES).await?;
    println!(
        "{}",
        json!({"bench": "queue_wake", "backend": backend, "fan_out": "same process", "samples": SAMPLES,
            "p50_ms": p50, "p99_ms": p99, "target_p99_ms": 20})
    );
    if backend == "postgres" {
        // the poll served by one instance, the fan-out run by another
        let rig = Rig::new(backend).await?;
        let other =
            store::open(&Options { schema: rig.schema.as_ref().unwrap().0.clone(), ..common::options(backend, rig.dir.path()).1 }).await?;
        let (p50, p99) = wake(&rig, other, &rig.api, SAMPLES).await?;
        println!(
            "{}",
            json!({"bench": "queue_wake", "backend": backend, "fan_out": "another instance (NOTIFY)", "samples": SAMPLES,
                "p50_ms": p50, "p99_ms": p99, "target_p99_ms": 20})
        );
    }
    Ok(())
}

/// Bytes the store takes for queue rows and for the change log.
async fn sizes(rig: &Rig, dir: &std::path::Path) -> anyhow::Result<(u64, u64)> {
    if rig.backend == "sqlite" {
        let conn = rusqlite::Connection::open(dir.join("bench.db"))?;
        let size = |table: &str| -> rusqlite::Result<u64> {
            conn.query_row("SELECT COALESCE(SUM(pgsize), 0) FROM dbstat WHERE name = ?1", [table], |r| r.get::<_, i64>(0)).map(|n| n as u64)
        };
        let indexed = |table: &str| -> rusqlite::Result<u64> {
            let mut total = size(table)?;
            let mut indexes = conn.prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?1")?;
            for name in indexes.query_map([table], |r| r.get::<_, String>(0))? {
                total += size(&name?)?;
            }
            Ok(total)
        };
        return Ok((indexed("tributary_queue_events")?, indexed("tributary_changes")?));
    }
    let schema = rig.schema.as_ref().unwrap().0.clone();
    let (client, connection) = tokio_postgres::connect(&testing::base_url(), tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let size = |table: &'static str| {
        let (client, schema) = (&client, schema.clone());
        async move {
            let row = client
                .query_one("SELECT pg_total_relation_size(format('%I.%I', $1::text, $2::text)::regclass)", &[&schema, &table])
                .await?;
            Ok::<u64, anyhow::Error>(row.get::<_, i64>(0) as u64)
        }
    };
    Ok((size("tributary_queue_events").await?, size("tributary_changes").await?))
}

async fn fanout_100(backend: &'static str, changes: usize) -> anyhow::Result<()> {
    const QUEUES: usize = 100;
    let rig = Rig::new(backend).await?;
    let codes = rig.queues(QUEUES).await?;
    let end = common::fill(rig.store.as_ref(), 0, changes).await?;
    let rows_per_sec = rig.fan_out_to(end, changes * QUEUES).await?;
    let (queue_bytes, log_bytes) = sizes(&rig, rig.dir.path()).await?;
    let one_consumer = drain_all(&rig, &codes[..1], changes).await?;
    println!(
        "{}",
        json!({"bench": "queue_fanout_100", "backend": backend, "queues": QUEUES, "changes": changes,
            "queue_bytes_per_change": queue_bytes / changes as u64, "queue_bytes_per_row": queue_bytes / (changes * QUEUES) as u64,
            "change_log_bytes_per_change": log_bytes / changes as u64,
            "fan_out_rows_per_sec": rows_per_sec.round(), "one_consumer_events_per_sec": one_consumer.round()})
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let changes: usize = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(50_000);
    let which = std::env::args().nth(2).unwrap_or_else(|| "all".into());
    for backend in ["sqlite", "postgres"] {
        if which != "all" && which != backend {
            continue;
        }
        pull_ack(backend, changes).await?;
        wake_latency(backend).await?;
        fanout_100(backend, changes / 5).await?;
    }
    Ok(())
}

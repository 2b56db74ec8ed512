//! Idempotent write benchmarks, one JSON line each, on SQLite and Postgres:
//! creating customers in the simulator directly (form body, a fresh
//! `Idempotency-Key` each) and through Tributary's write API (key taken,
//! upstream called, mirror + change log + answer committed): latency p50 and
//! p99 one write at a time, and writes/s with 16 concurrent clients. Both
//! run in this process over loopback HTTP.
//!
//!     writes [WRITES] [sqlite|postgres|all]   (Postgres from TRIBUTARY_TEST_PG)

#[path = "common.rs"]
mod common;

use std::time::{Duration, Instant};

use serde_json::json;
use tributary::sim::SimArgs;
use tributary::store::{self, testing};

const KEY_ENV: &str = "TRIBUTARY_BENCH_SIM_KEY";
const CONCURRENCY: usize = 16;

async fn start_sim() -> anyhow::Result<String> {
    let args = SimArgs { listen: "127.0.0.1:0".parse()?, scale: 10, accounts: 0, ..SimArgs::defaults() };
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(tributary::sim::serve(args.build(), listener, std::future::pending()));
    Ok(url)
}

/// Tributary's API over a fresh store, taking writes for a source `stripe`
/// on `sim`; returns (base URL, app token, the Postgres schema's guard).
async fn start_api(backend: &str, sim: &str, dir: &std::path::Path) -> anyhow::Result<(String, String, Option<testing::Schema>)> {
    let (schema, options) = common::options(backend, dir);
    let store = store::open(&options).await?;
    let text = format!("[[sources]]\nname = \"stripe\"\nkind = \"stripe\"\nbase_url = \"{sim}\"\napi_key_env = \"{KEY_ENV}\"\n");
    let url = common::serve_api(store.clone(), &text).await?;
    let (_, token) = common::platform_app(store.as_ref()).await?;
    Ok((url, token, schema))
}

/// One way to create customer `n`.
#[derive(Clone)]
enum Target {
    Direct { sim: String },
    Through { api: String, token: String },
}

impl Target {
    async fn create(&self, client: &reqwest::Client, run: &str, n: usize) -> anyhow::Result<()> {
        let key = format!("{run}-{n}");
        let email = format!("bench{n}@example.com");
        let response = match self {
            Target::Direct { sim } => {
                let request = client.post(format!("{sim}/v1/customers")).bearer_auth("sk_test_bench").header("Idempotency-Key", &key);
                request.form(&[("email", email.as_str()), ("metadata[run]", run)]).send().await?
            }
            Target::Through { api, token } => {
                let request = client.post(format!("{api}/v1/sources/stripe/customers")).bearer_auth(token).header("Idempotency-Key", &key);
                request.json(&json!({"email": email, "metadata": {"run": run}})).send().await?
            }
        };
        anyhow::ensure!(response.status().is_success(), "write answered {}", response.status());
        response.bytes().await?;
        Ok(())
    }
}

/// Latencies of `count` writes one at a time, sorted.
async fn sequential(target: &Target, run: &str, count: usize) -> anyhow::Result<Vec<Duration>> {
    let client = reqwest::Client::new();
    let mut latencies = Vec::with_capacity(count);
    for n in 0..count {
        let started = Instant::now();
        target.create(&client, run, n).await?;
        latencies.push(started.elapsed());
    }
    latencies.sort();
    Ok(latencies)
}

/// Writes/s with `CONCURRENCY` clients sharing `count` writes.
async fn concurrent(target: &Target, run: &str, count: usize) -> anyhow::Result<f64> {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|w| {
            let (target, client, run) = (target.clone(), client.clone(), run.to_string());
            tokio::spawn(async move {
                for n in (w..count).step_by(CONCURRENCY) {
                    target.create(&client, &run, n).await?;
                }
                Ok::<_, anyhow::Error>(())
            })
        })
        .collect();
    for worker in workers {
        worker.await??;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

async fn bench(backend: &'static str, writes: usize) -> anyhow::Result<()> {
    let sim = start_sim().await?;
    let dir = tempfile::tempdir()?;
    let (api, token, _schema) = start_api(backend, &sim, dir.path()).await?;
    let direct = Target::Direct { sim };
    let through = Target::Through { api, token };
    // warm both paths (connections, prepared statements, mirror table)
    sequential(&direct, "warm-direct", 50).await?;
    sequential(&through, "warm-through", 50).await?;

    let direct_latency = sequential(&direct, "seq-direct", writes).await?;
    let through_latency = sequential(&through, "seq-through", writes).await?;
    let direct_rate = concurrent(&direct, "par-direct", writes * 4).await?;
    let through_rate = concurrent(&through, "par-through", writes * 4).await?;
    let p = common::percentile_ms;
    println!(
        "{}",
        json!({"bench": "idempotent_write", "backend": backend, "writes": writes,
            "direct_p50_ms": p(&direct_latency, 0.5), "direct_p99_ms": p(&direct_latency, 0.99),
            "through_p50_ms": p(&through_latency, 0.5), "through_p99_ms": p(&through_latency, 0.99),
            "overhead_p50_ms": ((p(&through_latency, 0.5) - p(&direct_latency, 0.5)) * 10.0).round() / 10.0,
            "overhead_p99_ms": ((p(&through_latency, 0.99) - p(&direct_latency, 0.99)) * 10.0).round() / 10.0,
            "concurrency": CONCURRENCY, "direct_writes_per_sec": direct_rate.round(), "through_writes_per_sec": through_rate.round(),
            "target_overhead_p50_ms": 2})
    );
    Ok(())
}

#[allow(unsafe_code)]
fn main() -> anyhow::Result<()> {
    // SAFETY: before the runtime starts, no other thread exists
    unsafe { std::env::set_var(KEY_ENV, "sk_test_bench") };
    let writes: usize = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(1_000);
    let which = std::env::args().nth(2).unwrap_or_else(|| "all".into());
    tokio::runtime::Runtime::new()?.block_on(async {
        for backend in ["sqlite", "postgres"] {
            if which == "all" || which == backend {
                bench(backend, writes).await?;
            }
        }
        Ok(())
    })
}

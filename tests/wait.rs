//! The `/wait` barrier under load: callers share polls of the upstream, so
//! no number of them spends more than one extra poll per scope per
//! `poll_interval_ms`.

mod common;

use std::time::{Duration, Instant};

use common::*;

const POLL_INTERVAL_MS: u64 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_looping_waiters_add_at_most_one_poll_per_scope_per_interval() {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--scale", "30", "--accounts", "1", "--mutations-per-sec", "0"]).await;
    let engine =
        Engine::start(dir.path(), &sim.url, &format!("poll_interval_ms = {POLL_INTERVAL_MS}\nrate_limit_per_sec = 1000\nconcurrency = 50"))
            .await;
    engine.wait_live(Duration::from_secs(60)).await;
    let scopes = engine.sources().await["sources"][0]["accounts"].as_array().unwrap().len() as u64;
    assert_eq!(scopes, 2, "the platform and one account");

    let before = sim.stats().await["requests"].as_u64().unwrap();
    let started = Instant::now();
    let run_for = Duration::from_secs(10);
    let mut clients = Vec::new();
    for _ in 0..20 {
        let url = format!("{}/v1/sources/stripe/wait?timeout_ms=5000", engine.api);
        clients.push(tokio::spawn(async move {
            let mut answered = 0u64;
            while started.elapsed() < run_for {
                let status = http().get(&url).send().await.expect("wait").status();
                assert_eq!(status, 200);
                answered += 1;
            }
            answered
        }));
    }
    let mut answered = 0;
    for client in clients {
        answered += client.await.unwrap();
    }
    let elapsed = started.elapsed();
    let requests = sim.stats().await["requests"].as_u64().unwrap() - before;
    // each poll of an idle scope is one request; the scheduled polls
    // (one per interval) plus at most one early poll per interval
    let intervals = elapsed.as_millis() as u64 / POLL_INTERVAL_MS + 1;
    let allowed = scopes * 2 * intervals;
    assert!(answered > 20, "the waiters were served: {answered}");
    assert!(requests <= allowed, "{requests} upstream requests in {elapsed:?} for {answered} waits; at most {allowed} allowed");
}

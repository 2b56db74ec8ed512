//! A misbehaving upstream: truncated JSON, a storm of 500s, a revoked key.
//! Each gives a clear error naming the URL, stores nothing wrong, and the
//! engine recovers when the upstream does.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_json_500_storms_and_401s_are_survived() {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--scale", "300", "--accounts", "1", "--truncate-rate", "0.3"]).await;
    let engine = Engine::start(dir.path(), &sim.url, "poll_interval_ms = 100\nretry_max_backoff_ms = 500").await;
    engine.wait_live(Duration::from_secs(120)).await;
    assert!(sim.stats().await["truncated"].as_u64().unwrap() > 0);
    let malformed =
        engine.proc.log_text().lines().filter(|l| l.contains("malformed json") && l.contains(&format!("{}/v1/", sim.url))).count();
    assert!(malformed > 0, "truncated bodies were not reported with their URL");
    sim.set_faults(json!({})).await;
    assert_eq!(engine.wait_barrier(10_000).await.0, 200);
    assert_converged(&sim, &engine.db).await;

    // a 500 storm while the upstream keeps changing
    sim.set_faults(json!({"fail_rate": 1.0})).await;
    sim.set_traffic(30.0).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    sim.set_traffic(0.0).await;
    assert_eq!(engine.wait_barrier(300).await.0, 504, "a poll succeeded during a total outage");
    sim.set_faults(json!({})).await;
    assert_eq!(engine.wait_barrier(15_000).await.0, 200);
    assert_converged(&sim, &engine.db).await;
    assert!(engine.proc.log_text().contains("500"), "the 500s were not logged");

    // a revoked key: a final 4xx stops the account's sync with a clear
    // error; the account restarts after the backoff and recovers
    sim.set_faults(json!({"unauthorized": true})).await;
    sim.set_traffic(30.0).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    sim.set_traffic(0.0).await;
    let url = format!("{}/v1/sources", engine.api);
    wait_until("the 401 to show in /v1/sources", Duration::from_secs(10), || async {
        get_json(&url).await.is_some_and(|s| s["sources"][0]["last_error"].as_str().is_some_and(|e| e.contains("401")))
    })
    .await;
    let errors = engine.proc.log_kinds("source_error");
    assert!(errors.iter().any(|l| l["error"].as_str().is_some_and(|e| e.contains("401") && e.contains("/v1/events"))), "{errors:?}");
    sim.set_faults(json!({})).await;
    assert_eq!(engine.wait_barrier(15_000).await.0, 200);
    assert_converged(&sim, &engine.db).await;
}

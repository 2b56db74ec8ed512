//! Crashes and gaps: a real `kill -9` mid-backfill, and an event cursor that
//! expires while the engine is down.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::Value;

fn list_requests(stats: &Value, resource: &str) -> u64 {
    stats["by_route"][format!("GET /v1/{resource}")].as_u64().unwrap_or(0)
}

async fn killed_mid_backfill_resumes_without_refetching_completed_resources(backend: Backend) {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--scale", "3000", "--accounts", "0", "--latency-ms", "5"]).await;
    // a slow budget: products (3 pages) finish long before customers (30 pages)
    let mut first = Engine::start_on(dir.path(), backend(dir.path()), &sim.url, "rate_limit_per_sec = 10\nconcurrency = 4").await;
    let url = format!("{}/v1/sources", first.api);
    let done = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    wait_until("one resource to finish while others are still paging", Duration::from_secs(60), || {
        let (url, done) = (url.clone(), done.clone());
        async move {
            let Some(sources) = get_json(&url).await else { return false };
            let backfill = sources["sources"][0]["accounts"][0]["backfill"].as_object().cloned().unwrap_or_default();
            // a resource listed in passes (`prices?active=false`) is done
            // when every pass is, and its route is counted as one
            let route = |name: &String| name.split('?').next().unwrap_or(name).to_string();
            let routes: HashSet<String> = backfill.keys().map(route).collect();
            let finished: Vec<String> = routes
                .iter()
                .filter(|r| backfill.iter().filter(|(name, _)| route(name) == **r).all(|(_, p)| p["done"] == true))
                .cloned()
                .collect();
            let partial = !finished.is_empty() && finished.len() < routes.len();
            *done.lock().unwrap() = finished;
            partial
        }
    })
    .await;
    first.proc.kill();
    let before = sim.stats().await;

    let second = first.restart(dir.path()).await;
    second.wait_live(Duration::from_secs(120)).await;
    let (status, _) = second.wait_barrier(20_000).await;
    assert_eq!(status, 200);
    assert_converged(&sim, &second.db).await;

    let after = sim.stats().await;
    let done = done.lock().unwrap().clone();
    for resource in &done {
        assert_eq!(list_requests(&before, resource), list_requests(&after, resource), "{resource} was fetched again after the restart");
    }
    assert!(second.proc.log_kinds("backfill_started").is_empty(), "the restart began a new backfill instead of resuming");
    assert_eq!(second.proc.log_kinds("backfill_complete").len(), 1);

    // each object was read exactly once: the page in flight at the kill was
    // not committed, so re-fetching it wrote no duplicate
    let reads: Vec<(String, String)> =
        second.changes().await.into_iter().filter(|c| c.op == "read").map(|c| (c.object, c.object_id)).collect();
    let distinct: HashSet<&(String, String)> = reads.iter().collect();
    assert_eq!(reads.len(), distinct.len(), "an object was backfilled twice");
}

async fn expired_cursor_is_logged_and_rebackfilled(backend: Backend) {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--scale", "200", "--accounts", "1", "--event-retention-secs", "2"]).await;
    let mut first =
        Engine::start_on(dir.path(), backend(dir.path()), &sim.url, "poll_interval_ms = 100\nevent_retention_secs = 2\nlookback_secs = 1")
            .await;
    first.wait_live(Duration::from_secs(60)).await;
    let (status, created) = sim.call(Method::POST, "/v1/customers", &[("email", "gone-soon@example.com")]).await;
    assert_eq!(status, 200);
    let doomed = created["id"].as_str().unwrap().to_string();
    assert_eq!(first.wait_barrier(10_000).await.0, 200);
    assert!(first.mirror().await["customer"].contains_key(&doomed));
    first.proc.kill();

    // while the engine is down: a delete and other traffic, then every
    // event (and the engine's cursor) ages out of the upstream's retention
    let (status, _) = sim.call(Method::DELETE, &format!("/v1/customers/{doomed}"), &[]).await;
    assert_eq!(status, 200);
    sim.set_traffic(30.0).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sim.set_traffic(0.0).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let second = first.restart(dir.path()).await;
    second.wait_live(Duration::from_secs(60)).await;
    assert_eq!(second.wait_barrier(10_000).await.0, 200);
    let expired = second.proc.log_kinds("cursor_expired");
    assert!(!expired.is_empty(), "no cursor_expired line in:\n{}", second.proc.log_text());
    let restarted = second.proc.log_kinds("backfill_started");
    assert!(restarted.iter().any(|l| l["generation"] == 2), "no second-generation backfill: {restarted:?}");
    assert_converged(&sim, &second.db).await;
    let deleted = second.changes().await.into_iter().any(|c| c.object_id == doomed && c.op == "delete");
    assert!(deleted, "the object deleted during the gap has no delete change");
}

on_both_backends!(killed_mid_backfill_resumes_without_refetching_completed_resources, expired_cursor_is_logged_and_rebackfilled);

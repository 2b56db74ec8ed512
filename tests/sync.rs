//! The stripe source against a real simulator process: convergence under
//! faults and live traffic, one change per live event, no regressions, and
//! the `/wait` barrier.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

fn rev(data: &Value) -> u64 {
    data["metadata"]["rev"].as_str().and_then(|r| r.parse().ok()).unwrap_or(0)
}

async fn mirror_converges_under_rate_limits_failures_and_live_traffic(backend: Backend) {
    let dir = tempdir();
    let sim = Sim::start(
        dir.path(),
        &["--seed", "7", "--scale", "2000", "--accounts", "2", "--mutations-per-sec", "20", "--rate-limit", "20", "--fail-rate", "0.05"],
    )
    .await;
    // a budget far above the sim's limit (20/s, a burst of 20): the 21 list
    // streams that start at once already overrun it, so 429s happen and
    // must be absorbed
    let engine = Engine::start_on(
        dir.path(),
        backend(dir.path()),
        &sim.url,
        "rate_limit_per_sec = 150\npoll_interval_ms = 200\nretry_max_backoff_ms = 1000",
    )
    .await;
    engine.wait_live(Duration::from_secs(180)).await;
    let live_since_ms = chrono::Utc::now().timestamp_millis();

    tokio::time::sleep(Duration::from_secs(4)).await;
    sim.set_traffic(0.0).await;
    let (status, body) = engine.wait_barrier(30_000).await;
    assert_eq!(status, 200, "{body}");
    sim.set_faults(json!({})).await;
    assert_converged(&sim, &engine.db).await;

    let stats = sim.stats().await;
    assert!(stats["rate_limited"].as_u64().unwrap() > 0, "no 429 was served: {stats}");
    assert!(stats["failed"].as_u64().unwrap() > 0, "no 500 was served: {stats}");

    let changes = engine.changes().await;
    let mut per_event: HashMap<&str, usize> = HashMap::new();
    for change in &changes {
        if let Some(event) = &change.upstream_event_id {
            *per_event.entry(event).or_default() += 1;
        }
    }
    assert!(per_event.values().all(|n| *n == 1), "an upstream event produced more than one change");
    let live_events: Vec<String> = sim.event_times().await.into_iter().filter(|(_, t)| *t > live_since_ms).map(|(id, _)| id).collect();
    assert!(live_events.len() >= 40, "too little live traffic to judge: {}", live_events.len());
    // every event about a mirrored type made its change; the others (live
    // traffic touches every served type) are not this source's
    let core: Vec<&str> = CORE.iter().map(|(_, object)| *object).collect();
    let mut unapplied = Vec::new();
    for id in live_events.iter().filter(|id| !per_event.contains_key(id.as_str())) {
        let mut event = Value::Null;
        for account in std::iter::once(None).chain(sim.accounts().await.into_iter().map(Some)) {
            let (status, found) = sim.call_as(account.as_deref(), Method::GET, &format!("/v1/events/{id}"), &[]).await;
            if status == 200 {
                event = found;
                break;
            }
        }
        let object = event["data"]["object"]["object"].as_str().unwrap_or("(event not found)").to_string();
        if core.contains(&object.as_str()) || event.is_null() {
            unapplied.push(format!("{id} ({object})"));
        }
    }
    assert!(unapplied.is_empty(), "{} live events without a change, e.g. {:?}", unapplied.len(), &unapplied[..unapplied.len().min(3)]);

    // no object ever moves back to an older state: the traffic stamps a
    // strictly increasing `metadata.rev` on every update
    let mut last_rev: BTreeMap<(&str, &str), (u64, i64)> = BTreeMap::new();
    for change in &changes {
        let Some(data) = change.data_value() else { continue };
        let key = (change.object.as_str(), change.object_id.as_str());
        let current = rev(&data);
        if let Some((previous, at)) = last_rev.get(&key) {
            assert!(current >= *previous, "{key:?} regressed from rev {previous} (change {at}) to rev {current} (change {})", change.id);
        }
        last_rev.insert(key, (current, change.seq));
    }
    let backfilled = changes.iter().filter(|c| c.op == "read").count();
    assert!(backfilled >= 9000, "backfill wrote {backfilled} read changes");
    // canceled subscriptions are listed only with status=all, and a
    // cancellation (customer.subscription.deleted) leaves the object there
    let mirror = engine.mirror().await;
    let canceled = mirror["subscription"].values().filter(|(_, data)| data["status"] == "canceled").count();
    assert!(canceled > 0, "no canceled subscription was mirrored");
    for change in changes.iter().filter(|c| c.kind == "customer.subscription.deleted") {
        // an update; or an insert, when catch-up collapsed a subscription
        // created and canceled during the backfill to its last event
        assert_ne!(change.op, "delete", "a canceled subscription stays: {}", change.id);
        assert_eq!(change.data_value().unwrap()["status"], "canceled", "{}", change.id);
    }
    assert!(changes.iter().any(|c| c.kind == "customer.updated" && c.op == "update"));
}

async fn wait_answers_only_after_an_earlier_write_is_mirrored(backend: Backend) {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--scale", "100", "--accounts", "1"]).await;
    // a poll interval far beyond the test: only /wait can make the engine poll
    let engine = Engine::start_on(dir.path(), backend(dir.path()), &sim.url, "poll_interval_ms = 600000").await;
    engine.wait_live(Duration::from_secs(60)).await;

    for round in 0..3 {
        let email = format!("wait-{round}@example.com");
        let (status, created) = sim.call(Method::POST, "/v1/customers", &[("email", &email), ("name", "Barrier Test")]).await;
        assert_eq!(status, 200, "{created}");
        let id = created["id"].as_str().unwrap().to_string();
        let started = Instant::now();
        let (status, body) = engine.wait_barrier(10_000).await;
        assert_eq!(status, 200, "{body}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let rows = engine.mirror().await;
        let row = rows["customer"].get(&id).unwrap_or_else(|| panic!("{id} not mirrored when /wait answered"));
        assert_eq!(row.1["email"], email.as_str());
    }

    // an upstream that stops answering: /wait times out with a JSON error
    sim.set_faults(json!({"fail_rate": 1.0})).await;
    let (status, body) = engine.wait_barrier(500).await;
    assert_eq!(status, 504);
    assert_eq!(body["error"]["type"], "timeout", "{body}");
    sim.set_faults(json!({})).await;
    let (status, _) = engine.wait_barrier(20_000).await;
    assert_eq!(status, 200);

    let response = http().get(format!("{}/v1/sources/nope/wait", engine.api)).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let response = http().get(format!("{}/v1/sources/stripe/wait?timeout_ms=soon", engine.api)).send().await.unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("timeout_ms"));
}

on_both_backends!(mirror_converges_under_rate_limits_failures_and_live_traffic, wait_answers_only_after_an_earlier_write_is_mirrored);

//! Late events: Stripe's events list is eventually consistent, so an event
//! can show after newer ones, behind the cursor. The simulator shows each
//! new event after a random delay; the lookback re-reads the last seconds
//! of events and applies what it has not, so the mirror ends equal to the
//! upstream, and no object's history goes back to an older state. The same
//! run without the lookback drifts: the test shows both.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use serde_json::Value;

const OBJECTS: [&str; 7] = ["customer", "product", "price", "subscription", "invoice", "charge", "payment_intent"];

/// A simulator whose events show up to `delay_ms` late and an engine on it
/// (with `extra` config), after `mutations` live changes at `rate` a second,
/// once every event has shown and the engine has polled since.
async fn after_late_traffic(dir: &std::path::Path, scale: &str, delay_ms: &str, extra: &str, rate: f64, mutations: u64) -> (Sim, Engine) {
    let sim = Sim::start(dir, &["--scale", scale, "--accounts", "0", "--event-visibility-delay-ms", delay_ms]).await;
    let engine = Engine::start(dir, &sim.url, &format!("accounts = []\npoll_interval_ms = 200\n{extra}")).await;
    engine.wait_live(Duration::from_secs(60)).await;
    sim.set_traffic(rate).await;
    let made = |stats: &Value| stats["mutations"].as_object().unwrap().values().filter_map(Value::as_u64).sum::<u64>();
    wait_until("the live changes", Duration::from_secs(60), || async { made(&sim.stats().await) >= mutations }).await;
    sim.set_traffic(0.0).await;
    wait_until("every event shown", Duration::from_secs(30), || async { sim.stats().await["events_pending"] == 0 }).await;
    engine.barrier("stripe").await;
    (sim, engine)
}

/// Live traffic against a simulator whose events show up to 2 s late, then
/// the objects that differ from the upstream and the objects whose history
/// went back.
async fn late_run(lookback_secs: u64) -> (Vec<String>, Vec<String>) {
    let dir = tempdir();
    let (sim, engine) = after_late_traffic(dir.path(), "150", "2000", &format!("lookback_secs = {lookback_secs}"), 50.0, 600).await;
    // a late event may need its object read again: one more poll
    engine.barrier("stripe").await;
    let drift = divergence(&sim, &engine.db, Some(&OBJECTS)).await;
    // live updates stamp metadata.rev, strictly increasing: an object's
    // changes must never show a lower one after a higher one
    let mut highest: BTreeMap<String, u64> = BTreeMap::new();
    let mut back = Vec::new();
    for change in engine.changes().await {
        let rev = change.data_value().and_then(|d| d["metadata"]["rev"].as_str().and_then(|r| r.parse::<u64>().ok()));
        let Some(rev) = rev else { continue };
        let seen = highest.entry(change.object_id.clone()).or_default();
        if rev < *seen {
            back.push(format!("{} {}: rev {rev} after {seen} ({})", change.object, change.object_id, change.kind));
        }
        *seen = rev.max(*seen);
    }
    (drift, back)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lookback_applies_events_that_show_late_and_without_it_the_mirror_drifts() {
    let ((drift, back), (drift_without, _)) = tokio::join!(late_run(30), late_run(0));
    assert!(drift.is_empty(), "with the lookback, {} objects differ: {:?}", drift.len(), &drift[..drift.len().min(5)]);
    assert!(back.is_empty(), "with the lookback, histories went back: {:?}", &back[..back.len().min(5)]);
    assert!(!drift_without.is_empty(), "without the lookback the late events should have been missed");
    println!("without the lookback: {} objects differ", drift_without.len());
}

/// What the lookback applied is in the store: an engine killed and started
/// again reads the same span of events and applies none of them twice (each
/// upstream event is one change at most), and the mirror still converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_applies_no_event_of_the_lookback_twice() {
    let dir = tempdir();
    let (sim, mut first) = after_late_traffic(dir.path(), "100", "1000", "", 40.0, 150).await;
    first.proc.kill();
    let second = first.restart(dir.path()).await;
    second.wait_live(Duration::from_secs(60)).await;
    second.barrier("stripe").await;
    second.barrier("stripe").await;
    let mut per_event: BTreeMap<String, usize> = BTreeMap::new();
    for change in second.changes().await {
        if let Some(event) = change.upstream_event_id {
            *per_event.entry(event).or_default() += 1;
        }
    }
    let twice: Vec<_> = per_event.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "events applied more than once: {twice:?}");
    assert!(per_event.len() > 30, "only {} events were applied", per_event.len());
    // the restarted engine read them all again (they are within the span)
    // and knew them as applied from the store
    let checkpoints = second.db.store().await.checkpoints("stripe").await.unwrap();
    let remembered = checkpoints["platform/recent"]["applied"].as_object().cloned().unwrap_or_default();
    let forgotten: Vec<_> = per_event.keys().filter(|id| !remembered.contains_key(*id)).collect();
    assert!(forgotten.is_empty(), "applied events the store does not remember: {forgotten:?}");
    assert_converged_over(&sim, &second.db, Some(&OBJECTS)).await;
}

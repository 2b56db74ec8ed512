//! The `event_queue` source against the simulator's marketplace queue, end
//! to end: a `kill -9` between storing a batch and acknowledging it, a batch
//! the upstream hands out again, and acknowledgements the upstream loses.
//! Every event becomes exactly one change; none is lost.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const SOURCE: &str = "market";

fn market_source(sim: &Sim, extra: &str) -> String {
    format!(
        "[[sources]]\nname = \"{SOURCE}\"\nkind = \"event_queue\"\nbase_url = \"{}\"\nevent_types = [\"order.created\", \"order.updated\", \"product.price_updated\", \"product.quantity_updated\"]\n{extra}\n",
        sim.url
    )
}

async fn market(sim: &Sim) -> Value {
    get_json(&format!("{}/__sim/market", sim.url)).await.expect("sim market")
}

/// The only queue's counts: queued, acked, in_flight.
async fn queue_counts(sim: &Sim) -> (u64, u64, u64) {
    let market = market(sim).await;
    let queues = market["queues"].as_object().cloned().unwrap_or_default();
    let Some((_, q)) = queues.into_iter().next() else { return (0, 0, 0) };
    (q["queued"].as_u64().unwrap(), q["acked"].as_u64().unwrap(), q["in_flight"].as_u64().unwrap())
}

async fn wait_for_changes(db: &Db, count: usize) {
    wait_until(&format!("{count} changes"), Duration::from_secs(60), || async { changes(db).await.len() >= count }).await;
}

/// Each event of the sim became exactly one change, and the mirror holds
/// each object as its last event left it (the sim's current state).
async fn assert_each_event_once(sim: &Sim, db: &Db) {
    let market = market(sim).await;
    let expected: Vec<&str> = market["event_ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    let changes = changes(db).await;
    let mut seen = HashSet::new();
    for change in &changes {
        let id = change.upstream_event_id.as_deref().expect("a change from an event");
        assert!(seen.insert(id.to_string()), "event {id} recorded twice");
    }
    let missing: Vec<&&str> = expected.iter().filter(|id| !seen.contains(**id)).take(5).collect();
    assert!(missing.is_empty(), "events lost: {missing:?}");
    assert_eq!(changes.len(), expected.len());
    let mirror = mirror_of(db, SOURCE).await;
    for object in ["order", "product"] {
        let truth: BTreeMap<&str, &Value> = market[object].as_array().unwrap().iter().map(|o| (o["id"].as_str().unwrap(), o)).collect();
        for (id, (account, data)) in mirror.get(object).into_iter().flatten() {
            assert_eq!(&data, truth.get(id.as_str()).expect("an object the sim has"), "{object} {id}");
            assert_eq!(account.as_deref(), data["seller"].as_str(), "{object} {id} under its seller");
        }
    }
}

async fn a_kill_between_store_and_ack_loses_and_repeats_nothing(backend: Backend) {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--sellers", "2"]).await;
    // a full batch is followed by the next pull at once; a short one waits an hour
    let mut first =
        Engine::start_configured(dir.path(), backend(dir.path()), &market_source(&sim, "batch_size = 50\npoll_interval_secs = 3600")).await;
    // the first pull finds nothing; the source then sleeps until woken
    first.wait_live(Duration::from_secs(30)).await;
    sim.generate(120, 0).await;
    first.barrier(SOURCE).await;
    wait_for_changes(&first.db, 120).await;
    // 50 + 50 acknowledged by the pulls after them; the last 20 are stored,
    // their ack id is in the checkpoint, and the source sleeps
    wait_until("two batches acknowledged, one in flight", Duration::from_secs(30), || async { queue_counts(&sim).await == (120, 100, 20) })
        .await;
    first.proc.kill();

    // meanwhile the upstream hands the unacknowledged batch out again (as
    // after a visibility timeout): the stored ack id is now stale
    let code = market(&sim).await["queues"].as_object().unwrap().keys().next().unwrap().clone();
    let again = sim_pull(&sim, &code).await;
    assert_eq!(again["events"].as_array().unwrap().len(), 20, "the same 20 events again");
    sim.generate(30, 0).await;

    let second = first.restart(dir.path()).await;
    second.barrier(SOURCE).await;
    wait_for_changes(&second.db, 150).await;
    // refused ack; the 20 again with the 30 new (a full batch); its ack
    wait_until("acknowledgements to resume", Duration::from_secs(30), || async { queue_counts(&sim).await == (150, 150, 0) }).await;
    assert_eq!(second.proc.log_kinds("ack_refused").len(), 1, "the stale ack id is refused once");
    let batches = second.proc.log_kinds("queue_batch");
    assert_eq!(batches[0]["duplicates"], 20, "the repeated batch is recognised: {batches:?}");
    assert_eq!(batches[0]["changes"], 30, "{batches:?}");
    assert_each_event_once(&sim, &second.db).await;
}

/// A pull by hand, without an ack id (the upstream redelivers).
async fn sim_pull(sim: &Sim, code: &str) -> Value {
    let url = format!("{}/integration/v1/queues/{code}/events/pull", sim.url);
    http().post(url).bearer_auth("test").json(&json!({"limit": 100})).send().await.unwrap().json().await.unwrap()
}

on_both_backends!(a_kill_between_store_and_ack_loses_and_repeats_nothing);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_acknowledgements_redeliver_batches_that_are_skipped() {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--sellers", "3", "--lose-acks", "0.4", "--fail-rate", "0.1"]).await;
    let engine = Engine::start_configured(
        dir.path(),
        Db::sqlite(dir.path()),
        &market_source(&sim, "batch_size = 20\npoll_interval_secs = 1\nretry_max_backoff_ms = 200"),
    )
    .await;
    wait_until("the queue", Duration::from_secs(30), || async { engine.proc.log_kinds("queue_ready").len() == 1 }).await;
    sim.generate(300, 0).await;
    wait_until("every event acknowledged", Duration::from_secs(90), || async { queue_counts(&sim).await == (300, 300, 0) }).await;
    let stats = market(&sim).await["stats"].clone();
    assert!(stats["acks_lost"].as_u64() > Some(0) && stats["redelivered"].as_u64() > Some(0), "{stats}");
    let duplicates: u64 = engine.proc.log_kinds("queue_batch").iter().map(|b| b["duplicates"].as_u64().unwrap()).sum();
    assert_eq!(duplicates, stats["redelivered"].as_u64().unwrap(), "every redelivered event was recognised");
    assert_each_event_once(&sim, &engine.db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_event_is_reported_and_its_batch_neither_applied_nor_acknowledged() {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--sellers", "2"]).await;
    let engine = Engine::start_configured(
        dir.path(),
        Db::sqlite(dir.path()),
        &market_source(&sim, "poll_interval_secs = 1\nretry_max_backoff_ms = 200"),
    )
    .await;
    engine.wait_live(Duration::from_secs(30)).await;
    sim.set_faults(json!({"broken_event": true})).await;
    sim.generate(10, 0).await;
    wait_until("the bad event reported twice", Duration::from_secs(30), || async {
        engine
            .proc
            .log_kinds("source_error")
            .iter()
            .filter(|l| l["error"].as_str().is_some_and(|e| e.contains("no object id at 'payload.id'")))
            .count()
            >= 2
    })
    .await;
    let error = engine
        .proc
        .log_kinds("source_error")
        .into_iter()
        .find(|l| l["error"].as_str().is_some_and(|e| e.contains("no object id at 'payload.id'")))
        .unwrap();
    let error = error["error"].as_str().unwrap();
    assert!(error.contains("events/pull") && error.contains("event 0 (oev_") && error.contains("not acknowledged"), "{error}");
    assert!(changes(&engine.db).await.is_empty(), "nothing of the batch was applied");
    assert_eq!(queue_counts(&sim).await.1, 0, "nothing was acknowledged");

    sim.set_faults(json!({})).await;
    wait_until("the batch, once good, stored and acknowledged", Duration::from_secs(30), || async {
        queue_counts(&sim).await == (10, 10, 0)
    })
    .await;
    assert_each_event_once(&sim, &engine.db).await;
}

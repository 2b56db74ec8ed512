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

/// An event whose object id is not where the config says is parked with
/// its reason and body (`event_parked`, `/v1/sources`, `tributary parked`)
/// while the events after it are stored and acknowledged: the queue never
/// stalls on it, and no event is skipped silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_event_is_parked_and_the_queue_flows_on() {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--sellers", "2"]).await;
    let engine = Engine::start_configured(
        dir.path(),
        Db::sqlite(dir.path()),
        &market_source(&sim, "poll_interval_secs = 1\nretry_max_backoff_ms = 200\nbatch_size = 4"),
    )
    .await;
    engine.wait_live(Duration::from_secs(30)).await;
    // every pull's first event comes without its payload's id
    sim.set_faults(json!({"broken_event": true})).await;
    sim.generate(10, 0).await;
    wait_until("every event acknowledged", Duration::from_secs(30), || async { queue_counts(&sim).await == (10, 10, 0) }).await;

    let parked_lines = engine.proc.log_kinds("event_parked");
    assert!(!parked_lines.is_empty(), "no event_parked line");
    let (code, out, err) = tributary(&["parked", "--config", engine.config.to_str().unwrap(), "--source", SOURCE], &[]);
    assert_eq!(code, 0, "{err}");
    let parked: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(parked.len(), parked_lines.len(), "one parked row per parked event: {out}");
    let parked_ids: HashSet<String> = parked.iter().map(|p| p["event_id"].as_str().unwrap().to_string()).collect();
    for p in &parked {
        let reason = p["reason"].as_str().unwrap();
        assert!(reason.contains("events/pull") && reason.contains("no object id at 'payload.id'"), "{reason}");
        let body: Value = serde_json::from_str(p["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["id"], p["event_id"], "the event as it came");
    }
    let sources = engine.sources().await;
    assert_eq!(sources["sources"][0]["parked_events"].as_u64(), Some(parked.len() as u64), "{sources}");

    // every other event is stored once, none skipped
    let market = market(&sim).await;
    let expected: HashSet<String> = market["event_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .filter(|id| !parked_ids.contains(id))
        .collect();
    let stored: Vec<String> = changes(&engine.db).await.into_iter().filter_map(|c| c.upstream_event_id).collect();
    assert_eq!(stored.len(), expected.len(), "each event once");
    assert_eq!(stored.into_iter().collect::<HashSet<_>>(), expected);
}

/// A source that has forgotten what it made (a new database on the same
/// upstream, thrice) finds its queue by name and lists its subscriptions
/// before making any: one queue, each subscription once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_database_reuses_the_queue_and_its_subscriptions() {
    let sim_dir = tempdir();
    let sim = Sim::start(sim_dir.path(), &["--sellers", "2"]).await;
    for _ in 0..3 {
        let dir = tempdir();
        let engine = Engine::start_configured(dir.path(), Db::sqlite(dir.path()), &market_source(&sim, "poll_interval_secs = 1")).await;
        engine.wait_live(Duration::from_secs(30)).await;
        let queues = market(&sim).await["queues"].as_object().cloned().unwrap_or_default();
        assert_eq!(queues.len(), 1, "one upstream queue: {queues:?}");
        let (_, queue) = queues.into_iter().next().unwrap();
        assert_eq!(queue["subscriptions"], 4, "each event type subscribed once: {queue}");
    }
}

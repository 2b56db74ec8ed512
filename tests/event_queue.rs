//! The `event_queue` source with the `tiki` preset against the simulator's
//! Tiki Open Platform, end to end: the app's client-credentials token for
//! the queue, each seller's rotating refresh token for its subscriptions and
//! orders, thin events enriched with the whole order, a `kill -9` between
//! storing a batch and acknowledging it, acknowledgements the upstream
//! loses, parked events and their redrive. No event is lost or stored twice.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const SOURCE: &str = "market";

/// A source with the Tiki preset pointed at the simulator, every seller of
/// the simulator with its refresh token (the first seller's in a file in
/// `dir`, the others' in env vars), and the env holding the secrets.
/// `extra` lines go into the source's table.
async fn tiki(dir: &std::path::Path, sim: &Sim, extra: &str) -> (String, Vec<(String, String)>) {
    let market = market(sim).await;
    let mut env =
        vec![("TIKI_CLIENT_ID".to_string(), "test-app".to_string()), ("TIKI_CLIENT_SECRET".to_string(), "test-secret".to_string())];
    let mut sellers = String::new();
    for (n, seller) in market["sellers"].as_array().unwrap().iter().enumerate() {
        let (sid, token) = (seller["sid"].as_str().unwrap(), seller["refresh_token"].as_str().unwrap());
        if n == 0 {
            let file = dir.join(format!("seller-{sid}.token"));
            std::fs::write(&file, format!("{token}\n")).unwrap();
            sellers.push_str(&format!("\"{sid}\" = {{ refresh_token_file = \"{}\" }}\n", file.display()));
        } else {
            let var = format!("TIKI_SELLER_{}_REFRESH_TOKEN", n + 1);
            sellers.push_str(&format!("\"{sid}\" = {{ refresh_token_env = \"{var}\" }}\n"));
            env.push((var, token.to_string()));
        }
    }
    let url = &sim.url;
    let config = format!(
        "[[sources]]\nname = \"{SOURCE}\"\npreset = \"tiki\"\nbase_url = \"{url}\"\nrate_limit_per_sec = 200\n\
         auth = {{ token_url = \"{url}/sc/oauth2/token\" }}\nseller_auth = {{ token_url = \"{url}/sc/oauth2/token\" }}\n{extra}\n\
         [sources.sellers]\n{sellers}"
    );
    (config, env)
}

async fn start(dir: &std::path::Path, db: Db, sim: &Sim, extra: &str) -> Engine {
    let (config, env) = tiki(dir, sim, extra).await;
    Engine::start_configured_env(dir, db, &config, env).await
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

fn event_ids(market: &Value) -> Vec<String> {
    market["event_ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

/// How many of the simulator's events the store has taken in.
async fn stored_events(sim: &Sim, db: &Db) -> usize {
    let ids = event_ids(&market(sim).await);
    db.store().await.ledger_known(SOURCE, &ids).await.unwrap().len()
}

/// Every event of the simulator was taken in (or is among `parked`), no
/// event made two changes, and the mirror holds each order whole (fetched)
/// and each product as its last event left it, under its seller (but for
/// the `stale` objects, whose latest events are parked).
async fn assert_nothing_lost(sim: &Sim, db: &Db, parked: &HashSet<String>, stale: &HashSet<(String, String)>) {
    let market = market(sim).await;
    let expected: Vec<String> = event_ids(&market).into_iter().filter(|id| !parked.contains(id)).collect();
    let known: HashSet<String> = db.store().await.ledger_known(SOURCE, &expected).await.unwrap().into_iter().collect();
    let missing: Vec<&String> = expected.iter().filter(|id| !known.contains(*id)).take(5).collect();
    assert!(missing.is_empty(), "events lost: {missing:?}");
    let mut seen = HashSet::new();
    for change in changes(db).await {
        let id = change.upstream_event_id.expect("a change from an event");
        assert!(seen.insert(id.clone()), "event {id} recorded twice");
    }
    let mirror = mirror_of(db, SOURCE).await;
    for (object, field) in [("order", "data"), ("product", "last_payload")] {
        let truth: BTreeMap<&str, &Value> = market[object].as_array().unwrap().iter().map(|o| (o["id"].as_str().unwrap(), o)).collect();
        let rows = mirror.get(object).cloned().unwrap_or_default();
        if parked.is_empty() {
            assert_eq!(rows.len(), truth.len(), "every {object}");
        }
        for (id, (account, data)) in rows {
            if stale.contains(&(object.to_string(), id.clone())) {
                continue;
            }
            let expected = truth.get(id.as_str()).unwrap_or_else(|| panic!("{object} {id} the sim does not have"));
            assert_eq!(data, expected[field], "{object} {id}");
            assert_eq!(account.as_deref(), expected["sid"].as_str(), "{object} {id} under its seller");
        }
    }
}

async fn a_kill_between_store_and_ack_loses_and_repeats_nothing(backend: Backend) {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--sellers", "2"]).await;
    // a full batch is followed by the next pull at once; a short one waits an hour
    let mut first = start(dir.path(), backend(dir.path()), &sim, "batch_size = 50\npoll_interval_secs = 3600").await;
    // the first pull finds nothing; the source then sleeps until woken
    first.wait_live(Duration::from_secs(30)).await;
    sim.generate(120, 0).await;
    first.barrier(SOURCE).await;
    // 50 + 50 acknowledged by the pulls after them; the last 20 are stored,
    // their ack id is in the checkpoint, and the source sleeps
    wait_until("120 events stored, 100 acknowledged", Duration::from_secs(60), || async {
        stored_events(&sim, &first.db).await == 120 && queue_counts(&sim).await == (120, 100, 20)
    })
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
    // refused ack; the 20 again with the 30 new (a full batch); its ack
    wait_until("acknowledgements to resume", Duration::from_secs(60), || async { queue_counts(&sim).await == (150, 150, 0) }).await;
    assert_eq!(second.proc.log_kinds("ack_refused").len(), 1, "the stale ack id is refused once");
    let batches = second.proc.log_kinds("queue_batch");
    assert_eq!((batches[0]["events"].as_u64(), batches[0]["duplicates"].as_u64()), (Some(50), Some(20)), "{batches:?}");
    assert_nothing_lost(&sim, &second.db, &HashSet::new(), &HashSet::new()).await;
    assert!(market(&sim).await["stats"]["order_lookups"].as_u64() > Some(0), "orders were fetched whole");
}

/// A pull by hand with the app's own token, without an ack id (the
/// upstream hands the batch out again).
async fn sim_pull(sim: &Sim, code: &str) -> Value {
    let token: Value = http()
        .post(format!("{}/sc/oauth2/token", sim.url))
        .basic_auth("test-app", Some("test-secret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = format!("{}/integration/v1/queues/{code}/events/pull", sim.url);
    let bearer = token["access_token"].as_str().unwrap();
    http().post(url).bearer_auth(bearer).json(&json!({"limit": 100})).send().await.unwrap().json().await.unwrap()
}

on_both_backends!(a_kill_between_store_and_ack_loses_and_repeats_nothing);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_acknowledgements_redeliver_batches_that_are_skipped() {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--sellers", "3", "--lose-acks", "0.4", "--fail-rate", "0.1"]).await;
    let engine =
        start(dir.path(), Db::sqlite(dir.path()), &sim, "batch_size = 20\npoll_interval_secs = 1\nretry_max_backoff_ms = 200").await;
    wait_until("the queue", Duration::from_secs(30), || async { engine.proc.log_kinds("queue_ready").len() == 1 }).await;
    sim.generate(300, 0).await;
    wait_until("every event acknowledged", Duration::from_secs(90), || async { queue_counts(&sim).await == (300, 300, 0) }).await;
    let stats = market(&sim).await["stats"].clone();
    assert!(stats["acks_lost"].as_u64() > Some(0) && stats["redelivered"].as_u64() > Some(0), "{stats}");
    let duplicates: u64 = engine.proc.log_kinds("queue_batch").iter().map(|b| b["duplicates"].as_u64().unwrap()).sum();
    assert_eq!(duplicates, stats["redelivered"].as_u64().unwrap(), "every redelivered event was recognised");
    assert_nothing_lost(&sim, &engine.db, &HashSet::new(), &HashSet::new()).await;
}

/// Events that cannot be stored are parked with their reason and body
/// (`event_parked`, `/v1/sources`, `tributary parked`) while the events
/// after them are stored and acknowledged: one without its object's id,
/// and orders whose lookup fails while the order service is down. Once it
/// is back, `tributary parked --redrive` stores the orders' events (and
/// says the ones without an id are still parked, exiting 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_events_let_the_queue_flow_and_are_redriven() {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--sellers", "2"]).await;
    let extra = "poll_interval_secs = 1\nretry_max_backoff_ms = 100\nbatch_size = 5\nfetch_attempts = 2";
    let engine = start(dir.path(), Db::sqlite(dir.path()), &sim, extra).await;
    engine.wait_live(Duration::from_secs(30)).await;
    // every pull's first event comes without its order code or product id
    sim.set_faults(json!({"broken_event": true})).await;
    sim.generate(10, 0).await;
    wait_until("10 events acknowledged", Duration::from_secs(30), || async { queue_counts(&sim).await == (10, 10, 0) }).await;
    // then the order service is down: order events cannot be enriched
    sim.set_faults(json!({"fail_order_lookups": true})).await;
    sim.generate(30, 0).await;
    wait_until("40 events acknowledged", Duration::from_secs(60), || async { queue_counts(&sim).await == (40, 40, 0) }).await;
    sim.set_faults(json!({})).await;

    let config = engine.config.to_str().unwrap().to_string();
    let env: Vec<(&str, &str)> = engine.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (code, out, err) = tributary(&["parked", "--config", &config, "--source", SOURCE], &env);
    assert_eq!(code, 0, "{err}");
    let parked: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(parked.len(), engine.proc.log_kinds("event_parked").len(), "one parked row per parked event: {out}");
    let (no_id, unfetched): (Vec<&Value>, Vec<&Value>) =
        parked.iter().partition(|p| p["reason"].as_str().unwrap().contains("no object id at 'payload."));
    assert!(!no_id.is_empty() && !unfetched.is_empty(), "both kinds parked: {out}");
    for p in &no_id {
        assert!(p["reason"].as_str().unwrap().contains("events/pull"), "{p}");
    }
    for p in &unfetched {
        let reason = p["reason"].as_str().unwrap();
        assert!(reason.contains("/integration/v2/orders/") && reason.contains("gave up after 2 tries"), "{reason}");
        let body: Value = serde_json::from_str(p["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["id"], p["event_id"], "the event as it came");
        assert!(body["type"].as_str().unwrap().starts_with("ORDER_"), "{body}");
    }
    let sources = engine.sources().await;
    assert_eq!(sources["sources"][0]["parked_events"].as_u64(), Some(parked.len() as u64), "{sources}");
    let parked_ids: HashSet<String> = parked.iter().map(|p| p["event_id"].as_str().unwrap().to_string()).collect();
    // the objects of parked events: the ones without an id as the simulator
    // broke them, the orders by the code in their events
    let broken = market(&sim).await["broken"].clone();
    let mut stale: HashSet<(String, String)> = broken
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["object"].as_str().unwrap().to_string(), b["id"].as_str().unwrap().to_string()))
        .collect();
    let broken_stale = stale.clone();
    for p in &unfetched {
        let body: Value = serde_json::from_str(p["body"].as_str().unwrap()).unwrap();
        stale.insert(("order".into(), body["payload"]["order_code"].as_str().unwrap().to_string()));
    }
    assert_nothing_lost(&sim, &engine.db, &parked_ids, &stale).await;

    // the order service is back: the orders' events are stored, the ones
    // without an id cannot be, and say so
    let (code, out, err) = tributary(&["parked", "--config", &config, "--source", SOURCE, "--redrive"], &env);
    assert_eq!(code, 1, "some stay parked: {out}{err}");
    assert!(err.contains("still parked"), "{err}");
    let outcomes: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(outcomes.len(), parked.len(), "{out}");
    let stored = outcomes.iter().filter(|o| o["outcome"] == "stored").count();
    let still: Vec<&Value> = outcomes.iter().filter(|o| o["outcome"] == "parked").collect();
    assert_eq!((stored, still.len()), (unfetched.len(), no_id.len()), "{out}");
    assert!(still.iter().all(|o| o["reason"].as_str().unwrap().contains("no object id")), "{out}");
    let still_ids: HashSet<String> = no_id.iter().map(|p| p["event_id"].as_str().unwrap().to_string()).collect();
    assert_nothing_lost(&sim, &engine.db, &still_ids, &broken_stale).await;
    let (_, out, _) = tributary(&["parked", "--config", &config, "--source", SOURCE], &env);
    assert_eq!(out.lines().count(), no_id.len(), "the redriven ones left the table: {out}");
}

/// The upstream queue is found again, never made twice, and each
/// subscription is made once: across restarts on the same database and on
/// fresh databases (which remember nothing) on the same upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_and_its_subscriptions_are_reused() {
    let sim_dir = tempdir();
    let sim = Sim::start(sim_dir.path(), &["--sellers", "2"]).await;
    let check = || async {
        let queues = market(&sim).await["queues"].as_object().cloned().unwrap_or_default();
        assert_eq!(queues.len(), 1, "one upstream queue: {queues:?}");
        let (_, queue) = queues.into_iter().next().unwrap();
        assert_eq!(queue["subscriptions"], 10, "each of 5 event types once per seller: {queue}");
    };
    let dir = tempdir();
    let mut engine = start(dir.path(), Db::sqlite(dir.path()), &sim, "poll_interval_secs = 1").await;
    engine.wait_live(Duration::from_secs(30)).await;
    check().await;
    for _ in 0..3 {
        engine.proc.kill();
        engine = engine.restart(dir.path()).await;
        engine.wait_live(Duration::from_secs(30)).await;
        check().await;
    }
    for _ in 0..2 {
        let fresh = tempdir();
        let engine = start(fresh.path(), Db::sqlite(fresh.path()), &sim, "poll_interval_secs = 1").await;
        engine.wait_live(Duration::from_secs(30)).await;
        check().await;
    }
}

/// Seller tokens live two seconds: they are refreshed while the source
/// runs, and each refresh spends the refresh token and hands out a new one.
/// The newest is in the database at once, so a restart (whose env var still
/// holds the first, spent token) goes on with it: nothing is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sellers_rotated_refresh_token_survives_a_restart() {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--sellers", "2", "--token-ttl-secs", "2"]).await;
    let mut engine = start(dir.path(), Db::sqlite(dir.path()), &sim, "poll_interval_secs = 1").await;
    engine.wait_live(Duration::from_secs(30)).await;
    // batches of events, each acknowledged before the next, until each
    // seller's token has been refreshed at least twice
    let mut generated: u64 = 0;
    while market(&sim).await["tokens"]["refreshes"].as_u64().unwrap() < 6 {
        assert!(generated < 2000, "the tokens are not refreshed");
        sim.generate(10, 0).await;
        generated += 10;
        wait_until("the batch acknowledged", Duration::from_secs(30), || async { queue_counts(&sim).await.1 == generated }).await;
    }
    let rotated = engine.proc.log_kinds("refresh_token_rotated").len();
    assert!(rotated >= 4, "each seller's token refreshed more than once: {rotated}");
    engine.proc.kill();

    engine = engine.restart(dir.path()).await;
    sim.generate(40, 0).await;
    let total = generated + 40;
    wait_until("every event acknowledged after the restart", Duration::from_secs(60), || async {
        queue_counts(&sim).await == (total, total, 0)
    })
    .await;
    assert!(!engine.proc.log_kinds("refresh_token_rotated").is_empty(), "the restarted source refreshed with the stored token");
    let tokens = market(&sim).await["tokens"].clone();
    assert_eq!(tokens["refused"], 0, "no spent refresh token was sent: {tokens}");
    assert_nothing_lost(&sim, &engine.db, &HashSet::new(), &HashSet::new()).await;
}

/// With `ack_path`, each stored batch is acknowledged by a request of its
/// own instead of by the next pull; a lost acknowledgement still only
/// brings the batch again, recognised and skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_acknowledged_by_a_request_of_their_own() {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--sellers", "2", "--lose-acks", "0.3"]).await;
    let extra = "ack_path = \"/queues/{code}/events/ack\"\nbatch_size = 10\npoll_interval_secs = 1";
    let engine = start(dir.path(), Db::sqlite(dir.path()), &sim, extra).await;
    engine.wait_live(Duration::from_secs(30)).await;
    sim.generate(45, 0).await;
    wait_until("every event acknowledged", Duration::from_secs(60), || async { queue_counts(&sim).await == (45, 45, 0) }).await;
    let routes = sim.stats().await["by_route"].clone();
    let acks = routes["POST /integration/v1/queues/{code}/events/ack"].as_u64().unwrap_or(0);
    assert!(acks >= 5, "a request per batch of 10: {routes}");
    let stats = market(&sim).await["stats"].clone();
    let duplicates: u64 = engine.proc.log_kinds("queue_batch").iter().map(|b| b["duplicates"].as_u64().unwrap()).sum();
    assert_eq!(duplicates, stats["redelivered"].as_u64().unwrap(), "every redelivered event was recognised: {stats}");
    assert_nothing_lost(&sim, &engine.db, &HashSet::new(), &HashSet::new()).await;
}

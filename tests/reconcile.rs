//! Reconcile and verify: an upstream that loses events for good (the
//! simulator's `--drop-events`) leaves the mirror behind; `tributary verify`
//! names the drift and exits 1, a reconcile repairs it as
//! `{object}.reconciled` changes that reach the sinks, and `verify` then
//! exits 0. A reconcile killed half way resumes from its checkpoint and
//! repairs nothing twice.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::Value;

const OBJECTS: [&str; 7] = ["customer", "product", "price", "subscription", "invoice", "charge", "payment_intent"];

/// An engine with the admin token on, mirroring the core resources of the
/// platform, no scheduled reconcile, and `extra` config, on SQLite.
async fn engine(dir: &Path, sim: &Sim, extra: &str) -> Engine {
    engine_on(dir, Db::sqlite(dir), sim, extra).await
}

async fn engine_on(dir: &Path, db: Db, sim: &Sim, extra: &str) -> Engine {
    let body = format!(
        "admin_token_env = \"TRIBUTARY_ADMIN_TOKEN\"\n[[sources]]\nname = \"stripe\"\nkind = \"stripe\"\nbase_url = \"{}\"\n\
         api_key_env = \"STRIPE_API_KEY\"\naccounts = []\npoll_interval_ms = 200\nreconcile_every_secs = 0\n{}\n{extra}",
        sim.url,
        core_resources()
    );
    Engine::start_configured(dir, db, &body).await
}

/// Live traffic until `mutations` were made, then quiet, and the engine has
/// applied every event that was not dropped.
async fn traffic(sim: &Sim, engine: &Engine, rate: f64, mutations: u64) {
    let made = |stats: &Value| stats["mutations"].as_object().unwrap().values().filter_map(Value::as_u64).sum::<u64>();
    sim.set_traffic(rate).await;
    wait_until("the live changes", Duration::from_secs(90), || async { made(&sim.stats().await) >= mutations }).await;
    sim.set_traffic(0.0).await;
    engine.barrier("stripe").await;
    engine.barrier("stripe").await;
}

fn verify(engine: &Engine) -> (i32, String, String) {
    let config = engine.config.to_str().unwrap();
    tributary(&["verify", "--config", config, "--limit-ids", "1000"], &[("STRIPE_API_KEY", API_KEY)])
}

/// Ask for a reconcile over the admin API.
async fn ask_reconcile(engine: &Engine) {
    let response = http()
        .post(format!("{}/v1/sources/stripe/reconcile", engine.api))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("ask for a reconcile");
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap_or_default());
}

/// The `reconcile_complete` lines of an engine's log.
async fn wait_reconciled(engine: &Engine, timeout: Duration) -> Value {
    wait_until("reconcile_complete", timeout, || async { !engine.proc.log_kinds("reconcile_complete").is_empty() }).await;
    engine.proc.log_kinds("reconcile_complete").remove(0)
}

/// Ids named by `verify`'s output, as "object id".
fn named(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.strip_prefix("    "))
        .map(|l| l.split_whitespace().skip(1).take(2).collect::<Vec<_>>().join(" ").trim_end_matches(':').to_string())
        .collect()
}

async fn verify_names_what_dropped_events_lost_and_a_reconcile_repairs_it_for_the_sinks_too(backend: Backend) {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--scale", "120", "--accounts", "0", "--drop-events", "0.1"]).await;
    let (_receiver, hook_url, received_at) = start_receiver(dir.path());
    let engine = engine_on(dir.path(), backend(dir.path()), &sim, &webhook_toml(&hook_url)).await;
    engine.wait_live(Duration::from_secs(60)).await;
    traffic(&sim, &engine, 50.0, 500).await;
    assert!(sim.stats().await["events_dropped"].as_u64().unwrap() > 0, "the simulator dropped no event");
    let drift = divergence(&sim, &engine.db, Some(&OBJECTS)).await;
    assert!(!drift.is_empty(), "dropped events should have left the mirror behind");

    // verify names every object that differs, and exits 1
    let (code, out, err) = verify(&engine);
    assert_eq!(code, 1, "verify should report the drift\n{out}\n{err}");
    assert!(err.starts_with(&format!("drift: {} objects differ", drift.len())), "{drift:?}\n{out}\n{err}");
    let mut ids = named(&out);
    ids.sort();
    let mut expected: Vec<String> =
        drift.iter().map(|line| line.split_whitespace().take(2).collect::<Vec<_>>().join(" ").trim_end_matches(':').to_string()).collect();
    expected.sort();
    assert_eq!(ids, expected, "verify named other objects than differ\n{out}");

    // a reconcile repairs exactly that
    ask_reconcile(&engine).await;
    let done = wait_reconciled(&engine, Duration::from_secs(120)).await;
    assert_eq!(done["repaired"].as_u64(), Some(drift.len() as u64), "{done}");
    assert_eq!(
        done["missing"].as_u64().unwrap() + done["extra"].as_u64().unwrap() + done["differed"].as_u64().unwrap(),
        drift.len() as u64
    );
    assert!(done["checked"].as_u64().unwrap() > 500, "{done}");
    assert_converged_over(&sim, &engine.db, Some(&OBJECTS)).await;
    let (code, out, err) = verify(&engine);
    assert_eq!(code, 0, "verify after the reconcile\n{out}\n{err}");
    assert!(out.contains("no drift"), "{out}");
    let view = engine.sources().await;
    let last = &view["sources"][0]["accounts"][0]["reconcile"]["last"];
    assert_eq!(last["repaired"].as_u64(), Some(drift.len() as u64), "{view}");

    // each repair is a change typed {object}.reconciled, delivered
    let repairs: Vec<_> = engine.changes().await.into_iter().filter(|c| c.kind.ends_with(".reconciled")).collect();
    assert_eq!(repairs.len(), drift.len());
    assert!(repairs.iter().all(|c| c.kind == format!("{}.reconciled", c.object)));
    engine.wait_caught_up(&["hooks"]).await;
    let delivered: Vec<String> = received(&received_at)
        .iter()
        .filter(|e| e["type"].as_str().is_some_and(|t| t.ends_with(".reconciled")))
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    let mut expected: Vec<String> = repairs.iter().map(|c| c.id.clone()).collect();
    expected.sort();
    let mut delivered = delivered;
    delivered.sort();
    delivered.dedup();
    assert_eq!(delivered, expected, "the webhook should receive every repair");
}

on_both_backends!(verify_names_what_dropped_events_lost_and_a_reconcile_repairs_it_for_the_sinks_too);

/// A reconcile while live traffic flows and no event is lost finds nothing
/// to repair: what differs while a page is compared is in flight, and the
/// tail applies it. No object's history goes back to an older state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_during_live_traffic_leaves_the_tails_changes_to_it() {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--scale", "150", "--accounts", "0"]).await;
    let engine = engine(dir.path(), &sim, "").await;
    engine.wait_live(Duration::from_secs(60)).await;
    sim.set_traffic(60.0).await;
    ask_reconcile(&engine).await;
    let done = wait_reconciled(&engine, Duration::from_secs(120)).await;
    sim.set_traffic(0.0).await;
    engine.barrier("stripe").await;
    assert_eq!(
        (done["repaired"].as_u64(), done["missing"].as_u64(), done["extra"].as_u64(), done["differed"].as_u64()),
        (Some(0), Some(0), Some(0), Some(0)),
        "nothing was lost, so nothing is repaired: {done}"
    );
    println!("reconciled under live traffic: {done}");
    let changes = engine.changes().await;
    assert!(changes.iter().all(|c| !c.kind.ends_with(".reconciled")));
    // live updates stamp metadata.rev, strictly increasing
    let mut highest: BTreeMap<String, u64> = BTreeMap::new();
    for change in &changes {
        let Some(rev) = change.data_value().and_then(|d| d["metadata"]["rev"].as_str().and_then(|r| r.parse::<u64>().ok())) else {
            continue;
        };
        let seen = highest.entry(change.object_id.clone()).or_default();
        assert!(rev >= *seen, "{} {} went back from rev {seen} to {rev} ({})", change.object, change.object_id, change.kind);
        *seen = rev;
    }
    assert_converged_over(&sim, &engine.db, Some(&OBJECTS)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_killed_half_way_resumes_and_repairs_nothing_twice() {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--scale", "300", "--accounts", "0", "--drop-events", "0.2"]).await;
    // a reconcile of a page or two a second: long enough to be killed in
    let mut first = engine(dir.path(), &sim, "rate_limit_per_sec = 20\nreconcile_budget_share = 0.1").await;
    first.wait_live(Duration::from_secs(120)).await;
    traffic(&sim, &first, 40.0, 400).await;
    let drift = divergence(&sim, &first.db, Some(&OBJECTS)).await;
    assert!(!drift.is_empty(), "dropped events should have left the mirror behind");
    ask_reconcile(&first).await;
    let store = first.db.store().await;
    wait_until("a reconcile half way, with repairs committed", Duration::from_secs(120), || async {
        let checkpoints = store.checkpoints("stripe").await.unwrap();
        let state = &checkpoints.get("platform/reconcile").cloned().unwrap_or_default();
        state["started_at"].is_i64() && state["tally"]["repaired"].as_u64().unwrap_or(0) > 0
    })
    .await;
    first.proc.kill();
    assert!(first.proc.log_kinds("reconcile_complete").is_empty(), "the reconcile ended before the kill");

    let second = first.restart(dir.path()).await;
    assert!(!wait_reconciled(&second, Duration::from_secs(180)).await.is_null());
    assert!(!second.proc.log_kinds("reconcile_resumed").is_empty(), "the reconcile should have resumed, not started again");
    assert_converged_over(&sim, &second.db, Some(&OBJECTS)).await;
    let mut repairs: BTreeMap<String, usize> = BTreeMap::new();
    for change in second.changes().await.into_iter().filter(|c| c.kind.ends_with(".reconciled")) {
        *repairs.entry(format!("{} {}", change.object, change.object_id)).or_default() += 1;
    }
    let twice: Vec<_> = repairs.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "repaired more than once: {twice:?}");
    assert_eq!(repairs.len(), drift.len(), "every object that differed is repaired once");
}

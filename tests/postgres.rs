//! Postgres in production shape: several `tributary run` processes on one
//! database, real `kill -9`s of the owner, and the server dropping the
//! engine's connections.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

async fn role(engine: &Engine) -> Option<String> {
    let sources = get_json(&format!("{}/v1/sources", engine.api)).await?;
    sources["sources"][0]["role"].as_str().map(String::from)
}

/// Wait until one of `engines` owns the source; returns its index.
async fn owner_among(engines: &[&Engine], timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        for (i, engine) in engines.iter().enumerate() {
            if role(engine).await.as_deref() == Some("owner") {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no engine took ownership within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every upstream event produced at most one change, and every backfilled
/// object exactly one `read`.
fn assert_no_change_twice(changes: &[tributary::store::Change]) {
    let mut per_event: HashMap<&str, usize> = HashMap::new();
    let mut reads: HashMap<(&str, &str), usize> = HashMap::new();
    for change in changes {
        if let Some(event) = &change.upstream_event_id {
            *per_event.entry(event).or_default() += 1;
        }
        if change.op == "read" {
            *reads.entry((&change.object, &change.object_id)).or_default() += 1;
        }
    }
    assert!(per_event.values().all(|n| *n == 1), "an upstream event was written twice");
    assert!(reads.values().all(|n| *n == 1), "an object was backfilled twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_when_the_owner_is_killed_mid_backfill_and_live() {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--scale", "3000", "--accounts", "1", "--latency-ms", "5"]).await;
    let db = Db::postgres();
    let extra = "rate_limit_per_sec = 25\nconcurrency = 4\npoll_interval_ms = 200\nretry_max_backoff_ms = 1000";
    let a = Engine::start_on(dir.path(), db.clone(), &sim.url, extra).await;
    let b = Engine::start_on(dir.path(), db.clone(), &sim.url, extra).await;
    let mut engines = [a, b];

    // kill the owner while it is backfilling
    let first = owner_among(&[&engines[0], &engines[1]], Duration::from_secs(10)).await;
    let url = format!("{}/v1/sources", engines[first].api);
    wait_until("backfill under way", Duration::from_secs(60), || async {
        get_json(&url).await.is_some_and(|s| {
            let backfill = s["sources"][0]["accounts"][0]["backfill"].as_object().cloned().unwrap_or_default();
            backfill.values().any(|p| p["fetched"].as_u64() > Some(0))
        })
    })
    .await;
    engines[first].proc.kill();
    let killed_at = Instant::now();
    let survivor = 1 - first;
    owner_among(&[&engines[survivor]], Duration::from_secs(10)).await;
    let takeover = killed_at.elapsed();
    assert!(takeover < Duration::from_secs(10), "takeover took {takeover:?}");
    // (the queue fan-out stands by too: count the source's line only)
    let standing_by = engines[survivor].proc.log_kinds("source_standby").into_iter().filter(|l| l["source"] == "stripe").count();
    assert_eq!(standing_by, 1, "the survivor was not standing by");

    // a new standby, then kill the owner again once live
    let replacement = engines[first].restart(dir.path()).await;
    engines[first] = replacement;
    engines[survivor].wait_live(Duration::from_secs(120)).await;
    assert_eq!(role(&engines[first]).await.as_deref(), Some("standby"));
    sim.set_traffic(25.0).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    engines[survivor].proc.kill();
    let killed_at = Instant::now();
    owner_among(&[&engines[first]], Duration::from_secs(10)).await;
    assert!(killed_at.elapsed() < Duration::from_secs(10));
    tokio::time::sleep(Duration::from_secs(2)).await;
    sim.set_traffic(0.0).await;
    let owner = &engines[first];
    owner.wait_live(Duration::from_secs(60)).await;
    assert_eq!(owner.wait_barrier(20_000).await.0, 200);
    assert_converged(&sim, &db).await;
    let changes = owner.changes().await;
    assert_no_change_twice(&changes);
    assert!(changes.iter().any(|c| c.upstream_event_id.is_some()), "no live event reached the mirror");
    // the second owner resumed: no backfill started over
    assert!(owner.proc.log_kinds("backfill_started").is_empty());
}

async fn terminate_backends(application_name: &str) -> u64 {
    let (client, conn) = tokio_postgres::connect(&tributary::store::testing::base_url(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let rows = client
        .query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", &[&application_name])
        .await
        .unwrap();
    rows.len() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_recovers_when_postgres_drops_its_connections() {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--scale", "500", "--accounts", "1"]).await;
    let name = format!("tributary_test_{}", rand::random::<u32>());
    let Db::Postgres(schema) = Db::postgres() else { unreachable!() };
    let db = Db::PostgresUrl(schema, format!("{}?application_name={name}", tributary::store::testing::base_url()));
    let engine = Engine::start_on(dir.path(), db.clone(), &sim.url, "poll_interval_ms = 100\nretry_max_backoff_ms = 500").await;
    engine.wait_live(Duration::from_secs(60)).await;

    sim.set_traffic(30.0).await;
    let mut terminated = 0;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        terminated += terminate_backends(&name).await;
    }
    sim.set_traffic(0.0).await;
    assert!(terminated >= 3, "no engine connection was terminated");
    let url = format!("{}/v1/sources", engine.api);
    wait_until("the engine to own and tail again", Duration::from_secs(30), || async {
        get_json(&url).await.is_some_and(|s: Value| s["sources"][0]["role"] == "owner" && s["sources"][0]["phase"] == "live")
    })
    .await;
    assert_eq!(engine.wait_barrier(20_000).await.0, 200);
    assert_converged(&sim, &db).await;
    assert_no_change_twice(&engine.changes().await);
    let log = engine.proc.log_text();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR") || l.contains("WARN")).collect();
    assert!(log.contains("terminat"), "the dropped connections were not logged:\n{}", errors.join("\n"));
}

/// A store that refuses writes (what a full disk looks like to the engine:
/// Postgres' `disk_full`, simulated with a trigger) turns `/health` to 503
/// with the reason, and back to 200 once writes go through again; nothing
/// is lost meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_says_503_while_a_source_is_stuck_on_a_store_error() {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--scale", "40", "--accounts", "0", "--mutations-per-sec", "0"]).await;
    let db = Db::postgres();
    let Db::Postgres(schema) = &db else { unreachable!() };
    let schema = schema.0.clone();
    let engine = Engine::start_on(dir.path(), db.clone(), &sim.url, "poll_interval_ms = 100\nretry_max_backoff_ms = 300").await;
    engine.wait_live(Duration::from_secs(60)).await;
    let health = format!("{}/health", engine.api);
    assert_eq!(http().get(&health).send().await.unwrap().status(), 200);

    let (client, conn) = tokio_postgres::connect(&tributary::store::testing::base_url(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(&format!(
            "CREATE FUNCTION \"{schema}\".disk_full() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = 'disk_full'; END $$; \
             CREATE TRIGGER disk_full BEFORE INSERT ON \"{schema}\".tributary_changes FOR EACH STATEMENT EXECUTE FUNCTION \"{schema}\".disk_full();"
        ))
        .await
        .unwrap();
    sim.set_traffic(20.0).await;
    wait_until("/health to answer 503", Duration::from_secs(30), || async {
        let response = http().get(&health).send().await.unwrap();
        if response.status() != 503 {
            return false;
        }
        let body: Value = response.json().await.unwrap();
        let reasons = body["reasons"].to_string();
        assert_eq!(body["status"], "unhealthy");
        // the SQLSTATE survives: the reason says what kind of trouble it is
        assert!(reasons.contains("source 'stripe': disk_full:") && reasons.contains("No space left on device"), "{body}");
        true
    })
    .await;
    sim.set_traffic(0.0).await;
    client.batch_execute(&format!("DROP TRIGGER disk_full ON \"{schema}\".tributary_changes")).await.unwrap();
    wait_until("/health to recover", Duration::from_secs(30), || async { http().get(&health).send().await.unwrap().status() == 200 }).await;
    assert_eq!(engine.wait_barrier(30_000).await.0, 200);
    assert_converged(&sim, &engine.db).await;
}

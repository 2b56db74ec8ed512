//! The `window` source with the WhenIWork preset against the simulator's
//! WhenIWork shifts API, end to end: the mirror follows live traffic run
//! after run (a window split into weekly requests, side-loaded users,
//! locations, positions and sites in their own tables, deletions from
//! `deleted_ids`), an expired token is renewed by logging in again, a short
//! answer deletes nothing, unchanged shifts publish nothing, fingerprints
//! in Redis survive a restart, expired fingerprints re-emit, and bad
//! answers fail a whole run without applying half of it.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{Days, Utc};
use common::*;
use serde_json::Value;

const DAYS_PRIOR: u64 = 3;
const DAYS_AHEAD: u64 = 10;

/// A WhenIWork source named `name` on the sim, run every second; `extra`
/// lines go in the source's table.
fn window_source(name: &str, sim: &Sim, extra: &str) -> String {
    format!(
        "[[sources]]\nname = \"{name}\"\npreset = \"wheniwork\"\nbase_url = \"{url}\"\nsleep_period_secs = 1\ndays_prior = {DAYS_PRIOR}\ndays_ahead = {DAYS_AHEAD}\n{extra}\n[sources.auth]\nurl = \"{url}/login\"\n",
        url = sim.url
    )
}

/// The sim's answer for the window the source asks for today.
async fn window_answer(sim: &Sim) -> Value {
    let today = Utc::now().date_naive();
    let from = today.checked_sub_days(Days::new(DAYS_PRIOR)).unwrap();
    let to = today.checked_add_days(Days::new(DAYS_AHEAD)).unwrap();
    get_json(&format!("{}/__sim/shifts?start={from}&end={to}", sim.url)).await.expect("sim shifts")
}

/// Objects of a list in an answer by id (WhenIWork's ids are numbers).
fn by_id(list: &Value) -> BTreeMap<String, Value> {
    list.as_array().unwrap().iter().map(|s| (s["id"].as_u64().unwrap().to_string(), s.clone())).collect()
}

/// The sim's shifts in the window the source asks for today.
async fn window_truth(sim: &Sim) -> BTreeMap<String, Value> {
    by_id(&window_answer(sim).await["shifts"])
}

async fn rows(db: &Db, source: &str, object: &str) -> BTreeMap<String, Value> {
    mirror_of(db, source).await.remove(object).unwrap_or_default().into_iter().map(|(id, (_, data))| (id, data)).collect()
}

async fn shift_rows(db: &Db, source: &str) -> BTreeMap<String, Value> {
    rows(db, source, "shift").await
}

async fn assert_mirror_is_the_window(sim: &Sim, db: &Db, source: &str) {
    let truth = window_truth(sim).await;
    let rows = shift_rows(db, source).await;
    let missing: Vec<&String> = truth.keys().filter(|id| !rows.contains_key(*id)).take(5).collect();
    let extra: Vec<&String> = rows.keys().filter(|id| !truth.contains_key(*id)).take(5).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing {missing:?}, extra {extra:?}");
    for (id, shift) in &truth {
        assert_eq!(&rows[id], shift, "shift {id}");
    }
}

async fn window_mirror_follows_live_traffic_and_unchanged_shifts_publish_nothing(backend: Backend) {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--shifts", "400", "--mutations-per-sec", "40"]).await;
    let tag = format!("tw{}", rand::random::<u32>());
    let body = format!(
        "{}\n[[sinks]]\nname = \"kafka\"\nkind = \"kafka\"\nbrokers = \"{}\"\ntopic = \"{tag}.{{source}}.{{object}}\"\n",
        window_source("shifts", &sim, ""),
        kafka_brokers()
    );
    let engine = Engine::start_configured(dir.path(), backend(dir.path()), &body).await;
    for _ in 0..3 {
        // hold traffic still so the comparison sees one state
        sim.set_traffic(0.0).await;
        engine.barrier("shifts").await;
        assert_mirror_is_the_window(&sim, &engine.db, "shifts").await;
        sim.set_traffic(40.0).await;
        tokio::time::sleep(Duration::from_millis(2000)).await;
    }
    sim.set_traffic(0.0).await;
    engine.barrier("shifts").await;
    assert_mirror_is_the_window(&sim, &engine.db, "shifts").await;
    engine.wait_caught_up(&["kafka"]).await;
    let changes: Vec<_> = engine.changes().await.into_iter().filter(|c| c.object == "shift").collect();
    let ops: std::collections::BTreeSet<&str> = changes.iter().map(|c| c.op.as_str()).collect();
    assert_eq!(ops, ["delete", "insert", "update"].into(), "live traffic creates, edits and deletes shifts in the window");
    let topic = format!("{tag}.shifts.shift");
    let published = tokio::task::spawn_blocking({
        let topic = topic.clone();
        move || kafka_messages(&topic).len()
    })
    .await
    .unwrap();
    let delivered = engine.sink_view("kafka").await["delivered"].as_u64().unwrap();
    assert!(published >= changes.len(), "every change published: {published} < {} (the sink says {delivered})", changes.len());

    // nothing changes upstream: two more runs record and publish nothing
    engine.barrier("shifts").await;
    engine.barrier("shifts").await;
    engine.wait_caught_up(&["kafka"]).await;
    assert_eq!(engine.changes().await.iter().filter(|c| c.object == "shift").count(), changes.len(), "unchanged shifts recorded changes");
    let again = tokio::task::spawn_blocking(move || kafka_messages(&topic).len()).await.unwrap();
    assert_eq!(again, published, "unchanged shifts were published");
    let last = engine.proc.log_kinds("window_sync").pop().expect("a window_sync line");
    assert!(last["fetched"].as_u64().unwrap() > 0, "{last}");
    assert_eq!((last["new"].as_u64(), last["changed"].as_u64(), last["deleted"].as_u64()), (Some(0), Some(0), Some(0)), "{last}");
    assert_eq!(last["skipped"], last["fetched"], "{last}");
}

on_both_backends!(window_mirror_follows_live_traffic_and_unchanged_shifts_publish_nothing);

/// Keys of a source's fingerprints in Redis.
async fn redis_keys(source: &str) -> Vec<String> {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("KEYS").arg(format!("tributary:{source}:*")).query_async(&mut conn).await.unwrap()
}

async fn redis_ttl(key: &str) -> i64 {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("TTL").arg(key).query_async(&mut conn).await.unwrap()
}

async fn forget_redis_keys(source: &str) {
    let keys = redis_keys(source).await;
    if keys.is_empty() {
        return;
    }
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("DEL").arg(keys).query_async::<()>(&mut conn).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_fingerprints_survive_a_restart() {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--shifts", "300"]).await;
    let source = format!("shifts_{}", rand::random::<u32>());
    let config = window_source(&source, &sim, &format!("dedupe_url = \"{}\"", redis_url()));
    let mut first = Engine::start_configured(dir.path(), Db::sqlite(dir.path()), &config).await;
    first.barrier(&source).await;
    let run = first.proc.log_kinds("window_sync").remove(0);
    let fetched = run["fetched"].as_u64().unwrap();
    assert!(fetched > 0 && run["new"] == run["fetched"], "{run}");
    let keys = redis_keys(&source).await;
    assert_eq!(keys.len() as u64, fetched, "one fingerprint per shift");
    let ttl = redis_ttl(&keys[0]).await;
    assert!(ttl > 604_000 && ttl <= 604_800, "fingerprints expire after a week: {ttl}");
    first.proc.kill();

    let second = first.restart(dir.path()).await;
    second.barrier(&source).await;
    let runs = second.proc.log_kinds("window_sync");
    assert!(!runs.is_empty());
    for run in &runs {
        assert_eq!(run["skipped"], fetched, "after a restart nothing is new: {run}");
        assert_eq!(run["changes"], 0, "{run}");
    }
    forget_redis_keys(&source).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_fingerprint_emits_the_shift_again() {
    for dedupe in ["store", "redis"] {
        let dir = tempdir();
        let sim = Sim::start(dir.path(), &["--shifts", "100"]).await;
        let source = format!("shifts_{}", rand::random::<u32>());
        let extra = match dedupe {
            "redis" => format!("expire_secs = 2\ndedupe_url = \"{}\"", redis_url()),
            _ => "expire_secs = 2".to_string(),
        };
        let engine = Engine::start_configured(dir.path(), Db::sqlite(dir.path()), &window_source(&source, &sim, &extra)).await;
        engine.barrier(&source).await;
        wait_until(&format!("a run that re-emits expired shifts ({dedupe})"), Duration::from_secs(30), || async {
            engine.proc.log_kinds("window_sync").iter().any(|run| run["expired"].as_u64() > Some(0))
        })
        .await;
        let resent = engine.proc.log_kinds("window_sync").into_iter().find(|run| run["expired"].as_u64() > Some(0)).unwrap();
        assert_eq!(resent["expired"], resent["fetched"], "every shift was emitted more than 2 s ago: {resent}");
        assert_eq!(resent["changes"], resent["fetched"], "{resent}");
        let changes = engine.changes().await;
        let reads: Vec<_> = changes.iter().filter(|c| c.op == "read").collect();
        assert!(reads.len() as u64 >= resent["fetched"].as_u64().unwrap(), "{dedupe}: re-emitted as reads");
        assert!(reads.iter().all(|c| c.kind == "shift.read" && c.data.is_some()));
        forget_redis_keys(&source).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_window_answers_are_retried_and_never_half_applied() {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--shifts", "300"]).await;
    let engine =
        Engine::start_configured(dir.path(), Db::sqlite(dir.path()), &window_source("shifts", &sim, "retry_max_backoff_ms = 500")).await;
    engine.barrier("shifts").await;
    assert_mirror_is_the_window(&sim, &engine.db, "shifts").await;

    // 500s and bodies cut short: the requests are retried until a good answer
    sim.set_faults(serde_json::json!({"fail_rate": 0.5, "truncate_rate": 0.4})).await;
    sim.generate(0, 30).await;
    engine.barrier("shifts").await;
    assert_mirror_is_the_window(&sim, &engine.db, "shifts").await;
    let stats = sim.stats().await;
    assert!(stats["failed"].as_u64() > Some(0) && stats["truncated"].as_u64() > Some(0), "{stats}");
    assert!(engine.proc.log_text().contains("malformed json"), "a cut body is logged as such");

    // a shift without an id fails the whole run: nothing of it is applied
    let before = engine.changes().await.len();
    sim.set_faults(serde_json::json!({"broken_shift": true})).await;
    sim.generate(0, 30).await;
    wait_until("two failed runs", Duration::from_secs(30), || async { engine.proc.log_kinds("window_sync_failed").len() >= 2 }).await;
    let failed = engine.proc.log_kinds("window_sync_failed").remove(0);
    let error = failed["error"].as_str().unwrap();
    assert!(error.contains("/2/shifts") && error.contains("item 0") && error.contains("no 'id'"), "{error}");
    assert_eq!(engine.changes().await.len(), before, "a failed run applied part of its window");
    let status = engine.sources().await;
    assert!(status["sources"][0]["last_error"].as_str().is_some_and(|e| e.contains("no 'id'")), "{status}");

    sim.set_faults(serde_json::json!({})).await;
    engine.barrier("shifts").await;
    assert_mirror_is_the_window(&sim, &engine.db, "shifts").await;
    assert!(engine.changes().await.len() > before, "the edits arrive once the answer is good");
}

/// Decode Kafka message values with fastavro (`tests/clients/avro_decode.py`).
fn decode_with_fastavro(dir: &std::path::Path, values: &[Vec<u8>], schemas: &[(String, String)]) -> Vec<Value> {
    use base64::Engine as _;
    let by_id: serde_json::Map<String, Value> =
        schemas.iter().enumerate().map(|(i, (_, s))| ((i + 1).to_string(), Value::String(s.clone()))).collect();
    let schemas_file = dir.join("schemas.json");
    std::fs::write(&schemas_file, Value::Object(by_id).to_string()).unwrap();
    let input: String = values
        .iter()
        .map(|v| format!("{}\n", serde_json::json!({"payload": base64::engine::general_purpose::STANDARD.encode(v)})))
        .collect();
    let mut child = std::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/avro_decode.py"))
        .arg(&schemas_file)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "fastavro: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shifts_reach_kafka_as_avro_that_an_independent_decoder_reads() {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--shifts", "150"]).await;
    let (registry_url, registry) = registry::start().await;
    let tag = format!("ta{}", rand::random::<u32>());
    let body = format!(
        "{}\n[[sinks]]\nname = \"kafka\"\nkind = \"kafka\"\nbrokers = \"{}\"\ntopic = \"{tag}.{{source}}.{{object}}\"\nformat = \"avro\"\nschema_registry_url = \"{registry_url}\"\n",
        window_source("shifts", &sim, "sideloads = {}"),
        kafka_brokers()
    );
    let engine = Engine::start_configured(dir.path(), Db::sqlite(dir.path()), &body).await;
    engine.barrier("shifts").await;
    sim.generate(0, 20).await;
    engine.barrier("shifts").await;
    engine.wait_caught_up(&["kafka"]).await;

    let changes = engine.changes().await;
    let topic = format!("{tag}.shifts.shift");
    let values = tokio::task::spawn_blocking(move || kafka_messages(&topic)).await.unwrap();
    assert_eq!(values.len(), changes.len(), "one message per change");
    let schemas = registry.schemas.lock().unwrap().clone();
    assert_eq!(schemas.len(), 1, "shifts keep one shape: one schema");
    assert_eq!(schemas[0].0, format!("{tag}.shifts.shift-value"), "subject {{topic}}-value");
    let decoded = decode_with_fastavro(dir.path(), &values, &schemas);
    let ops: std::collections::BTreeSet<&str> = changes.iter().map(|c| c.op.as_str()).collect();
    assert!(ops.contains("insert") && ops.contains("update"), "{ops:?}");
    for (change, message) in changes.iter().zip(&decoded) {
        assert_eq!(message["schema_id"], 1);
        let record = &message["record"];
        assert_eq!(record["id"], change.id.as_str());
        assert_eq!((record["op"].as_str(), record["type"].as_str()), (Some(change.op.as_str()), Some(change.kind.as_str())));
        assert_eq!(record["object_id"], change.object_id.as_str());
        assert_eq!(record["data"], change.data_value().unwrap_or(Value::Null), "{}", change.id);
        let previous = record["previous_attributes"].as_str().map(|p| serde_json::from_str::<Value>(p).unwrap());
        assert_eq!(previous, change.previous_value());
    }
}

/// `tributary verify` compares a window source over its window: a mirror
/// behind the upstream is drift (exit 1, the shifts named), and after a
/// run there is none (exit 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_compares_the_window_with_the_mirror() {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--shifts", "200"]).await;
    let body = window_source("shifts", &sim, "").replace("sleep_period_secs = 1", "sleep_period_secs = 3600");
    let engine = Engine::start_configured(dir.path(), Db::sqlite(dir.path()), &body).await;
    engine.barrier("shifts").await;
    let verify = || {
        let config = engine.config.to_str().unwrap();
        tributary(&["verify", "--config", config, "--source", "shifts", "--limit-ids", "1000"], WHENIWORK_ENV)
    };
    let (code, out, err) = verify();
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("no drift"), "{out}");

    // the upstream moves on while the source sleeps
    let before = window_truth(&sim).await;
    sim.set_traffic(40.0).await;
    wait_until("shifts in the window changed", Duration::from_secs(30), || async { window_truth(&sim).await != before }).await;
    sim.set_traffic(0.0).await;
    let after = window_truth(&sim).await;
    let mut moved: Vec<&String> = after.keys().filter(|id| before.get(*id) != after.get(*id)).collect();
    moved.extend(before.keys().filter(|id| !after.contains_key(*id)));
    let (code, out, err) = verify();
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.starts_with(&format!("drift: {} objects differ", moved.len())), "{moved:?}\n{out}\n{err}");
    for id in &moved {
        assert!(out.contains(&format!("shift {id}")), "{id} not named\n{out}");
    }

    engine.barrier("shifts").await;
    let (code, out, err) = verify();
    assert_eq!(code, 0, "after a run\n{out}\n{err}");
}

/// The WhenIWork preset as the reference note describes the API: a token
/// that expires is renewed by logging in again (no run fails for it), the
/// window is read a week at a time, and the users, locations, positions and
/// sites the answers side-load are mirrored in their own tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wheniwork_logs_in_again_splits_the_window_and_mirrors_side_loads() {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--shifts", "300", "--token-ttl-secs", "2"]).await;
    let engine = Engine::start_configured(dir.path(), Db::sqlite(dir.path()), &window_source("wiw", &sim, "")).await;
    engine.barrier("wiw").await;
    let first = engine.proc.log_kinds("window_sync").remove(0);
    // 14 days a week at a time
    assert_eq!(first["requests"], 2, "{first}");
    assert_mirror_is_the_window(&sim, &engine.db, "wiw").await;

    // the token expires while live edits go on: the source logs in again
    sim.set_traffic(20.0).await;
    wait_until("three logins", Duration::from_secs(30), || async { sim.stats().await["logins"].as_u64() >= Some(3) }).await;
    sim.set_traffic(0.0).await;
    engine.barrier("wiw").await;
    assert_mirror_is_the_window(&sim, &engine.db, "wiw").await;
    assert!(engine.proc.log_kinds("window_sync_failed").is_empty(), "an expired token failed a run");
    assert!(!engine.proc.log_kinds("token_refused").is_empty(), "the expired token was refused and renewed");

    // side-loads: every object the window's answer side-loads, as it is now
    let answer = window_answer(&sim).await;
    for (object, list) in [("user", "users"), ("location", "locations"), ("position", "positions"), ("site", "sites")] {
        let mirrored = rows(&engine.db, "wiw", object).await;
        let truth = by_id(&answer[list]);
        assert!(!truth.is_empty(), "the answer side-loads {list}");
        for (id, value) in &truth {
            assert_eq!(mirrored.get(id), Some(value), "{object} {id}");
        }
    }
    let changes = engine.changes().await;
    assert!(changes.iter().any(|c| c.object == "user" && c.op == "insert"), "side-loaded users have their own changes");
}

/// With the preset, deletions come from `deleted_ids` only: an answer cut
/// short (here by `limit`) deletes no shift it leaves out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_answer_deletes_nothing() {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--shifts", "300"]).await;
    let full = Engine::start_configured(dir.path(), Db::sqlite(dir.path()), &window_source("wiw", &sim, "")).await;
    full.barrier("wiw").await;
    let before = shift_rows(&full.db, "wiw").await;
    assert!(before.len() > 20, "{}", before.len());
    drop(full);

    let short =
        Engine::start_configured(dir.path(), Db::sqlite(dir.path()), &window_source("wiw", &sim, "query = { limit = \"5\" }")).await;
    short.barrier("wiw").await;
    short.barrier("wiw").await;
    let run = short.proc.log_kinds("window_sync").pop().unwrap();
    assert_eq!(run["fetched"], 10, "two requests of five shifts: {run}");
    assert_eq!(run["deleted"], 0, "{run}");
    assert_eq!(shift_rows(&short.db, "wiw").await, before, "the rows the short answer left out are kept");
    assert!(short.changes().await.iter().all(|c| c.op != "delete"));
}

/// What the test's own OAuth2 API saw.
#[derive(Default)]
struct OAuthApi {
    /// The refresh token it takes now (each refresh rotates it: `rt_1`, `rt_2`, …).
    refresh: String,
    rotations: u64,
    /// Access tokens it issued, and when each expires.
    issued: Vec<(String, std::time::Instant)>,
    /// Grants asked for: (grant_type, client id as sent, refresh token sent).
    grants: Vec<(String, String, Option<String>)>,
    refused_grants: u64,
    refused_requests: u64,
}

/// An API of the test's own behind OAuth2: `POST /oauth/token` answers
/// `refresh_token` grants (rotating the refresh token: the old one is
/// refused from then on) and `client_credentials` grants (tokens that live
/// three seconds), and `GET /items` lists one item of today for a valid
/// access token, else 401.
async fn oauth_api(state: std::sync::Arc<parking_lot::Mutex<OAuthApi>>) -> String {
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    type Shared = std::sync::Arc<parking_lot::Mutex<OAuthApi>>;
    async fn token(
        State(api): State<Shared>,
        headers: HeaderMap,
        form: axum::extract::Form<BTreeMap<String, String>>,
    ) -> axum::response::Response {
        use base64::Engine as _;
        let basic = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
            .and_then(|v| String::from_utf8(v).ok());
        let client = match (basic, form.get("client_id"), form.get("client_secret")) {
            (Some(basic), None, None) => basic,
            (None, Some(id), Some(secret)) => format!("{id}:{secret}"),
            _ => return (StatusCode::UNAUTHORIZED, axum::Json(serde_json::json!({"error": "invalid_client"}))).into_response(),
        };
        let mut api = api.lock();
        let grant = form.get("grant_type").cloned().unwrap_or_default();
        api.grants.push((grant.clone(), client.clone(), form.get("refresh_token").cloned()));
        let n = api.issued.len();
        let (lifetime, rotated) = match grant.as_str() {
            "refresh_token" if client == "app:app-secret" && form.get("refresh_token") == Some(&api.refresh) => {
                api.rotations += 1;
                (3600, Some(format!("rt_{}", api.rotations)))
            }
            "client_credentials" if client == "app:app-secret" => (3, None),
            _ => {
                api.refused_grants += 1;
                return (StatusCode::BAD_REQUEST, axum::Json(serde_json::json!({"error": "invalid_grant"}))).into_response();
            }
        };
        let access = format!("at_{n}");
        api.issued.push((access.clone(), std::time::Instant::now() + Duration::from_secs(lifetime)));
        let mut answer = serde_json::json!({"access_token": access, "expires_in": lifetime, "token_type": "bearer"});
        if let Some(rotated) = rotated {
            api.refresh = rotated.clone();
            answer["refresh_token"] = rotated.into();
        }
        axum::Json(answer).into_response()
    }
    async fn items(State(api): State<Shared>, headers: HeaderMap) -> axum::response::Response {
        let token = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).unwrap_or_default();
        let mut api = api.lock();
        if !api.issued.iter().any(|(t, expires)| t == token && *expires > std::time::Instant::now()) {
            api.refused_requests += 1;
            return (StatusCode::UNAUTHORIZED, axum::Json(serde_json::json!({"error": "token expired"}))).into_response();
        }
        let today = Utc::now().date_naive().to_string();
        axum::Json(serde_json::json!({"items": [{"id": 1, "day": today}]})).into_response()
    }
    state.lock().refresh = "rt_0".into();
    let app =
        axum::Router::new().route("/oauth/token", axum::routing::post(token)).route("/items", axum::routing::get(items)).with_state(state);
    serve_upstream(app).await
}

/// A window source with OAuth2: a refresh token that rotates is stored the
/// moment it arrives, so a restarted engine (whose env var still holds the
/// first, now refused, token) refreshes with the newest; client credentials
/// sent in the form get tokens renewed before they expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_refresh_tokens_rotate_across_a_restart_and_client_tokens_are_renewed() {
    let state = std::sync::Arc::new(parking_lot::Mutex::new(OAuthApi::default()));
    let base = oauth_api(state.clone()).await;
    let dir = tempdir();
    let source = |name: &str, auth: &str| {
        format!(
            "[[sources]]\nname = \"{name}\"\nkind = \"window\"\nbase_url = \"{base}\"\npath = \"/items\"\nitems_path = \"items\"\n\
             time_path = \"day\"\ntime_format = \"date\"\nsleep_period_secs = 1\ndays_prior = 1\ndays_ahead = 1\nauth = {auth}\n"
        )
    };
    let seller = source(
        "seller",
        &format!(
            "{{ kind = \"oauth2_refresh_token\", token_url = \"{base}/oauth/token\", client_id_env = \"TEST_OAUTH_CLIENT_ID\", \
                   client_secret_env = \"TEST_OAUTH_CLIENT_SECRET\", refresh_token_env = \"TEST_OAUTH_REFRESH_TOKEN\" }}"
        ),
    );
    let app = source(
        "app",
        &format!(
            "{{ kind = \"oauth2_client_credentials\", token_url = \"{base}/oauth/token\", client_id_env = \"TEST_OAUTH_CLIENT_ID\", \
                   client_secret_env = \"TEST_OAUTH_CLIENT_SECRET\", client_auth = \"form\" }}"
        ),
    );
    let mut first = Engine::start_configured(dir.path(), Db::sqlite(dir.path()), &format!("{seller}\n{app}")).await;
    first.barrier("seller").await;
    assert_eq!(shift_rows(&first.db, "seller").await.len(), 1, "the item is mirrored");
    let refreshed = state.lock().refresh.clone();
    assert_eq!(refreshed, "rt_1", "one refresh, rotated");
    let stored = first.db.store().await.checkpoints("seller").await.unwrap();
    assert_eq!(stored["auth/window"]["refresh_token"], "rt_1", "the rotated token is in the store: {stored:?}");

    // client credentials: tokens of three seconds, renewed 0.3 s before they expire
    wait_until("three client tokens", Duration::from_secs(20), || async {
        state.lock().grants.iter().filter(|(grant, _, _)| grant == "client_credentials").count() >= 3
    })
    .await;
    first.proc.kill();

    // the env var still says rt_0, which the API now refuses
    let second = first.restart(dir.path()).await;
    second.barrier("seller").await;
    second.barrier("app").await;
    let api = state.lock();
    let refreshes: Vec<Option<&str>> =
        api.grants.iter().filter(|(grant, _, _)| grant == "refresh_token").map(|(_, _, token)| token.as_deref()).collect();
    assert_eq!(refreshes, [Some("rt_0"), Some("rt_1")], "the restart refreshed with the stored, rotated token");
    assert_eq!(api.refused_grants, 0, "no grant was refused");
    assert!(api.grants.iter().all(|(_, client, _)| client == "app:app-secret"), "client id and secret sent as configured");
    assert_eq!(api.refused_requests, 0, "no request carried an expired token");
}

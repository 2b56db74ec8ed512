//! The built-in pull queues from outside: apps made with `tributary apps`
//! against the database, a running engine feeding queues from upstream
//! changes, `tributary queue pull` draining them, and on Postgres a long
//! poll parked on one process woken by the fan-out of another.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

/// `tributary apps create`: the app as JSON, token included.
fn create_app(engine: &Engine, kind: &str, account: Option<&str>) -> Value {
    let config = engine.config.display().to_string();
    let mut args = vec!["apps", "create", "-c", &config, "--name", "test consumer", "--kind", kind];
    if let Some(account) = account {
        args.extend(["--account", account]);
    }
    let (code, stdout, stderr) = tributary(&args, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("only its hash is stored"), "{stderr}");
    serde_json::from_str(&stdout).expect("the new app as JSON")
}

/// A request with an app token: (status, body).
async fn call(engine: &Engine, token: &str, path: &str, body: Value) -> (u16, Value) {
    let response = http().post(format!("{}{path}", engine.api)).bearer_auth(token).json(&body).send().await.expect("api call");
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

/// `tributary queue pull` until the queue is drained: the events printed.
fn drain(engine: &Engine, code: &str, token: &str) -> Vec<Value> {
    let (exit, stdout, stderr) =
        tributary(&["queue", "pull", code, "--api", &engine.api, "--limit", "7"], &[("TRIBUTARY_APP_TOKEN", token)]);
    assert_eq!(exit, 0, "{stderr}");
    stdout.lines().map(|line| serde_json::from_str(line).expect("one event per line")).collect()
}

async fn a_queue_gets_every_matching_change_once_in_commit_order(backend: fn(&Path) -> Db) {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--scale", "100", "--accounts", "2"]).await;
    let engine = Engine::start_on(dir.path(), backend(dir.path()), &sim.url, "poll_interval_ms = 100").await;
    engine.wait_live(Duration::from_secs(60)).await;
    let accounts = sim.accounts().await;
    let (seller, other) = (accounts[0].as_str(), accounts[1].as_str());

    // a public app that one seller granted access, made from the command line
    let app = create_app(&engine, "public", None);
    let (id, token) = (app["id"].as_str().unwrap(), app["token"].as_str().unwrap());
    let config = engine.config.display().to_string();
    let (code, _, stderr) = tributary(&["apps", "grant", "-c", &config, id, "--account", seller], &[]);
    assert_eq!(code, 0, "{stderr}");

    let (status, queue) = call(&engine, token, "/v1/queues", json!({"name": "seller customers"})).await;
    assert_eq!(status, 201, "{queue}");
    let code = queue["code"].as_str().unwrap();
    let subscriptions = format!("/v1/queues/{code}/subscriptions");
    let (status, body) = call(&engine, token, &subscriptions, json!({"event_type": "customer.*", "account": other})).await;
    assert_eq!(status, 403, "an account that never granted access: {body}");
    let (status, body) =
        call(&engine, token, &subscriptions, json!({"event_type": "customer.*", "account": seller, "from": "earliest"})).await;
    assert_eq!(status, 201, "{body}");

    // live changes of both sellers, then everything in the queue
    for account in [seller, other] {
        let (status, customer) = sim.call_as(Some(account), Method::POST, "/v1/customers", &[("email", "q@example.com")]).await;
        assert_eq!(status, 200, "{customer}");
        let path = format!("/v1/customers/{}", customer["id"].as_str().unwrap());
        let (status, _) = sim.call_as(Some(account), Method::POST, &path, &[("name", "Queued")]).await;
        assert_eq!(status, 200);
    }
    let (status, body) = engine.wait_barrier(30_000).await;
    assert_eq!(status, 200, "{body}");
    engine.wait_caught_up(&["queue:fanout"]).await;

    let expected: Vec<String> = engine
        .changes()
        .await
        .into_iter()
        .filter(|c| c.account.as_deref() == Some(seller) && c.kind.starts_with("customer."))
        .map(|c| c.id)
        .collect();
    assert!(expected.iter().any(|id| id.starts_with("chg_")), "no change to compare with");
    let events = drain(&engine, code, token);
    let ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, expected, "the queue holds the seller's customer changes, backfill included, in commit order");
    let live: Vec<&Value> = events.iter().filter(|e| e["type"] != "customer.read").collect();
    assert_eq!(live.len(), 2, "the created and the updated customer: {live:?}");
    for event in &events {
        assert_eq!(event["account"], seller);
        assert_eq!(event["payload"]["id"], event["id"]);
        assert_eq!(event["payload"]["object"], "customer");
    }
    assert!(drain(&engine, code, token).is_empty(), "drained events were acknowledged");

    // --follow prints events as they come and acknowledges them on exit
    let mut follower = tokio::process::Command::new(bin())
        .args(["queue", "pull", code, "--api", &engine.api, "--follow"])
        .env("TRIBUTARY_APP_TOKEN", token)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the follower");
    let mut lines = tokio::io::BufReader::new(follower.stdout.take().unwrap()).lines();
    let (_, customer) = sim.call_as(Some(seller), Method::POST, "/v1/customers", &[("email", "f@example.com")]).await;
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await.expect("an event within 30 s").unwrap().unwrap();
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!((&event["type"], &event["payload"]["object_id"]), (&json!("customer.created"), &customer["id"]));
    let pid = follower.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let exit = tokio::time::timeout(Duration::from_secs(10), follower.wait()).await.expect("the follower stops on SIGTERM").unwrap();
    assert!(exit.success(), "{exit:?}");
    assert!(drain(&engine, code, token).is_empty(), "the follower acknowledged what it printed");

    // a revoked token stops working at once
    let (exit, stdout, _) = tributary(&["apps", "list", "-c", &config], &[]);
    assert_eq!(exit, 0);
    assert!(stdout.lines().any(|l| l.starts_with(id) && l.contains("active")), "{stdout}");
    let (exit, _, stderr) = tributary(&["apps", "revoke", "-c", &config, id], &[]);
    assert_eq!(exit, 0, "{stderr}");
    let (exit, _, stderr) = tributary(&["queue", "pull", code, "--api", &engine.api, "--token", token], &[]);
    assert_eq!(exit, 1);
    assert!(stderr.contains("401") && stderr.trim_end().lines().count() == 1, "{stderr}");
    let (exit, _, stderr) = tributary(&["apps", "revoke", "-c", &config, "app_nonexistent"], &[]);
    assert_eq!(exit, 1);
    assert!(stderr.contains("no app 'app_nonexistent'"), "{stderr}");
}

on_both_backends!(a_queue_gets_every_matching_change_once_in_commit_order);

/// The number of long polls an engine has parked.
async fn waiting_pulls(engine: &Engine) -> Option<u64> {
    let text = http().get(format!("{}/metrics", engine.api)).send().await.ok()?.text().await.ok()?;
    text.lines().find_map(|l| l.strip_prefix("tributary_queue_pulls_waiting ")).and_then(|v| v.trim().parse::<f64>().ok()).map(|v| v as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_long_poll_wakes_on_the_fan_out_of_another_process() {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--scale", "50", "--accounts", "0"]).await;
    let db = Db::postgres();
    let a = Engine::start_on(dir.path(), db.clone(), &sim.url, "poll_interval_ms = 100").await;
    let b = Engine::start_on(dir.path(), db.clone(), &sim.url, "poll_interval_ms = 100").await;
    let engines = [&a, &b];
    let deadline = Instant::now() + Duration::from_secs(30);
    let owner = loop {
        let mut owner = None;
        for (i, engine) in engines.iter().enumerate() {
            if engine.sink_view("queue:fanout").await["role"] == "owner" {
                owner = Some(i);
            }
        }
        match owner {
            Some(i) => break i,
            None if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            None => panic!("no engine took the fan-out"),
        }
    };
    let (feeder, waiter) = (engines[owner], engines[1 - owner]);
    feeder.wait_live(Duration::from_secs(60)).await;
    feeder.wait_caught_up(&["queue:fanout"]).await;

    let app = create_app(waiter, "inhouse", Some("platform"));
    let token = app["token"].as_str().unwrap().to_string();
    let (_, queue) = call(waiter, &token, "/v1/queues", json!({"name": "products"})).await;
    let code = queue["code"].as_str().unwrap().to_string();
    let (status, body) =
        call(waiter, &token, &format!("/v1/queues/{code}/subscriptions"), json!({"event_type": "product.created", "account": "platform"}))
            .await;
    assert_eq!(status, 201, "{body}");

    // park a long poll on the engine that does not run the fan-out
    let pull = {
        let (api, token, code) = (waiter.api.clone(), token.clone(), code.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let response = http()
                .post(format!("{api}/v1/queues/{code}/events/pull"))
                .bearer_auth(token)
                .json(&json!({"wait_ms": 30_000}))
                .send()
                .await
                .expect("pull");
            (response.json::<Value>().await.expect("pull body"), started.elapsed())
        })
    };
    wait_until("the pull to park", Duration::from_secs(10), || async { waiting_pulls(waiter).await == Some(1) }).await;
    let (status, product) = sim.call(Method::POST, "/v1/products", &[("name", "Woken")]).await;
    assert_eq!(status, 200, "{product}");

    let (batch, waited) = pull.await.unwrap();
    let events = batch["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{batch}");
    assert_eq!(events[0]["payload"]["object_id"], product["id"]);
    // woken by the notification, not by the end of its 30 s wait
    assert!(waited < Duration::from_secs(20), "the long poll was not woken: {waited:?}");
    assert_eq!(waiting_pulls(waiter).await, Some(0));
}

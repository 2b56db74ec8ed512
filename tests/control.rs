//! Operators steer a running system over the API and the CLI: rewind a
//! sink (to a change, to a time), pause and resume sinks and sources,
//! redrive and discard dead letters, read an object's history. On Postgres
//! the requests go to a second instance that owns nothing, and the owner
//! applies them.

#[macro_use]
mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};
use tributary::store::Change;

/// The config body: a stripe source of the platform's core resources, and
/// `sinks`, with the admin token on.
fn body(sim: &Sim, sinks: &str) -> String {
    format!(
        "admin_token_env = \"TRIBUTARY_ADMIN_TOKEN\"\n[[sources]]\nname = \"stripe\"\nkind = \"stripe\"\nbase_url = \"{}\"\n\
         api_key_env = \"STRIPE_API_KEY\"\naccounts = []\npoll_interval_ms = 100\nreconcile_every_secs = 0\n{}\n{sinks}",
        sim.url,
        core_resources()
    )
}

/// An admin request; returns (status, body).
async fn admin(engine: &Engine, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = http().request(method, format!("{}{path}", engine.api)).bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("admin request");
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

fn ids(envelopes: &[Value]) -> Vec<String> {
    envelopes.iter().map(|e| e["id"].as_str().unwrap().to_string()).collect()
}

fn change_ids(changes: &[Change]) -> Vec<String> {
    changes.iter().map(|c| c.id.clone()).collect()
}

/// Wait until the receiver at `out` has `count` envelopes; returns them.
async fn wait_received(out: &Path, count: usize) -> Vec<Value> {
    wait_until(&format!("{count} envelopes at {}", out.display()), Duration::from_secs(60), || async { received(out).len() >= count })
        .await;
    received(out)
}

/// Wait until the engine's log has a line of `kind` whose `source` is `name`.
async fn wait_logged(engine: &Engine, kind: &str, name: &str) {
    wait_until(&format!("a {kind} line for {name}"), Duration::from_secs(20), || async {
        engine.proc.log_kinds(kind).iter().any(|l| l["source"] == name)
    })
    .await;
}

/// Create customers in the simulator; their ids.
async fn create_customers(sim: &Sim, count: usize) -> Vec<String> {
    let mut created = Vec::new();
    for n in 0..count {
        let (status, customer) = sim.call(Method::POST, "/v1/customers", &[("name", &format!("Operator test {n}"))]).await;
        assert_eq!(status, 200, "{customer}");
        created.push(customer["id"].as_str().unwrap().to_string());
    }
    created
}

/// Two webhook sinks (`hooks`, `other`) take the backfill; then `hooks` is
/// rewound to a change (API) and to a time (CLI) and gets exactly the
/// changes from that point again, in order; `other` is paused while new
/// changes reach `hooks`, then resumed; the source is paused (no poll is
/// applied) and resumed; one object's history reads the same from the CLI
/// and the API.
async fn rewind_pause_and_history(backend: Backend) {
    let dir = tempdir();
    let (_hooks, hooks_url, hooks_out) = start_receiver(dir.path());
    let other_dir = dir.path().join("other");
    std::fs::create_dir(&other_dir).unwrap();
    let (_other, other_url, other_out) = start_receiver(&other_dir);
    let sim = Sim::start(dir.path(), &["--scale", "40", "--accounts", "0"]).await;
    let sinks = format!(
        "{}[[sinks]]\nname = \"other\"\nkind = \"webhook\"\nurl = \"{other_url}\"\nsecret_env = \"TRIBUTARY_TEST_WEBHOOK_SECRET\"\n",
        webhook_toml(&hooks_url)
    );
    let db = backend(dir.path());
    let owner = Engine::start_configured(dir.path(), db.clone(), &body(&sim, &sinks)).await;
    owner.wait_live(Duration::from_secs(60)).await;
    owner.barrier("stripe").await;
    let changes = owner.changes().await;
    let n = changes.len();
    assert!(n > 20, "a backfill of {n} changes is too small to rewind into");
    assert_eq!(ids(&wait_received(&hooks_out, n).await), change_ids(&changes));
    assert_eq!(ids(&wait_received(&other_out, n).await), change_ids(&changes));
    // on Postgres, a second instance takes the requests: it owns nothing
    let standby = match &db {
        Db::Sqlite(_) => None,
        _ => Some(Engine::start_configured(dir.path(), db.clone(), &body(&sim, &sinks)).await),
    };
    let ops = standby.as_ref().unwrap_or(&owner);
    if let Some(standby) = &standby {
        assert_eq!(standby.sink_view("hooks").await["role"], "standby");
    }

    // rewind to a change: it and every later one, once more, in order
    let k = n / 2;
    let (status, rewound) = admin(ops, Method::POST, "/v1/sinks/hooks/rewind", Some(json!({"to_change": changes[k].id}))).await;
    assert_eq!(status, 202, "{rewound}");
    assert_eq!((rewound["status"].as_str(), rewound["first_change"].as_str()), (Some("requested"), Some(changes[k].id.as_str())));
    let again = wait_received(&hooks_out, 2 * n - k).await;
    assert_eq!(ids(&again[n..]), change_ids(&changes[k..]));
    wait_until("the rewind applied", Duration::from_secs(20), || async { !owner.proc.log_kinds("sink_rewound").is_empty() }).await;

    // rewind to a time, from the CLI: every change committed since
    let at = changes[n - 5].committed_at.clone();
    let first = changes.iter().position(|c| c.committed_at >= at).unwrap();
    let config = owner.config.to_str().unwrap();
    let before = again.len();
    assert_eq!(before, 2 * n - k, "nothing more than the rewind delivered again");
    let (code, stdout, stderr) = tributary(&["sinks", "rewind", "hooks", "--to-time", &at, "--config", config], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(serde_json::from_str::<Value>(&stdout).unwrap()["first_change"], changes[first].id);
    let again = wait_received(&hooks_out, before + n - first).await;
    assert_eq!(ids(&again[before..]), change_ids(&changes[first..]));
    // a change not delivered yet is no place to rewind to
    let (status, error) = admin(ops, Method::POST, "/v1/sinks/hooks/rewind", Some(json!({"to_change": "chg_99999999"}))).await;
    assert_eq!(status, 404, "{error}");
    let (status, _) = admin(ops, Method::POST, "/v1/sinks/hooks/rewind", Some(json!({"to_change": changes[0].id, "to_time": at}))).await;
    assert_eq!(status, 422);

    // pause one sink: new changes reach the other, not it, until resumed
    let (status, paused) = admin(ops, Method::POST, "/v1/sinks/other/pause", None).await;
    assert_eq!((status, paused["paused"].as_bool()), (200, Some(true)), "{paused}");
    wait_logged(&owner, "pause_applied", "sink:other").await;
    assert_eq!(ops.sink_view("other").await["paused"], true);
    let created = create_customers(&sim, 3).await;
    wait_until("the new customers at hooks", Duration::from_secs(30), || async {
        let got = received(&hooks_out);
        created.iter().all(|id| got.iter().any(|e| e["object_id"] == id.as_str()))
    })
    .await;
    let newest = owner.changes().await;
    assert!(newest.len() >= n + 3);
    assert_eq!(received(&other_out).len(), n, "the paused sink got nothing");
    let (status, resumed) = admin(ops, Method::POST, "/v1/sinks/other/resume", None).await;
    assert_eq!((status, resumed["paused"].as_bool()), (200, Some(false)), "{resumed}");
    assert_eq!(ids(&wait_received(&other_out, newest.len()).await), change_ids(&newest));

    // pause the source: no poll is applied until it is resumed
    let (status, _) = admin(ops, Method::POST, "/v1/sources/stripe/pause", None).await;
    assert_eq!(status, 200);
    wait_logged(&owner, "pause_applied", "stripe").await;
    assert_eq!(ops.sources().await["sources"][0]["paused"], true);
    let late = create_customers(&sim, 1).await;
    let (status, _) = owner.wait_barrier(1_500).await;
    assert_eq!(status, 504, "a paused source applies no poll");
    let (code, _, stderr) = tributary(&["sources", "resume", "stripe", "--config", config], &[]);
    assert_eq!(code, 0, "{stderr}");
    wait_until("the late customer after the resume", Duration::from_secs(30), || async {
        common::changes(&db).await.iter().any(|c| c.object_id == late[0])
    })
    .await;

    // one object's history: oldest first from the CLI, newest first from the API
    let customer = &created[0];
    for name in ["Ada", "Grace"] {
        let (status, _) = sim.call(Method::POST, &format!("/v1/customers/{customer}"), &[("name", name)]).await;
        assert_eq!(status, 200);
    }
    wait_until("two updates of the customer", Duration::from_secs(30), || async {
        common::changes(&db).await.iter().filter(|c| &c.object_id == customer && c.op == "update").count() == 2
    })
    .await;
    let (code, stdout, stderr) = tributary(&["changes", "--object-id", customer, "--config", config], &[]);
    assert_eq!(code, 0, "{stderr}");
    let history: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let ops_seen: Vec<&str> = history.iter().map(|c| c["op"].as_str().unwrap()).collect();
    assert_eq!(ops_seen, ["insert", "update", "update"], "{stdout}");
    assert_eq!(history[2]["previous_attributes"]["name"], "Ada", "{stdout}");
    assert_eq!(history[2]["data"]["name"], "Grace");
    let (status, page) = admin(ops, Method::GET, &format!("/v1/changes?object_id={customer}&limit=2"), None).await;
    assert_eq!(status, 200, "{page}");
    let newest_first: Vec<&Value> = history.iter().rev().take(2).collect();
    assert_eq!(page["changes"].as_array().unwrap().iter().collect::<Vec<_>>(), newest_first);
    let (status, older) =
        admin(ops, Method::GET, &format!("/v1/changes?object_id={customer}&before={}", page["next"].as_str().unwrap()), None).await;
    assert_eq!((status, older["changes"].as_array().unwrap().len(), &older["next"]), (200, 1, &Value::Null));
    let (status, _) = admin(ops, Method::GET, "/v1/changes?op=upsert", None).await;
    assert_eq!(status, 400);
    // without the admin token, none of this
    let response = http().post(format!("{}/v1/sinks/hooks/pause", ops.api)).send().await.unwrap();
    assert_eq!(response.status(), 401);
}

on_both_backends!(rewind_pause_and_history);

/// Changes of a few customers are refused by the endpoint until they are
/// parked as dead letters; a redrive while the endpoint still refuses
/// leaves one with more attempts; once it accepts, a redrive delivers each
/// once (one by the API, the rest by the CLI); discarded ones never go.
async fn dead_letters_redrive_once_and_discard(backend: Backend) {
    let dir = tempdir();
    let (_receiver, hook_url, out) = start_receiver(dir.path());
    let sim = Sim::start(dir.path(), &["--scale", "40", "--accounts", "0"]).await;
    let customers: Vec<String> =
        sim.truth(None).await["customer"].as_array().unwrap().iter().take(4).map(|c| c["id"].as_str().unwrap().to_string()).collect();
    let reject = format!("{}.reject", out.display());
    std::fs::write(&reject, customers.join("\n")).unwrap();
    let sinks = format!("{}max_attempts = 2\nretry_max_backoff_ms = 20\n", webhook_toml(&hook_url));
    let engine = Engine::start_configured(dir.path(), backend(dir.path()), &body(&sim, &sinks)).await;
    engine.wait_live(Duration::from_secs(60)).await;
    engine.barrier("stripe").await;
    engine.wait_caught_up(&["hooks"]).await;
    let (status, listed) = admin(&engine, Method::GET, "/v1/sinks/hooks/dead_letters", None).await;
    assert_eq!(status, 200, "{listed}");
    let letters = listed["dead_letters"].as_array().unwrap().clone();
    let parked: Vec<String> = letters
        .iter()
        .map(|l| serde_json::from_str::<Value>(l["envelope"].as_str().unwrap()).unwrap()["object_id"].as_str().unwrap().to_string())
        .collect();
    let (mut parked, mut refused) = (parked, customers.clone());
    parked.sort();
    refused.sort();
    assert_eq!(parked, refused, "each refused customer parked once");
    assert!(letters.iter().all(|l| l["attempts"] == 2 && l["error"].as_str().unwrap().contains("500")), "{letters:?}");
    assert_eq!(engine.sink_view("hooks").await["dead_letters"], 4);
    let id = |n: usize| letters[n]["id"].as_str().unwrap().to_string();
    let change = |n: usize| letters[n]["change_id"].as_str().unwrap().to_string();
    let times = |change: &str| received(&out).iter().filter(|e| e["id"] == change).count();

    // refused again: it stays, with the attempts added and the flag cleared
    let (status, asked) = admin(&engine, Method::POST, "/v1/sinks/hooks/dead_letters/redrive", Some(json!({"ids": [id(3)]}))).await;
    assert_eq!((status, &asked["marked"]), (202, &json!(1)), "{asked}");
    wait_until("the failed redrive recorded", Duration::from_secs(20), || async {
        let (_, listed) = admin(&engine, Method::GET, "/v1/sinks/hooks/dead_letters", None).await;
        listed["dead_letters"][3]["attempts"] == 4 && listed["dead_letters"][3]["redrive_requested"] == false
    })
    .await;
    assert_eq!(times(&change(3)), 0);

    // accepted: one redriven by the API is delivered once
    std::fs::remove_file(&reject).unwrap();
    let (status, _) = admin(&engine, Method::POST, "/v1/sinks/hooks/dead_letters/redrive", Some(json!({"ids": [id(0)]}))).await;
    assert_eq!(status, 202);
    wait_until("the redriven change delivered", Duration::from_secs(20), || async { times(&change(0)) == 1 }).await;
    wait_until("its dead letter gone", Duration::from_secs(20), || async { engine.sink_view("hooks").await["dead_letters"] == 3 }).await;

    // discard one by the API, one by the CLI
    let (status, gone) = admin(&engine, Method::DELETE, &format!("/v1/sinks/hooks/dead_letters/{}", id(1)), None).await;
    assert_eq!((status, &gone["deleted"]), (200, &json!(true)), "{gone}");
    let (status, _) = admin(&engine, Method::DELETE, &format!("/v1/sinks/hooks/dead_letters/{}", id(1)), None).await;
    assert_eq!(status, 404);
    let config = engine.config.to_str().unwrap();
    let (code, _, stderr) = tributary(&["sinks", "discard", "hooks", &id(2), "--config", config], &[]);
    assert_eq!(code, 0, "{stderr}");

    // the rest, by the CLI: the one left is delivered once
    let (code, stdout, stderr) = tributary(&["sinks", "redrive", "hooks", "--all", "--config", config], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(serde_json::from_str::<Value>(&stdout).unwrap()["marked"], 1);
    wait_until("every dead letter gone", Duration::from_secs(20), || async { engine.sink_view("hooks").await["dead_letters"] == 0 }).await;
    assert_eq!((times(&change(0)), times(&change(3))), (1, 1));
    assert_eq!((times(&change(1)), times(&change(2))), (0, 0), "discarded changes are never delivered");
    assert_eq!(engine.proc.log_kinds("dead_letter_redriven").len(), 2);
    assert_eq!(engine.proc.log_kinds("dead_letter_redrive_failed").len(), 1);
    assert_eq!(engine.proc.log_kinds("dead_letter_discarded").len(), 1, "the CLI logs in its own process");
    let (code, stdout, _) = tributary(&["sinks", "dead-letters", "hooks", "--config", config], &[]);
    assert_eq!((code, stdout.as_str()), (0, ""));
}

on_both_backends!(dead_letters_redrive_once_and_discard);

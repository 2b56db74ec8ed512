//! Idempotent writes through a running engine to the simulator: replays,
//! conflicts, concurrent duplicates, lost upstream responses with retrying
//! clients, and the mirror showing a write at once.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// An in-house app of the platform, made with `tributary apps create`.
fn platform_token(engine: &Engine) -> String {
    let config = engine.config.display().to_string();
    let (code, stdout, stderr) =
        tributary(&["apps", "create", "-c", &config, "--name", "writer", "--kind", "inhouse", "--account", "platform"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let app: Value = serde_json::from_str(&stdout).unwrap();
    app["token"].as_str().unwrap().to_string()
}

/// A write through the engine: (status, body text, replayed).
async fn write(engine: &Engine, token: &str, method: &str, path: &str, key: Option<&str>, body: Value) -> (u16, String, bool) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = http().request(method, format!("{}/v1/sources/stripe/{path}", engine.api)).bearer_auth(token).json(&body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.expect("write");
    let (status, replayed) = (response.status().as_u16(), response.headers().contains_key("idempotent-replayed"));
    (status, response.text().await.unwrap(), replayed)
}

/// Writes the sim executed (not replayed) per upstream idempotency key.
async fn executions(sim: &Sim) -> BTreeMap<String, u64> {
    serde_json::from_value(sim.stats().await["executed_by_key"].clone()).unwrap()
}

/// A sim with `scale` customers and no connected account, an engine on
/// `backend` live on it (source settings and more config in `extra`), and a
/// platform app's token.
async fn live(dir: &Path, backend: fn(&Path) -> Db, scale: &str, extra: &str) -> (Sim, Engine, String) {
    let sim = Sim::start(dir, &["--scale", scale, "--accounts", "0"]).await;
    let engine = Engine::start_on(dir, backend(dir), &sim.url, extra).await;
    engine.wait_live(Duration::from_secs(60)).await;
    let token = platform_token(&engine);
    (sim, engine, token)
}

async fn mirror_customer(engine: &Engine, id: &str) -> Option<Value> {
    let mirror = engine.mirror().await;
    mirror.get("customer").and_then(|rows| rows.get(id)).map(|(_, data)| data.clone())
}

async fn a_write_goes_through_once_and_its_key_replays(backend: fn(&Path) -> Db) {
    let dir = tempdir();
    let (sim, engine, token) = live(dir.path(), backend, "30", "poll_interval_ms = 100").await;

    let params = json!({"email": "w@example.com", "metadata": {"tier": "gold"}});
    let (status, body, replayed) = write(&engine, &token, "POST", "customers", Some("create-1"), params.clone()).await;
    assert_eq!((status, replayed), (200, false), "{body}");
    let customer: Value = serde_json::from_str(&body).unwrap();
    let id = customer["id"].as_str().unwrap().to_string();
    // read-your-writes: the mirror holds it before the upstream's event arrives
    let mirrored = mirror_customer(&engine, &id).await.expect("the written customer is in the mirror at once");
    assert_eq!(mirrored["metadata"]["tier"], "gold");
    let changes: Vec<_> = engine.changes().await.into_iter().filter(|c| c.object_id == id).collect();
    assert_eq!(changes.len(), 1);
    assert_eq!((changes[0].op.as_str(), changes[0].kind.as_str()), ("insert", "customer.created"));

    // the staged notice reaches the change log (and so every sink) after commit
    let db = engine.db.clone();
    wait_until("write.completed in the change log", Duration::from_secs(10), || async {
        common::changes(&db)
            .await
            .iter()
            .any(|c| c.kind == "write.completed" && c.data_value().is_some_and(|d| d["object_id"] == id.as_str()))
    })
    .await;

    // the same key and parameters: the stored answer, byte for byte
    let (status, again, replayed) = write(&engine, &token, "POST", "customers", Some("create-1"), params).await;
    assert_eq!((status, replayed, &again), (200, true, &body));
    let (status, error, _) = write(&engine, &token, "POST", "customers", Some("create-1"), json!({"email": "other@example.com"})).await;
    assert_eq!(status, 422, "{error}");
    for key in [None, Some(""), Some(&*"k".repeat(256))] {
        let (status, error, _) = write(&engine, &token, "POST", "customers", key, json!({})).await;
        assert_eq!(status, 400, "{key:?}: {error}");
        assert!(serde_json::from_str::<Value>(&error).unwrap()["error"]["message"].is_string());
    }
    assert_eq!(write(&engine, &token, "POST", "widgets", Some("w"), json!({})).await.0, 404);
    assert_eq!(write(&engine, &token, "POST", "customers/bad%20id", Some("w"), json!({})).await.0, 400);
    let (status, ..) = {
        let response = http()
            .post(format!("{}/v1/sources/stripe/customers", engine.api))
            .header("Idempotency-Key", "x")
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), ())
    };
    assert_eq!(status, 401);

    // an upstream 4xx is a final answer, stored like any other
    let (status, missing, _) = write(&engine, &token, "POST", "customers/cus_missing", Some("update-missing"), json!({"name": "x"})).await;
    assert_eq!(status, 404, "{missing}");
    assert_eq!(
        write(&engine, &token, "POST", "customers/cus_missing", Some("update-missing"), json!({"name": "x"})).await,
        (404, missing, true)
    );

    // update and delete show in the mirror at once too
    let (status, _, _) = write(&engine, &token, "POST", &format!("customers/{id}"), Some("update-1"), json!({"name": "Renamed"})).await;
    assert_eq!(status, 200);
    assert_eq!(mirror_customer(&engine, &id).await.unwrap()["name"], "Renamed");
    let (status, deleted, _) = write(&engine, &token, "DELETE", &format!("customers/{id}"), Some("delete-1"), json!({})).await;
    assert_eq!(status, 200, "{deleted}");
    assert!(mirror_customer(&engine, &id).await.is_none(), "deleted from the mirror");

    // concurrent duplicates: one side effect; the others wait their turn (409)
    sim.set_faults(json!({"latency_ms": 400})).await;
    let attempts = (0..5).map(|_| {
        let (engine, token) = (&engine, token.as_str());
        async move { write(engine, token, "POST", "customers", Some("create-2"), json!({"email": "dup@example.com"})).await }
    });
    let answers = futures::future::join_all(attempts).await;
    sim.set_faults(json!({})).await;
    let statuses: Vec<u16> = answers.iter().map(|(status, ..)| *status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 4, "{statuses:?}");

    // every key reached the upstream exactly once
    let executed = executions(&sim).await;
    assert_eq!(executed.len(), 5, "{executed:?}");
    assert!(executed.values().all(|n| *n == 1), "a side effect was repeated: {executed:?}");

    // the upstream's own events change nothing more: the mirror already holds them
    let (status, _) = engine.wait_barrier(30_000).await;
    assert_eq!(status, 200);
    let changes: Vec<_> = engine.changes().await.into_iter().filter(|c| c.object_id == id).collect();
    let kinds: Vec<&str> = changes.iter().map(|c| c.kind.as_str()).collect();
    let detail: Vec<_> = changes.iter().map(|c| (&c.kind, &c.upstream_event_id, c.data_value().map(|d| d["name"].clone()))).collect();
    assert_eq!(kinds, ["customer.created", "customer.updated", "customer.deleted"], "{detail:?}");
}

on_both_backends!(a_write_goes_through_once_and_its_key_replays);

async fn lost_upstream_responses_never_duplicate_a_write(backend: fn(&Path) -> Db) {
    let dir = tempdir();
    let (sim, engine, token) = live(dir.path(), backend, "20", "poll_interval_ms = 100").await;
    sim.set_faults(json!({"lose_responses": 0.3})).await;

    // clients retry a 502 with the same key until they get an answer
    const WRITES: usize = 30;
    let mut ids = Vec::new();
    for n in 0..WRITES {
        let (key, params) = (format!("lossy-{n}"), json!({"email": format!("lossy{n}@example.com")}));
        let mut tries = 0;
        let body = loop {
            let (status, body, _) = write(&engine, &token, "POST", "customers", Some(&key), params.clone()).await;
            if status == 200 {
                break body;
            }
            assert_eq!(
                status,
                502,
                "{body}: {}",
                engine.proc.log_text().lines().filter(|l| l.contains("ERROR")).collect::<Vec<_>>().join("\n")
            );
            tries += 1;
            assert!(tries < 30, "{key} never got through");
        };
        ids.push(serde_json::from_str::<Value>(&body).unwrap()["id"].as_str().unwrap().to_string());
    }
    sim.set_faults(json!({})).await;
    assert!(sim.stats().await["lost"].as_u64() > Some(0), "no response was lost");

    let executed = executions(&sim).await;
    assert_eq!(executed.len(), WRITES);
    assert!(executed.values().all(|n| *n == 1), "a write was executed twice upstream: {executed:?}");
    let truth = sim.truth(None).await;
    for n in 0..WRITES {
        let email = format!("lossy{n}@example.com");
        let upstream = truth["customer"].as_array().unwrap().iter().filter(|c| c["email"] == email.as_str()).count();
        assert_eq!(upstream, 1, "{email} exists {upstream} times upstream");
    }
    for id in &ids {
        assert!(mirror_customer(&engine, id).await.is_some(), "{id} missing from the mirror");
    }
}

on_both_backends!(lost_upstream_responses_never_duplicate_a_write);

async fn a_write_cut_off_by_a_crash_is_finished_by_the_completer(backend: fn(&Path) -> Db) {
    let dir = tempdir();
    let (sim, mut engine, token) = live(dir.path(), backend, "20", "poll_interval_ms = 100\n[writes]\ncompleter_grace_secs = 1").await;

    // the upstream does the write, then holds its answer; the engine dies
    // in between: after the upstream call, before the last phase
    sim.set_faults(json!({"write_answer_delay_ms": 5_000})).await;
    let params = json!({"email": "crash@example.com"});
    let cut_off = {
        let (api, token, params) = (engine.api.clone(), token.clone(), params.clone());
        tokio::spawn(async move {
            let request = http().post(format!("{api}/v1/sources/stripe/customers")).bearer_auth(token).header("Idempotency-Key", "crash-1");
            request.json(&params).send().await.is_err()
        })
    };
    wait_until("the upstream to do the write", Duration::from_secs(10), || async { !executions(&sim).await.is_empty() }).await;
    engine.proc.kill();
    assert!(cut_off.await.unwrap(), "the client saw the connection drop");
    sim.set_faults(json!({})).await;

    // a new process finds the key abandoned and finishes it on its own
    let engine = engine.restart(dir.path()).await;
    wait_until("the completer", Duration::from_secs(30), || async { !engine.proc.log_kinds("write_completed").is_empty() }).await;
    let (status, body, replayed) = write(&engine, &token, "POST", "customers", Some("crash-1"), params).await;
    assert_eq!((status, replayed), (200, true), "{body}");
    let id = serde_json::from_str::<Value>(&body).unwrap()["id"].as_str().unwrap().to_string();
    assert_eq!(mirror_customer(&engine, &id).await.expect("in the mirror")["email"], "crash@example.com");
    let executed = executions(&sim).await;
    assert_eq!(executed.values().copied().collect::<Vec<_>>(), [1], "one upstream write: {executed:?}");
    let truth = sim.truth(None).await;
    let upstream = truth["customer"].as_array().unwrap().iter().filter(|c| c["email"] == "crash@example.com").count();
    assert_eq!(upstream, 1);
}

on_both_backends!(a_write_cut_off_by_a_crash_is_finished_by_the_completer);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_app_writes_only_for_accounts_that_granted_it() {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--scale", "10", "--accounts", "2"]).await;
    let engine = Engine::start(dir.path(), &sim.url, "poll_interval_ms = 100").await;
    engine.wait_live(Duration::from_secs(60)).await;
    let accounts = sim.accounts().await;
    let config = engine.config.display().to_string();
    let (code, stdout, stderr) = tributary(&["apps", "create", "-c", &config, "--name", "partner", "--kind", "public"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let app: Value = serde_json::from_str(&stdout).unwrap();
    let (id, token) = (app["id"].as_str().unwrap(), app["token"].as_str().unwrap());
    let url = format!("{}/v1/sources/stripe/customers", engine.api);
    let send = |account: Option<&str>, key: &str| {
        let mut request = http().post(&url).bearer_auth(token).header("Idempotency-Key", key).json(&json!({"email": "p@example.com"}));
        if let Some(account) = account {
            request = request.header("Stripe-Account", account);
        }
        request.send()
    };
    assert_eq!(send(None, "p-1").await.unwrap().status(), 400, "a public app names its account");
    assert_eq!(send(Some(&accounts[0]), "p-2").await.unwrap().status(), 403, "not granted yet");
    let (code, _, stderr) = tributary(&["apps", "grant", "-c", &config, id, "--account", &accounts[0]], &[]);
    assert_eq!(code, 0, "{stderr}");
    let response = send(Some(&accounts[0]), "p-3").await.unwrap();
    assert_eq!(response.status(), 200);
    let customer: Value = response.json().await.unwrap();
    let cid = customer["id"].as_str().unwrap();
    // written upstream for that account, and mirrored under it
    let truth = sim.truth(Some(&accounts[0])).await;
    assert!(truth["customer"].as_array().unwrap().iter().any(|c| c["id"] == cid));
    let mirror = engine.mirror().await;
    assert_eq!(mirror["customer"][cid].0.as_deref(), Some(accounts[0].as_str()));
    assert_eq!(send(Some(&accounts[1]), "p-4").await.unwrap().status(), 403, "the other account never granted it");
    assert_eq!(executions(&sim).await.len(), 1, "refused writes never reached the upstream");
}

/// Writes reach every list Stripe lets you write, by the list's own path
/// (child lists and lists whose path has two segments), only in the ways
/// Stripe allows; an answer whose nested list is cut short is stored
/// complete, so the upstream's own event matches it and changes nothing.
async fn writes_reach_every_list_by_its_path(backend: fn(&Path) -> Db) {
    let dir = tempdir();
    let resources = r#"resources = ["customers", "customers/{id}/tax_ids", "checkout/sessions", "products", "prices", "invoices"]"#;
    let (sim, engine, token) = live(dir.path(), backend, "300", &format!("poll_interval_ms = 100\n{resources}")).await;
    let truth = sim.truth(None).await;
    let customer = truth["customer"][0]["id"].as_str().unwrap().to_string();

    // a child list: create, then delete, each in the mirror at once
    let (status, body, _) = write(
        &engine,
        &token,
        "POST",
        &format!("customers/{customer}/tax_ids"),
        Some("tax-1"),
        json!({"type": "eu_vat", "value": "DE123456789"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let tax_id: Value = serde_json::from_str(&body).unwrap();
    let id = tax_id["id"].as_str().unwrap().to_string();
    assert_eq!(tax_id["customer"], customer.as_str(), "{tax_id}");
    assert_eq!(engine.mirror().await["tax_id"][&id].1["value"], "DE123456789");
    let (status, body, _) = write(&engine, &token, "DELETE", &format!("customers/{customer}/tax_ids/{id}"), Some("tax-2"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert!(!engine.mirror().await.get("tax_id").is_some_and(|rows| rows.contains_key(&id)), "deleted from the mirror");

    // a list whose path has two segments
    let (status, body, _) = write(&engine, &token, "POST", "checkout/sessions", Some("session-1"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    let session: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(session["object"], "checkout.session");
    assert!(engine.mirror().await["checkout.session"].contains_key(session["id"].as_str().unwrap()));

    // only the writes Stripe has
    let price = truth["price"][0]["id"].as_str().unwrap();
    let (status, body, _) = write(&engine, &token, "DELETE", &format!("prices/{price}"), Some("price-1"), json!({})).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("Stripe does not let you delete prices"), "{body}");
    let (status, body, _) = write(&engine, &token, "POST", "customers/cus_1/tax_ids/txi_1/more", Some("deep"), json!({})).await;
    assert_eq!(status, 404, "{body}");
    let executed = executions(&sim).await;
    assert_eq!(executed.len(), 3, "refused writes never reach the upstream: {executed:?}");

    // an invoice whose lines page beyond the ten its answer embeds
    let invoice = truth["invoice"].as_array().unwrap().iter().find(|i| i["lines"]["data"].as_array().unwrap().len() > 10);
    let invoice = invoice.expect("an invoice with more than ten lines").clone();
    let id = invoice["id"].as_str().unwrap().to_string();
    let (status, body, _) =
        write(&engine, &token, "POST", &format!("invoices/{id}"), Some("invoice-1"), json!({"metadata": {"n": "1"}})).await;
    assert_eq!(status, 200, "{body}");
    let answered: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((answered["lines"]["has_more"].as_bool(), answered["lines"]["data"].as_array().unwrap().len()), (Some(true), 10));
    let mirrored = engine.mirror().await["invoice"][&id].1.clone();
    let want = sim.truth(None).await["invoice"].as_array().unwrap().iter().find(|i| i["id"] == id.as_str()).unwrap().clone();
    assert_eq!(mirrored, want, "the mirror holds the invoice complete");
    // its upstream event matches the written state: no second change
    let (status, _) = engine.wait_barrier(30_000).await;
    assert_eq!(status, 200);
    let changes: Vec<_> = engine.changes().await.into_iter().filter(|c| c.object_id == id && c.op != "read").collect();
    assert_eq!(changes.len(), 1, "{:?}", changes.iter().map(|c| (&c.kind, &c.upstream_event_id)).collect::<Vec<_>>());
}

on_both_backends!(writes_reach_every_list_by_its_path);

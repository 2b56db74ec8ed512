//! Stripe's rules as the real API applies them, against an upstream of the
//! test's own that records every request: no `include[]=total_count` (a 400
//! since 2025-03-31.basil), `Stripe-Version` pinned on every request, and
//! retries as Stripe's own clients decide them (`Stripe-Should-Retry` first,
//! then 409, 429 with `lock_timeout`, 5xx).

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use common::*;
use parking_lot::Mutex;
use reqwest::Method;
use serde_json::{Value, json};

#[derive(Default)]
struct Recorded {
    /// (path and query, Stripe-Version sent)
    requests: Vec<(String, Option<String>)>,
    /// requests per path, query excluded
    by_path: HashMap<String, usize>,
}

fn error(status: StatusCode, code: &str, should_retry: Option<&str>) -> Response {
    let body = json!({"error": {"type": "invalid_request_error", "code": code, "message": format!("{code} (test upstream)")}});
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(hint) = should_retry {
        response.headers_mut().insert("stripe-should-retry", hint.parse().unwrap());
    }
    response
}

fn list(path: &str, data: Value) -> Response {
    axum::Json(json!({"object": "list", "data": data, "has_more": false, "url": format!("/v1/{path}")})).into_response()
}

/// The upstream: customers answer 429 `lock_timeout`, 409
/// `idempotency_key_in_use` and a 400 marked `Stripe-Should-Retry: true`
/// before their list; products answer a 503 marked `Stripe-Should-Retry:
/// false` once (final for that request: the sync restarts from its
/// checkpoint); any list asked with `include[]=total_count` is refused.
async fn upstream(recorded: Arc<Mutex<Recorded>>) -> String {
    let answer = |State(recorded): State<Arc<Mutex<Recorded>>>, Path(path): Path<String>, RawQuery(query): RawQuery, headers: HeaderMap| async move {
        let query = query.unwrap_or_default();
        let version = headers.get("stripe-version").and_then(|v| v.to_str().ok()).map(str::to_string);
        let seen = {
            let mut recorded = recorded.lock();
            recorded.requests.push((format!("/v1/{path}?{query}"), version));
            let count = recorded.by_path.entry(path.clone()).or_default();
            *count += 1;
            *count
        };
        let decoded: String = form_urlencoded::parse(query.as_bytes()).map(|(k, v)| format!("{k}={v}&")).collect();
        if decoded.contains("include[]=total_count") {
            return error(StatusCode::BAD_REQUEST, "property_forbidden", None);
        }
        match (path.as_str(), seen) {
            ("customers", 1) => error(StatusCode::TOO_MANY_REQUESTS, "lock_timeout", None),
            ("customers", 2) => error(StatusCode::CONFLICT, "idempotency_key_in_use", None),
            ("customers", 3) => error(StatusCode::BAD_REQUEST, "try_again", Some("true")),
            ("customers", _) => list(
                &path,
                json!([{"id": "cus_2", "object": "customer", "created": 2}, {"id": "cus_1", "object": "customer", "created": 1}]),
            ),
            ("products", 1) => error(StatusCode::SERVICE_UNAVAILABLE, "not_now", Some("false")),
            ("products", _) => list(&path, json!([{"id": "prod_1", "object": "product", "created": 1}])),
            _ => list(&path, json!([])),
        }
    };
    let app = axum::Router::new().route("/v1/{*path}", axum::routing::get(answer)).with_state(recorded);
    serve_upstream(app).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_pins_its_version_never_asks_for_total_count_and_retries_as_stripe_says() {
    let recorded = Arc::new(Mutex::new(Recorded::default()));
    let base = upstream(recorded.clone()).await;
    let dir = tempdir();
    let engine = Engine::start(
        dir.path(),
        &base,
        "accounts = []\nresources = [\"customers\", \"products\"]\nretry_max_backoff_ms = 200\npoll_interval_ms = 100",
    )
    .await;
    engine.wait_live(Duration::from_secs(30)).await;
    let mirror = engine.mirror().await;
    assert_eq!(mirror.get("customer").map(|rows| rows.len()), Some(2), "{mirror:?}");
    assert_eq!(mirror.get("product").map(|rows| rows.len()), Some(1), "{mirror:?}");

    let recorded = std::mem::take(&mut *recorded.lock());
    for (request, version) in &recorded.requests {
        assert_eq!(version.as_deref(), Some(tributary::stripe_api::API_VERSION), "{request} without the pinned Stripe-Version");
        assert!(!request.contains("total_count"), "{request}");
    }
    // three retried answers, then the list: each retried within the request
    assert_eq!(recorded.by_path["customers"], 4);
    let retried = engine.proc.log_text().lines().filter(|l| l.contains("request failed, retrying") && l.contains("/v1/customers")).count();
    assert_eq!(retried, 3, "429 lock_timeout, 409 and a 400 marked retryable");
    // Stripe-Should-Retry: false is final for its request: not retried
    // there, the sync reports it and starts again from its checkpoint
    assert_eq!(recorded.by_path["products"], 2);
    let errors = engine.proc.log_kinds("source_error");
    assert!(errors.iter().any(|l| l["error"].as_str().is_some_and(|e| e.contains("/v1/products") && e.contains("503"))), "{errors:?}");
    let sources = engine.sources().await;
    assert_eq!(sources["sources"][0]["accounts"][0]["backfill"]["customers"]["fetched"], 2, "{sources}");
    let configured = engine.proc.log_kinds("source_configured");
    assert_eq!(configured[0]["rate_limit_per_sec"], 20, "a test-mode key's default budget: {configured:?}");
}

/// A restricted key that may not read three resources: the others are
/// mirrored, the three are skipped (logged, shown in `/v1/sources`), and
/// their events are not applied either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restricted_key_skips_what_it_may_not_read_and_mirrors_the_rest() {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--scale", "40", "--accounts", "0", "--mutations-per-sec", "0"]).await;
    let unreadable = ["charges", "payment_intents", "invoices"];
    sim.set_faults(json!({"restricted": unreadable})).await;
    let body = format!(
        "[[sources]]\nname = \"stripe\"\nkind = \"stripe\"\nbase_url = \"{}\"\napi_key_env = \"STRIPE_RESTRICTED_KEY\"\n\
         accounts = []\npoll_interval_ms = 100\n{}",
        sim.url,
        core_resources()
    );
    let engine = Engine::start_configured(dir.path(), Db::sqlite(dir.path()), &body).await;
    engine.wait_live(Duration::from_secs(60)).await;
    sim.set_traffic(40.0).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sim.set_traffic(0.0).await;
    engine.barrier("stripe").await;

    let skipped: Vec<Value> = engine.proc.log_kinds("resource_skipped");
    let mut named: Vec<&str> = skipped.iter().map(|l| l["resource"].as_str().unwrap()).collect();
    named.sort();
    assert_eq!(named, ["charges", "invoices", "payment_intents"], "{skipped:?}");
    let sources = engine.sources().await;
    let backfill = &sources["sources"][0]["accounts"][0]["backfill"];
    for resource in unreadable {
        let reason = backfill[resource]["skipped"].as_str().unwrap_or_default();
        assert!(reason.contains("403") && reason.contains("permission"), "{resource}: {backfill}");
    }
    assert!(backfill["customers"]["skipped"].is_null(), "{backfill}");
    let mirror = engine.mirror().await;
    for object in ["charge", "payment_intent", "invoice"] {
        assert!(mirror.get(object).is_none_or(|rows| rows.is_empty()), "{object} was mirrored through a key that may not read it");
    }
    // everything else matches the upstream
    let truth = sim.truth(None).await;
    for object in ["customer", "product", "price", "subscription"] {
        let theirs = truth[object].as_array().unwrap().len();
        assert!(theirs > 0);
        assert_eq!(mirror.get(object).map_or(0, |rows| rows.len()), theirs, "{object}");
    }
    assert!(engine.proc.log_kinds("source_error").is_empty(), "a 403 stopped the source");
}

/// An event rendered at an older API version is not stored as it came: its
/// object is read again at the pinned version (one read per event), the
/// mirror holds the pinned version's shape, and the version is logged once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_at_an_older_version_is_read_again_at_the_pinned_one() {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--scale", "20", "--accounts", "0"]).await;
    let engine = Engine::start(dir.path(), &sim.url, "accounts = []\npoll_interval_ms = 100").await;
    engine.wait_live(Duration::from_secs(60)).await;
    sim.set_faults(json!({"event_api_version": "2020-03-02"})).await;
    let reads = |stats: &Value| stats["by_route"]["GET /v1/customers/{id}"].as_u64().unwrap_or(0);
    let before = reads(&sim.stats().await);

    let (status, created) = sim.call(Method::POST, "/v1/customers", &[("email", "old@example.com")]).await;
    assert_eq!(status, 200, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let (status, _) = sim.call(Method::POST, &format!("/v1/customers/{id}"), &[("name", "Renamed")]).await;
    assert_eq!(status, 200);
    assert_eq!(engine.wait_barrier(10_000).await.0, 200);

    // the events carry the older shape (customers had `sources` then)
    let (_, events) = sim.call(Method::GET, "/v1/events?limit=2", &[]).await;
    for event in events["data"].as_array().unwrap() {
        assert_eq!(event["api_version"], "2020-03-02");
        assert!(event["data"]["object"]["sources"].is_object(), "{event}");
    }
    let mirror = engine.mirror().await;
    let (_, row) = &mirror["customer"][&id];
    assert!(row.get("sources").is_none(), "the mirror kept the older shape: {row}");
    assert_eq!(row["name"], "Renamed");
    assert_eq!(reads(&sim.stats().await) - before, 2, "one read per event at another version");
    let logged = engine.proc.log_kinds("event_version_differs");
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(logged[0]["event_api_version"], "2020-03-02");
    let changes = engine.changes().await;
    let mine: Vec<&str> = changes.iter().filter(|c| c.object_id == id).map(|c| c.kind.as_str()).collect();
    // read again, the created event may already find the renamed customer;
    // then the update's read holds nothing new and records no change
    assert_eq!(mine.first(), Some(&"customer.created"), "{mine:?}");
    assert!(mine.len() <= 2 && mine.iter().skip(1).all(|k| *k == "customer.updated"), "{mine:?}");
}

/// The simulator keeps idempotency keys as Stripe does: a key whose first
/// request is still executing answers 409 `idempotency_key_in_use`; the
/// finished request's answer replays; a request refused before it executed
/// (validation) saves nothing, so the key is free for a corrected retry;
/// and every error carries `doc_url`, `request_log_url` and a `Request-Id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_keeps_idempotency_keys_as_stripe_does() {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--scale", "20", "--accounts", "0"]).await;
    sim.set_faults(json!({"write_answer_delay_ms": 1500})).await;
    let post = |key: &'static str, form: Vec<(&'static str, String)>| {
        let url = format!("{}/v1/customers", sim.url);
        async move {
            let response = http().post(url).bearer_auth(API_KEY).header("Idempotency-Key", key).form(&form).send().await.expect("sim call");
            let replayed = response.headers().contains_key("idempotent-replayed");
            let request_id = response.headers().get("request-id").and_then(|v| v.to_str().ok()).map(String::from);
            (response.status().as_u16(), response.json::<Value>().await.unwrap_or(Value::Null), replayed, request_id)
        }
    };
    let name = || vec![("name", "Ada".to_string())];
    let first = tokio::spawn(post("key-1", name()));
    // the second arrives while the first is executing
    wait_until("the first request to start", Duration::from_secs(10), || async {
        sim.stats().await["executed_by_key"]["key-1"].as_u64() == Some(1)
    })
    .await;
    let (status, body, _, request_id) = post("key-1", name()).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "idempotency_key_in_use", "{body}");
    assert_eq!(body["error"]["type"], "idempotency_error", "{body}");
    let request_id = request_id.expect("a Request-Id header");
    assert!(request_id.starts_with("req_"), "{request_id}");
    assert_eq!(body["error"]["request_log_url"], format!("https://dashboard.stripe.com/test/logs/{request_id}"), "{body}");
    assert_eq!(body["error"]["doc_url"], "https://stripe.com/docs/error-codes/idempotency-key-in-use", "{body}");
    let (status, created, replayed, _) = first.await.unwrap();
    assert_eq!((status, replayed), (200, false), "{created}");
    let (status, again, replayed, _) = post("key-1", name()).await;
    assert_eq!((status, replayed, &again["id"]), (200, true, &created["id"]), "the finished answer replays");
    let (status, other, _, _) = post("key-1", vec![("name", "Grace".to_string())]).await;
    assert_eq!((status, other["error"]["type"].as_str()), (400, Some("idempotency_error")), "{other}");

    // refused before it executed: nothing saved, the key is free
    sim.set_faults(json!({})).await;
    let (status, refused, _, _) = post("key-2", vec![("nickname", "Ada".to_string())]).await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!((refused["error"]["code"].as_str(), refused["error"]["param"].as_str()), (Some("parameter_unknown"), Some("nickname")));
    let (status, made, replayed, _) = post("key-2", name()).await;
    assert_eq!((status, replayed), (200, false), "the corrected retry executes: {made}");
    assert_eq!(made["name"], "Ada", "{made}");
    assert_eq!(sim.stats().await["executed_by_key"]["key-2"], 1);
}

/// Two writes to one object at once: the second is answered 429
/// `lock_timeout`, as Stripe answers it, and goes through once the first
/// is done; writes to other objects are not held up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_answers_lock_timeout_to_concurrent_writes_to_one_object() {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--scale", "20", "--accounts", "0"]).await;
    let truth = sim.truth(None).await;
    let (first, second) =
        (truth["customer"][0]["id"].as_str().unwrap().to_string(), truth["customer"][1]["id"].as_str().unwrap().to_string());
    sim.set_faults(json!({"write_answer_delay_ms": 1500})).await;
    let update = |id: String, key: &'static str| {
        let url = format!("{}/v1/customers/{id}", sim.url);
        async move {
            let response =
                http().post(url).bearer_auth(API_KEY).header("Idempotency-Key", key).form(&[("name", key)]).send().await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let running = tokio::spawn(update(first.clone(), "lock-1"));
    wait_until("the first write to start", Duration::from_secs(10), || async {
        sim.stats().await["executed_by_key"]["lock-1"].as_u64() == Some(1)
    })
    .await;
    let (status, body) = update(first.clone(), "lock-2").await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("lock_timeout")), "{body}");
    sim.set_faults(json!({})).await;
    assert_eq!(update(second, "lock-3").await.0, 200, "another object is not held");
    assert_eq!(running.await.unwrap().0, 200);
    let (status, body) = update(first, "lock-2").await;
    assert_eq!((status, body["name"].as_str()), (200, Some("lock-2")), "the refused write goes through once the first is done");
}

/// Stripe takes its key as a bearer token or as the user name of HTTP
/// basic auth (`curl -u sk_test_…:`); anything else is a 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_takes_the_key_as_stripe_does() {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--scale", "5", "--accounts", "0"]).await;
    let url = format!("{}/v1/customers?limit=1", sim.url);
    let status = |request: reqwest::RequestBuilder| async move { request.send().await.unwrap().status().as_u16() };
    assert_eq!(status(http().get(&url).bearer_auth(API_KEY)).await, 200);
    assert_eq!(status(http().get(&url).basic_auth(API_KEY, None::<&str>)).await, 200);
    assert_eq!(status(http().get(&url).basic_auth(API_KEY, Some(""))).await, 200);
    assert_eq!(status(http().get(&url).basic_auth("pk_test_publishable", None::<&str>)).await, 401);
    assert_eq!(status(http().get(&url).header("Authorization", "Basic %%%")).await, 401);
    assert_eq!(status(http().get(&url)).await, 401);
}

/// A customer's tax ids and sources are read from the customers' own list
/// with `expand[]`: no request per customer, except for the one customer
/// whose tax ids are longer than the expanded first page; the mirror ends
/// equal to the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_lists_stripe_expands_are_read_from_their_parents_pages() {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--scale", "250", "--accounts", "0"]).await;
    let customer = sim.truth(None).await["customer"][0]["id"].as_str().unwrap().to_string();
    for i in 0..12 {
        let (status, body) = sim
            .call(Method::POST, &format!("/v1/customers/{customer}/tax_ids"), &[("type", "eu_vat"), ("value", &format!("DE{i:09}"))])
            .await;
        assert_eq!(status, 200, "{body}");
    }
    // the account's own tax ids (top-level) too: the upstream's tax ids are both lists
    let resources = r#"resources = ["customers", "customers/{id}/tax_ids", "customers/{id}/sources", "tax_ids"]"#;
    let engine = Engine::start(dir.path(), &sim.url, &format!("accounts = []\n{resources}\nrate_limit_per_sec = 500")).await;
    engine.wait_live(Duration::from_secs(60)).await;
    assert_converged_over(&sim, &engine.db, Some(&["customer", "tax_id", "card"])).await;
    assert!(engine.mirror().await["tax_id"].len() > 12);

    let routes = sim.stats().await["by_route"].clone();
    assert_eq!(routes["GET /v1/customers/{id}/sources"], Value::Null, "sources were read per customer: {routes}");
    assert_eq!(routes["GET /v1/customers/{id}/tax_ids"], 1, "tax ids beyond the first page are read for that customer only: {routes}");
    assert!(engine.proc.log_kinds("expand_refused").is_empty());
}

/// An upstream that refuses the expansion (a 400): the list is read per
/// parent instead, with one `expand_refused` line, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_expansion_reads_the_child_list_per_parent() {
    let per_parent = Arc::new(Mutex::new(Recorded::default()));
    let answer = |State(recorded): State<Arc<Mutex<Recorded>>>, Path(path): Path<String>, RawQuery(query): RawQuery| async move {
        let query = query.unwrap_or_default();
        *recorded.lock().by_path.entry(path.clone()).or_default() += 1;
        let customers = json!([{"id": "cus_2", "object": "customer", "created": 2}, {"id": "cus_1", "object": "customer", "created": 1}]);
        match path.as_str() {
            "customers" if query.contains("expand") => error(StatusCode::BAD_REQUEST, "parameter_invalid", None),
            "customers" => list(&path, customers),
            "customers/cus_1/tax_ids" | "customers/cus_2/tax_ids" => {
                let owner = path.split('/').nth(1).unwrap();
                list(&path, json!([{"id": format!("txi_{owner}"), "object": "tax_id", "customer": owner, "created": 3}]))
            }
            _ => list(&path, json!([])),
        }
    };
    let app = axum::Router::new().route("/v1/{*path}", axum::routing::get(answer)).with_state(per_parent.clone());
    let base = serve_upstream(app).await;
    let dir = tempdir();
    let resources = r#"resources = ["customers", "customers/{id}/tax_ids"]"#;
    let engine = Engine::start(dir.path(), &base, &format!("accounts = []\n{resources}\npoll_interval_ms = 100")).await;
    engine.wait_live(Duration::from_secs(30)).await;
    let tax_ids: Vec<String> = engine.mirror().await["tax_id"].keys().cloned().collect();
    assert_eq!(tax_ids, ["txi_cus_1", "txi_cus_2"]);
    let refused = engine.proc.log_kinds("expand_refused");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["resource"], "customers/{id}/tax_ids");
    let by_path = per_parent.lock().by_path.clone();
    assert_eq!((by_path["customers/cus_1/tax_ids"], by_path["customers/cus_2/tax_ids"]), (1, 1), "{by_path:?}");
}

//! A misbehaving upstream: truncated JSON, a storm of 500s, a revoked key.
//! Each gives a clear error naming the URL, stores nothing wrong, and the
//! engine recovers when the upstream does.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_json_500_storms_and_401s_are_survived() {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--scale", "300", "--accounts", "1", "--truncate-rate", "0.3"]).await;
    let engine = Engine::start(dir.path(), &sim.url, "poll_interval_ms = 100\nretry_max_backoff_ms = 500").await;
    engine.wait_live(Duration::from_secs(120)).await;
    assert!(sim.stats().await["truncated"].as_u64().unwrap() > 0);
    let malformed =
        engine.proc.log_text().lines().filter(|l| l.contains("malformed json") && l.contains(&format!("{}/v1/", sim.url))).count();
    assert!(malformed > 0, "truncated bodies were not reported with their URL");
    sim.set_faults(json!({})).await;
    assert_eq!(engine.wait_barrier(10_000).await.0, 200);
    assert_converged(&sim, &engine.db).await;

    // a 500 storm while the upstream keeps changing
    sim.set_faults(json!({"fail_rate": 1.0})).await;
    sim.set_traffic(30.0).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    sim.set_traffic(0.0).await;
    assert_eq!(engine.wait_barrier(300).await.0, 504, "a poll succeeded during a total outage");
    sim.set_faults(json!({})).await;
    assert_eq!(engine.wait_barrier(15_000).await.0, 200);
    assert_converged(&sim, &engine.db).await;
    // each 500 was a retry, logged with its URL and the upstream's status
    let retries: Vec<serde_json::Value> = engine
        .proc
        .log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["message"].as_str().is_some_and(|m| m.starts_with("request failed, retrying: 500 Internal Server Error")))
        .collect();
    assert!(!retries.is_empty(), "the 500s were not logged as retries");
    assert!(
        retries
            .iter()
            .all(|l| l["url"].as_str().is_some_and(|u| u.contains(&format!("{}/v1/", sim.url))) && l["attempt"].as_u64() >= Some(1)),
        "{retries:?}"
    );

    // a revoked key: a final 4xx stops the account's sync with a clear
    // error; the account restarts after the backoff and recovers
    sim.set_faults(json!({"unauthorized": true})).await;
    sim.set_traffic(30.0).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    sim.set_traffic(0.0).await;
    let url = format!("{}/v1/sources", engine.api);
    wait_until("the 401 to show in /v1/sources", Duration::from_secs(10), || async {
        get_json(&url).await.is_some_and(|s| s["sources"][0]["last_error"].as_str().is_some_and(|e| e.contains("401")))
    })
    .await;
    let errors = engine.proc.log_kinds("source_error");
    assert!(errors.iter().any(|l| l["error"].as_str().is_some_and(|e| e.contains("401") && e.contains("/v1/events"))), "{errors:?}");
    sim.set_faults(json!({})).await;
    assert_eq!(engine.wait_barrier(15_000).await.0, 200);
    assert_converged(&sim, &engine.db).await;
}

/// Six ways a nested list's `url` (upstream data) could turn the configured
/// host into userinfo, replace it, or climb out of `/v1/`.
fn hostile_urls(other: &str) -> [String; 6] {
    [
        format!("@{other}/x"),
        format!(":x@{other}/y"),
        format!("http://{other}/v1/invoices/in_1/lines"),
        format!("//{other}/v1/invoices/in_1/lines"),
        format!(".{other}/v1/z"),
        "/v1/../../x".to_string(),
    ]
}

/// An upstream of the test's own: an empty event list, and one invoice
/// (`in_{index}`) whose truncated `lines` list points at `url`. Every
/// request it gets is counted.
async fn hostile_upstream(index: usize, url: String, requests: Arc<AtomicUsize>) -> String {
    use axum::extract::{Path, State};
    use axum::routing::get;
    let answer = move |State((url, requests)): State<(String, Arc<AtomicUsize>)>, Path(rest): Path<String>| async move {
        requests.fetch_add(1, Ordering::SeqCst);
        if rest.starts_with("events") {
            return axum::Json(json!({"object": "list", "data": [], "has_more": false, "url": "/v1/events"}));
        }
        let invoice = json!({
            "id": format!("in_{index}"), "object": "invoice", "created": 1,
            "lines": {"object": "list", "data": [{"id": "il_1", "object": "line_item"}], "has_more": true, "url": url},
        });
        axum::Json(json!({"object": "list", "data": [invoice], "has_more": false, "url": "/v1/invoices"}))
    };
    let app = axum::Router::new().route("/v1/{*rest}", get(answer)).with_state((url, requests));
    serve_upstream(app).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nested_url_never_takes_the_api_key_to_another_host() {
    // what an attacker's host would receive: any connection at all
    let other = tokio::net::TcpListener::bind("127.0.0.2:0").await.expect("a listener on 127.0.0.2");
    let other_addr = other.local_addr().unwrap().to_string();
    let reached = Arc::new(AtomicUsize::new(0));
    let counter = reached.clone();
    tokio::spawn(async move {
        while other.accept().await.is_ok() {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    let urls = hostile_urls(&other_addr);
    let requests = Arc::new(AtomicUsize::new(0));
    let dir = tempdir();
    let mut sources = String::new();
    for (i, url) in urls.iter().enumerate() {
        // a base URL without a path, as a user configures it: with text
        // concatenation `{base}{url}` made the first forms another host
        let upstream = hostile_upstream(i, url.clone(), requests.clone()).await;
        sources.push_str(&format!(
            "[[sources]]\nname = \"s{i}\"\nkind = \"stripe\"\nbase_url = \"{upstream}\"\napi_key_env = \"STRIPE_API_KEY\"\n\
             accounts = []\nresources = [\"invoices\"]\nretry_max_backoff_ms = 200\n"
        ));
    }
    let engine = Engine::start_configured(dir.path(), Db::sqlite(dir.path()), &sources).await;
    wait_until("every source to refuse its nested url", Duration::from_secs(30), || async {
        assert_eq!(reached.load(Ordering::SeqCst), 0, "a request (with the API key) reached another host");
        engine.proc.log_kinds("url_refused").len() >= urls.len() && engine.proc.log_kinds("source_stopped").len() >= urls.len()
    })
    .await;
    for (i, url) in urls.iter().enumerate() {
        let refused = engine.proc.log_kinds("url_refused");
        let line = refused.iter().find(|l| l["source"] == format!("s{i}")).unwrap_or_else(|| panic!("no refusal for s{i}: {refused:?}"));
        assert_eq!(line["url"], url.as_str());
        assert_eq!(line["object"], format!("invoice in_{i}"));
        assert_eq!(line["field"], "lines");
    }
    // stopped for good: the error shows in /v1/sources and nothing is retried
    let sources = engine.sources().await;
    for source in sources["sources"].as_array().unwrap() {
        let error = source["last_error"].as_str().unwrap_or_default();
        assert!(error.contains("stopped") && error.contains("lines.url"), "{source}");
    }
    let settled = requests.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(requests.load(Ordering::SeqCst), settled, "a refused url was retried");
    assert_eq!(reached.load(Ordering::SeqCst), 0, "a request reached another host");
    assert!(engine.mirror().await.get("invoice").is_none_or(|rows| rows.is_empty()), "an incomplete invoice was stored");
}

/// A connected account whose id cannot go into a `Stripe-Account` header
/// (the upstream listed it with a control character): the request cannot
/// even be built, so that account's sync stops with a clear error instead
/// of retrying forever; the platform's goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_cannot_be_built_stops_its_account_instead_of_retrying() {
    use axum::extract::{Path, State};
    use axum::routing::get;
    let requests = Arc::new(AtomicUsize::new(0));
    let answer = |State(requests): State<Arc<AtomicUsize>>, Path(rest): Path<String>| async move {
        requests.fetch_add(1, Ordering::SeqCst);
        let data = if rest == "accounts" { json!([{"id": "acct_bad\u{1}id", "object": "account"}]) } else { json!([]) };
        axum::Json(json!({"object": "list", "data": data, "has_more": false, "url": format!("/v1/{rest}")}))
    };
    let app = axum::Router::new().route("/v1/{*rest}", get(answer)).with_state(requests.clone());
    let upstream = serve_upstream(app).await;

    let dir = tempdir();
    let engine = Engine::start(
        dir.path(),
        &upstream,
        "accounts = \"all\"\nresources = [\"customers\"]\nretry_max_backoff_ms = 200\npoll_interval_ms = 100",
    )
    .await;
    wait_until("the bad account's sync to stop", Duration::from_secs(30), || async {
        engine.proc.log_kinds("source_stopped").iter().any(|l| l["error_kind"] == "request_invalid")
    })
    .await;
    let stopped = engine.proc.log_kinds("source_stopped");
    assert!(stopped[0]["error"].as_str().unwrap().contains("cannot send"), "{stopped:?}");
    let sources = engine.sources().await;
    let error = sources["sources"][0]["last_error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("stopped") && error.contains("cannot send"), "{sources}");
    // the platform goes on to live; the bad account is not retried
    wait_until("the platform to be live", Duration::from_secs(30), || async {
        let sources = engine.sources().await;
        let accounts = sources["sources"][0]["accounts"].as_array().cloned().unwrap_or_default();
        accounts.iter().any(|a| a["account"].is_null() && a["phase"] == "live")
    })
    .await;
    let retries = engine.proc.log_text().lines().filter(|l| l.contains("request failed, retrying") && l.contains("acct_bad")).count();
    assert_eq!(retries, 0, "a request that cannot be built was retried");
    assert_eq!(engine.proc.log_kinds("source_stopped").len(), 1, "stopped more than once");
}

//! The HTTP API without a socket (`oneshot`), on a throwaway SQLite store.

use super::*;
use axum::body::Body;
use axum::http::Request;
use serde_json::{Value, json};
use tower::ServiceExt;

async fn app() -> (tempfile::TempDir, Router) {
    let (dir, router, _) = app_and_store().await;
    (dir, router)
}

async fn app_and_store() -> (tempfile::TempDir, Router, Arc<dyn Store>) {
    app_with_rate(1_000).await
}

/// The API on a fresh store, app tokens limited to `per_sec` requests.
async fn app_with_rate(per_sec: u32) -> (tempfile::TempDir, Router, Arc<dyn Store>) {
    app_with(per_sec, Tokens::new(Some("admin-secret"), None)).await
}

async fn app_with(per_sec: u32, tokens: Tokens) -> (tempfile::TempDir, Router, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let store = crate::store::open(&crate::store::Options::url(&url)).await.unwrap();
    let registry = Arc::new(Registry::default());
    registry.add(crate::source::SourceStatus::new("stripe", "stripe"));
    registry.add(crate::source::SourceStatus::new("shifts", "window"));
    let queues = Arc::new(queues::QueueApi::new(per_sec, 3, Duration::from_secs(86_400)));
    let config = crate::config::Config::parse("", "empty.toml").unwrap();
    let writes = Arc::new(crate::write::Writes::new(store.clone(), &config).unwrap());
    let tokens = Arc::new(tokens);
    let state = AppState {
        registry,
        sinks: Default::default(),
        store: store.clone(),
        metrics: crate::telemetry::metrics(),
        queues,
        writes,
        tokens,
        controls: crate::control::fixed(Default::default()),
        console: crate::console::Monitor::new(),
    };
    (dir, router(state), store)
}

/// A request with an optional bearer token and JSON body.
async fn send(app: &Router, method: &str, uri: &str, token: Option<&str>, body: Option<String>) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri).header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = app.clone().oneshot(request.body(Body::from(body.unwrap_or_default())).unwrap()).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn queues_end_to_end_over_http() {
    let (_dir, app, store) = app_and_store().await;
    let fanout = tokio::spawn(crate::queue::fanout::run(store.clone(), crate::delivery::SinkStatus::new("queue:fanout", "queues")));
    let admin = Some("admin-secret");
    let (status, body) = send(&app, "POST", "/v1/apps", None, Some(json!({"name": "shop", "kind": "inhouse"}).to_string())).await;
    assert_eq!((status, body["error"]["type"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")));
    let (status, _) = send(&app, "POST", "/v1/apps", admin, Some(json!({"name": "shop", "kind": "inhouse"}).to_string())).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "an inhouse app needs its account");
    let (status, shop) =
        send(&app, "POST", "/v1/apps", admin, Some(json!({"name": "shop", "kind": "inhouse", "account": "acct_a"}).to_string())).await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, other) = send(&app, "POST", "/v1/apps", admin, Some(json!({"name": "other", "kind": "public"}).to_string())).await;
    let (token, other_token) = (shop["token"].as_str().unwrap().to_string(), other["token"].as_str().unwrap().to_string());
    let (t, o) = (Some(token.as_str()), Some(other_token.as_str()));

    let (status, queue) = send(&app, "POST", "/v1/queues", t, Some(json!({"name": "orders"}).to_string())).await;
    assert_eq!((status, &queue["status"]), (StatusCode::CREATED, &json!("ACTIVE")));
    let code = queue["code"].as_str().unwrap().to_string();
    let pull_uri = format!("/v1/queues/{code}/events/pull");
    let subs_uri = format!("/v1/queues/{code}/subscriptions");
    // another app's queue does not exist for it
    assert_eq!(send(&app, "POST", &pull_uri, o, Some("{}".into())).await.0, StatusCode::NOT_FOUND);
    assert_eq!(send(&app, "DELETE", &format!("/v1/queues/{code}"), o, None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(send(&app, "GET", "/v1/queues", Some("trb_forged"), None).await.0, StatusCode::UNAUTHORIZED);
    let forbidden = send(&app, "POST", &subs_uri, t, Some(json!({"event_type": "*", "account": "acct_b"}).to_string())).await;
    assert_eq!(forbidden.0, StatusCode::FORBIDDEN);
    // bad bodies: never a 500
    for (body, expected) in [
        (r#"{"name": 5}"#.to_string(), StatusCode::UNPROCESSABLE_ENTITY),
        (r#"{"name": "x", "extra": 1}"#.to_string(), StatusCode::UNPROCESSABLE_ENTITY),
        ("{nope".to_string(), StatusCode::BAD_REQUEST),
        (format!(r#"{{"name": "{}"}}"#, "x".repeat(2 << 20)), StatusCode::PAYLOAD_TOO_LARGE),
    ] {
        let (status, error) = send(&app, "POST", "/v1/queues", t, Some(body)).await;
        assert_eq!(status, expected);
        assert!(error["error"]["message"].is_string(), "{error}");
    }
    for (body, expected) in [
        (json!({"limit": 0}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"limit": 1001}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"wait_ms": 30001}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"ack_id": "q_other.1.x"}), StatusCode::NOT_FOUND),
    ] {
        assert_eq!(send(&app, "POST", &pull_uri, t, Some(body.to_string())).await.0, expected, "{body}");
    }
    let (status, sub) = send(&app, "POST", &subs_uri, t, Some(json!({"event_type": "customer.*", "account": "acct_a"}).to_string())).await;
    assert_eq!((status, &sub["active"]), (StatusCode::CREATED, &json!(true)));

    // a long poll answers when a matching change commits
    let waiting = {
        let (app, uri, token) = (app.clone(), pull_uri.clone(), token.clone());
        tokio::spawn(async move { send(&app, "POST", &uri, Some(&token), Some(json!({"wait_ms": 10_000}).to_string())).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let write = |id: &str, account: &str| crate::store::Write {
        object: "customer".into(),
        id: id.into(),
        account: Some(account.into()),
        mutation: crate::store::Mutation::Upsert(json!({"id": id})),
        origin: crate::store::Origin::Backfill,
        generation: 1,
    };
    let batch =
        crate::store::Batch { source: "stripe".into(), writes: vec![write("c1", "acct_b"), write("c2", "acct_a")], ..Default::default() };
    store.apply(batch).await.unwrap();
    let (status, pulled) = tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("long poll answered").unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(pulled["events"].as_array().unwrap().len(), 1);
    assert_eq!(pulled["events"][0]["payload"]["object_id"], "c2");
    assert_eq!(pulled["events"][0]["type"], "customer.read");
    let ack_id = pulled["ack_id"].as_str().unwrap();
    let (_, next) = send(&app, "POST", &pull_uri, t, Some(json!({"ack_id": ack_id}).to_string())).await;
    assert_eq!((next["events"].as_array().unwrap().len(), &next["ack_id"]), (0, &Value::Null));

    // a revoked token stops working at once
    let id = shop["id"].as_str().unwrap();
    assert_eq!(send(&app, "DELETE", &format!("/v1/apps/{id}"), admin, None).await.0, StatusCode::OK);
    assert_eq!(send(&app, "GET", "/v1/queues", t, None).await.0, StatusCode::UNAUTHORIZED);
    fanout.abort();
}

async fn call(app: &Router, method: &str, uri: &str) -> (StatusCode, Value) {
    let request = Request::builder().method(method).uri(uri).body(Body::empty()).unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn every_error_is_json() {
    let (_dir, app) = app().await;
    for (method, uri, status) in [
        ("GET", "/nope", StatusCode::NOT_FOUND),
        ("DELETE", "/v1/sources", StatusCode::METHOD_NOT_ALLOWED),
        ("GET", "/v1/sources/other/wait", StatusCode::NOT_FOUND),
        ("GET", "/v1/sources/stripe/wait?timeout_ms=-1", StatusCode::BAD_REQUEST),
        ("GET", "/v1/sources/stripe/wait?timeout_ms=999999999", StatusCode::BAD_REQUEST),
    ] {
        let (got, body) = call(&app, method, uri).await;
        assert_eq!(got, status, "{method} {uri}");
        assert!(body["error"]["type"].is_string() && body["error"]["message"].is_string(), "{method} {uri}: {body}");
    }
}

#[tokio::test]
async fn wait_times_out_while_no_account_is_known() {
    let (_dir, app) = app().await;
    let (status, body) = call(&app, "GET", "/v1/sources/stripe/wait?timeout_ms=50").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(body["error"]["type"], "timeout");
    let (status, body) = call(&app, "GET", "/v1/sources").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["sources"][0]["phase"], "backfilling");
    assert!(body["sources"][0]["lag_ms"].is_null());
}

const ADMIN: Option<&str> = Some("admin-secret");

/// A reconcile asked for is recorded in the store, where the instance
/// that runs the source finds it; only the admin token may ask, and only
/// a stripe source has one.
#[tokio::test]
async fn a_reconcile_is_asked_for_by_the_admin_of_a_stripe_source() {
    let (_dir, app, store) = app_and_store().await;
    assert_eq!(send(&app, "POST", "/v1/sources/stripe/reconcile", None, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(send(&app, "POST", "/v1/sources/nope/reconcile", ADMIN, None).await.0, StatusCode::NOT_FOUND);
    let (status, body) = send(&app, "POST", "/v1/sources/shifts/reconcile", ADMIN, None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("window source"), "{body}");
    assert!(store.checkpoints("shifts").await.unwrap().is_empty());
    let (status, body) = send(&app, "POST", "/v1/sources/stripe/reconcile", ADMIN, None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["source"], "stripe");
    let asked = store.checkpoints("stripe").await.unwrap()["reconcile/requested"]["at"].as_i64().unwrap();
    assert!((asked - chrono::Utc::now().timestamp()).abs() <= 5, "{asked}");
}

/// Create an app over the API; returns (id, token).
async fn new_app(app: &Router, kind: &str, account: Option<&str>) -> (String, String) {
    let (status, body) =
        send(app, "POST", "/v1/apps", ADMIN, Some(json!({"name": "a", "kind": kind, "account": account}).to_string())).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (body["id"].as_str().unwrap().to_string(), body["token"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn each_app_token_has_its_own_rate_limit_answered_with_429_and_retry_after() {
    let (_dir, app, _store) = app_with_rate(3).await;
    let (_, busy) = new_app(&app, "public", None).await;
    let (_, quiet) = new_app(&app, "public", None).await;
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..6 {
        let request = Request::get("/v1/queues").header("authorization", format!("Bearer {busy}")).body(Body::empty()).unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        statuses.push(response.status());
        if response.status() == StatusCode::TOO_MANY_REQUESTS && limited.is_none() {
            let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
            limited = Some((retry_after, serde_json::from_slice::<Value>(&bytes).unwrap()));
        }
    }
    // a burst of 3, then refused (the six requests take well under a second)
    assert_eq!(&statuses[..3], &[StatusCode::OK; 3]);
    assert!(statuses[3..].iter().all(|s| *s == StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");
    let (retry_after, body) = limited.unwrap();
    let seconds: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!(seconds >= 1, "{seconds}");
    assert_eq!(body["error"]["type"], "rate_limited");
    // another token is not held back by this one
    assert_eq!(send(&app, "GET", "/v1/queues", Some(&quiet), None).await.0, StatusCode::OK);
}

/// A route to fuzz, with its path parameters filled in.
#[derive(Debug, Clone)]
struct Route {
    method: &'static str,
    path: String,
    /// The path as the OpenAPI document names it.
    template: &'static str,
    admin: bool,
    /// The fields its body takes.
    fields: &'static [&'static str],
}

mod fuzz {
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    /// Any JSON document, nested a few levels.
    pub fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            (-5i64..40_000).prop_map(Value::from),
            ".{0,40}".prop_map(Value::String),
            "[a-z_.*]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(".{0,12}", inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
            ]
        })
    }

    /// A value a route might accept, or anything.
    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            2 => prop::sample::select(vec!["public", "inhouse", "earliest", "now", "*", "order.*", "acct_a", "acct_b", "platform", "q.1.x"])
                .prop_map(|s| Value::String(s.into())),
            1 => (0u64..2_000).prop_map(Value::from),
            2 => json(),
        ]
    }

    /// An object shaped like what `fields` names: each field there or not,
    /// holding a likely or an arbitrary value, sometimes with a stranger.
    pub fn shaped(fields: &'static [&'static str]) -> impl Strategy<Value = Value> {
        let present = prop::collection::vec((prop::bool::weighted(0.8), value()), fields.len());
        (present, prop::option::weighted(0.1, value())).prop_map(move |(present, extra)| {
            let mut object: Map<String, Value> =
                fields.iter().zip(present).filter(|(_, (keep, _))| *keep).map(|(field, (_, v))| (field.to_string(), v)).collect();
            if let Some(extra) = extra {
                object.insert("extra".into(), extra);
            }
            Value::Object(object)
        })
    }

    /// What is sent: a body shaped for the route, any JSON, or raw bytes.
    pub fn body(fields: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            4 => shaped(fields).prop_map(|v| v.to_string().into_bytes()),
            1 => json().prop_map(|v| v.to_string().into_bytes()),
            1 => prop::collection::vec(any::<u8>(), 0..64),
        ]
    }

    /// A path parameter: the real one or anything URL-safe.
    pub fn param(real: String) -> impl Strategy<Value = String> {
        prop_oneof![3 => Just(real), 1 => "[A-Za-z0-9_.~%-]{1,20}"]
    }
}

#[test]
fn fuzzed_bodies_and_paths_never_cause_a_panic_or_a_500() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRng, TestRunner};

    let runtime = tokio::runtime::Runtime::new().unwrap();
    // no rate limit: every case reaches its route, whatever the clock says
    let (_dir, app, store) = runtime.block_on(app_with_rate(u32::MAX));
    let (app_id, token, code, subscription) = runtime.block_on(async {
        let (app_id, token) = new_app(&app, "inhouse", Some("acct_a")).await;
        let (_, queue) = send(&app, "POST", "/v1/queues", Some(&token), Some(json!({"name": "q"}).to_string())).await;
        let code = queue["code"].as_str().unwrap().to_string();
        let uri = format!("/v1/queues/{code}/subscriptions");
        let (_, sub) = send(&app, "POST", &uri, Some(&token), Some(json!({"event_type": "*", "account": "acct_a"}).to_string())).await;
        // events are waiting, so a fuzzed `wait_ms` never holds a pull
        let fanout = tokio::spawn(crate::queue::fanout::run(store.clone(), crate::delivery::SinkStatus::new("queue:fanout", "queues")));
        let write = crate::store::Write {
            object: "customer".into(),
            id: "c1".into(),
            account: Some("acct_a".into()),
            mutation: crate::store::Mutation::Upsert(json!({"id": "c1"})),
            origin: crate::store::Origin::Backfill,
            generation: 1,
        };
        store.apply(crate::store::Batch { source: "stripe".into(), writes: vec![write], ..Default::default() }).await.unwrap();
        let pull = format!("/v1/queues/{code}/events/pull");
        while send(&app, "POST", &pull, Some(&token), Some("{}".into())).await.1["events"].as_array().is_none_or(|e| e.is_empty()) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        fanout.abort();
        (app_id, token, code, sub["code"].as_str().unwrap().to_string())
    });

    let routes = (fuzz::param(app_id), fuzz::param(code), fuzz::param(subscription)).prop_flat_map(|(app_id, code, sub)| {
        let route = |method, path: String, template, admin, fields| Route { method, path, template, admin, fields };
        prop::sample::select(vec![
            route("POST", "/v1/apps".into(), "/v1/apps", true, &["name", "kind", "account"]),
            route("GET", "/v1/apps".into(), "/v1/apps", true, &[]),
            route("POST", format!("/v1/sources/{code}/reconcile"), "/v1/sources/{name}/reconcile", true, &[]),
            route("POST", format!("/v1/apps/{app_id}/grants"), "/v1/apps/{id}/grants", true, &["account"]),
            route("POST", "/v1/queues".into(), "/v1/queues", false, &["name"]),
            route("GET", "/v1/queues".into(), "/v1/queues", false, &[]),
            route(
                "POST",
                format!("/v1/queues/{code}/subscriptions"),
                "/v1/queues/{code}/subscriptions",
                false,
                &["event_type", "account", "from"],
            ),
            route("GET", format!("/v1/queues/{code}/subscriptions"), "/v1/queues/{code}/subscriptions", false, &[]),
            route(
                "DELETE",
                format!("/v1/queues/{code}/subscriptions/{sub}x"),
                "/v1/queues/{code}/subscriptions/{subscription}",
                false,
                &[],
            ),
            route(
                "POST",
                format!("/v1/queues/{code}/events/pull"),
                "/v1/queues/{code}/events/pull",
                false,
                &["ack_id", "limit", "wait_ms"],
            ),
            route("POST", format!("/v1/sources/{code}/customers"), "/v1/sources/{name}/{resource}", false, &["email", "metadata", "name"]),
            route(
                "POST",
                format!("/v1/sources/stripe/{sub}/{app_id}"),
                "/v1/sources/{name}/{resource}/{id}",
                false,
                &["email", "metadata", "name"],
            ),
            route("DELETE", format!("/v1/sources/stripe/customers/{app_id}"), "/v1/sources/{name}/{resource}/{id}", false, &[]),
            route("POST", format!("/stripe/{code}/v1/customers"), "/stripe/{source}/v1/{resource}", false, &["email", "metadata"]),
            route("GET", format!("/stripe/stripe/v1/{sub}"), "/stripe/{source}/v1/{resource}", false, &[]),
            route("POST", format!("/stripe/stripe/v1/customers/{app_id}"), "/stripe/{source}/v1/{resource}/{id}", false, &["name"]),
        ])
    });
    let cases = routes.prop_flat_map(|route| {
        let body = fuzz::body(route.fields);
        (Just(route), body)
    });
    let seen = std::cell::RefCell::new(std::collections::BTreeMap::<u16, usize>::new());
    let conformance = conformance::Conformance::new(document());
    // a fixed seed: the same cases every run, so the coverage check below
    // cannot pass or fail by luck (run with more cases by hand to explore)
    let config = Config { cases: 4_000, failure_persistence: None, ..Config::default() };
    let rng = TestRng::deterministic_rng(config.rng_algorithm);
    let mut runner = TestRunner::new_with_rng(config, rng);
    runner
        .run(&cases, |(route, body)| {
            let token = if route.admin { "admin-secret" } else { token.as_str() };
            let request = Request::builder()
                .method(route.method)
                .uri(&route.path)
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {token}"))
                .header("idempotency-key", format!("fuzz-{}", body.len()))
                .body(Body::from(body.clone()))
                .unwrap();
            let (status, content_type, bytes) = runtime.block_on(async {
                let response = app.clone().oneshot(request).await.unwrap();
                let status = response.status();
                let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
                (status, content_type, axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap())
            });
            let reply = serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null);
            *seen.borrow_mut().entry(status.as_u16()).or_default() += 1;
            let template = conformance.template_of(route.path.split('?').next().unwrap_or_default());
            prop_assert_eq!(template.as_deref(), Some(route.template), "{}", route.path);
            let fits = conformance.check(route.method, &route.path, status.as_u16(), content_type.as_deref(), &bytes);
            prop_assert!(fits.is_ok(), "{}", fits.unwrap_err());
            let shown = String::from_utf8_lossy(&body);
            prop_assert!(!status.is_server_error(), "{} {} {shown} -> {status} {reply}", route.method, route.path);
            if !status.is_success() {
                prop_assert!(reply["error"]["type"].is_string() && reply["error"]["message"].is_string(), "{status}: {reply}");
            }
            Ok(())
        })
        .unwrap();
    // the cases reached past parsing into the handlers, not only rejections
    let seen = seen.into_inner();
    for status in [200, 201, 400, 403, 404, 422] {
        assert!(seen.contains_key(&status), "no case answered {status}: {seen:?}");
    }
}

#[test]
fn answers_that_do_not_fit_the_document_are_caught() {
    let conformance = conformance::Conformance::new(document());
    let json = Some("application/json");
    let app = json!({"id": "app_1", "name": "shop", "kind": "inhouse", "account": "acct_a", "created_at": "2026-12-01T10:00:00Z", "revoked": false});
    let fits = |status, body: Value| conformance.check("GET", "/v1/apps", status, json, body.to_string().as_bytes());
    assert_eq!(fits(200, json!({"apps": [app.clone()]})), Ok(()));
    assert!(fits(200, json!({"apps": [{"id": 1}]})).is_err(), "a wrong type and missing fields");
    let mut bad_time = app.clone();
    bad_time["created_at"] = json!("yesterday");
    assert!(fits(200, json!({"apps": [bad_time]})).is_err(), "a date-time that is none");
    assert!(fits(200, json!({"apps": [app.clone()], "extra": 1})).is_ok(), "answers may grow fields");
    assert!(fits(418, json!({"error": {"type": "x", "message": "y"}})).unwrap_err().contains("does not list"));
    assert!(fits(401, json!({"error": {"type": "unauthorized"}})).is_err(), "an error without its message");
    assert!(conformance.check("GET", "/v1/apps", 200, Some("text/plain"), b"hi").unwrap_err().contains("content type"));
    // an upstream's refusal is passed on as it came: any 4xx of a write
    let write = |status| conformance.check("POST", "/v1/sources/stripe/customers", status, json, br#"{"error":{"code":"card_declined"}}"#);
    assert_eq!(write(402), Ok(()));
    assert!(write(500).is_err());
    assert_eq!(conformance.template_of("/v1/sources/stripe/wait").as_deref(), Some("/v1/sources/{name}/wait"));
    assert_eq!(conformance.template_of("/v1/sources/stripe/customers").as_deref(), Some("/v1/sources/{name}/{resource}"));
}

#[tokio::test]
async fn the_openapi_document_describes_routes_that_exist() {
    let (_dir, app) = app().await;
    let (status, doc) = call(&app, "GET", "/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let paths = doc["paths"].as_object().unwrap();
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let uri = path.replace('{', "x").replace('}', "");
            let (status, body) = call(&app, &method.to_uppercase(), &uri).await;
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert!(op["responses"][status.as_str()].is_object(), "{method} {path} answered {status}, which the document does not list");
            assert_ne!(body["error"]["message"], "no such route", "{method} {path}");
            for (code, response) in op["responses"].as_object().unwrap() {
                // every error is an Error; /health's 503 is an answer, not an error
                if !code.starts_with('2') && path != "/health" && code != "4XX" {
                    let error = if path.starts_with("/stripe/") { "StripeError" } else { "Error" };
                    assert_eq!(
                        response["content"]["application/json"]["schema"]["$ref"],
                        format!("#/components/schemas/{error}"),
                        "{method} {path} {code}"
                    );
                }
            }
            for reference in op.to_string().split("#/components/schemas/").skip(1) {
                let name = reference.split('"').next().unwrap();
                assert!(doc["components"]["schemas"][name].is_object(), "{method} {path}: no schema {name}");
            }
        }
    }
    // every queue and write route is there
    for (method, path) in [
        ("post", "/v1/apps"),
        ("get", "/v1/apps"),
        ("delete", "/v1/apps/{id}"),
        ("post", "/v1/apps/{id}/grants"),
        ("post", "/v1/queues"),
        ("get", "/v1/queues"),
        ("delete", "/v1/queues/{code}"),
        ("post", "/v1/queues/{code}/subscriptions"),
        ("get", "/v1/queues/{code}/subscriptions"),
        ("delete", "/v1/queues/{code}/subscriptions/{subscription}"),
        ("post", "/v1/queues/{code}/events/pull"),
        ("post", "/v1/sources/{name}/{resource}"),
        ("post", "/v1/sources/{name}/{resource}/{id}"),
        ("delete", "/v1/sources/{name}/{resource}/{id}"),
    ] {
        assert!(doc["paths"][path][method]["responses"].is_object(), "{method} {path} is not described");
    }
    // the bounds written into the declarations are the ones the handlers apply
    let pull = &doc["components"]["schemas"]["PullRequest"]["properties"];
    assert_eq!((pull["limit"]["minimum"].as_u64(), pull["limit"]["maximum"].as_u64()), (Some(1), Some(queues::MAX_PULL_LIMIT as u64)));
    assert_eq!(pull["wait_ms"]["maximum"].as_u64(), Some(queues::MAX_PULL_WAIT_MS));
    let timeout = &doc["paths"]["/v1/sources/{name}/wait"]["get"]["parameters"][1];
    assert_eq!((timeout["name"].as_str(), timeout["schema"]["maximum"].as_u64()), (Some("timeout_ms"), Some(MAX_WAIT_MS)));
    let limit = &doc["paths"]["/stripe/{source}/v1/{resource}"]["get"]["parameters"];
    let limit = limit.as_array().unwrap().iter().find(|p| p["name"] == "limit").unwrap();
    assert_eq!(limit["schema"]["maximum"].as_u64(), Some(crate::stripe_api::MAX_PAGE as u64));
    for text in ["NewApp", "NewQueue", "Grant"] {
        let properties = doc["components"]["schemas"][text]["properties"].as_object().unwrap();
        let (_, first) = properties.iter().next().unwrap();
        assert_eq!(first["maxLength"].as_u64(), Some(crate::ids::MAX_TEXT as u64), "{text}");
    }
}

#[tokio::test]
async fn a_read_token_guards_status_metrics_and_wait_when_set() {
    let (_dir, open) = app().await;
    assert_eq!(call(&open, "GET", "/v1/sources").await.0, StatusCode::OK, "no read token configured: open");
    let (_dir, app, _) = app_with(1_000, Tokens::new(Some("admin-secret"), Some("read-secret"))).await;
    for uri in ["/v1/sources", "/v1/sinks", "/metrics", "/v1/sources/stripe/wait?timeout_ms=0"] {
        let (status, body) = send(&app, "GET", uri, None, None).await;
        assert_eq!((status, body["error"]["type"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")), "{uri}");
        assert_eq!(send(&app, "GET", uri, Some("wrong"), None).await.0, StatusCode::UNAUTHORIZED, "{uri}");
        for token in ["read-secret", "admin-secret"] {
            let (status, _) = send(&app, "GET", uri, Some(token), None).await;
            // the wait answers 504 (no poll happens here): past the token check
            assert!(status == StatusCode::OK || status == StatusCode::GATEWAY_TIMEOUT, "{uri} with {token}: {status}");
        }
    }
    // health and the document stay open; the read token is no admin token
    assert_eq!(call(&app, "GET", "/health").await.0, StatusCode::OK);
    assert_eq!(call(&app, "GET", "/openapi.json").await.0, StatusCode::OK);
    assert_eq!(send(&app, "GET", "/v1/apps", Some("read-secret"), None).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_lowercase_bearer_scheme_is_accepted() {
    let (_dir, app) = app().await;
    let request = Request::get("/v1/apps").header("authorization", "bearer admin-secret").body(Body::empty()).unwrap();
    assert_eq!(app.clone().oneshot(request).await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn a_json_body_is_read_whatever_its_content_type_says() {
    let (_dir, app) = app().await;
    let (_, token) = new_app(&app, "inhouse", Some("acct_a")).await;
    // what `curl -d '{…}'` sends
    for content_type in [Some("application/x-www-form-urlencoded"), Some("text/plain"), None] {
        let mut request = Request::post("/v1/queues").header("authorization", format!("Bearer {token}"));
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = app.clone().oneshot(request.body(Body::from(r#"{"name":"orders"}"#)).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "{content_type:?}");
    }
    // strict on the body itself
    let request = Request::post("/v1/queues")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from("name=orders"))
        .unwrap();
    assert_eq!(app.clone().oneshot(request).await.unwrap().status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn write_params_come_as_json_or_as_stripe_form_encoding() {
    use axum::extract::FromRequest;
    let form = Request::post("/").header("content-type", "application/x-www-form-urlencoded");
    let request = form.body(Body::from("email=a%40b.c&metadata[plan]=pro&items[0][price]=price_1")).unwrap();
    let extract::Params(params) = extract::Params::from_request(request, &()).await.unwrap();
    assert_eq!(Value::Object(params), json!({"email": "a@b.c", "metadata": {"plan": "pro"}, "items": [{"price": "price_1"}]}));
    let form = Request::post("/").header("content-type", "application/x-www-form-urlencoded");
    let request = form.body(Body::from(r#"{"email":"a@b.c","metadata":{"plan":"pro"}}"#)).unwrap();
    let extract::Params(params) = extract::Params::from_request(request, &()).await.unwrap();
    assert_eq!(Value::Object(params), json!({"email": "a@b.c", "metadata": {"plan": "pro"}}));
    let request = Request::post("/").header("content-type", "application/x-www-form-urlencoded").body(Body::empty()).unwrap();
    assert!(extract::Params::from_request(request, &()).await.unwrap().0.is_empty());
    let request = Request::post("/").header("content-type", "application/json").body(Body::from("email=a")).unwrap();
    assert!(matches!(extract::Params::from_request(request, &()).await, Err(ApiError::BadRequest(_))));
}

/// The console's page, script and styles are served from the binary: the
/// page forbids anything but its own assets and says whether the admin API
/// is on; the live stream needs the admin token.
#[tokio::test]
async fn the_console_is_served_from_the_binary_and_its_stream_needs_the_admin_token() {
    let (_dir, app, _) = app_and_store().await;
    let get = |uri: &str, token: Option<&str>| {
        let mut request = Request::builder().uri(uri);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        app.clone().oneshot(request.body(Body::empty()).unwrap())
    };
    let page = get("/", None).await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"), "{csp}");
    let html = String::from_utf8(axum::body::to_bytes(page.into_body(), 1 << 20).await.unwrap().to_vec()).unwrap();
    assert!(html.contains(r#"data-admin="on""#) && html.contains(r#"src="/console/app.js""#), "{html}");
    for (asset, kind) in [("/console/app.js", "text/javascript"), ("/console/app.css", "text/css")] {
        let response = get(asset, None).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with(kind));
    }
    assert_eq!(get("/v1/console/events", None).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let stream = get("/v1/console/events", Some("admin-secret")).await.unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let mut body = stream.into_body().into_data_stream();
    let first = futures::StreamExt::next(&mut body).await.unwrap().unwrap();
    let first = String::from_utf8_lossy(&first);
    assert!(first.starts_with("event: overview\ndata: {"), "{first}");

    // without an admin token the page says how to turn the console on
    let (_dir, off, _) = app_with(1_000, Tokens::new(None, None)).await;
    let page = off.oneshot(Request::builder().uri("/").body(Body::empty()).unwrap()).await.unwrap();
    let html = String::from_utf8(axum::body::to_bytes(page.into_body(), 1 << 20).await.unwrap().to_vec()).unwrap();
    assert!(html.contains(r#"data-admin="off""#));
}

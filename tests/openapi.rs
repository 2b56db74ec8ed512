//! Every route of a running engine (over a simulated Stripe upstream)
//! answers as the OpenAPI document it serves says: each answer's status is
//! one its operation lists, and its body fits the schema given for it. The
//! walk reaches every operation with a success and the usual refusals.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};
use tributary::api::conformance::Conformance;

struct Client {
    api: String,
    conformance: Conformance,
}

impl Client {
    /// Send a request, hold its answer to the document, and return it.
    async fn call(&self, method: Method, path: &str, token: Option<&str>, headers: &[(&str, &str)], body: Option<Value>) -> (u16, Value) {
        let mut request = http().request(method.clone(), format!("{}{path}", self.api));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("api call");
        let status = response.status().as_u16();
        let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
        let bytes = response.bytes().await.expect("answer body");
        if let Err(e) = self.conformance.check(method.as_str(), path, status, content_type.as_deref(), &bytes) {
            panic!("{e}");
        }
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_as_the_openapi_document_says() {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--scale", "30", "--accounts", "1", "--mutations-per-sec", "0"]).await;
    let body = format!(
        "admin_token_env = \"TRIBUTARY_ADMIN_TOKEN\"\n[[sources]]\nname = \"stripe\"\nkind = \"stripe\"\nbase_url = \"{}\"\n\
         api_key_env = \"STRIPE_API_KEY\"\npoll_interval_ms = 200\n{}\n\
         [[sinks]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\nsecret_env = \"TRIBUTARY_TEST_WEBHOOK_SECRET\"\n\
         max_attempts = 1\n",
        sim.url,
        core_resources().replace(
            "resources = [",
            "resources = [\"customers/{id}/tax_ids\", \"customers/{id}/balance_transactions\", \"terminal/locations\", "
        )
    );
    let engine = Engine::start_configured(dir.path(), Db::sqlite(dir.path()), &body).await;
    engine.wait_live(std::time::Duration::from_secs(60)).await;
    let document = get_json(&format!("{}/openapi.json", engine.api)).await.expect("the document");
    let api = Client { api: engine.api.clone(), conformance: Conformance::new(document) };
    let admin = Some(ADMIN_TOKEN);
    let account = sim.accounts().await.remove(0);

    // status routes
    assert_eq!(api.call(Method::GET, "/health", None, &[], None).await.0, 200);
    assert_eq!(api.call(Method::GET, "/metrics", None, &[], None).await.0, 200);
    assert_eq!(api.call(Method::GET, "/openapi.json", None, &[], None).await.0, 200);
    let (_, sources) = api.call(Method::GET, "/v1/sources", None, &[], None).await;
    assert_eq!(sources["sources"][0]["accounts"].as_array().map(Vec::len), Some(2), "{sources}");
    assert_eq!(api.call(Method::GET, "/v1/sinks", None, &[], None).await.0, 200);
    assert_eq!(api.call(Method::GET, "/v1/sources/stripe/wait?timeout_ms=60000", None, &[], None).await.0, 200);
    assert_eq!(api.call(Method::GET, "/v1/sources/stripe/wait?timeout_ms=soon", None, &[], None).await.0, 400);
    assert_eq!(api.call(Method::GET, "/v1/sources/nope/wait", None, &[], None).await.0, 404);
    assert_eq!(api.call(Method::POST, "/v1/sources/stripe/reconcile", None, &[], None).await.0, 401);
    assert_eq!(api.call(Method::POST, "/v1/sources/nope/reconcile", admin, &[], None).await.0, 404);
    assert_eq!(api.call(Method::POST, "/v1/sources/stripe/reconcile", admin, &[], None).await.0, 202);

    // apps: an in-house app of the platform, a public one the account grants
    let new_app = |kind: &str, account: Option<&str>| json!({"name": format!("{kind} app"), "kind": kind, "account": account});
    assert_eq!(api.call(Method::POST, "/v1/apps", None, &[], Some(new_app("public", None))).await.0, 401);
    assert_eq!(api.call(Method::POST, "/v1/apps", admin, &[], Some(json!({"name": "x", "kind": "nope"}))).await.0, 422);
    let (status, platform) = api.call(Method::POST, "/v1/apps", admin, &[], Some(new_app("inhouse", Some("platform")))).await;
    assert_eq!(status, 201);
    let (_, public) = api.call(Method::POST, "/v1/apps", admin, &[], Some(new_app("public", None))).await;
    let (_, doomed) = api.call(Method::POST, "/v1/apps", admin, &[], Some(new_app("public", None))).await;
    let (token, public_token) = (platform["token"].as_str().unwrap(), public["token"].as_str().unwrap());
    let (t, p) = (Some(token), Some(public_token));
    let grants = format!("/v1/apps/{}/grants", public["id"].as_str().unwrap());
    assert_eq!(api.call(Method::POST, &grants, admin, &[], Some(json!({"account": account}))).await.0, 200);
    assert_eq!(api.call(Method::POST, "/v1/apps/app_nope/grants", admin, &[], Some(json!({"account": account}))).await.0, 404);
    assert_eq!(api.call(Method::GET, "/v1/apps", admin, &[], None).await.0, 200);
    assert_eq!(api.call(Method::DELETE, &format!("/v1/apps/{}", doomed["id"].as_str().unwrap()), admin, &[], None).await.0, 200);
    assert_eq!(api.call(Method::DELETE, "/v1/apps/app_nope", admin, &[], None).await.0, 404);

    // a queue subscribed to the platform's customers
    let (status, queue) = api.call(Method::POST, "/v1/queues", t, &[], Some(json!({"name": "customers"}))).await;
    assert_eq!(status, 201);
    let code = queue["code"].as_str().unwrap();
    assert_eq!(api.call(Method::GET, "/v1/queues", t, &[], None).await.0, 200);
    let subscriptions = format!("/v1/queues/{code}/subscriptions");
    let (status, subscription) =
        api.call(Method::POST, &subscriptions, t, &[], Some(json!({"event_type": "customer.*", "account": "platform"}))).await;
    assert_eq!(status, 201);
    assert_eq!(api.call(Method::POST, &subscriptions, t, &[], Some(json!({"event_type": "*", "account": account}))).await.0, 403);
    assert_eq!(api.call(Method::GET, &subscriptions, t, &[], None).await.0, 200);
    assert_eq!(api.call(Method::GET, "/v1/queues/q_nope/subscriptions", t, &[], None).await.0, 404);

    // writes through to the upstream, on both paths
    let key = |k: &str| [("Idempotency-Key", k.to_string())];
    let created = {
        let headers = key("create-1");
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let body = Some(json!({"email": "a@example.com", "metadata": {"plan": "pro"}}));
        let (status, customer) = api.call(Method::POST, "/v1/sources/stripe/customers", t, &headers, body.clone()).await;
        assert_eq!(status, 200, "{customer}");
        // replayed from its key; another body under it is refused
        assert_eq!(api.call(Method::POST, "/v1/sources/stripe/customers", t, &headers, body).await.1, customer);
        let other = Some(json!({"email": "b@example.com"}));
        assert_eq!(api.call(Method::POST, "/v1/sources/stripe/customers", t, &headers, other).await.0, 422);
        customer["id"].as_str().unwrap().to_string()
    };
    assert_eq!(api.call(Method::POST, "/v1/sources/stripe/customers", t, &[], Some(json!({}))).await.0, 400);
    assert_eq!(api.call(Method::POST, "/v1/sources/stripe/customers", p, &[("Idempotency-Key", "p-1")], Some(json!({}))).await.0, 400);
    let for_account = [("Idempotency-Key", "p-2"), ("Stripe-Account", account.as_str())];
    assert_eq!(api.call(Method::POST, "/v1/sources/stripe/customers", p, &for_account, Some(json!({}))).await.0, 200);
    let forbidden = [("Idempotency-Key", "p-3"), ("Stripe-Account", "acct_other")];
    assert_eq!(api.call(Method::POST, "/v1/sources/stripe/customers", p, &forbidden, Some(json!({}))).await.0, 403);
    assert_eq!(api.call(Method::POST, "/v1/sources/nope/customers", t, &[("Idempotency-Key", "n-1")], Some(json!({}))).await.0, 404);
    let one = format!("/v1/sources/stripe/customers/{created}");
    assert_eq!(api.call(Method::POST, &one, t, &[("Idempotency-Key", "update-1")], Some(json!({"name": "A"}))).await.0, 200);
    // the upstream's refusal is passed on as it came
    let missing = "/v1/sources/stripe/customers/cus_missing";
    assert_eq!(api.call(Method::POST, missing, t, &[("Idempotency-Key", "update-2")], Some(json!({"name": "B"}))).await.0, 404);
    // lists by their own paths: child lists, and paths of two segments
    let key = |k: &'static str| [("Idempotency-Key", k)];
    let tax_ids = format!("{one}/tax_ids");
    let (status, tax_id) = api.call(Method::POST, &tax_ids, t, &key("tax-1"), Some(json!({"type": "eu_vat", "value": "DE1"}))).await;
    assert_eq!(status, 200, "{tax_id}");
    let tax_id = format!("{tax_ids}/{}", tax_id["id"].as_str().unwrap());
    assert_eq!(api.call(Method::DELETE, &tax_id, t, &key("tax-2"), None).await.0, 200);
    let balance = format!("{one}/balance_transactions");
    let (status, entry) = api.call(Method::POST, &balance, t, &key("bal-1"), Some(json!({"amount": -500, "currency": "usd"}))).await;
    assert_eq!(status, 200, "{entry}");
    let entry = format!("{balance}/{}", entry["id"].as_str().unwrap());
    assert_eq!(api.call(Method::POST, &entry, t, &key("bal-2"), Some(json!({"description": "credit"}))).await.0, 200);
    assert_eq!(api.call(Method::DELETE, &entry, t, &key("bal-3"), None).await.0, 404, "Stripe has no such delete");
    let (status, location) = api.call(Method::POST, "/v1/sources/stripe/terminal/locations", t, &key("loc-1"), Some(json!({}))).await;
    assert_eq!(status, 200, "{location}");
    let location = format!("/v1/sources/stripe/terminal/locations/{}", location["id"].as_str().unwrap());
    assert_eq!(api.call(Method::POST, &location, t, &key("loc-2"), Some(json!({"display_name": "HQ"}))).await.0, 200);
    assert_eq!(api.call(Method::DELETE, &location, t, &key("loc-3"), None).await.0, 200);

    // the Stripe-compatible path: form-encoded writes, reads from the mirror
    let stripe_customers = "/stripe/stripe/v1/customers";
    let (status, list) = api.call(Method::GET, &format!("{stripe_customers}?limit=3"), t, &[], None).await;
    assert_eq!((status, list["data"].as_array().map(Vec::len)), (200, Some(3)), "{list}");
    assert_eq!(api.call(Method::GET, &format!("{stripe_customers}?limit=0"), t, &[], None).await.0, 400);
    assert_eq!(api.call(Method::GET, &format!("{stripe_customers}?email=a@example.com"), t, &[], None).await.0, 400);
    assert_eq!(api.call(Method::GET, &format!("{stripe_customers}/{created}"), t, &[], None).await.0, 200);
    assert_eq!(api.call(Method::GET, &format!("{stripe_customers}/cus_missing"), t, &[], None).await.0, 404);
    assert_eq!(api.call(Method::GET, "/stripe/stripe/v1/customers", None, &[], None).await.0, 401);
    let (status, made) = api.call(Method::POST, stripe_customers, t, &[], Some(json!({"email": "c@example.com"}))).await;
    assert_eq!(status, 200, "{made}");
    let made = format!("{stripe_customers}/{}", made["id"].as_str().unwrap());
    assert_eq!(api.call(Method::POST, &made, t, &[], Some(json!({"name": "C"}))).await.0, 200);
    assert_eq!(api.call(Method::DELETE, &made, t, &[], None).await.0, 200);
    assert_eq!(api.call(Method::DELETE, &one, t, &[("Idempotency-Key", "delete-1")], None).await.0, 200);

    // the queue got the changes the writes made
    let pull = format!("/v1/queues/{code}/events/pull");
    let (status, batch) = api.call(Method::POST, &pull, t, &[], Some(json!({"limit": 2, "wait_ms": 10000}))).await;
    assert_eq!(status, 200);
    assert!(!batch["events"].as_array().unwrap().is_empty(), "{batch}");
    // a pull without the ack_id gets the batch again and supersedes the first
    let (_, again) = api.call(Method::POST, &pull, t, &[], Some(json!({"limit": 2}))).await;
    assert_eq!(again["events"], batch["events"]);
    assert_eq!(api.call(Method::POST, &pull, t, &[], Some(json!({"ack_id": batch["ack_id"]}))).await.0, 409);
    assert_eq!(api.call(Method::POST, &pull, t, &[], Some(json!({"ack_id": again["ack_id"], "limit": 1000}))).await.0, 200);
    assert_eq!(api.call(Method::POST, &pull, t, &[], Some(json!({"limit": 0}))).await.0, 422);
    assert_eq!(api.call(Method::POST, &pull, p, &[], Some(json!({}))).await.0, 404);

    let one_subscription = format!("{subscriptions}/{}", subscription["code"].as_str().unwrap());
    assert_eq!(api.call(Method::DELETE, &one_subscription, t, &[], None).await.0, 200);
    assert_eq!(api.call(Method::DELETE, &one_subscription, t, &[], None).await.0, 404);
    assert_eq!(api.call(Method::DELETE, &format!("/v1/queues/{code}"), t, &[], None).await.0, 200);
    assert_eq!(api.call(Method::DELETE, &format!("/v1/queues/{code}"), t, &[], None).await.0, 404);
    assert_eq!(api.call(Method::GET, "/v1/queues", Some("trb_forged"), &[], None).await.0, 401);

    // operators: the sink parks every change it cannot deliver
    let letters = "/v1/sinks/hook/dead_letters";
    wait_until("a dead letter", std::time::Duration::from_secs(30), || async {
        get_json_as(&format!("{}{letters}", engine.api), ADMIN_TOKEN).await["dead_letters"].as_array().is_some_and(|l| l.len() >= 2)
    })
    .await;
    let (status, page) = api.call(Method::GET, &format!("{letters}?limit=1"), admin, &[], None).await;
    assert_eq!(status, 200);
    let (first, change) = (page["dead_letters"][0]["id"].as_str().unwrap(), page["dead_letters"][0]["change_id"].as_str().unwrap());
    assert_eq!(api.call(Method::GET, &format!("{letters}?after={}", page["next"].as_str().unwrap()), admin, &[], None).await.0, 200);
    assert_eq!(api.call(Method::GET, &format!("{letters}?after=x"), admin, &[], None).await.0, 400);
    assert_eq!(api.call(Method::GET, "/v1/sinks/nope/dead_letters", admin, &[], None).await.0, 404);
    assert_eq!(api.call(Method::GET, letters, None, &[], None).await.0, 401);
    let redrive = format!("{letters}/redrive");
    assert_eq!(api.call(Method::POST, &redrive, admin, &[], Some(json!({"ids": [first]}))).await.0, 202);
    assert_eq!(api.call(Method::POST, &redrive, admin, &[], None).await.0, 202);
    assert_eq!(api.call(Method::POST, &redrive, admin, &[], Some(json!({"ids": ["x"]}))).await.0, 422);
    assert_eq!(api.call(Method::DELETE, &format!("{letters}/{first}"), admin, &[], None).await.0, 200);
    assert_eq!(api.call(Method::DELETE, &format!("{letters}/{first}"), admin, &[], None).await.0, 404);
    let rewind = "/v1/sinks/hook/rewind";
    assert_eq!(api.call(Method::POST, rewind, admin, &[], Some(json!({"to_change": change}))).await.0, 202);
    assert_eq!(api.call(Method::POST, rewind, admin, &[], Some(json!({"to_time": "2020-01-01T00:00:00Z"}))).await.0, 202);
    assert_eq!(api.call(Method::POST, rewind, admin, &[], Some(json!({}))).await.0, 422);
    assert_eq!(api.call(Method::POST, rewind, admin, &[], Some(json!({"to_change": "chg_999999999"}))).await.0, 404);
    assert_eq!(api.call(Method::POST, "/v1/sinks/nope/rewind", admin, &[], Some(json!({"to_change": change}))).await.0, 404);
    for path in ["/v1/sinks/hook/pause", "/v1/sinks/hook/resume", "/v1/sources/stripe/pause", "/v1/sources/stripe/resume"] {
        assert_eq!(api.call(Method::POST, path, admin, &[], None).await.0, 200, "{path}");
    }
    assert_eq!(api.call(Method::POST, "/v1/sinks/nope/pause", admin, &[], None).await.0, 404);
    assert_eq!(api.call(Method::POST, "/v1/sources/nope/resume", admin, &[], None).await.0, 404);
    let (status, log) = api.call(Method::GET, "/v1/changes?object=customer&limit=2", admin, &[], None).await;
    assert_eq!((status, log["changes"].as_array().map(Vec::len)), (200, Some(2)), "{log}");
    assert_eq!(api.call(Method::GET, "/v1/changes?since=yesterday", admin, &[], None).await.0, 400);

    // the console's own routes
    let (status, overview) = api.call(Method::GET, "/v1/console/overview", admin, &[], None).await;
    assert_eq!(status, 200);
    assert!(overview["sinks"].as_array().is_some_and(|s| s.iter().any(|s| s["name"] == "hook")), "{overview}");
    assert_eq!(api.call(Method::GET, "/v1/console/history", admin, &[], None).await.0, 200);
    assert_eq!(api.call(Method::GET, "/v1/console/apps", admin, &[], None).await.1["apps"].as_array().map(Vec::len), Some(3));
    assert_eq!(api.call(Method::GET, "/v1/console/overview", None, &[], None).await.0, 401);
    assert_eq!(api.call(Method::GET, "/v1/sources/stripe/logs", admin, &[], None).await.0, 200);
    assert_eq!(api.call(Method::GET, "/v1/sinks/hook/logs", admin, &[], None).await.0, 200);
    assert_eq!(api.call(Method::GET, "/v1/sinks/nope/logs", admin, &[], None).await.0, 404);
    assert_eq!(api.call(Method::GET, "/v1/sources/nope/logs", admin, &[], None).await.0, 404);

    // every operation of the document answered a success here
    let succeeded: std::collections::BTreeSet<(String, String)> =
        api.conformance.seen().into_iter().filter(|(_, _, status)| (200..300).contains(status)).map(|(m, t, _)| (m, t)).collect();
    let missed: Vec<_> = api.conformance.operations().difference(&succeeded).cloned().collect();
    assert!(missed.is_empty(), "operations never answered with a success: {missed:?}");
}

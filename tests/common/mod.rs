//! Helpers for end-to-end tests: real `tributary sim` and `tributary run`
//! processes on loopback ports, talked to over HTTP, and the SQLite mirror
//! read back with its own connection.
#![allow(dead_code)]

pub mod registry;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::sync::Arc;

use serde_json::{Value, json};
use tributary::store::testing::{self, Schema};
use tributary::store::{Change, ChangeCursor, Options, Store};

pub const API_KEY: &str = "sk_test_tributary_tests";
/// The webhook signing secret engines under test get in
/// A restricted key (`STRIPE_RESTRICTED_KEY` in every test engine): what
/// it may not read is the simulator's `restricted` fault.
pub const RESTRICTED_KEY: &str = "rk_test_tributary_tests";
/// The admin token every test engine is given in `TRIBUTARY_ADMIN_TOKEN`
/// (a config enables it with `[api] admin_token_env`).
pub const ADMIN_TOKEN: &str = "admin-token-for-tests";
/// `TRIBUTARY_TEST_WEBHOOK_SECRET`.
pub const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tributary")
}

/// Run the binary to completion: (exit code, stdout, stderr).
pub fn tributary(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(bin()).args(args).envs(env.iter().copied()).output().expect("run tributary");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

pub fn redis_url() -> String {
    std::env::var("TRIBUTARY_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn kafka_brokers() -> String {
    std::env::var("TRIBUTARY_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

/// The values of every message in a Kafka topic, read back from the
/// beginning of each partition until it stays quiet for 2 s (blocking).
pub fn kafka_messages(topic: &str) -> Vec<Vec<u8>> {
    use rdkafka::Message as _;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("group.id", format!("read-{}", rand::random::<u32>()))
        .set("enable.auto.commit", "false")
        .create()
        .expect("kafka consumer");
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("topic metadata");
    let mut assignment = rdkafka::TopicPartitionList::new();
    for partition in metadata.topics()[0].partitions() {
        assignment.add_partition_offset(topic, partition.id(), rdkafka::Offset::Beginning).unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut values = Vec::new();
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(2) {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                values.push(message.payload().unwrap_or_default().to_vec());
                quiet_since = Instant::now();
            }
            Some(Err(e)) => panic!("kafka consumer: {e}"),
            None => {}
        }
    }
    values
}

/// How many partitions a Kafka topic has (blocking).
pub fn kafka_partitions(topic: &str) -> usize {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new().set("bootstrap.servers", kafka_brokers()).create().expect("kafka consumer");
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("topic metadata");
    metadata.topics()[0].partitions().len()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A child process killed (SIGKILL) when dropped; output goes to `log`.
pub struct Proc {
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    fn spawn(mut cmd: Command, log: PathBuf) -> Proc {
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = cmd.stdout(Stdio::from(out)).stderr(Stdio::from(err)).spawn().expect("spawn tributary");
        Proc { child, log }
    }

    /// A real `kill -9`.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Parsed JSON log lines carrying `kind`.
    pub fn log_kinds(&self, kind: &str) -> Vec<Value> {
        self.log_text().lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|v| v["kind"] == kind).collect()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("client")
}

pub async fn get_json(url: &str) -> Option<Value> {
    http().get(url).send().await.ok()?.json().await.ok()
}

/// GET with a bearer token; `Null` when it cannot be read.
pub async fn get_json_as(url: &str, token: &str) -> Value {
    let response = http().get(url).bearer_auth(token).send().await;
    match response {
        Ok(response) => response.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

pub async fn post_json(url: &str, body: Value) -> Value {
    let response = http().post(url).json(&body).send().await.expect("post");
    assert!(response.status().is_success(), "POST {url}: {}", response.status());
    response.json().await.expect("json")
}

/// Start any command whose output goes to a log in `dir` (killed on drop).
pub fn spawn(dir: &Path, name: &str, cmd: Command) -> Proc {
    Proc::spawn(cmd, dir.join(format!("{name}.log")))
}

pub struct Sim {
    pub proc: Proc,
    pub url: String,
}

impl Sim {
    pub async fn start(dir: &Path, args: &[&str]) -> Sim {
        let port = free_port();
        let mut cmd = Command::new(bin());
        cmd.arg("sim").arg("--listen").arg(format!("127.0.0.1:{port}")).args(args);
        let proc = Proc::spawn(cmd, dir.join(format!("sim-{port}.log")));
        let url = format!("http://127.0.0.1:{port}");
        let stats = format!("{url}/__sim/stats");
        wait_until("sim to listen", Duration::from_secs(30), || async { get_json(&stats).await.is_some() }).await;
        Sim { proc, url }
    }

    pub async fn stats(&self) -> Value {
        get_json(&format!("{}/__sim/stats", self.url)).await.expect("sim stats")
    }

    pub async fn set_traffic(&self, mutations_per_sec: f64) {
        post_json(&format!("{}/__sim/traffic", self.url), json!({"mutations_per_sec": mutations_per_sec})).await;
    }

    /// `POST /__sim/generate`: that many marketplace events and shift edits at once.
    pub async fn generate(&self, market_events: usize, shift_edits: usize) {
        post_json(&format!("{}/__sim/generate", self.url), json!({"market_events": market_events, "shift_edits": shift_edits})).await;
    }

    pub async fn set_faults(&self, faults: Value) {
        post_json(&format!("{}/__sim/faults", self.url), faults).await;
    }

    pub async fn truth(&self, account: Option<&str>) -> Value {
        get_json(&format!("{}/__sim/state?account={}", self.url, account.unwrap_or("platform"))).await.expect("sim state")
    }

    /// Connected account ids (retried: the sim may be injecting faults).
    pub async fn accounts(&self) -> Vec<String> {
        for _ in 0..100 {
            let (status, list) = self.call(reqwest::Method::GET, "/v1/accounts", &[]).await;
            if status == 200 {
                return list["data"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap().to_string()).collect();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("sim never listed its accounts");
    }

    /// A Stripe API call as a client would make it (form-encoded body).
    pub async fn call(&self, method: reqwest::Method, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
        self.call_as(None, method, path, form).await
    }

    /// The same on behalf of a connected account (`Stripe-Account`).
    pub async fn call_as(&self, account: Option<&str>, method: reqwest::Method, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let mut request = http().request(method, format!("{}{path}", self.url)).bearer_auth(API_KEY).form(form);
        if let Some(account) = account {
            request = request.header("Stripe-Account", account);
        }
        let response = request.send().await.expect("sim call");
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    }

    pub async fn event_times(&self) -> BTreeMap<String, i64> {
        let times = get_json(&format!("{}/__sim/event_times", self.url)).await.expect("event times");
        times.as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_i64().unwrap())).collect()
    }
}

/// Where an engine under test keeps its mirror.
#[derive(Clone)]
pub enum Db {
    Sqlite(PathBuf),
    /// A throwaway schema in the test Postgres, dropped with the guard.
    Postgres(Arc<Schema>),
    /// The same, reached through a URL of the test's own (with parameters).
    PostgresUrl(Arc<Schema>, String),
}

impl Db {
    pub fn sqlite(dir: &Path) -> Db {
        Db::Sqlite(dir.join("mirror.db"))
    }

    pub fn postgres() -> Db {
        let (schema, _) = testing::options();
        Db::Postgres(Arc::new(schema))
    }

    pub fn options(&self) -> Options {
        match self {
            Db::Sqlite(path) => Options::url(&format!("sqlite://{}", path.display())),
            Db::Postgres(schema) => Options { url: testing::base_url(), schema: schema.0.clone(), pool_size: 4 },
            Db::PostgresUrl(schema, url) => Options { url: url.clone(), schema: schema.0.clone(), pool_size: 4 },
        }
    }

    fn toml(&self) -> String {
        let o = self.options();
        format!("[database]\nurl = \"{}\"\nschema = \"{}\"\n", o.url, o.schema)
    }

    pub async fn store(&self) -> Arc<dyn Store> {
        tributary::store::open(&self.options()).await.expect("open the mirror")
    }
}

pub struct Engine {
    pub proc: Proc,
    pub api: String,
    pub db: Db,
    pub config: PathBuf,
    /// Env vars of this engine beyond the ones every engine gets.
    pub env: Vec<(String, String)>,
}

/// The resources most tests mirror (unless their config names others):
/// the core of a billing mirror, all followed by events.
pub const CORE: &[(&str, &str)] = &[
    ("customers", "customer"),
    ("products", "product"),
    ("prices", "price"),
    ("subscriptions", "subscription"),
    ("invoices", "invoice"),
    ("charges", "charge"),
    ("payment_intents", "payment_intent"),
];

/// `resources = [...]` of the core resources.
pub fn core_resources() -> String {
    let names: Vec<String> = CORE.iter().map(|(path, _)| format!("\"{path}\"")).collect();
    format!("resources = [{}]", names.join(", "))
}

/// Write a config for one stripe source named `stripe`; `extra` lines are
/// appended to the source table, which mirrors the core resources unless
/// `extra` names its own.
pub fn write_config(dir: &Path, db: &Db, sim_url: &str, extra: &str) -> (PathBuf, u16) {
    let port = free_port();
    let extra = if extra.contains("resources") { extra.to_string() } else { format!("{}\n{extra}", core_resources()) };
    let config = dir.join(format!("tributary-{port}.toml"));
    std::fs::write(
        &config,
        format!(
            "{}[api]\nlisten = \"127.0.0.1:{port}\"\n[[sources]]\nname = \"stripe\"\nkind = \"stripe\"\nbase_url = \"{sim_url}\"\napi_key_env = \"STRIPE_API_KEY\"\n{extra}\n",
            db.toml()
        ),
    )
    .unwrap();
    (config, port)
}

impl Engine {
    pub async fn start(dir: &Path, sim_url: &str, extra: &str) -> Engine {
        Self::start_on(dir, Db::sqlite(dir), sim_url, extra).await
    }

    pub async fn start_on(dir: &Path, db: Db, sim_url: &str, extra: &str) -> Engine {
        let (config, port) = write_config(dir, &db, sim_url, extra);
        Self::start_with(dir, config, db, port).await
    }

    /// Start an engine whose config is `body` (sources, sinks) after the
    /// database and API tables.
    pub async fn start_configured(dir: &Path, db: Db, body: &str) -> Engine {
        Self::start_configured_env(dir, db, body, Vec::new()).await
    }

    /// [`Engine::start_configured`] with env vars of its own (a restart keeps them).
    pub async fn start_configured_env(dir: &Path, db: Db, body: &str, env: Vec<(String, String)>) -> Engine {
        let (config, port) = Self::configure(dir, &db, body);
        Self::start_env(dir, config, db, port, env).await
    }

    /// Write the config [`Engine::start_configured`] would, without starting
    /// anything (to run a command on it first): its path and API port.
    pub fn configure(dir: &Path, db: &Db, body: &str) -> (PathBuf, u16) {
        let port = free_port();
        let config = dir.join(format!("tributary-{port}.toml"));
        std::fs::write(&config, format!("{}[api]\nlisten = \"127.0.0.1:{port}\"\n{body}\n", db.toml())).unwrap();
        (config, port)
    }

    /// Start an engine on a config [`Engine::configure`] wrote.
    pub async fn start_configured_at(dir: &Path, db: Db, config: PathBuf, port: u16) -> Engine {
        Self::start_env(dir, config, db, port, Vec::new()).await
    }

    /// `GET /v1/sources/{source}/wait`: answers once a run of the source that
    /// started after the call has been applied.
    pub async fn barrier(&self, source: &str) {
        let response = http().get(format!("{}/v1/sources/{source}/wait?timeout_ms=60000", self.api)).send().await.expect("wait");
        assert_eq!(response.status(), 200, "wait on {source}: {}", response.text().await.unwrap_or_default());
    }

    /// Start another engine process on the same config (after a kill).
    pub async fn restart(&self, dir: &Path) -> Engine {
        let port: u16 = self.api.rsplit(':').next().unwrap().parse().unwrap();
        Self::start_env(dir, self.config.clone(), self.db.clone(), port, self.env.clone()).await
    }

    async fn start_with(dir: &Path, config: PathBuf, db: Db, port: u16) -> Engine {
        Self::start_env(dir, config, db, port, Vec::new()).await
    }

    async fn start_env(dir: &Path, config: PathBuf, db: Db, port: u16, env: Vec<(String, String)>) -> Engine {
        let mut cmd = Command::new(bin());
        cmd.arg("run")
            .arg("--config")
            .arg(&config)
            .env("STRIPE_API_KEY", API_KEY)
            .env("WINDOW_API_KEY", "shifts-token")
            .envs(WHENIWORK_ENV.iter().copied())
            .envs(OAUTH_ENV.iter().copied())
            .env("EVENT_QUEUE_API_KEY", "market-token")
            .env("TRIBUTARY_TEST_WEBHOOK_SECRET", WEBHOOK_SECRET)
            .env("TRIBUTARY_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("STRIPE_RESTRICTED_KEY", RESTRICTED_KEY)
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let n = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
        let proc = Proc::spawn(cmd, dir.join(format!("engine-{n}.log")));
        let api = format!("http://127.0.0.1:{port}");
        let health = format!("{api}/health");
        wait_until("engine api", Duration::from_secs(30), || async { get_json(&health).await.is_some() }).await;
        Engine { proc, api, db, config, env }
    }

    pub async fn sinks_json(&self) -> Value {
        get_json(&format!("{}/v1/sinks", self.api)).await.expect("sinks")
    }

    /// One sink's entry in `/v1/sinks` (the queue fan-out is `queue:fanout`).
    pub async fn sink_view(&self, name: &str) -> Value {
        let sinks = self.sinks_json().await;
        sinks["sinks"].as_array().unwrap().iter().find(|s| s["name"] == name).cloned().unwrap()
    }

    /// Wait until every named sink has delivered the whole change log.
    pub async fn wait_caught_up(&self, sinks: &[&str]) {
        wait_until(&format!("{sinks:?} to catch up"), Duration::from_secs(180), || async {
            let mut caught_up = true;
            for name in sinks {
                caught_up &= self.sink_view(name).await["lag_changes"] == 0;
            }
            caught_up
        })
        .await;
    }

    pub async fn sources(&self) -> Value {
        get_json(&format!("{}/v1/sources", self.api)).await.expect("sources")
    }

    pub async fn wait_live(&self, timeout: Duration) {
        let url = format!("{}/v1/sources", self.api);
        wait_until("source to be live", timeout, || async { get_json(&url).await.is_some_and(|s| s["sources"][0]["phase"] == "live") })
            .await;
    }

    /// `GET /v1/sources/stripe/wait`; returns (status, body).
    pub async fn wait_barrier(&self, timeout_ms: u64) -> (u16, Value) {
        let response = http().get(format!("{}/v1/sources/stripe/wait?timeout_ms={timeout_ms}", self.api)).send().await.expect("wait");
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    }

    pub async fn mirror(&self) -> Mirror {
        mirror(&self.db).await
    }

    pub async fn changes(&self) -> Vec<Change> {
        changes(&self.db).await
    }
}

/// Mirror rows: object type → id → (account, data).
pub type Mirror = BTreeMap<String, BTreeMap<String, (Option<String>, Value)>>;

/// The secrets the WhenIWork preset's login reads.
pub const WHENIWORK_ENV: &[(&str, &str)] =
    &[("WHENIWORK_API_KEY", "test-developer-key"), ("WHENIWORK_EMAIL", "manager@example.com"), ("WHENIWORK_PASSWORD", "test")];

/// An OAuth2 client and its first refresh token, for a test's own token endpoint.
pub const OAUTH_ENV: &[(&str, &str)] =
    &[("TEST_OAUTH_CLIENT_ID", "app"), ("TEST_OAUTH_CLIENT_SECRET", "app-secret"), ("TEST_OAUTH_REFRESH_TOKEN", "rt_0")];

pub async fn mirror(db: &Db) -> Mirror {
    mirror_of(db, "stripe").await
}

pub async fn mirror_of(db: &Db, source: &str) -> Mirror {
    let rows = db.store().await.mirror_rows(source).await.expect("mirror rows");
    rows.into_iter().map(|(object, rows)| (object, rows.into_iter().map(|r| (r.id, (r.account, r.data))).collect())).collect()
}

/// Every change in commit order. On Postgres a change shows once older
/// transactions in the cluster finish, so read until two reads in a row,
/// 200 ms apart, find nothing new.
pub async fn changes(db: &Db) -> Vec<Change> {
    let store = db.store().await;
    let mut out = Vec::new();
    let mut cursor = ChangeCursor::START;
    let mut quiet = 0;
    while quiet < 2 {
        let page = store.changes_after(cursor, 1000).await.expect("changes");
        cursor = page.next;
        if page.changes.is_empty() {
            quiet += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        } else {
            quiet = 0;
            out.extend(page.changes);
        }
    }
    out
}

/// The mirror holds exactly the simulator's truth: every object of every
/// account, every field, nested lists complete, under the right account.
/// The mirror holds exactly the upstream's core objects, in every account.
pub async fn assert_converged(sim: &Sim, db: &Db) {
    let core: Vec<&str> = CORE.iter().map(|(_, object)| *object).collect();
    assert_converged_over(sim, db, Some(&core)).await
}

/// The mirror holds exactly the upstream's objects of these types (all the
/// upstream serves: `None`), in every account.
pub async fn assert_converged_over(sim: &Sim, db: &Db, objects: Option<&[&str]>) {
    let drift = divergence(sim, db, objects).await;
    assert!(drift.is_empty(), "the mirror differs from the upstream in {} objects, first: {:?}", drift.len(), &drift[..drift.len().min(5)]);
}

/// Where the mirror differs from the upstream's objects of these types (all
/// the upstream serves: `None`), in every account: one line per object
/// missing, extra or different.
pub async fn divergence(sim: &Sim, db: &Db, objects: Option<&[&str]>) -> Vec<String> {
    let mut mirror = mirror(db).await;
    if let Some(objects) = objects {
        mirror.retain(|object, _| objects.contains(&object.as_str()));
    }
    let mut scopes: Vec<Option<String>> = vec![None];
    scopes.extend(sim.accounts().await.into_iter().map(Some));
    let mut drift = Vec::new();
    let mut expected_total = 0;
    for scope in &scopes {
        let truth = sim.truth(scope.as_deref()).await;
        for (object, items) in truth.as_object().unwrap() {
            if objects.is_some_and(|o| !o.contains(&object.as_str())) {
                continue;
            }
            let rows = mirror.get(object).cloned().unwrap_or_default();
            let mine: BTreeMap<&String, &Value> = rows.iter().filter(|(_, (a, _))| a == scope).map(|(id, (_, d))| (id, d)).collect();
            let theirs: BTreeMap<String, &Value> =
                items.as_array().unwrap().iter().map(|o| (o["id"].as_str().unwrap().to_string(), o)).collect();
            expected_total += theirs.len();
            drift.extend(theirs.keys().filter(|id| !mine.contains_key(id)).map(|id| format!("{object} {id} in {scope:?}: missing")));
            drift.extend(mine.keys().filter(|id| !theirs.contains_key(**id)).map(|id| format!("{object} {id} in {scope:?}: extra")));
            for (id, data) in &theirs {
                if mine.get(id).is_some_and(|mine| mine != data) {
                    drift.push(format!("{object} {id}: differs from the upstream: {} against {}", mine[id], data));
                }
            }
        }
    }
    let mirrored: usize = mirror.values().map(|t| t.len()).sum();
    if drift.is_empty() && mirrored != expected_total {
        drift.push(format!("the mirror holds {mirrored} rows, the upstream {expected_total}"));
    }
    drift
}

/// The Python receiver (standardwebhooks); returns its process and log.
pub fn start_receiver(dir: &Path) -> (Proc, String, PathBuf) {
    let port = free_port();
    let out = dir.join("received.jsonl");
    let mut cmd = Command::new("python3");
    cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/webhook_receiver.py")).arg(port.to_string()).arg(WEBHOOK_SECRET).arg(&out);
    (spawn(dir, "receiver", cmd), format!("http://127.0.0.1:{port}/hooks"), out)
}

pub fn webhook_toml(url: &str) -> String {
    format!(
        "[[sinks]]\nname = \"hooks\"\nkind = \"webhook\"\nurl = \"{url}\"\nsecret_env = \"TRIBUTARY_TEST_WEBHOOK_SECRET\"\nbatch_size = 200\n"
    )
}

/// Envelopes the webhook receiver verified, in arrival order.
pub fn received(out: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    let lines: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let invalid: Vec<&Value> = lines.iter().filter(|v| v.get("invalid").is_some()).collect();
    assert!(invalid.is_empty(), "signatures failed verification: {invalid:?}");
    lines
}

/// Serve an upstream of the test's own on a loopback port; its base URL.
pub async fn serve_upstream(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let base = format!("http://{}", listener.local_addr().expect("its address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("tributary-test-").tempdir().expect("tempdir")
}

/// Picks the database of an end-to-end test run.
pub type Backend = fn(&Path) -> Db;

pub fn postgres_backend(_: &Path) -> Db {
    Db::postgres()
}

/// Run an end-to-end test body `async fn(Backend)` once on SQLite and once
/// on Postgres: `mod <body> { fn sqlite(); fn postgres(); }`.
#[macro_export]
macro_rules! on_both_backends {
    ($($body:ident),* $(,)?) => {
        $(
            mod $body {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$body($crate::common::Db::sqlite).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$body($crate::common::postgres_backend).await
                }
            }
        )*
    };
}

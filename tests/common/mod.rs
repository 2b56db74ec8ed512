//! Helpers for end-to-end tests: real `tributary sim` and `tributary run`
//! processes on loopback ports, talked to over HTTP, and the SQLite mirror
//! read back with its own connection.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const API_KEY: &str = "sk_test_tributary_tests";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tributary")
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

pub async fn post_json(url: &str, body: Value) -> Value {
    let response = http().post(url).json(&body).send().await.expect("post");
    assert!(response.status().is_success(), "POST {url}: {}", response.status());
    response.json().await.expect("json")
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
        let response =
            http().request(method, format!("{}{path}", self.url)).bearer_auth(API_KEY).form(form).send().await.expect("sim call");
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    }

    pub async fn event_times(&self) -> BTreeMap<String, i64> {
        let times = get_json(&format!("{}/__sim/event_times", self.url)).await.expect("event times");
        times.as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_i64().unwrap())).collect()
    }
}

pub struct Engine {
    pub proc: Proc,
    pub api: String,
    pub db: PathBuf,
    pub config: PathBuf,
}

/// Write a config for one stripe source named `stripe`; `extra` lines are
/// appended to the source table.
pub fn write_config(dir: &Path, sim_url: &str, extra: &str) -> (PathBuf, PathBuf, u16) {
    let port = free_port();
    let db = dir.join("mirror.db");
    let config = dir.join("tributary.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = \"sqlite://{}\"\n[api]\nlisten = \"127.0.0.1:{port}\"\n[[sources]]\nname = \"stripe\"\nkind = \"stripe\"\nbase_url = \"{sim_url}\"\napi_key_env = \"STRIPE_API_KEY\"\n{extra}\n",
            db.display()
        ),
    )
    .unwrap();
    (config, db, port)
}

impl Engine {
    pub async fn start(dir: &Path, sim_url: &str, extra: &str) -> Engine {
        let (config, db, port) = write_config(dir, sim_url, extra);
        Self::start_with(dir, config, db, port).await
    }

    /// Start another engine process on the same config (after a kill).
    pub async fn restart(&self, dir: &Path) -> Engine {
        let port: u16 = self.api.rsplit(':').next().unwrap().parse().unwrap();
        Self::start_with(dir, self.config.clone(), self.db.clone(), port).await
    }

    async fn start_with(dir: &Path, config: PathBuf, db: PathBuf, port: u16) -> Engine {
        let mut cmd = Command::new(bin());
        cmd.arg("run").arg("--config").arg(&config).env("STRIPE_API_KEY", API_KEY).env("RUST_LOG", "info");
        let n = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
        let proc = Proc::spawn(cmd, dir.join(format!("engine-{n}.log")));
        let api = format!("http://127.0.0.1:{port}");
        let health = format!("{api}/health");
        wait_until("engine api", Duration::from_secs(30), || async { get_json(&health).await.is_some() }).await;
        Engine { proc, api, db, config }
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
}

/// Mirror rows: object type → id → (account, data).
pub fn mirror(db: &Path) -> BTreeMap<String, BTreeMap<String, (Option<String>, Value)>> {
    let conn = rusqlite::Connection::open(db).expect("open mirror");
    let tables: Vec<(String, String)> = conn
        .prepare("SELECT object, table_name FROM tributary_tables WHERE source = 'stripe'")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut out = BTreeMap::new();
    for (object, table) in tables {
        let rows: BTreeMap<String, (Option<String>, Value)> = conn
            .prepare(&format!("SELECT id, account, data FROM \"{table}\""))
            .unwrap()
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?, r.get::<_, String>(2)?)))
            .unwrap()
            .map(|row| {
                let (id, account, data) = row.unwrap();
                (id, (account, serde_json::from_str(&data).expect("mirror data is json")))
            })
            .collect();
        out.insert(object, rows);
    }
    out
}

#[derive(Debug, Clone)]
pub struct ChangeRow {
    pub id: i64,
    pub object: String,
    pub object_id: String,
    pub op: String,
    pub kind: String,
    pub data: Option<Value>,
    pub upstream_event_id: Option<String>,
}

pub fn changes(db: &Path) -> Vec<ChangeRow> {
    let conn = rusqlite::Connection::open(db).expect("open mirror");
    conn.prepare("SELECT id, object, object_id, op, type, data, upstream_event_id FROM tributary_changes ORDER BY id")
        .unwrap()
        .query_map([], |r| {
            Ok(ChangeRow {
                id: r.get(0)?,
                object: r.get(1)?,
                object_id: r.get(2)?,
                op: r.get(3)?,
                kind: r.get(4)?,
                data: r.get::<_, Option<String>>(5)?.map(|d| serde_json::from_str(&d).unwrap()),
                upstream_event_id: r.get(6)?,
            })
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The mirror holds exactly the simulator's truth: every object of every
/// account, every field, nested lists complete, under the right account.
pub async fn assert_converged(sim: &Sim, db: &Path) {
    let mirror = mirror(db);
    let mut scopes: Vec<Option<String>> = vec![None];
    scopes.extend(sim.accounts().await.into_iter().map(Some));
    let mut expected_total = 0;
    for scope in &scopes {
        let truth = sim.truth(scope.as_deref()).await;
        for (object, items) in truth.as_object().unwrap() {
            let rows = mirror.get(object).cloned().unwrap_or_default();
            let mine: BTreeMap<&String, &Value> = rows.iter().filter(|(_, (a, _))| a == scope).map(|(id, (_, d))| (id, d)).collect();
            let theirs: BTreeMap<String, &Value> =
                items.as_array().unwrap().iter().map(|o| (o["id"].as_str().unwrap().to_string(), o)).collect();
            expected_total += theirs.len();
            let missing: Vec<&String> = theirs.keys().filter(|id| !mine.contains_key(id)).take(5).collect();
            let extra: Vec<&&String> = mine.keys().filter(|id| !theirs.contains_key(**id)).take(5).collect();
            assert!(missing.is_empty() && extra.is_empty(), "{object} in {scope:?}: missing {missing:?}, extra {extra:?}");
            for (id, data) in &theirs {
                assert_eq!(mine[id], *data, "{object} {id} differs from the upstream");
            }
        }
    }
    let mirrored: usize = mirror.values().map(|t| t.len()).sum();
    assert_eq!(mirrored, expected_total, "mirror holds rows the upstream does not");
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("tributary-test-").tempdir().expect("tempdir")
}

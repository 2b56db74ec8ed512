//! Delivery to real sinks: a webhook endpoint verifying signatures with an
//! independent implementation, Redis Streams and NATS JetStream on this
//! machine. Every change arrives, exactly once after dedupe by id, in order
//! per object; a sink that is down does not hold the others back; a killed
//! engine redelivers only its last unconfirmed batch.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;
use tributary::store::Change;

fn redis_url() -> String {
    std::env::var("TRIBUTARY_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn kafka_brokers() -> String {
    std::env::var("TRIBUTARY_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

/// Envelopes in the Kafka topics `{tag}.stripe.{object}`, read back with a
/// real consumer from the beginning; each topic in offset order. The change
/// id header must match the envelope's id, and the key its object id.
fn kafka_envelopes(tag: &str, objects: &HashSet<String>, expected: usize) -> Vec<Value> {
    use rdkafka::Message as _;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Headers;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("group.id", format!("{tag}-check"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = rdkafka::TopicPartitionList::new();
    for object in objects {
        assignment.add_partition_offset(&format!("{tag}.stripe.{object}"), 0, rdkafka::Offset::Beginning).unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut out = Vec::new();
    let mut idle = 0;
    while idle < 10 && out.len() < expected {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(message)) => {
                idle = 0;
                let envelope: Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
                let header = message.headers().and_then(|h| h.iter().find(|h| h.key == "tributary-change-id")).and_then(|h| h.value);
                assert_eq!(header, envelope["id"].as_str().map(str::as_bytes), "change id header");
                assert_eq!(message.key(), envelope["object_id"].as_str().map(str::as_bytes), "kafka key");
                out.push(envelope);
            }
            Some(Err(e)) => panic!("kafka consumer: {e}"),
            None => idle += 1,
        }
    }
    out
}

fn nats_url() -> String {
    std::env::var("TRIBUTARY_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// The Python receiver (standardwebhooks); returns its process and log.
fn start_receiver(dir: &Path) -> (Proc, String, PathBuf) {
    let port = free_port();
    let out = dir.join("received.jsonl");
    let mut cmd = Command::new("python3");
    cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/webhook_receiver.py")).arg(port.to_string()).arg(WEBHOOK_SECRET).arg(&out);
    (spawn(dir, "receiver", cmd), format!("http://127.0.0.1:{port}/hooks"), out)
}

fn webhook_toml(url: &str) -> String {
    format!(
        "[[sinks]]\nname = \"hooks\"\nkind = \"webhook\"\nurl = \"{url}\"\nsecret_env = \"TRIBUTARY_TEST_WEBHOOK_SECRET\"\nbatch_size = 200\n"
    )
}

/// Envelopes the webhook receiver verified, in arrival order.
fn received(out: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    let lines: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let invalid: Vec<&Value> = lines.iter().filter(|v| v.get("invalid").is_some()).collect();
    assert!(invalid.is_empty(), "signatures failed verification: {invalid:?}");
    lines
}

/// Envelopes in the Redis streams under `prefix`, stream by stream.
async fn redis_envelopes(prefix: &str) -> Vec<Value> {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}:*")).query_async(&mut conn).await.unwrap();
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

/// Remove the test's streams from the shared Redis.
async fn delete_redis_streams(prefix: &str) {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}:*")).query_async(&mut conn).await.unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL").arg(keys).query_async(&mut conn).await.unwrap();
    }
}

/// Envelopes stored in a JetStream stream, in stream order.
async fn nats_envelopes(stream: &str) -> Vec<Value> {
    let client = async_nats::connect(nats_url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let Ok(mut stream) = js.get_stream(stream).await else { return Vec::new() };
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        if let Ok(message) = stream.get_raw_message(seq).await {
            out.push(serde_json::from_slice(&message.payload).unwrap());
        }
    }
    out
}

async fn delete_nats_stream(stream: &str) {
    if let Ok(client) = async_nats::connect(nats_url()).await {
        let _ = async_nats::jetstream::new(client).delete_stream(stream).await;
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

async fn sink_view(engine: &Engine, name: &str) -> Value {
    let sinks = engine.sinks_json().await;
    sinks["sinks"].as_array().unwrap().iter().find(|s| s["name"] == name).cloned().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sink_gets_every_change_once_in_order_while_another_is_down() {
    let dir = tempdir();
    let tag = format!("tt{}", rand::random::<u32>());
    let (_receiver, hook_url, out) = start_receiver(dir.path());
    // the webhook endpoint starts down (503) for 30 s
    std::fs::write(format!("{}.down", out.display()), "").unwrap();
    let sim = Sim::start(dir.path(), &["--scale", "2100", "--accounts", "1"]).await;
    let sinks = format!(
        "{}[[sinks]]\nname = \"streams\"\nkind = \"redis\"\nurl = \"{}\"\nstream = \"{tag}:{{source}}:{{object}}\"\n\
         [[sinks]]\nname = \"jetstream\"\nkind = \"nats\"\nurl = \"{}\"\nsubject = \"{tag}.{{source}}.{{object}}\"\njetstream = \"{tag}\"\n\
         [[sinks]]\nname = \"kafka\"\nkind = \"kafka\"\nbrokers = \"{}\"\ntopic = \"{tag}.{{source}}.{{object}}\"\n",
        webhook_toml(&hook_url).replace("batch_size = 200\n", "batch_size = 200\nretry_max_backoff_ms = 1000\n"),
        redis_url(),
        nats_url(),
        kafka_brokers()
    );
    let engine = Engine::start(dir.path(), &sim.url, &format!("poll_interval_ms = 200\n{sinks}")).await;
    engine.wait_live(Duration::from_secs(120)).await;
    sim.set_traffic(30.0).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    sim.set_traffic(0.0).await;
    assert_eq!(engine.wait_barrier(20_000).await.0, 200);
    let changes = engine.changes().await;
    assert!(changes.len() >= 10_000, "only {} changes", changes.len());

    // Redis, NATS and Kafka deliver everything while the webhook endpoint is down
    wait_until("redis, nats and kafka to catch up", Duration::from_secs(120), || async {
        let mut caught_up = true;
        for name in ["streams", "jetstream", "kafka"] {
            caught_up &= sink_view(&engine, name).await["lag_changes"] == 0;
        }
        caught_up
    })
    .await;
    assert!(received(&out).is_empty());
    let hooks = sink_view(&engine, "hooks").await;
    assert!(hooks["last_error"].as_str().is_some_and(|e| e.contains("503")), "{hooks}");
    let from_redis = redis_envelopes(&tag).await;
    delete_redis_streams(&tag).await;
    assert_exactly_once_in_order("redis", &changes, &from_redis);
    let from_nats = nats_envelopes(&tag).await;
    delete_nats_stream(&tag).await;
    assert_eq!(assert_exactly_once_in_order("nats", &changes, &from_nats), 0, "JetStream dedupe let a duplicate through");
    let objects: HashSet<String> = changes.iter().map(|c| c.object.clone()).collect();
    let (tag_for_kafka, expected) = (tag.clone(), changes.len());
    let from_kafka = tokio::task::spawn_blocking(move || kafka_envelopes(&tag_for_kafka, &objects, expected)).await.unwrap();
    assert_exactly_once_in_order("kafka", &changes, &from_kafka);

    // the endpoint comes back after 30 s down: nothing was lost
    tokio::time::sleep(Duration::from_secs(30)).await;
    std::fs::remove_file(format!("{}.down", out.display())).unwrap();
    wait_until("webhook to catch up", Duration::from_secs(180), || async { sink_view(&engine, "hooks").await["lag_changes"] == 0 }).await;
    assert_exactly_once_in_order("webhook", &changes, &received(&out));
    let hooks = sink_view(&engine, "hooks").await;
    assert_eq!(hooks["dead_letters"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_engine_redelivers_only_its_unconfirmed_batch() {
    let dir = tempdir();
    let (_receiver, hook_url, out) = start_receiver(dir.path());
    let sim = Sim::start(dir.path(), &["--scale", "2100", "--accounts", "0"]).await;
    let mut first = Engine::start(dir.path(), &sim.url, &webhook_toml(&hook_url)).await;
    wait_until("delivery under way", Duration::from_secs(120), || async { received(&out).len() > 1000 }).await;
    first.proc.kill();
    let second = first.restart(dir.path()).await;
    second.wait_live(Duration::from_secs(120)).await;
    assert_eq!(second.wait_barrier(20_000).await.0, 200);
    wait_until("webhook to catch up", Duration::from_secs(180), || async { sink_view(&second, "hooks").await["lag_changes"] == 0 }).await;
    let changes = second.changes().await;
    let duplicates = assert_exactly_once_in_order("webhook", &changes, &received(&out));
    assert!(duplicates <= 200, "{duplicates} redeliveries: more than the one unconfirmed batch (200)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_changes_are_dead_lettered_and_410_disables_the_endpoint() {
    let dir = tempdir();
    let (_receiver, hook_url, out) = start_receiver(dir.path());
    let sim = Sim::start(dir.path(), &["--scale", "60", "--accounts", "0"]).await;
    let customer = sim.truth(None).await["customer"][0]["id"].as_str().unwrap().to_string();
    // the endpoint fails every change of one customer
    std::fs::write(format!("{}.reject", out.display()), &customer).unwrap();
    let sink = webhook_toml(&hook_url).replace("batch_size = 200\n", "batch_size = 50\nmax_attempts = 2\nretry_max_backoff_ms = 100\n");
    let engine = Engine::start(dir.path(), &sim.url, &format!("poll_interval_ms = 100\n{sink}")).await;
    engine.wait_live(Duration::from_secs(60)).await;
    wait_until("webhook to pass every change", Duration::from_secs(60), || async { sink_view(&engine, "hooks").await["lag_changes"] == 0 })
        .await;
    let changes = engine.changes().await;
    let (rejected, delivered): (Vec<Change>, Vec<Change>) = changes.into_iter().partition(|c| c.object_id == customer);
    assert_eq!(rejected.len(), 1);
    let view = sink_view(&engine, "hooks").await;
    assert_eq!(view["dead_letters"], 1, "{view}");
    let parked = engine.proc.log_kinds("dead_lettered");
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0]["change"], rejected[0].id.as_str());
    // every other change of the batches around it still arrived
    assert_exactly_once_in_order("webhook", &delivered, &received(&out));

    // 410 Gone: the sink stops calling, says so, and keeps its cursor
    std::fs::write(format!("{}.gone", out.display()), "").unwrap();
    let (status, _) = sim.call(reqwest::Method::POST, "/v1/customers", &[("email", "after-gone@example.com")]).await;
    assert_eq!(status, 200);
    assert_eq!(engine.wait_barrier(10_000).await.0, 200);
    wait_until("the sink to be disabled", Duration::from_secs(20), || async { sink_view(&engine, "hooks").await["disabled"] == true })
        .await;
    // and is not restarted behind the operator's back
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(engine.proc.log_kinds("sink_disabled").len(), 1);
    assert_eq!(sink_view(&engine, "hooks").await["lag_changes"], 1, "the change sent to a gone endpoint must stay undelivered");
}

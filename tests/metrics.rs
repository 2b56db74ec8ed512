//! StatsD push, end to end: an engine with a stripe source, a window source,
//! a Redis sink and a webhook sink whose endpoint is down pushes its
//! counters, gauges and timings to a UDP listener of the test's own, and
//! the counters add up to what `/metrics` shows.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

/// The increases pushed for `name` with `tags`, summed.
fn pushed_total(lines: &[String], name: &str, tags: &str) -> u64 {
    let prefix = format!("{name}:");
    let suffix = format!("|c|#{tags}");
    lines
        .iter()
        .filter(|l| l.starts_with(&prefix) && l.ends_with(&suffix))
        .map(|l| l[prefix.len()..l.len() - suffix.len()].parse::<u64>().unwrap())
        .sum()
}

/// A counter's value in the Prometheus text of `/metrics`.
fn scraped(text: &str, series: &str) -> u64 {
    text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok()).map_or(0, |v| v as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statsd_receives_the_counters_gauges_and_timings_of_metrics() {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--scale", "40", "--accounts", "0", "--shifts", "100"]).await;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let statsd = socket.local_addr().unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let received = lines.clone();
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 65_536];
        while let Ok(n) = socket.recv(&mut buffer).await {
            let packet = String::from_utf8_lossy(&buffer[..n]).to_string();
            received.lock().unwrap().extend(packet.lines().map(String::from));
        }
    });
    let tag = format!("tm{}", rand::random::<u32>());
    let down = free_port();
    let body = format!(
        "[metrics]\nstatsd = \"{statsd}\"\nstatsd_interval_ms = 200\n\
         [[sources]]\nname = \"stripe\"\nkind = \"stripe\"\nbase_url = \"{sim}\"\naccounts = []\n{core}\n\
         [[sources]]\nname = \"shifts\"\npreset = \"wheniwork\"\nbase_url = \"{sim}\"\nsleep_period_secs = 3600\nauth = {{ url = \"{sim}/login\" }}\n\
         [[sinks]]\nname = \"streams\"\nkind = \"redis\"\nurl = \"{redis}\"\nstream = \"{tag}:{{source}}:{{object}}\"\n\
         [[sinks]]\nname = \"hooks\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{down}/hook\"\nsecret_env = \"TRIBUTARY_TEST_WEBHOOK_SECRET\"\nretry_max_backoff_ms = 200\n",
        sim = sim.url,
        redis = redis_url(),
        core = core_resources()
    );
    let engine = Engine::start_configured(dir.path(), Db::sqlite(dir.path()), &body).await;
    let expected = [
        "tributary_sync_runs_total:1|c|#source:shifts",
        "tributary_items_fetched_total:",
        "tributary_items_changed_total:",
        "tributary_sync_run_ms:",
        "tributary_pages_fetched_total:",
        "tributary_source_lag_ms:",
        "tributary_changes_delivered_total:",
        "tributary_delivery_errors_total:",
    ];
    wait_until("every kind of metric pushed", Duration::from_secs(60), || async {
        let lines = lines.lock().unwrap();
        expected.iter().all(|e| lines.iter().any(|l| l.starts_with(e)))
    })
    .await;
    let snapshot = lines.lock().unwrap().clone();
    let has = |pattern: &str| {
        snapshot.iter().any(|l| l.starts_with(pattern.split('*').next().unwrap()) && l.ends_with(pattern.rsplit('*').next().unwrap()))
    };
    assert!(has("tributary_sync_run_ms:*|ms|#source:shifts"), "a run's duration as a timing");
    assert!(has("tributary_source_lag_ms:*|g|#source:stripe"), "lag as a gauge");
    wait_until("the window source's lag pushed without a scrape", Duration::from_secs(10), || async {
        lines.lock().unwrap().iter().any(|l| l.starts_with("tributary_source_lag_ms:") && l.ends_with("|g|#source:shifts"))
    })
    .await;
    assert!(has("tributary_changes_delivered_total:*|c|#sink:streams"), "publish success");
    assert!(has("tributary_delivery_errors_total:*|c|#sink:hooks"), "publish failure");

    // the window source ran once (the next run is an hour away): what was
    // pushed adds up to what /metrics shows
    tokio::time::sleep(Duration::from_millis(600)).await;
    let metrics = http().get(format!("{}/metrics", engine.api)).send().await.unwrap().text().await.unwrap();
    let lines = lines.lock().unwrap().clone();
    for name in ["tributary_items_fetched_total", "tributary_items_changed_total", "tributary_sync_runs_total"] {
        let shown = scraped(&metrics, &format!("{name}{{source=\"shifts\"}}"));
        assert!(shown > 0, "{name} in /metrics");
        assert_eq!(pushed_total(&lines, name, "source:shifts"), shown, "{name}: pushed vs /metrics");
    }
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{tag}:*")).query_async(&mut conn).await.unwrap();
    if !keys.is_empty() {
        redis::cmd("DEL").arg(keys).query_async::<()>(&mut conn).await.unwrap();
    }
}

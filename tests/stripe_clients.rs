//! Stripe's own client libraries (the official Python and Node packages,
//! pinned) writing and reading through the Stripe-compatible path
//! `/stripe/{source}/v1/…` with only their base address changed: create
//! with a key, replay, update, retrieve, auto-paginate and delete, answered
//! as Stripe answers, and every write reaching the upstream once.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// Run one client script; its last stdout line is JSON.
fn run_client(program: &str, script: &str, base: &str, token: &str) -> Value {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    let out = Command::new(program)
        .arg(dir.join(script))
        .args([base, token])
        .current_dir(&dir)
        .output()
        .unwrap_or_else(|e| panic!("{program} (installed by scripts/test.sh): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_else(|e| panic!("{script} printed {stdout:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_stripe_clients_write_and_read_through_tributary() {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--scale", "60", "--accounts", "0", "--mutations-per-sec", "0"]).await;
    let engine = Engine::start(dir.path(), &sim.url, "accounts = []\npoll_interval_ms = 200").await;
    engine.wait_live(Duration::from_secs(60)).await;
    let config = engine.config.display().to_string();
    let (code, stdout, stderr) =
        tributary(&["apps", "create", "-c", &config, "--name", "clients", "--kind", "inhouse", "--account", "platform"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let token = serde_json::from_str::<Value>(&stdout).unwrap()["token"].as_str().unwrap().to_string();
    let base = format!("{}/stripe/stripe", engine.api);

    for (program, script) in [("python3", "stripe_through.py"), ("node", "stripe_through.cjs")] {
        let mirrored_before = engine.mirror().await.get("customer").map_or(0, |rows| rows.values().filter(|(a, _)| a.is_none()).count());
        let result = run_client(program, script, &base, &token);
        let id = result["created"].as_str().unwrap();
        // the list walked every customer of the platform, the new one included
        assert_eq!(result["listed"].as_u64().unwrap() as usize, mirrored_before + 1, "{script}");
        // the upstream saw one create, one update and one delete of it:
        // the replayed create and the refused one never reached it
        let (status, events) = sim.call(reqwest::Method::GET, "/v1/events?limit=100", &[]).await;
        assert_eq!(status, 200);
        let of_it: Vec<&str> = events["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["data"]["object"]["id"] == id)
            .map(|e| e["type"].as_str().unwrap())
            .collect();
        assert_eq!(of_it, ["customer.deleted", "customer.updated", "customer.created"], "{script}: upstream events of {id}");
        let (status, _) = sim.call(reqwest::Method::GET, &format!("/v1/customers/{id}"), &[]).await;
        assert_eq!(status, 404, "{script}: the delete reached the upstream");
        assert!(engine.mirror().await.get("customer").is_none_or(|rows| !rows.contains_key(id)), "{script}: still mirrored");
    }
}

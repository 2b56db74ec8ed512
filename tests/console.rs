//! The console in a real browser (Debian's Chromium driven by
//! playwright-core, `tests/clients/console.cjs`): sign in, resume a paused
//! source and watch it go from backfilling to live, open an object's
//! history, redrive a dead letter and rewind a sink. Each step saves a
//! screenshot; with `TRIBUTARY_SCREENSHOTS_DIR` set, the overview and the
//! sink page are copied there (`scripts/screenshots.sh`, for the README).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

const CHROMIUM: &str = "/usr/bin/chromium";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_signs_in_watches_a_backfill_redrives_and_rewinds() {
    assert!(Path::new(CHROMIUM).exists(), "{CHROMIUM} is missing (scripts/test.sh installs Debian's chromium)");
    let dir = tempdir();
    let (_receiver, hook_url, out) = start_receiver(dir.path());
    // each request takes 300 ms: the backfill lasts long enough to be seen
    let sim = Sim::start(dir.path(), &["--scale", "40", "--accounts", "0", "--latency-ms", "300"]).await;
    let customers: Vec<String> =
        sim.truth(None).await["customer"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_string()).collect();
    // the endpoint refuses the first customer's changes: one dead letter
    let reject = format!("{}.reject", out.display());
    std::fs::write(&reject, &customers[0]).unwrap();
    let body = format!(
        "admin_token_env = \"TRIBUTARY_ADMIN_TOKEN\"\n[[sources]]\nname = \"stripe\"\nkind = \"stripe\"\nbase_url = \"{}\"\n\
         api_key_env = \"STRIPE_API_KEY\"\naccounts = []\npoll_interval_ms = 100\nreconcile_every_secs = 0\n{}\n{}max_attempts = 1\n",
        sim.url,
        core_resources(),
        webhook_toml(&hook_url)
    );
    let db = Db::sqlite(dir.path());
    let (config, port) = Engine::configure(dir.path(), &db, &body);
    // paused before it ever starts: the browser resumes it
    let (code, _, stderr) = tributary(&["sources", "pause", "stripe", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{stderr}");
    let engine = Engine::start_configured_at(dir.path(), db, config, port).await;

    let shots = dir.path().join("screenshots");
    std::fs::create_dir(&shots).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/console.cjs");
    let run = tokio::task::spawn_blocking({
        let (api, sim_url, customer, shots) = (engine.api.clone(), sim.url.clone(), customers[1].clone(), shots.clone());
        move || {
            Command::new("node")
                .args([script, &api, ADMIN_TOKEN, &sim_url, API_KEY, &customer, &reject, shots.to_str().unwrap()])
                .output()
                .expect("run node (scripts/test.sh installs the test clients)")
        }
    });
    let output = tokio::time::timeout(Duration::from_secs(240), run).await.expect("the browser run finished").unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the browser run failed:\n{stderr}\n{stdout}\nengine log tail: {}",
        engine.proc.log_text().lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();

    assert!(seen["paused_at_start"].as_str().is_some_and(|p| p.starts_with("paused")), "{seen}");
    let phases: Vec<&str> = seen["phases"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    let backfilling = phases.iter().position(|p| *p == "backfilling");
    assert!(backfilling.is_some_and(|b| b < phases.len() - 1) && phases.last() == Some(&"live"), "phases seen: {phases:?}");
    assert!(seen["history_steps"].as_u64() >= Some(2), "{seen}");
    assert_eq!(seen["history_after"], "\"Grace Hopper\"", "{seen}");
    assert_eq!(seen["page_errors"], serde_json::json!([]), "{seen}");
    // the redriven change went once; the rewind sent the update again
    let times = |id: &str| received(&out).iter().filter(|e| e["id"] == id).count();
    assert_eq!(times(seen["dead_letter_change"].as_str().unwrap()), 1, "{seen}");
    assert!(seen["delivered_after"].as_u64() > seen["delivered_before"].as_u64(), "{seen}");
    let update = seen["update_change"].as_str().unwrap().to_string();
    wait_until("the update delivered again", Duration::from_secs(20), || async { times(&update) == 2 }).await;
    assert_eq!(engine.sink_view("hooks").await["dead_letters"], 0);
    for name in ["login", "overview", "history", "dead-letters", "sink"] {
        assert!(shots.join(format!("{name}.png")).metadata().is_ok_and(|m| m.len() > 1000), "no screenshot {name}.png");
    }
    if let Ok(keep) = std::env::var("TRIBUTARY_SCREENSHOTS_DIR") {
        for name in ["overview", "sink"] {
            std::fs::copy(shots.join(format!("{name}.png")), Path::new(&keep).join(format!("console-{name}.png"))).unwrap();
        }
    }
}

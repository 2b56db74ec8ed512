//! Stripe's own client libraries (the official Python and Node packages,
//! pinned) with only their base address changed: against the simulator,
//! over every resource type of `tests/clients/resources.json`; and writing
//! and reading through the Stripe-compatible path `/stripe/{source}/v1/…`
//! (create with a key, replay, update, retrieve, auto-paginate and delete,
//! answered as Stripe answers, and every write reaching the upstream once).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// Run one client script; its last stdout line is JSON.
fn run_client(program: &str, script: &str, args: &[&str]) -> Value {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    let out = Command::new(program)
        .arg(dir.join(script))
        .args(args)
        .current_dir(&dir)
        .output()
        .unwrap_or_else(|e| panic!("{program} (installed by scripts/test.sh): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_else(|e| panic!("{script} printed {stdout:?}: {e}"))
}

/// Both libraries create, retrieve, update, list (auto-paginating) and
/// delete or cancel at least 20 resource types against the simulator,
/// each with every write the catalogue says Stripe allows on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_stripe_clients_drive_every_kind_of_resource_against_the_simulator() {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--scale", "40", "--accounts", "1", "--mutations-per-sec", "0"]).await;
    let spec: Value =
        serde_json::from_str(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/resources.json")).unwrap())
            .unwrap();
    let paths: Vec<&str> = spec["resources"].as_array().unwrap().iter().map(|c| c["path"].as_str().unwrap()).collect();
    assert!(paths.len() >= 20, "only {} resource types", paths.len());
    for (program, script) in [("python3", "stripe_resources.py"), ("node", "stripe_resources.cjs")] {
        let result = run_client(program, script, &[&sim.url]);
        let types = result["types"].as_object().unwrap();
        assert_eq!(
            types.keys().map(String::as_str).collect::<std::collections::BTreeSet<_>>(),
            paths.iter().copied().collect(),
            "{script}"
        );
        for (path, done) in types {
            let resource = tributary::stripe_api::by_path(path).unwrap_or_else(|| panic!("{path} is not in the catalogue"));
            let done: Vec<&str> = done.as_array().unwrap().iter().map(|d| d.as_str().unwrap()).collect();
            let ending = if resource.ending == tributary::stripe_api::Ending::Cancels { "cancel" } else { "delete" };
            let expected: Vec<&str> = [
                ("create", resource.create),
                ("retrieve", true),
                ("update", resource.update),
                ("list", true),
                (ending, resource.delete_endpoint),
            ]
            .into_iter()
            .filter_map(|(op, allowed)| allowed.then_some(op))
            .collect();
            assert_eq!(done, expected, "{script}: {path} was not driven through every operation Stripe allows");
        }
        println!("{script}: {} resource types", types.len());
    }
}

/// The Python library over the rest of what a client meets: an invoice's
/// lines beyond those embedded, events with `previous_attributes`,
/// connected accounts, missing objects and a bad key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_stripe_python_library_meets_nested_lists_events_and_errors() {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--scale", "300", "--accounts", "2"]).await;
    let result = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/stripe_python.py"))
        .arg(&sim.url)
        .output()
        .expect("python3 (installed by scripts/test.sh)");
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(result.status.success(), "stripe client failed:\n{stdout}\n{}", String::from_utf8_lossy(&result.stderr));
    assert!(stdout.contains("official stripe client: ok"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_stripe_clients_write_and_read_through_tributary() {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--scale", "60", "--accounts", "0", "--mutations-per-sec", "0"]).await;
    // the core resources, a list whose path has two segments, and a child list
    let resources = core_resources().replace(']', ", \"checkout/sessions\", \"customers/{id}/tax_ids\"]");
    let engine = Engine::start(dir.path(), &sim.url, &format!("accounts = []\npoll_interval_ms = 200\n{resources}")).await;
    engine.wait_live(Duration::from_secs(60)).await;
    let config = engine.config.display().to_string();
    let (code, stdout, stderr) =
        tributary(&["apps", "create", "-c", &config, "--name", "clients", "--kind", "inhouse", "--account", "platform"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let token = serde_json::from_str::<Value>(&stdout).unwrap()["token"].as_str().unwrap().to_string();
    let base = format!("{}/stripe/stripe", engine.api);

    for (program, script) in [("python3", "stripe_through.py"), ("node", "stripe_through.cjs")] {
        let mirrored_before = engine.mirror().await.get("customer").map_or(0, |rows| rows.values().filter(|(a, _)| a.is_none()).count());
        let result = run_client(program, script, &[&base, &token]);
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

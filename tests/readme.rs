//! The README's commands, run as printed: every `curl` line (with its `\`
//! continuations) and the `tributary apps create` line, against a real
//! engine on the README's address (`localhost:7400`) mirroring the
//! simulator. Only the variables the README tells the reader to set
//! (`TRIBUTARY_ADMIN_TOKEN`, `TOKEN`, `QUEUE`) come from the test.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// The commands of the README's code blocks that start with `prefix`, each
/// joined with its continuation lines.
fn readme_commands(prefix: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).expect("README.md");
    let mut commands = Vec::new();
    let mut lines = readme.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if !line.starts_with(prefix) {
            continue;
        }
        let mut command = line.to_string();
        while command.ends_with('\\') {
            command.pop();
            command.push(' ');
            command.push_str(lines.next().unwrap_or_default());
        }
        commands.push(command);
    }
    commands
}

/// Run one README line with bash in `dir`, the built binary first on PATH.
fn run(dir: &Path, command: &str, env: &[(&str, &str)]) -> String {
    let bin_dir = Path::new(bin()).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let output = std::process::Command::new("bash")
        .args(["-c", &format!("set -euo pipefail; {command}")])
        .current_dir(dir)
        .env("PATH", path)
        .envs(env.iter().copied())
        .output()
        .expect("bash");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "{command}\nexit {:?}\n{stdout}\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    stdout
}

fn json(text: &str, command: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{command} answered {text:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_curl_line_of_the_readme_runs_as_printed() {
    let curls = readme_commands("curl ");
    assert!(curls.len() >= 4, "{curls:?}");
    let create = readme_commands("tributary apps create");
    assert_eq!(create.len(), 1, "{create:?}");

    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--scale", "20", "--accounts", "0", "--mutations-per-sec", "0"]).await;
    let admin = "readme-admin-token";
    std::fs::write(
        dir.path().join("tributary.toml"),
        format!(
            "[database]\nurl = \"sqlite://{}\"\n[api]\nlisten = \"127.0.0.1:7400\"\nadmin_token_env = \"TRIBUTARY_ADMIN_TOKEN\"\n\
             [[sources]]\nname = \"stripe\"\nkind = \"stripe\"\nbase_url = \"{}\"\napi_key_env = \"STRIPE_API_KEY\"\naccounts = []\n{}\n",
            dir.path().join("readme.db").display(),
            sim.url,
            core_resources()
        ),
    )
    .unwrap();
    let mut cmd = std::process::Command::new(bin());
    cmd.args(["run", "--config", "tributary.toml"])
        .current_dir(dir.path())
        .env("STRIPE_API_KEY", API_KEY)
        .env("TRIBUTARY_ADMIN_TOKEN", admin);
    let engine = spawn(dir.path(), "engine", cmd);
    wait_until("the engine on localhost:7400 (is another process using the port?)", Duration::from_secs(30), || async {
        get_json("http://127.0.0.1:7400/v1/sources").await.is_some_and(|s| s["sources"][0]["phase"] == "live")
    })
    .await;

    let app = json(&run(dir.path(), &create[0], &[("TRIBUTARY_ADMIN_TOKEN", admin)]), &create[0]);
    let token = app["token"].as_str().expect("a token").to_string();
    let mut queue = String::new();
    let mut pulled = None;
    // in the README's order, except that the write goes before the pull,
    // so the long poll has its event at once
    let (pulls, others): (Vec<&String>, Vec<&String>) = curls.iter().partition(|c| c.contains("/events/pull"));
    for command in others.into_iter().chain(pulls) {
        let answer = json(&run(dir.path(), command, &[("TOKEN", &token), ("QUEUE", &queue)]), command);
        assert!(answer.get("error").is_none(), "{command}\n{answer}");
        if command.ends_with("localhost:7400/v1/queues") {
            queue = answer["code"].as_str().expect("a queue code").to_string();
        }
        if command.contains("/v1/sources/stripe/customers") {
            assert_eq!(answer["object"], "customer", "{answer}");
            assert_eq!(answer["metadata"]["plan"], "pro", "{answer}");
        }
        if command.contains("/events/pull") {
            pulled = Some(answer);
        }
    }
    let pulled = pulled.expect("the README pulls a queue");
    let events = pulled["events"].as_array().unwrap();
    assert!(events.iter().any(|e| e["type"] == "customer.created"), "{pulled}");
    drop(engine);
}

/// Every TOML example of the README parses and validates as a config (the
/// secrets it names are not needed for that).
#[test]
fn every_toml_example_of_the_readme_is_a_valid_config() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).expect("README.md");
    let blocks: Vec<&str> = readme.split("```toml").skip(1).filter_map(|rest| rest.split("```").next()).collect();
    assert!(blocks.len() >= 5, "{}", blocks.len());
    for block in blocks {
        if let Err(e) = tributary::config::Config::parse(block, "README.md") {
            panic!("a README example does not parse: {e}\n{block}");
        }
    }
}

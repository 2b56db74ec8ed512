//! The `rest` kind against the simulator's issue tracker (shaped like
//! GitHub's REST API): repositories, then each one's issues listed under
//! it (`/repos/{owner}/{repo}/issues` filled from the repository's row),
//! paged by `Link` headers, asked with `since` for what changed (an
//! incremental cursor with a lookback), and read whole every few seconds so
//! that deleted issues are found.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use serde_json::Value;

const SOURCE: &str = "gh";

fn config(sim: &Sim, full_refresh_every_secs: u64) -> String {
    format!(
        r#"[[sources]]
name = "{SOURCE}"
kind = "rest"
base_url = "{url}"
auth = {{ kind = "bearer", token_env = "GITHUB_TOKEN" }}
headers = {{ Accept = "application/vnd.github+json" }}
paginator = {{ kind = "link_header" }}
poll_interval_secs = 1
full_refresh_every_secs = {full_refresh_every_secs}
retry_max_backoff_ms = 200

[[sources.resources]]
name = "repo"
path = "/orgs/acme/repos"
query = {{ per_page = "100" }}

[[sources.resources]]
name = "issue"
path = "/repos/{{owner}}/{{repo}}/issues"
parent = "repo"
params = {{ owner = "owner.login", repo = "name" }}
query = {{ state = "all", per_page = "40" }}
incremental = {{ param = "since", field = "updated_at", lookback_secs = 2 }}
"#,
        url = sim.url
    )
}

async fn truth(sim: &Sim) -> Value {
    get_json(&format!("{}/__sim/tracker", sim.url)).await.expect("tracker truth")
}

/// Object type → id → data, from the simulator.
async fn expected(sim: &Sim) -> BTreeMap<String, BTreeMap<String, Value>> {
    let truth = truth(sim).await;
    ["repo", "issue"]
        .iter()
        .map(|object| {
            let rows = truth[*object].as_array().unwrap().iter().map(|row| (row["id"].to_string(), row.clone())).collect();
            (object.to_string(), rows)
        })
        .collect()
}

async fn mirrored(db: &Db) -> BTreeMap<String, BTreeMap<String, Value>> {
    mirror_of(db, SOURCE)
        .await
        .into_iter()
        .map(|(object, rows)| (object, rows.into_iter().map(|(id, (_, data))| (id, data)).collect()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parents_and_children_converge_incrementally_and_deletions_are_found_by_the_full_refresh() {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--issues", "300"]).await;
    let env = vec![("GITHUB_TOKEN".to_string(), "ghp_test".to_string())];
    let engine = Engine::start_configured_env(dir.path(), Db::sqlite(dir.path()), &config(&sim, 4), env).await;
    wait_until("the first run mirrors every issue", Duration::from_secs(60), || async {
        mirrored(&engine.db).await == expected(&sim).await
    })
    .await;
    let first = engine.proc.log_kinds("rest_sync")[0].clone();
    assert_eq!((first["fetched"].as_u64(), first["lists"].as_u64(), first["full"].as_u64()), (Some(303), Some(4), Some(4)), "{first}");
    // 100 issues of 40 a page over 3 repositories: 3 pages each, and the repositories' one
    assert_eq!(first["requests"], 10, "every page followed by its Link header: {first}");

    // edits, new issues and deletions; the incremental runs carry the edits
    // and new issues, the next full read finds the deletions
    let before: Vec<String> = mirrored(&engine.db).await["issue"].keys().cloned().collect();
    post_json(&format!("{}/__sim/generate", sim.url), serde_json::json!({"issue_edits": 120})).await;
    let stats = truth(&sim).await["stats"].clone();
    assert!(stats["deleted"].as_u64() > Some(0) && stats["edits"].as_u64() > Some(0), "{stats}");
    wait_until("edits, new issues and deletions mirrored", Duration::from_secs(60), || async {
        mirrored(&engine.db).await == expected(&sim).await
    })
    .await;
    let runs = engine.proc.log_kinds("rest_sync");
    // the repositories' list has no cursor: it is read whole at every run
    let incremental: Vec<&Value> = runs.iter().skip(1).filter(|r| r["full"].as_u64() < r["lists"].as_u64()).collect();
    assert!(!incremental.is_empty(), "no incremental run: {runs:?}");
    assert!(incremental.iter().all(|r| r["fetched"].as_u64() < Some(303)), "an incremental run asks only for what changed: {runs:?}");
    assert!(runs.iter().skip(1).any(|r| r["full"] == r["lists"] && r["deleted"].as_u64() > Some(0)), "{runs:?}");

    // each change once: the first run's inserts, then only what changed
    let changes = changes(&engine.db).await;
    // the issues the mirror had that the tracker no longer has (an issue
    // opened and deleted between two runs was never seen)
    let after = expected(&sim).await;
    let mut gone: Vec<String> = before.into_iter().filter(|id| !after["issue"].contains_key(id)).collect();
    let mut deleted: Vec<String> = changes.iter().filter(|c| c.op == "delete").map(|c| c.object_id.clone()).collect();
    gone.sort();
    deleted.sort();
    assert!(!gone.is_empty());
    assert_eq!(deleted, gone, "each deleted issue once");
    let issue_changes = changes.iter().filter(|c| c.object == "issue").count() as u64;
    assert!(issue_changes <= 300 + 120, "no change without a change upstream: {issue_changes}");
}

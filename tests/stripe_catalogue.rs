//! Stripe as it is: the catalogue of list resources agrees with the
//! reference table of Stripe's list endpoints, every object the simulator
//! serves has exactly the fields of Stripe's own example of it, and a
//! source left at its defaults mirrors every served resource.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::Value;
use tributary::stripe_api::{Follow, catalogue};

fn reference(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/stripe").join(file)
}

/// The reference table's v1 list endpoints (no search): path under /v1 →
/// (objects, scope, events).
fn reference_lists() -> BTreeMap<String, (BTreeSet<String>, String, String)> {
    let text = std::fs::read_to_string(reference("list-endpoints.tsv")).expect("the reference table beside the repository");
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            let path = fields[0].strip_prefix("/v1/")?;
            if path.ends_with("/search") {
                return None;
            }
            let objects = fields[1].split('|').map(String::from).collect();
            Some((path.to_string(), (objects, fields[2].to_string(), fields[3].to_string())))
        })
        .collect()
}

#[test]
fn the_catalogue_agrees_with_the_reference_table() {
    let reference = reference_lists();
    let ours: BTreeMap<&str, _> = catalogue().iter().map(|r| (r.path, r)).collect();
    let theirs: BTreeSet<&str> = reference.keys().map(String::as_str).collect();
    assert_eq!(ours.keys().copied().collect::<BTreeSet<_>>(), theirs, "the catalogue lists every v1 list endpoint, and no other");
    for (path, (objects, scope, events)) in &reference {
        let resource = ours[path.as_str()];
        let mine: BTreeSet<String> = resource.objects.iter().map(|o| o.to_string()).collect();
        assert_eq!(&mine, objects, "{path}: objects");
        let flags = events.split(' ').next().unwrap_or_default();
        assert_eq!(
            (resource.events.created, resource.events.updated, resource.events.deleted),
            (flags.contains('C'), flags.contains('U'), flags.contains('D')),
            "{path}: events {events}"
        );
        if let Some(prefix) = events.split("[prefix ").nth(1) {
            assert_eq!(resource.event_prefix, prefix.trim_end_matches(']'), "{path}: event prefix");
        }
        // a list that hangs from a parent, in its path or by a required
        // filter, is walked from that parent's rows (when it is mirrored)
        if resource.mirrored() {
            let scoped = scope.contains("parent:") || scope.contains("required:");
            assert_eq!(resource.scope.parent.is_some() || !resource.fixed.is_empty(), scoped, "{path}: scope {scope}");
        }
        assert!(resource.mirrored() || resource.note.is_some(), "{path}: not mirrored without saying why");
    }
    let mirrored = catalogue().iter().filter(|r| r.mirrored()).count();
    let by_events = catalogue().iter().filter(|r| r.follow.by_events()).count();
    let relisted = catalogue().iter().filter(|r| r.follow == Follow::Relist).count();
    println!("catalogue: {} v1 lists, {mirrored} mirrored ({by_events} followed by events, {relisted} re-listed)", reference.len());
}

/// The fields of Stripe's example of each object type.
fn fixture_fields() -> BTreeMap<String, BTreeSet<String>> {
    let text = std::fs::read_to_string(reference("fixtures3.json")).expect("Stripe's fixtures beside the repository");
    let all: Value = serde_json::from_str(&text).unwrap();
    all["resources"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(name, example)| example["object"] == name.as_str())
        .map(|(name, example)| (name.clone(), example.as_object().unwrap().keys().cloned().collect()))
        .collect()
}

/// Every served list answers, and every object in it has exactly the
/// fields of Stripe's example of its type; prints the coverage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_served_object_has_exactly_the_fields_of_stripes_example() {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--scale", "60", "--accounts", "1"]).await;
    let fields = fixture_fields();
    let truth = sim.truth(None).await;
    let first_id = |object: &str| truth[object].as_array().and_then(|rows| rows.first()).and_then(|r| r["id"].as_str()).map(String::from);
    let (mut served, mut objects_checked) = (Vec::new(), 0);
    let mut unserved = Vec::new();
    for resource in catalogue().iter().filter(|r| r.mirrored()) {
        // a child list is asked for under one of its parents
        let parent = match resource.scope.parent {
            None => None,
            Some(parent) => match truth[parent].as_array().and_then(|rows| rows.iter().find(|r| r["id"].is_string())) {
                Some(row) => Some(row.clone()),
                None => {
                    unserved.push(resource.path);
                    continue;
                }
            },
        };
        let Some(path) = resource.list_path(parent.as_ref()) else {
            unserved.push(resource.path);
            continue;
        };
        let (status, list) = sim.call(Method::GET, &path, &[]).await;
        if status == 404 {
            unserved.push(resource.path);
            continue;
        }
        assert_eq!(status, 200, "{path}: {list}");
        served.push(resource.path);
        for item in list["data"].as_array().unwrap() {
            let object = item["object"].as_str().unwrap();
            let keys: BTreeSet<String> = item.as_object().unwrap().keys().cloned().collect();
            assert_eq!(keys, fields[object], "{path}: a {object} without exactly the example's fields");
            objects_checked += 1;
        }
        // a top-level object is retrieved by id in the same shape
        if resource.scope.parent.is_none()
            && let Some(id) = first_id(resource.object)
        {
            let (status, one) = sim.call(Method::GET, &format!("/v1/{}/{id}", resource.path), &[]).await;
            assert_eq!(status, 200, "{}/{id}: {one}", resource.path);
            assert_eq!(one.as_object().unwrap().keys().cloned().collect::<BTreeSet<_>>(), fields[resource.object]);
        }
    }
    println!(
        "simulator serves {} of {} mirrored lists ({objects_checked} objects checked); not served: {}",
        served.len(),
        served.len() + unserved.len(),
        unserved.join(", ")
    );
    assert!(served.len() >= 90, "served {}: {served:?}", served.len());
}

/// A source left at its defaults mirrors every resource the upstream
/// serves, child lists included, in every account; then, with live traffic
/// touching every served type and requests failing, each resource is kept
/// current the way Stripe allows (events, `created`, re-listing), until
/// the mirror equals the upstream again.
async fn a_default_source_mirrors_and_follows_every_served_resource(backend: Backend) {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--scale", "60", "--accounts", "1", "--seed", "11"]).await;
    let body = format!(
        "[[sources]]\nname = \"stripe\"\nkind = \"stripe\"\nbase_url = \"{}\"\napi_key_env = \"STRIPE_API_KEY\"\nrate_limit_per_sec = 500\n\
         created_every_secs = 1\nrelist_every_secs = 2",
        sim.url
    );
    let engine = Engine::start_configured(dir.path(), backend(dir.path()), &body).await;
    engine.wait_live(Duration::from_secs(120)).await;
    assert_converged_over(&sim, &engine.db, None).await;
    let mirror = engine.mirror().await;
    let types = mirror.values().filter(|rows| !rows.is_empty()).count();
    assert!(types >= 90, "{types} object types mirrored");
    for (_, object) in CORE {
        assert!(mirror.get(*object).is_some_and(|rows| !rows.is_empty()), "no {object}");
    }
    // children reached through their parents: embedded (invoice lines) and listed (tax ids)
    assert!(mirror.get("line_item").is_some_and(|rows| !rows.is_empty()), "invoice lines");
    assert!(mirror.get("tax_id").is_some_and(|rows| !rows.is_empty()), "tax ids");

    // live traffic over every served type, with one request in twenty failing
    sim.set_faults(serde_json::json!({"fail_rate": 0.05})).await;
    sim.set_traffic(200.0).await;
    let without_events = |stats: &Value| -> u64 {
        let mutations = stats["mutations"].as_object().cloned().unwrap_or_default();
        mutations
            .iter()
            .filter(|(path, _)| catalogue().iter().any(|r| r.path == *path && !r.follow.by_events()))
            .map(|(_, n)| n.as_u64().unwrap())
            .sum()
    };
    wait_until("traffic on resources without events", Duration::from_secs(60), || async { without_events(&sim.stats().await) >= 150 })
        .await;
    sim.set_traffic(0.0).await;
    sim.set_faults(serde_json::json!({"fail_rate": 0.0})).await;
    let stopped = chrono::Utc::now().timestamp();
    let mutations = sim.stats().await["mutations"].clone();

    wait_fresh_since(&engine, stopped).await;
    // a child list (payment attempt records) is walked from its parents'
    // rows: it is complete once listed after its parents were, so one
    // more round (its freshness does not yet account for its parents')
    wait_fresh_since(&engine, chrono::Utc::now().timestamp()).await;
    engine.barrier("stripe").await;
    assert_converged_over(&sim, &engine.db, None).await;

    // each resource says how it is followed
    let sources = engine.sources().await;
    let follow = &sources["sources"][0]["accounts"][0]["follow"];
    for (resource, strategy) in [
        ("customers", "events"),
        ("balance_transactions", "created"),
        ("webhook_endpoints", "relist"),
        ("invoices/{id}/lines", "parent"),
        ("checkout/sessions", "events+relist"),
    ] {
        assert_eq!(follow[resource]["strategy"], strategy, "{resource}: {follow}");
    }
    assert!(follow["webhook_endpoints"]["next_at"].is_string() && follow["customers"]["next_at"].is_null(), "{follow}");

    // changes found by listing are typed like any other and carry no event
    let changes = engine.changes().await;
    let listed: Vec<&tributary::store::Change> = changes.iter().filter(|c| c.op != "read" && c.upstream_event_id.is_none()).collect();
    let objects: BTreeSet<&str> = listed.iter().map(|c| c.object.as_str()).collect();
    assert!(objects.len() >= 10, "changes found by listing cover only {objects:?}; traffic: {mutations}");
    for change in &listed {
        let verb = match change.op.as_str() {
            "insert" => "created",
            "update" => "updated",
            _ => "deleted",
        };
        assert_eq!(change.kind, format!("{}.{verb}", change.object), "{change:?}");
        assert!(
            catalogue().iter().any(|r| r.holds(&change.object) && r.mirrored() && r.follow != Follow::Events),
            "{} is followed by its events only, yet changed by a listing",
            change.object
        );
    }
    let deleted: BTreeSet<&str> = listed.iter().filter(|c| c.op == "delete").map(|c| c.object.as_str()).collect();
    println!("changes found by listing: {} over {} types; deletes of {deleted:?}", listed.len(), objects.len());
}

/// Wait until every resource of every account is fresh after `stopped`
/// (unix seconds): followed by events, or listed since.
async fn wait_fresh_since(engine: &Engine, stopped: i64) {
    let fresh_since = |sources: &Value| -> Result<(), String> {
        for scope in sources["sources"][0]["accounts"].as_array().unwrap() {
            for (resource, follow) in scope["follow"].as_object().unwrap() {
                let at = follow["fresh_at"].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()).map(|t| t.timestamp());
                if at.is_none_or(|at| at <= stopped) {
                    return Err(format!("{resource} in {}: {follow}", scope["account"]));
                }
            }
        }
        Ok(())
    };
    let mut last = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        match fresh_since(&engine.sources().await) {
            Ok(()) => return,
            Err(e) if std::time::Instant::now() < deadline => last = e,
            Err(_) => panic!("not listed since the traffic stopped: {last}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every served resource, live traffic over all of them, 429s (the
/// upstream's limit is below the source's budget), one request in twenty
/// a 500, and a `kill -9` in the middle of the backfill: the restart
/// resumes it, and the mirror ends equal to the upstream, canceled
/// subscriptions included.
async fn a_kill_mid_backfill_over_every_resource_with_traffic_and_faults_converges(backend: Backend) {
    let dir = tempdir();
    let sim = Sim::start(
        dir.path(),
        &["--scale", "200", "--accounts", "1", "--seed", "13", "--rate-limit", "150", "--fail-rate", "0.05", "--mutations-per-sec", "40"],
    )
    .await;
    let body = format!(
        "[[sources]]\nname = \"stripe\"\nkind = \"stripe\"\nbase_url = \"{}\"\napi_key_env = \"STRIPE_API_KEY\"\nrate_limit_per_sec = 250\n\
         created_every_secs = 1\nrelist_every_secs = 2",
        sim.url
    );
    let mut first = Engine::start_configured(dir.path(), backend(dir.path()), &body).await;
    let done_and_total = |sources: &Value| -> (usize, usize) {
        let jobs: Vec<Value> = sources["sources"][0]["accounts"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|a| a["backfill"].as_object().cloned().unwrap_or_default().into_values())
            .collect();
        (jobs.iter().filter(|j| j["done"] == true).count(), jobs.len())
    };
    wait_until("part of the backfill to be committed", Duration::from_secs(120), || async {
        let (done, total) = get_json(&format!("{}/v1/sources", first.api)).await.map_or((0, 0), |s| done_and_total(&s));
        done >= 20 && done < total
    })
    .await;
    first.proc.kill();

    let second = first.restart(dir.path()).await;
    second.wait_live(Duration::from_secs(240)).await;
    assert!(second.proc.log_kinds("backfill_started").is_empty(), "the restart began a new backfill instead of resuming");
    // traffic and faults stop; what they did is caught up with
    let stats = sim.stats().await;
    assert!(stats["rate_limited"].as_u64().unwrap() > 0 && stats["failed"].as_u64().unwrap() > 0, "no 429s or 500s: {stats}");
    sim.set_traffic(0.0).await;
    sim.set_faults(serde_json::json!({"fail_rate": 0.0})).await;
    let stopped = chrono::Utc::now().timestamp();
    wait_fresh_since(&second, stopped).await;
    second.barrier("stripe").await;
    assert_converged_over(&sim, &second.db, None).await;
    let mirror = second.mirror().await;
    assert!(mirror.values().filter(|rows| !rows.is_empty()).count() >= 90, "not every type is mirrored");
    let canceled = mirror["subscription"].values().filter(|(_, row)| row["status"] == "canceled").count();
    assert!(canceled > 0, "no canceled subscription in the mirror");
}

on_both_backends!(
    a_default_source_mirrors_and_follows_every_served_resource,
    a_kill_mid_backfill_over_every_resource_with_traffic_and_faults_converges
);

/// Invoice items carry no `created` (they have a `date`), though their list
/// filters on it: they are paged by cursor, never split by a creation time
/// they do not have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_without_a_creation_time_are_paged_by_cursor() {
    let dir = tempdir();
    // 2,100 customers: 105 invoice items, two pages
    let sim = Sim::start(dir.path(), &["--scale", "2100", "--accounts", "0"]).await;
    let engine = Engine::start(dir.path(), &sim.url, "accounts = []\nresources = [\"invoiceitems\"]\nrate_limit_per_sec = 500").await;
    engine.wait_live(Duration::from_secs(60)).await;
    assert_converged_over(&sim, &engine.db, Some(&["invoiceitem"])).await;
    assert_eq!(engine.mirror().await["invoiceitem"].len(), 105);
    let stats = sim.stats().await;
    assert_eq!(stats["by_route"]["GET /v1/invoiceitems"], 2, "{}", stats["by_route"]);
}

/// A subscription item deleted upstream shows only as its subscription's
/// `updated` event, whose previous attributes hold the items before: the
/// item's row is deleted (one `delete` change) and the mirror equals the
/// upstream, with no re-backfill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_its_parents_event_no_longer_lists_is_deleted() {
    let dir = tempdir();
    let sim = Sim::start(dir.path(), &["--scale", "200", "--accounts", "0"]).await;
    let resources = r#"resources = ["subscriptions", "subscription_items"]"#;
    let engine = Engine::start(dir.path(), &sim.url, &format!("accounts = []\n{resources}\npoll_interval_ms = 100")).await;
    engine.wait_live(Duration::from_secs(60)).await;
    let item = sim.truth(None).await["subscription_item"][0]["id"].as_str().unwrap().to_string();
    assert!(engine.mirror().await["subscription_item"].contains_key(&item));
    let (status, body) = sim.call(Method::DELETE, &format!("/v1/subscription_items/{item}"), &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["deleted"], true, "{body}");
    engine.barrier("stripe").await;
    assert!(!engine.mirror().await["subscription_item"].contains_key(&item), "the deleted item is still mirrored");
    let deletes: Vec<_> = engine.changes().await.into_iter().filter(|c| c.object_id == item).filter(|c| c.op == "delete").collect();
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert_eq!(deletes[0].kind, "customer.subscription.updated");
    assert_converged_over(&sim, &engine.db, Some(&["subscription", "subscription_item"])).await;
}

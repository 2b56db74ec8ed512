//! The `stripe` source: backfill every list resource, then catch up on and
//! tail `/v1/events`, for the platform and every connected account.
//!
//! - `config`: the validated `[[sources]]` entry
//! - `checkpoint`: what each account remembers between runs
//! - `sync`: the per-account state machine (backfill → catching up → live)
//! - `follow`: resources without events, kept current by listing them
//! - `reconcile`: every resource listed again and compared with the mirror
//! - `raw`: backfill pages kept as text, parsed only as far as needed

pub mod checkpoint;
pub mod config;
mod follow;
mod lookback;
mod raw;
pub mod reconcile;
pub mod sync;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

pub use config::{Accounts, StripeConfig};

use crate::source::SourceStatus;
use crate::source::http::{Client, ClientError};
use crate::store::Store;
use sync::{ScopeSync, Shared};

/// Run a stripe source until the task is dropped.
pub async fn run(config: StripeConfig, api_key: String, store: Arc<dyn Store>, status: Arc<SourceStatus>) -> Result<(), ClientError> {
    let options = config.client_options(&api_key);
    tracing::info!(kind = "source_configured", source = %config.name, api_version = %config.api_version,
        rate_limit_per_sec = options.rate_limit_per_sec, "requests pinned to Stripe-Version {}, at most {}/s{}", config.api_version,
        options.rate_limit_per_sec, if config.rate_limit_per_sec.is_none() { " (the default for this key's mode)" } else { "" });
    let shared = shared(&config, api_key, store, status.clone())?;
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(ScopeSync::new(shared.clone(), None).run());
    let accounts = match &config.accounts {
        Accounts::List(ids) => ids.clone(),
        Accounts::Keyword(_) => list_accounts_until_ok(&shared).await,
    };
    for account in accounts {
        tasks.spawn(ScopeSync::new(shared.clone(), Some(account)).run());
    }
    status.set_scopes_ready();
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Compare the mirror with the upstream now, writing nothing: each
/// resource (or only `resource`) of the platform and every connected
/// account, in turn; `each` sees every resource's findings as they come.
pub async fn verify(
    config: &StripeConfig,
    api_key: String,
    store: Arc<dyn Store>,
    resource: Option<&str>,
    limit_ids: usize,
    mut each: impl FnMut(&crate::source::drift::ResourceDrift),
) -> Result<Vec<crate::source::drift::ResourceDrift>, sync::SyncError> {
    let status = SourceStatus::new(&config.name, "stripe");
    let shared = shared(config, api_key, store, status)?;
    let resources: Vec<&'static crate::stripe_api::Resource> =
        shared.resources.iter().copied().filter(|r| resource.is_none_or(|name| r.path == name)).collect();
    let mut scopes = vec![None];
    scopes.extend(
        match &config.accounts {
            Accounts::List(ids) => ids.clone(),
            Accounts::Keyword(_) => list_accounts(&shared.client).await?,
        }
        .into_iter()
        .map(Some),
    );
    let mut found = Vec::new();
    for account in scopes {
        let scope = ScopeSync::new(shared.clone(), account);
        for &resource in &resources {
            let drift = match scope.verify_resource(resource, limit_ids).await {
                Err(sync::SyncError::Client(e)) if e.skips_resource() => {
                    tracing::warn!(kind = "resource_skipped", source = %config.name, resource = resource.path, reason = %e,
                        "the API key may not read this resource; not verified");
                    continue;
                }
                other => other?,
            };
            each(&drift);
            found.push(drift);
        }
    }
    Ok(found)
}

/// What every scope of a source shares: its client, budget and store.
fn shared(config: &StripeConfig, api_key: String, store: Arc<dyn Store>, status: Arc<SourceStatus>) -> Result<Arc<Shared>, ClientError> {
    let options = config.client_options(&api_key);
    let client = Client::new(&options, api_key)?;
    let page_slots = config.concurrency.saturating_add(sync::STORE_QUEUE_PAGES).max(1);
    Ok(Arc::new(Shared {
        name: config.name.clone(),
        api_version: config.api_version.clone(),
        versions_seen: Default::default(),
        resources: config.resources(),
        expanded: config.expanded(),
        poll_interval: Duration::from_millis(config.poll_interval_ms),
        lookback_secs: config.lookback_secs.min(i64::MAX as u64) as i64,
        reconcile_every: (config.reconcile_every_secs > 0).then(|| Duration::from_secs(config.reconcile_every_secs)),
        reconcile_share: crate::source::http::Share::of(client.rate_limit_per_sec(), config.reconcile_budget_share),
        created_every: Duration::from_secs(config.created_every_secs),
        relist_every: Duration::from_secs(config.relist_every_secs),
        event_retention: Duration::from_secs(config.event_retention_secs),
        client,
        store,
        status,
        // as many pages as requests may be in flight, and one transaction's
        // worth fetched and waiting for the store (pages held in memory are
        // most of a backfill's footprint: about 1.3 MB each, measured)
        pages: Arc::new(tokio::sync::Semaphore::new(page_slots)),
        page_slots,
        walks: tokio::sync::Semaphore::new(sync::CHILD_WALKS),
        ranged: Default::default(),
    }))
}

async fn list_accounts_until_ok(shared: &Shared) -> Vec<String> {
    loop {
        match list_accounts(&shared.client).await {
            Ok(ids) => {
                shared.status.set_error(None);
                tracing::info!(kind = "accounts_listed", source = %shared.name, count = ids.len(), "syncing the platform and {} connected accounts", ids.len());
                return ids;
            }
            Err(e) => {
                tracing::error!(kind = "source_error", source = %shared.name, error = %e, "cannot list connected accounts; retrying");
                shared.status.set_error(Some(e.to_string()));
                tokio::time::sleep(shared.client.max_backoff()).await;
            }
        }
    }
}

async fn list_accounts(client: &Client) -> Result<Vec<String>, ClientError> {
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => {
                format!("/v1/accounts?limit=100&starting_after={}", crate::source::http::encode(a))
            }
            None => "/v1/accounts?limit=100".to_string(),
        };
        let page = client.get(&path, None).await?;
        let (items, has_more) = sync::list_parts(page, &path)?;
        for item in &items {
            let id = item["id"].as_str().ok_or_else(|| ClientError::Shape { url: path.clone(), reason: "account without id".into() })?;
            ids.push(id.to_string());
        }
        after = ids.last().cloned();
        if !has_more || items.is_empty() {
            return Ok(ids);
        }
    }
}

/// `true` when a value is a Stripe list.
pub fn is_list(value: &Value) -> bool {
    value.get("object").and_then(Value::as_str) == Some("list")
}

/// Fetch the remaining pages of every truncated nested list of `object`
/// (invoice lines, subscription items), so the stored object is complete.
/// If the parent is gone upstream (404), the object is kept as given: its
/// delete event follows. A list's url is upstream data: only a path under
/// `/v1/` is followed, so the API key never goes anywhere else. Answers the
/// requests it made.
pub async fn complete_nested(client: &Client, account: Option<&str>, object: &mut Value) -> Result<u64, ClientError> {
    let mut requests = 0;
    let Value::Object(fields) = object else { return Ok(requests) };
    let owner = format!(
        "{} {}",
        fields.get("object").and_then(Value::as_str).unwrap_or("object"),
        fields.get("id").and_then(Value::as_str).unwrap_or("(no id)")
    );
    for (field, list) in fields.iter_mut() {
        if !is_list(list) || list["has_more"] != true {
            continue;
        }
        let Some(url) = list["url"].as_str().map(String::from) else { continue };
        if let Err(refused) = crate::source::http::check_upstream_path(&format!("{owner}, field '{field}.url'"), &url, "/v1/") {
            tracing::error!(kind = "url_refused", source = %client.source(), account = account.unwrap_or("platform"), object = %owner,
                field = %field, url = %url, "refused to follow a nested list's url");
            return Err(refused);
        }
        while let Some(last) = list["data"].as_array().and_then(|d| d.last()).and_then(|i| i["id"].as_str()).map(String::from) {
            let separator = if url.contains('?') { '&' } else { '?' };
            let path =
                format!("{url}{separator}limit={}&starting_after={}", crate::stripe_api::MAX_PAGE, crate::source::http::encode(&last));
            requests += 1;
            let page = match client.get(&path, account).await {
                Ok(page) => page,
                Err(e) if e.is_not_found() => {
                    tracing::debug!(url = %path, "parent of a nested list is gone upstream");
                    return Ok(requests);
                }
                Err(e) => return Err(e),
            };
            let (items, has_more) = sync::list_parts(page, &path)?;
            let empty = items.is_empty();
            if let Some(data) = list["data"].as_array_mut() {
                data.extend(items);
            }
            if !has_more || empty {
                list["has_more"] = serde_json::json!(false);
                break;
            }
        }
    }
    Ok(requests)
}

//! Configuration of a `stripe` source, validated without I/O.

use serde::Deserialize;

use crate::config::error::ConfigError;
use crate::source::http::{self, ClientOptions};
use crate::stripe_api::{Resource, mirrored};

/// Which connected accounts to sync besides the platform.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Accounts {
    /// `"all"`: every account listed at `GET /v1/accounts`.
    Keyword(String),
    /// Explicit account ids; `[]` for the platform only.
    List(Vec<String>),
}

impl Default for Accounts {
    fn default() -> Self {
        Accounts::Keyword("all".into())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StripeConfig {
    /// Name used in table names (`{name}_{object}`) and change routing.
    pub name: String,
    /// Base URL of the API, without `/v1`.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// Environment variable holding the secret key (never the key itself).
    #[serde(default = "default_api_key_env")]
    pub api_key_env: String,
    /// Connected accounts to sync: `"all"` (default) or a list of `acct_…` ids.
    #[serde(default)]
    pub accounts: Accounts,
    /// Request budget shared by the platform and every account (token
    /// bucket). Default: 20 for a test-mode key (`sk_test_`, `rk_test_`), 80
    /// for any other, leaving room under Stripe's 25 and 100 for the
    /// account's own calls.
    #[serde(default)]
    pub rate_limit_per_sec: Option<u32>,
    /// The API version sent as `Stripe-Version` on every request, so what
    /// is stored does not depend on the account's default version.
    #[serde(default = "default_api_version")]
    pub api_version: String,
    /// Requests in flight at most.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Pause between polls of `/v1/events` once live.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Polls also read the events created in this many seconds before the
    /// newest one applied, and apply those they have not: Stripe's events
    /// list is eventually consistent, so an event can show after newer ones.
    /// Each poll reads the last 3 s of it (with the new events, in one
    /// request), and the whole span three times per span. The cursor stays
    /// at the newest event (the lag does not grow). 0: only what is newer
    /// than the cursor.
    #[serde(default = "default_lookback_secs")]
    pub lookback_secs: u64,
    /// Resources without events that never change once created (balance
    /// transactions, …) are listed from the newest one seen
    /// (`created[gte]`) this often.
    #[serde(default = "default_created_every_secs")]
    pub created_every_secs: u64,
    /// Resources without events that do change (webhook endpoints, tax
    /// codes, …), child lists followed through their parents, and the
    /// resources whose events miss objects are listed again completely this
    /// often, within a fifth of the request budget (live work first);
    /// objects gone upstream are deleted from the mirror.
    #[serde(default = "default_relist_every_secs")]
    pub relist_every_secs: u64,
    /// Every resource is listed again completely this often, compared with
    /// the mirror, and what differs repaired as `{object}.reconciled`
    /// changes: a missed event, however it was missed, is corrected within
    /// this time. 0: never (`tributary verify` still compares on demand).
    #[serde(default = "default_reconcile_every_secs")]
    pub reconcile_every_secs: u64,
    /// The share of the request budget a reconcile may take (live work
    /// keeps the rest), above 0 and at most 1.
    #[serde(default = "default_reconcile_budget_share")]
    pub reconcile_budget_share: f64,
    /// Resources to mirror, by their path under `/v1` (`customers`,
    /// `checkout/sessions`, `customers/{id}/tax_ids`); default: every list
    /// Stripe serves that holds objects (`tributary resources` lists them).
    #[serde(default)]
    pub resources: Option<Vec<String>>,
    /// Child lists read from their parents' pages with `expand[]`
    /// (`/v1/customers?expand[]=data.tax_ids`): one request per hundred
    /// parents instead of one per parent, and more for a parent whose list
    /// is longer than its first page. Stripe documents a customer's
    /// `sources` and `tax_ids` as expandable; a list the upstream refuses
    /// to expand (a 400) is read per parent instead. `[]`: every child list
    /// per parent.
    #[serde(default = "default_expand_children")]
    pub expand_children: Vec<String>,
    /// Longest pause between retries of a failing request, and before a
    /// stopped account is restarted.
    #[serde(default = "http::default_retry_max_backoff_ms")]
    pub retry_max_backoff_ms: u64,
    /// How long the upstream keeps events (Stripe: 30 days). Used when an
    /// account has no event cursor yet: a longer gap means re-backfill.
    #[serde(default = "default_event_retention_secs")]
    pub event_retention_secs: u64,
    /// Timeout of one HTTP request.
    #[serde(default = "http::default_request_timeout_ms")]
    pub request_timeout_ms: u64,
}

fn default_base_url() -> String {
    "https://api.stripe.com".into()
}
fn default_api_key_env() -> String {
    "STRIPE_API_KEY".into()
}
fn default_api_version() -> String {
    crate::stripe_api::API_VERSION.into()
}

/// The request budget a key gets when `rate_limit_per_sec` is not set.
pub fn default_rate_limit(api_key: &str) -> u32 {
    if api_key.starts_with("sk_test_") || api_key.starts_with("rk_test_") { 20 } else { 80 }
}
fn default_expand_children() -> Vec<String> {
    vec!["customers/{id}/sources".into(), "customers/{id}/tax_ids".into()]
}
fn default_concurrency() -> usize {
    50
}
fn default_poll_interval_ms() -> u64 {
    500
}
fn default_created_every_secs() -> u64 {
    60
}
fn default_relist_every_secs() -> u64 {
    3_600
}
fn default_reconcile_every_secs() -> u64 {
    86_400
}
fn default_reconcile_budget_share() -> f64 {
    0.2
}
fn default_lookback_secs() -> u64 {
    30
}
fn default_event_retention_secs() -> u64 {
    2_592_000
}

/// The known resources closest to an unknown name, closest first.
fn suggest(unknown: &str) -> String {
    let mut known: Vec<(f64, &str)> = mirrored().map(|r| (strsim::jaro_winkler(unknown, r.path), r.path)).collect();
    known.sort_by(|a, b| b.0.total_cmp(&a.0));
    let close: Vec<&str> = known.iter().filter(|(score, _)| *score >= 0.7).take(3).map(|(_, name)| *name).collect();
    match close.as_slice() {
        [] => format!("{} are known, listed by `tributary resources`", mirrored().count()),
        names => format!("did you mean {}?", names.join(" or ")),
    }
}

impl StripeConfig {
    /// A config with every default, for the demo and tests.
    pub fn new(name: &str, base_url: &str, api_key_env: &str) -> Self {
        StripeConfig {
            name: name.into(),
            base_url: base_url.into(),
            api_key_env: api_key_env.into(),
            accounts: Accounts::default(),
            rate_limit_per_sec: None,
            api_version: default_api_version(),
            concurrency: default_concurrency(),
            poll_interval_ms: default_poll_interval_ms(),
            lookback_secs: default_lookback_secs(),
            created_every_secs: default_created_every_secs(),
            relist_every_secs: default_relist_every_secs(),
            reconcile_every_secs: default_reconcile_every_secs(),
            reconcile_budget_share: default_reconcile_budget_share(),
            resources: None,
            expand_children: default_expand_children(),
            retry_max_backoff_ms: http::default_retry_max_backoff_ms(),
            event_retention_secs: default_event_retention_secs(),
            request_timeout_ms: http::default_request_timeout_ms(),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(format!("source '{}': {msg}", self.name)));
        if let Err(reason) = self.client_options("").validate() {
            return invalid(reason);
        }
        if !crate::stripe_api::is_api_version(&self.api_version) {
            return invalid(format!("api_version '{}' is not a Stripe API version (like {})", self.api_version, default_api_version()));
        }
        if self.poll_interval_ms == 0 {
            return invalid("poll_interval_ms must be above 0".into());
        }
        if self.lookback_secs >= self.event_retention_secs {
            return invalid(format!(
                "lookback_secs ({}) must be below event_retention_secs ({}): events older than the retention are gone",
                self.lookback_secs, self.event_retention_secs
            ));
        }
        if self.created_every_secs == 0 || self.relist_every_secs == 0 {
            return invalid("created_every_secs and relist_every_secs must be above 0".into());
        }
        if !(self.reconcile_budget_share > 0.0 && self.reconcile_budget_share <= 1.0) {
            return invalid(format!("reconcile_budget_share ({}) must be above 0 and at most 1", self.reconcile_budget_share));
        }
        match &self.accounts {
            Accounts::Keyword(k) if k == "all" => {}
            Accounts::Keyword(k) => return invalid(format!("accounts = '{k}': use \"all\" or a list of account ids")),
            Accounts::List(ids) => {
                if let Some(bad) =
                    ids.iter().find(|id| !id.starts_with("acct_") || id.contains(|c: char| !c.is_ascii_alphanumeric() && c != '_'))
                {
                    return invalid(format!("'{bad}' is not an account id (acct_…)"));
                }
            }
        }
        if let Some(bad) = self.expand_children.iter().find(|r| crate::stripe_api::by_path(r).and_then(Resource::expandable_from).is_none())
        {
            let expandable: Vec<&str> = mirrored().filter(|r| r.expandable_from().is_some()).map(|r| r.path).collect();
            return invalid(format!(
                "expand_children: '{bad}' is not a child list its parent's list can expand (those are {})",
                expandable.join(", ")
            ));
        }
        if let Some(list) = &self.resources {
            if list.is_empty() {
                return invalid("resources is empty".into());
            }
            if let Some(bad) = list.iter().find(|r| crate::stripe_api::by_path(r).is_none_or(|r| !r.mirrored())) {
                let why = crate::stripe_api::by_path(bad).and_then(|r| r.note);
                return match why {
                    Some(note) => invalid(format!("resource '{bad}' is not mirrored: {note}")),
                    None => invalid(format!("unknown resource '{bad}'; {}", suggest(bad))),
                };
            }
            // a child list is walked from its parents' rows
            let chosen = self.resources();
            if let Some((child, parent)) =
                chosen.iter().filter_map(|r| r.scope.parent.map(|p| (r, p))).find(|(_, parent)| !chosen.iter().any(|r| r.holds(parent)))
            {
                let listed_by: Vec<&str> = mirrored().filter(|r| r.holds(parent)).map(|r| r.path).collect();
                return invalid(format!("resource '{}' is listed per {parent}: add {} to resources", child.path, listed_by.join(" or ")));
            }
        }
        Ok(())
    }

    /// The HTTP options of this source with `api_key` (whose mode sets the
    /// default request budget).
    pub fn client_options(&self, api_key: &str) -> ClientOptions {
        ClientOptions {
            source: self.name.clone(),
            base_url: self.base_url.clone(),
            rate_limit_per_sec: self.rate_limit_per_sec.unwrap_or_else(|| default_rate_limit(api_key)),
            headers: vec![("Stripe-Version".into(), self.api_version.clone())],
            concurrency: self.concurrency,
            request_timeout_ms: self.request_timeout_ms,
            retry_max_backoff_ms: self.retry_max_backoff_ms,
        }
    }

    /// The mirrored child lists read expanded on their parents' pages.
    pub fn expanded(&self) -> Vec<&'static Resource> {
        self.resources().into_iter().filter(|r| self.expand_children.iter().any(|x| x == r.path)).collect()
    }

    /// Every resource to mirror.
    pub fn resources(&self) -> Vec<&'static Resource> {
        mirrored().filter(|r| self.resources.as_ref().is_none_or(|list| list.iter().any(|x| x == r.path))).collect()
    }

    pub fn api_key(&self) -> Result<String, ConfigError> {
        crate::config::error::secret(&self.api_key_env, &format!("sources.{}.api_key_env", self.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_resource_names_the_closest_known_ones() {
        let with = |names: &[&str]| StripeConfig {
            resources: Some(names.iter().map(|n| n.to_string()).collect()),
            ..StripeConfig::new("stripe", "http://127.0.0.1:9", "KEY")
        };
        let error = with(&["customers", "subscriptons"]).validate().unwrap_err().to_string();
        assert!(error.contains("unknown resource 'subscriptons'; did you mean subscriptions or"), "{error}");
        let error = with(&["custmer"]).validate().unwrap_err().to_string();
        assert!(error.contains("did you mean customers"), "{error}");
        let error = with(&["zzz"]).validate().unwrap_err().to_string();
        assert!(error.contains("unknown resource 'zzz'; 109 are known"), "{error}");
        let error = with(&["events"]).validate().unwrap_err().to_string();
        assert!(error.contains("resource 'events' is not mirrored: the events tail itself"), "{error}");
        let error = with(&["customers/{id}/tax_ids"]).validate().unwrap_err().to_string();
        assert!(error.contains("is listed per customer: add customers to resources"), "{error}");
        with(&["customers", "charges", "customers/{id}/tax_ids", "checkout/sessions"]).validate().unwrap();
    }

    #[test]
    fn only_child_lists_under_a_parent_id_are_expanded() {
        let with = |names: &[&str]| StripeConfig {
            expand_children: names.iter().map(|n| n.to_string()).collect(),
            ..StripeConfig::new("stripe", "http://127.0.0.1:9", "KEY")
        };
        with(&[]).validate().unwrap();
        let config = with(&["customers/{id}/tax_ids"]);
        config.validate().unwrap();
        assert_eq!(config.expanded().iter().map(|r| r.path).collect::<Vec<_>>(), ["customers/{id}/tax_ids"]);
        for bad in ["customers", "subscription_items", "customers/{id}/nope"] {
            let error = with(&[bad]).validate().unwrap_err().to_string();
            assert!(error.contains(&format!("expand_children: '{bad}' is not a child list")), "{error}");
        }
    }

    #[test]
    fn a_lookback_must_be_shorter_than_the_event_retention() {
        let with = |lookback_secs, event_retention_secs| StripeConfig {
            lookback_secs,
            event_retention_secs,
            ..StripeConfig::new("stripe", "http://127.0.0.1:9", "KEY")
        };
        with(30, 2_592_000).validate().unwrap();
        with(0, 2).validate().unwrap();
        let error = with(30, 30).validate().unwrap_err().to_string();
        assert!(error.contains("lookback_secs (30) must be below event_retention_secs (30)"), "{error}");
    }

    #[test]
    fn a_reconcile_share_is_a_fraction_of_the_budget() {
        let with =
            |reconcile_budget_share| StripeConfig { reconcile_budget_share, ..StripeConfig::new("stripe", "http://127.0.0.1:9", "KEY") };
        with(0.2).validate().unwrap();
        with(1.0).validate().unwrap();
        for bad in [0.0, -0.1, 1.5, f64::NAN] {
            let error = with(bad).validate().unwrap_err().to_string();
            assert!(error.contains("reconcile_budget_share"), "{error}");
        }
    }

    #[test]
    fn the_default_budget_follows_the_key() {
        assert_eq!(default_rate_limit("sk_test_abc"), 20);
        assert_eq!(default_rate_limit("rk_test_abc"), 20);
        assert_eq!(default_rate_limit("sk_live_abc"), 80);
        assert_eq!(default_rate_limit("rk_live_abc"), 80);
        let config = StripeConfig { rate_limit_per_sec: Some(7), ..StripeConfig::new("stripe", "http://127.0.0.1:9", "KEY") };
        assert_eq!(config.client_options("sk_live_abc").rate_limit_per_sec, 7, "a configured budget wins");
    }
}

//! Configuration of a `rest` source, validated without I/O.

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;

use crate::config::error::ConfigError;
use crate::source::declarative::{self, AuthConfig, Paginator, Path, TimeFormat};
use crate::source::http;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestConfig {
    /// Name used in table names (`{name}_{resource}`) and change routing.
    pub name: String,
    /// Base URL every resource's path is joined onto.
    pub base_url: String,
    /// Environment variable holding a bearer token; used when there is no `auth`.
    #[serde(default = "default_api_key_env")]
    pub api_key_env: String,
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// Headers sent with every request (not secrets).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// How lists are paged, unless a resource says otherwise.
    #[serde(default)]
    pub paginator: Paginator,
    /// Pause between runs (counted from the end of the previous one).
    #[serde(default = "default_poll_interval_secs")]
    pub poll_interval_secs: u64,
    /// Every so often an incremental resource is read whole, and what it
    /// no longer lists is deleted (a resource without `incremental` is read
    /// whole at every run).
    #[serde(default = "default_full_refresh_every_secs")]
    pub full_refresh_every_secs: u64,
    /// The resources, parents before their children.
    pub resources: Vec<ResourceConfig>,
    #[serde(default = "http::default_polling_rate_limit")]
    pub rate_limit_per_sec: u32,
    #[serde(default = "http::default_retry_max_backoff_ms")]
    pub retry_max_backoff_ms: u64,
    #[serde(default = "http::default_request_timeout_ms")]
    pub request_timeout_ms: u64,
}

/// One list the source mirrors.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    /// The object type: its mirror table is `{source}_{name}`.
    pub name: String,
    /// The list's path; `{var}` placeholders are filled from the parent's
    /// rows (`/repos/{owner}/{repo}/issues`).
    pub path: String,
    /// The resource whose rows this one is listed under: once per row.
    #[serde(default)]
    pub parent: Option<String>,
    /// Each placeholder of `path`: the path in the parent's row of its
    /// value (`{ owner = "owner.login", repo = "name" }`).
    #[serde(default)]
    pub params: BTreeMap<String, Path>,
    /// Static query parameters (`{ state = "all", per_page = "100" }`).
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Where the answer holds the list (`$`: the answer is the list).
    #[serde(default = "default_data_path")]
    pub data_path: Path,
    /// The primary key in each row.
    #[serde(default = "default_id_path")]
    pub id_path: Path,
    /// How this list is paged (default: the source's paginator).
    #[serde(default)]
    pub paginator: Option<Paginator>,
    /// Ask only for what changed since the greatest value seen of a field.
    #[serde(default)]
    pub incremental: Option<Incremental>,
}

/// An incremental cursor: `param` sent with the greatest `field` seen so
/// far, less `lookback_secs` (lists are often eventually consistent).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Incremental {
    /// The query parameter (`since`).
    pub param: String,
    /// The field of each row (`updated_at`).
    pub field: Path,
    /// How the field is written (and the parameter, unless `param_format`).
    #[serde(default = "default_format")]
    pub format: TimeFormat,
    #[serde(default)]
    pub param_format: Option<TimeFormat>,
    #[serde(default)]
    pub lookback_secs: u64,
}

fn default_api_key_env() -> String {
    "REST_API_KEY".into()
}
fn default_poll_interval_secs() -> u64 {
    60
}
fn default_full_refresh_every_secs() -> u64 {
    86_400
}
fn default_data_path() -> Path {
    Path::field("$")
}
fn default_id_path() -> Path {
    Path::field("id")
}
fn default_format() -> TimeFormat {
    TimeFormat::Rfc3339
}

/// The `{var}` placeholders of a path.
pub fn placeholders(path: &str) -> Vec<&str> {
    path.split('{').skip(1).filter_map(|rest| rest.split_once('}').map(|(name, _)| name)).collect()
}

declarative::connection_of!(RestConfig);

impl RestConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(format!("source '{}': {msg}", self.name)));
        if let Err(reason) = self.connection().validate(&self.paginator) {
            return invalid(reason);
        }
        if self.poll_interval_secs == 0 || self.full_refresh_every_secs == 0 {
            return invalid("poll_interval_secs and full_refresh_every_secs must be above 0".into());
        }
        if self.resources.is_empty() {
            return invalid("resources must declare at least one list".into());
        }
        let mut seen = HashSet::new();
        for r in &self.resources {
            let field = format!("resources.{}", r.name);
            if let Err(e) = crate::store::ident::mirror_table(&self.name, &r.name) {
                return invalid(format!("{field}: {e}"));
            }
            if !seen.insert(r.name.as_str()) {
                return invalid(format!("{field}: declared twice"));
            }
            if !r.path.starts_with('/') {
                return invalid(format!("{field}.path '{}' must start with /", r.path));
            }
            if let Some(parent) = &r.parent
                && !seen.contains(parent.as_str())
            {
                return invalid(format!("{field}.parent '{parent}' must name a resource declared before it"));
            }
            let wanted: HashSet<&str> = placeholders(&r.path).into_iter().collect();
            let given: HashSet<&str> = r.params.keys().map(String::as_str).collect();
            if wanted != given {
                return invalid(format!("{field}.params must name each placeholder of the path once: {wanted:?} against {given:?}"));
            }
            if r.parent.is_none() && !wanted.is_empty() {
                return invalid(format!("{field}.path has placeholders but no parent to fill them"));
            }
            if let Some(p) = &r.paginator
                && let Err(reason) = p.validate(&format!("sources.{}.{field}.paginator", self.name))
            {
                return invalid(reason);
            }
            if let Some(inc) = &r.incremental
                && inc.param.trim().is_empty()
            {
                return invalid(format!("{field}.incremental.param must not be empty"));
            }
        }
        Ok(())
    }

    /// Every secret the source needs is in the environment.
    pub fn check_env(&self) -> Result<(), ConfigError> {
        self.connection().check_env()
    }
}

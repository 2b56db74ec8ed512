//! `tributary.toml`: parsed, documented and validated without I/O (beyond
//! reading the file); runtime pieces are built from the validated config.

pub mod error;
mod overrides;

pub use error::{ConfigError, secret};

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

use crate::sink::{SinkConfig, SinkKind};
use crate::source::event_queue::EventQueueConfig;
use crate::source::stripe::StripeConfig;
use crate::source::window::WindowConfig;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub api: ApiConfig,
    /// Upstream APIs to mirror.
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    /// Destinations of every change.
    #[serde(default)]
    pub sinks: Vec<SinkConfig>,
    #[serde(default)]
    pub delivery: DeliveryConfig,
    #[serde(default)]
    pub writes: WritesConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
}

/// Metrics beyond `/metrics`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Push every metric to StatsD at `host:port` (UDP); absent: no push.
    #[serde(default)]
    pub statsd: Option<String>,
    /// Send labels as DogStatsD tags (`|#source:stripe`); off: labels are
    /// appended to the name (`name.stripe`).
    #[serde(default = "default_true")]
    pub statsd_tags: bool,
    /// Pause between pushes.
    #[serde(default = "default_statsd_interval_ms")]
    pub statsd_interval_ms: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { statsd: None, statsd_tags: true, statsd_interval_ms: default_statsd_interval_ms() }
    }
}

impl MetricsConfig {
    pub fn statsd(&self) -> Option<crate::telemetry::statsd::StatsdOptions> {
        Some(crate::telemetry::statsd::StatsdOptions {
            address: self.statsd.clone()?,
            tags: self.statsd_tags,
            interval: std::time::Duration::from_millis(self.statsd_interval_ms),
        })
    }
}

pub(crate) fn default_true() -> bool {
    true
}

fn default_statsd_interval_ms() -> u64 {
    10_000
}

/// Idempotent writes through to the upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WritesConfig {
    /// A keyed request unfinished and untouched this long is presumed
    /// abandoned: the completer finishes it, and a retry may take it over.
    #[serde(default = "default_completer_grace_secs")]
    pub completer_grace_secs: u64,
    /// Keys older than this are deleted; the same key then starts anew.
    #[serde(default = "default_idempotency_ttl_hours")]
    pub idempotency_ttl_hours: u64,
}

impl Default for WritesConfig {
    fn default() -> Self {
        WritesConfig { completer_grace_secs: default_completer_grace_secs(), idempotency_ttl_hours: default_idempotency_ttl_hours() }
    }
}

fn default_completer_grace_secs() -> u64 {
    300
}

fn default_idempotency_ttl_hours() -> u64 {
    72
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Changes older than this that every sink has passed are deleted.
    #[serde(default = "default_retention_days")]
    pub retention_days: u64,
    /// Pause between purges of the change log.
    #[serde(default = "default_purge_interval_secs")]
    pub purge_interval_secs: u64,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig { retention_days: default_retention_days(), purge_interval_secs: default_purge_interval_secs() }
    }
}

fn default_retention_days() -> u64 {
    7
}

fn default_purge_interval_secs() -> u64 {
    60
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` (the embedded default) or `postgres://user:pass@host:port/db`.
    #[serde(default = "default_database_url")]
    pub url: String,
    /// Postgres schema holding every table.
    #[serde(default = "default_schema")]
    pub schema: String,
    /// Postgres connections at most (per process).
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig { url: default_database_url(), schema: default_schema(), pool_size: default_pool_size() }
    }
}

impl DatabaseConfig {
    pub fn sqlite(path: &str) -> Self {
        DatabaseConfig { url: format!("sqlite://{path}"), ..DatabaseConfig::default() }
    }

    pub fn options(&self) -> crate::store::Options {
        crate::store::Options { url: self.url.clone(), schema: self.schema.clone(), pool_size: self.pool_size }
    }
}

fn default_schema() -> String {
    "public".into()
}

fn default_pool_size() -> usize {
    16
}

fn default_database_url() -> String {
    "sqlite://tributary.db".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address of the HTTP API (health, metrics, sources, wait, queues).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Env var holding the admin bearer token (creates apps, grants
    /// accounts); absent: the admin routes answer 401.
    #[serde(default)]
    pub admin_token_env: Option<String>,
    /// Env var holding the read token: when set, `/v1/sources`,
    /// `/v1/sinks`, `/metrics` and `/wait` need it (or the admin token);
    /// unset, they are open to anyone who can reach the API.
    #[serde(default)]
    pub read_token_env: Option<String>,
    /// Requests per second one app token may make (bursts up to the same).
    #[serde(default = "default_app_rate_limit_per_sec")]
    pub app_rate_limit_per_sec: u32,
    /// Queues one app may own.
    #[serde(default = "default_max_queues_per_app")]
    pub max_queues_per_app: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: default_listen(),
            admin_token_env: None,
            read_token_env: None,
            app_rate_limit_per_sec: default_app_rate_limit_per_sec(),
            max_queues_per_app: default_max_queues_per_app(),
        }
    }
}

fn default_app_rate_limit_per_sec() -> u32 {
    100
}

fn default_max_queues_per_app() -> usize {
    20
}

impl ApiConfig {
    /// The admin token from the env var `admin_token_env` names.
    pub fn admin_token(&self) -> Result<Option<String>, ConfigError> {
        let Some(var) = &self.admin_token_env else { return Ok(None) };
        secret(var, "api.admin_token_env").map(Some)
    }

    /// The read token from the env var `read_token_env` names.
    pub fn read_token(&self) -> Result<Option<String>, ConfigError> {
        let Some(var) = &self.read_token_env else { return Ok(None) };
        secret(var, "api.read_token_env").map(Some)
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7400))
}

/// One upstream, selected by `kind`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceConfig {
    /// A Stripe-compatible API: lists plus `/v1/events`.
    Stripe(StripeConfig),
    /// An API queried by date window (`GET /v2/shifts?start=…&end=…`).
    Window(WindowConfig),
    /// An upstream pull queue with acknowledgement (`…/events/pull`).
    EventQueue(EventQueueConfig),
    /// Any JSON list API declared as data (resources, parents, cursors).
    Rest(crate::source::rest::RestConfig),
}

impl SourceConfig {
    pub fn name(&self) -> &str {
        match self {
            SourceConfig::Stripe(c) => &c.name,
            SourceConfig::Window(c) => &c.name,
            SourceConfig::EventQueue(c) => &c.name,
            SourceConfig::Rest(c) => &c.name,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Stripe(_) => "stripe",
            SourceConfig::Window(_) => "window",
            SourceConfig::EventQueue(_) => "event_queue",
            SourceConfig::Rest(_) => "rest",
        }
    }

    /// Every secret the source names is in the environment.
    pub fn check_env(&self) -> Result<(), ConfigError> {
        match self {
            SourceConfig::Stripe(c) => c.api_key().map(drop),
            SourceConfig::Window(c) => c.check_env(),
            SourceConfig::EventQueue(c) => c.check_env(),
            SourceConfig::Rest(c) => c.check_env(),
        }
    }
}

/// Merge each source's `preset` under its own fields; true if any had one.
fn apply_presets(table: &mut toml::Table) -> Result<bool, ConfigError> {
    let Some(toml::Value::Array(sources)) = table.get_mut("sources") else { return Ok(false) };
    let mut any = false;
    for (index, source) in sources.iter_mut().enumerate() {
        let Some(source) = source.as_table_mut().filter(|s| s.contains_key("preset")) else { continue };
        let name = source.get("name").and_then(|n| n.as_str()).map(|n| format!("'{n}'")).unwrap_or_else(|| format!("#{}", index + 1));
        crate::source::declarative::preset::apply(source).map_err(|e| ConfigError::Invalid(format!("source {name}: {e}")))?;
        any = true;
    }
    Ok(any)
}

impl Config {
    /// Read, parse and validate a config file.
    /// Read a config file, then apply `TRIBUTARY_…__…` overrides from the
    /// environment ([`overrides`]).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: shown.clone(), source })?;
        Config::parse_with(&text, &shown, std::env::vars())
    }

    /// Parse a config file's text as it is (no environment).
    pub fn parse(text: &str, path: &str) -> Result<Config, ConfigError> {
        Config::parse_with(text, path, std::iter::empty())
    }

    /// Parse a config file's text, with overrides from `vars` (name, value).
    pub fn parse_with(text: &str, path: &str, vars: impl Iterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        let parse_error = |e: toml::de::Error| {
            let line = e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1).unwrap_or(1);
            ConfigError::Parse { path: path.to_string(), line, message: e.message().trim().to_string() }
        };
        let mut table: toml::Table = toml::from_str(text).map_err(parse_error)?;
        let applied = overrides::apply(&mut table, vars)?;
        let presets = apply_presets(&mut table)?;
        let config: Config = if applied.is_empty() && !presets {
            // straight from the text, so errors name their line
            toml::from_str(text).map_err(parse_error)?
        } else {
            let with: Vec<String> = applied.iter().cloned().chain(presets.then(|| "its presets".to_string())).collect();
            Config::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Parse {
                path: format!("{path} with {}", with.join(", ")),
                line: 0,
                message: e.message().trim().to_string(),
            })?
        };
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.database.url.starts_with("sqlite:") && !crate::store::is_postgres(&self.database.url) {
            // the url is not echoed: it may hold a password
            return Err(ConfigError::Invalid("database.url is not supported: use sqlite://PATH or postgres://…".into()));
        }
        if let Err(e) = crate::store::ident::schema_name(&self.database.schema) {
            return Err(ConfigError::Invalid(format!("database.schema: {e}")));
        }
        if self.delivery.purge_interval_secs == 0 {
            return Err(ConfigError::Invalid("delivery.purge_interval_secs must be at least 1".into()));
        }
        if self.api.app_rate_limit_per_sec == 0 {
            return Err(ConfigError::Invalid("api.app_rate_limit_per_sec must be at least 1".into()));
        }
        if let Some(address) = &self.metrics.statsd
            && !address.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0))
        {
            return Err(ConfigError::Invalid(format!("metrics.statsd '{address}' is not host:port")));
        }
        if self.metrics.statsd_interval_ms == 0 {
            return Err(ConfigError::Invalid("metrics.statsd_interval_ms must be above 0".into()));
        }
        if self.database.pool_size == 0 {
            return Err(ConfigError::Invalid("database.pool_size must be at least 1".into()));
        }
        let mut names = HashSet::new();
        for source in &self.sources {
            if !names.insert(source.name()) {
                return Err(ConfigError::Invalid(format!("two sources are named '{}'", source.name())));
            }
            match source {
                SourceConfig::Stripe(c) => c.validate()?,
                SourceConfig::Window(c) => c.validate()?,
                SourceConfig::EventQueue(c) => c.validate()?,
                SourceConfig::Rest(c) => c.validate()?,
            }
        }
        let mut sinks = HashSet::new();
        for sink in &self.sinks {
            if !sinks.insert(sink.name.as_str()) {
                return Err(ConfigError::Invalid(format!("two sinks are named '{}'", sink.name)));
            }
            sink.validate()?;
        }
        Ok(())
    }

    /// Check that every secret the config names is present in the environment.
    pub fn check_env(&self) -> Result<(), ConfigError> {
        for source in &self.sources {
            source.check_env()?;
        }
        for sink in &self.sinks {
            if let SinkKind::Webhook(webhook) = &sink.kind {
                webhook.key(&sink.name)?;
            }
        }
        self.api.admin_token()?;
        self.api.read_token()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[database]
url = "sqlite://./t.db"
[api]
listen = "127.0.0.1:7400"
[[sources]]
name = "stripe"
kind = "stripe"
base_url = "http://127.0.0.1:12111"
api_key_env = "STRIPE_API_KEY"
rate_limit_per_sec = 50
concurrency = 50
poll_interval_ms = 500
"#;

    fn tributary_mirrored() -> usize {
        crate::stripe_api::mirrored().count()
    }

    #[test]
    fn parses_the_documented_example_with_defaults() {
        let config = Config::parse(GOOD, "t.toml").unwrap();
        let SourceConfig::Stripe(s) = &config.sources[0] else { panic!("a stripe source") };
        assert_eq!(s.resources().len(), tributary_mirrored(), "every mirrored resource by default");
        assert_eq!(s.poll_interval_ms, 500);
    }

    #[test]
    fn rejects_unknown_fields_with_a_line_number() {
        let err = Config::parse(&GOOD.replace("concurrency = 50", "concurency = 50"), "t.toml").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("t.toml:"), "{text}");
        assert!(text.contains("concurency"), "{text}");
        assert!(!text.contains('\n'), "one line: {text}");
    }

    #[test]
    fn rejects_bad_values() {
        for (from, to) in [
            ("name = \"stripe\"", "name = \"Stripe Prod\""),
            ("rate_limit_per_sec = 50", "rate_limit_per_sec = 0"),
            ("concurrency = 50", "concurrency = 0"),
            ("base_url = \"http://127.0.0.1:12111\"", "base_url = \"not a url\""),
            ("poll_interval_ms = 500", "resources = [\"customers\", \"spaceships\"]"),
            ("url = \"sqlite://./t.db\"", "url = \"mysql://x\""),
        ] {
            let text = GOOD.replace(from, to);
            assert!(Config::parse(&text, "t.toml").is_err(), "accepted: {to}");
        }
    }

    #[test]
    fn missing_secret_names_the_variable() {
        let text = GOOD.replace("STRIPE_API_KEY", "TRIBUTARY_TEST_SURELY_UNSET_KEY");
        let err = Config::parse(&text, "t.toml").unwrap().check_env().unwrap_err();
        assert!(err.to_string().contains("TRIBUTARY_TEST_SURELY_UNSET_KEY"));
    }
}

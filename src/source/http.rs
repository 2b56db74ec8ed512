//! HTTP to an upstream API: one request budget per source (token bucket plus
//! a bound on requests in flight), bearer auth, the policy of what is
//! retried, and how a URL is built: a path joined onto the parsed base URL,
//! so no path (least of all one the upstream handed us) can send the API key
//! to another host. Every source kind shares it.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::sync::Semaphore;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A final answer from the upstream (see [`crate::retry::retryable`]).
    #[error("{url}: {status} {kind}: {message}")]
    Api { url: String, status: u16, kind: String, code: Option<String>, message: String },
    /// The response was JSON of the wrong shape (not a list, no `id`).
    #[error("{url}: unexpected response: {reason}")]
    Shape { url: String, reason: String },
    #[error("cannot build http client: {0}")]
    Build(String),
    /// A URL the engine will not follow (it would leave the base URL's host
    /// or path prefix). Permanent: never sent, never retried.
    #[error("refused to follow {url:?}: {reason}")]
    Refused { url: String, reason: String },
    /// A request the HTTP client cannot build. Permanent: sending it again
    /// fails the same way.
    #[error("{url}: cannot send: {reason}")]
    Request { url: String, reason: String },
    /// A request given a number of tries that failed every one of them.
    #[error("{url}: gave up after {attempts} tries: {reason}")]
    Exhausted { url: String, attempts: u32, reason: String },
}

impl ClientError {
    /// What went wrong, for callers to branch on and logs to group by.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::Api { .. } => "upstream_refused",
            ClientError::Shape { .. } => "unexpected_response",
            ClientError::Build(_) => "client_build",
            ClientError::Refused { .. } => "url_refused",
            ClientError::Request { .. } => "request_invalid",
            ClientError::Exhausted { .. } => "retries_exhausted",
        }
    }

    /// Errors that no retry can cure: the source stops with them rather
    /// than trying again.
    pub fn is_permanent(&self) -> bool {
        matches!(self, ClientError::Build(_) | ClientError::Refused { .. } | ClientError::Request { .. })
    }

    /// Stripe's answer for a cursor that points at an object that is gone.
    pub fn is_resource_missing(&self) -> bool {
        matches!(self, ClientError::Api { code: Some(code), .. } if code == "resource_missing")
    }

    /// The key may not do this (a restricted key without the permission).
    pub fn is_forbidden(&self) -> bool {
        matches!(self, ClientError::Api { status: 403, .. })
    }

    /// A list the key may not read (403), or one this upstream does not
    /// serve (404 without `resource_missing`: an unrecognized URL, as for
    /// a product the account does not have): the resource is skipped.
    pub fn skips_resource(&self) -> bool {
        self.is_forbidden() || (self.is_not_found() && !self.is_resource_missing())
    }

    /// The upstream's status, for a final answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::Api { status: 404, .. })
    }
}

/// A failed attempt that is worth retrying, with the upstream's hint.
struct Retryable {
    reason: String,
    retry_after: Option<Duration>,
    rate_limited: bool,
}

/// What a source's config says about its HTTP requests.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The source's name, in logs and metrics.
    pub source: String,
    /// Base URL, without a trailing slash.
    pub base_url: String,
    pub rate_limit_per_sec: u32,
    pub concurrency: usize,
    pub request_timeout_ms: u64,
    pub retry_max_backoff_ms: u64,
    /// Headers sent with every request (`Stripe-Version`).
    pub headers: Vec<(String, String)>,
}

/// Defaults the source kinds share.
pub fn default_retry_max_backoff_ms() -> u64 {
    30_000
}

pub fn default_request_timeout_ms() -> u64 {
    30_000
}

/// Requests per second of sources that poll (window, event queue).
pub fn default_polling_rate_limit() -> u32 {
    10
}

impl ClientOptions {
    /// A source's requests, one at a time (window and event queue sources).
    pub fn sequential(source: &str, base_url: &str, rate_limit_per_sec: u32, request_timeout_ms: u64, retry_max_backoff_ms: u64) -> Self {
        ClientOptions {
            source: source.to_string(),
            base_url: base_url.to_string(),
            rate_limit_per_sec,
            concurrency: 1,
            request_timeout_ms,
            retry_max_backoff_ms,
            headers: Vec::new(),
        }
    }

    /// With `headers` sent on every request as well.
    pub fn with_headers(mut self, headers: &std::collections::BTreeMap<String, String>) -> Self {
        self.headers.extend(headers.iter().map(|(k, v)| (k.clone(), v.clone())));
        self
    }

    /// The checks every source kind shares: its name, URL and limits.
    pub fn validate(&self) -> Result<(), String> {
        crate::store::ident::source_name(&self.source).map_err(|e| e.to_string())?;
        if self.source.starts_with("tributary") {
            return Err("names starting with 'tributary' are reserved".into());
        }
        match reqwest::Url::parse(&self.base_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {}
            _ => return Err(format!("base_url '{}' is not an http(s) URL", self.base_url)),
        }
        if self.rate_limit_per_sec == 0 {
            return Err("rate_limit_per_sec must be at least 1".into());
        }
        if self.concurrency == 0 {
            return Err("concurrency must be at least 1".into());
        }
        if self.retry_max_backoff_ms == 0 || self.request_timeout_ms == 0 {
            return Err("retry_max_backoff_ms and request_timeout_ms must be above 0".into());
        }
        self.header_map()?;
        Ok(())
    }

    fn header_map(&self) -> Result<reqwest::header::HeaderMap, String> {
        let mut map = reqwest::header::HeaderMap::new();
        for (name, value) in &self.headers {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("'{name}' is not a header name"))?;
            let value = reqwest::header::HeaderValue::from_str(value).map_err(|_| format!("{name}: '{value}' is not a header value"))?;
            map.insert(name, value);
        }
        Ok(map)
    }
}

/// A value (an id or code from upstream data) percent-encoded to sit in a
/// path segment or a query value: it can add no segment and no parameter.
pub fn encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// Why `path_and_query` is not a plain absolute path with an optional
/// query: `//host`, `@host`, `http://…`, dot segments, control characters,
/// spaces, backslashes and fragments all are refused.
fn plain_path(path_and_query: &str) -> Result<(&str, Option<&str>), &'static str> {
    let (path, query) = match path_and_query.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path_and_query, None),
    };
    if !path.starts_with('/') || path.starts_with("//") {
        return Err("not a path relative to the base URL");
    }
    if path_and_query.chars().any(|c| c.is_control() || c.is_whitespace() || c == '\\' || c == '#') {
        return Err("contains a control character, space, backslash or '#'");
    }
    let dot_segment = |segment: &str| {
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        decoded == "." || decoded == ".."
    };
    if path.split('/').any(dot_segment) {
        return Err("contains a '.' or '..' segment");
    }
    Ok((path, query))
}

/// Join `path_and_query` (`/v1/customers?limit=100`) onto `base`: the path
/// is appended to the base's own path and the query replaces its query.
/// Scheme, host, port and credentials always come from `base`; anything but
/// a plain path (see [`plain_path`]) is refused.
pub fn join(base: &reqwest::Url, path_and_query: &str) -> Result<reqwest::Url, ClientError> {
    let refuse = |reason: &str| ClientError::Refused { url: path_and_query.to_string(), reason: reason.to_string() };
    let (path, query) = plain_path(path_and_query).map_err(refuse)?;
    let mut url = base.clone();
    url.set_path(&format!("{}{path}", base.path().trim_end_matches('/')));
    url.set_query(query);
    url.set_fragment(None);
    // set_path and set_query cannot change the authority; checked anyway,
    // as this is what keeps the API key on its host
    if url.origin() != base.origin() || url.username() != base.username() || url.password() != base.password() {
        return Err(refuse("would leave the base URL's host"));
    }
    Ok(url)
}

/// Check a URL the upstream handed us (a nested list's `url`) before it is
/// followed: a plain relative path under `prefix` (`/v1/`), nothing else.
/// `what` names the object and field in the error.
pub fn check_upstream_path(what: &str, path_and_query: &str, prefix: &str) -> Result<(), ClientError> {
    let refused =
        |reason: &str| ClientError::Refused { url: path_and_query.to_string(), reason: format!("{what}: {reason}; not followed") };
    if !path_and_query.starts_with(prefix) {
        return Err(refused(&format!("not a relative path under {prefix}")));
    }
    plain_path(path_and_query).map_err(refused)?;
    Ok(())
}

/// The share of a source's request budget background work may take.
pub const BACKGROUND_SHARE: f64 = 0.2;

/// A share of a source's request budget: work that waits here first (and
/// then for the budget itself) takes at most this share, so live work
/// keeps the rest.
pub struct Share(DefaultDirectRateLimiter);

impl Share {
    /// `fraction` of `rate_limit_per_sec`, at least one request a second.
    pub fn of(rate_limit_per_sec: u32, fraction: f64) -> Share {
        let rate = ((rate_limit_per_sec as f64 * fraction) as u32).max(1);
        Share(RateLimiter::direct(Quota::per_second(NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN)).allow_burst(NonZeroU32::MIN)))
    }
}

/// How a source's requests prove who they are: a static key, or a token
/// that is fetched, cached and renewed ([`crate::source::declarative::auth`]).
#[async_trait::async_trait]
pub trait Authorize: Send + Sync {
    /// `request` with credentials added, and the generation of those
    /// credentials (a later 401 names the token it refused).
    async fn authorize(&self, request: reqwest::RequestBuilder) -> Result<(reqwest::RequestBuilder, u64), ClientError>;

    /// The upstream refused (401) the credentials of `generation`: forget
    /// them. True when the request is worth sending once more with new ones.
    async fn refused(&self, _generation: u64) -> bool {
        false
    }
}

/// A static API key sent as a bearer token (Stripe's secret key).
pub struct BearerKey(pub String);

#[async_trait::async_trait]
impl Authorize for BearerKey {
    async fn authorize(&self, request: reqwest::RequestBuilder) -> Result<(reqwest::RequestBuilder, u64), ClientError> {
        Ok((request.bearer_auth(&self.0), 0))
    }
}

/// No credentials (a token endpoint, whose request carries its own).
pub struct Anonymous;

#[async_trait::async_trait]
impl Authorize for Anonymous {
    async fn authorize(&self, request: reqwest::RequestBuilder) -> Result<(reqwest::RequestBuilder, u64), ClientError> {
        Ok((request, 0))
    }
}

/// What a request carries besides its URL.
#[derive(Default, Clone, Copy)]
pub struct Extra<'a> {
    /// Headers of this request only (`Stripe-Account`, `W-Key`).
    pub headers: &'a [(&'a str, &'a str)],
    pub body: Body<'a>,
    /// User and password of HTTP basic auth (an OAuth client's).
    pub basic: Option<(&'a str, &'a str)>,
    /// Tries at most (absent: until a final answer).
    pub attempts: Option<u32>,
}

#[derive(Default, Clone, Copy)]
pub enum Body<'a> {
    #[default]
    None,
    Json(&'a Value),
    Form(&'a [(&'a str, &'a str)]),
}

/// An answer: its JSON and the `Link` header's `rel="next"` URL, if any.
pub struct Answer<T> {
    pub body: T,
    pub link_next: Option<String>,
}

pub struct Client {
    http: reqwest::Client,
    base_url: reqwest::Url,
    auth: std::sync::Arc<dyn Authorize>,
    source: String,
    limiter: DefaultDirectRateLimiter,
    /// Background work (re-listing) also waits here first: it takes at most
    /// [`BACKGROUND_SHARE`] of the budget, the rest stays for live work.
    background: Share,
    rate_limit_per_sec: u32,
    in_flight: Semaphore,
    max_backoff: Duration,
}

impl Client {
    /// A client that sends `api_key` as a bearer token.
    pub fn new(config: &ClientOptions, api_key: String) -> Result<Self, ClientError> {
        Client::with_auth(config, std::sync::Arc::new(BearerKey(api_key)))
    }

    pub fn with_auth(config: &ClientOptions, auth: std::sync::Arc<dyn Authorize>) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.request_timeout_ms))
            .user_agent(concat!("tributary/", env!("CARGO_PKG_VERSION")))
            .default_headers(config.header_map().map_err(ClientError::Build)?)
            .build()
            .map_err(|e| ClientError::Build(e.to_string()))?;
        let rate = NonZeroU32::new(config.rate_limit_per_sec).unwrap_or(NonZeroU32::MIN);
        // a burst of a tenth of a second's budget: requests stay evenly
        // spaced, so any one-second window sees at most 1.1x the rate
        let burst = NonZeroU32::new(config.rate_limit_per_sec / 10).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_second(rate).allow_burst(burst);
        let base_url = reqwest::Url::parse(&config.base_url)
            .map_err(|e| ClientError::Build(format!("base_url '{}' is not a URL: {e}", config.base_url)))?;
        Ok(Client {
            http,
            base_url,
            auth,
            source: config.source.clone(),
            limiter: RateLimiter::direct(quota),
            background: Share::of(config.rate_limit_per_sec, BACKGROUND_SHARE),
            rate_limit_per_sec: config.rate_limit_per_sec,
            in_flight: Semaphore::new(config.concurrency),
            max_backoff: Duration::from_millis(config.retry_max_backoff_ms),
        })
    }

    /// The source whose requests these are.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn max_backoff(&self) -> Duration {
        self.max_backoff
    }

    /// The request budget, per second.
    pub fn rate_limit_per_sec(&self) -> u32 {
        self.rate_limit_per_sec
    }

    /// The URL every path is joined onto.
    pub fn base_url(&self) -> &reqwest::Url {
        &self.base_url
    }

    /// GET a path (with query) as the platform or a connected account
    /// (Stripe's `Stripe-Account` header).
    pub async fn get(&self, path: &str, account: Option<&str>) -> Result<Value, ClientError> {
        Ok(self.request(reqwest::Method::GET, path, Extra { headers: &stripe_account(&account), ..Extra::default() }).await?.body)
    }

    /// [`Client::get`], the answer checked to be JSON but kept as text.
    pub async fn get_raw(&self, path: &str, account: Option<&str>) -> Result<Box<RawValue>, ClientError> {
        Ok(self.request(reqwest::Method::GET, path, Extra { headers: &stripe_account(&account), ..Extra::default() }).await?.body)
    }

    /// GET as background work: within [`BACKGROUND_SHARE`] of the budget.
    pub async fn get_background(&self, path: &str, account: Option<&str>) -> Result<Value, ClientError> {
        self.get_within(&self.background, path, account).await
    }

    /// GET within `share` of the budget.
    pub async fn get_within(&self, share: &Share, path: &str, account: Option<&str>) -> Result<Value, ClientError> {
        share.0.until_ready().await;
        self.get(path, account).await
    }

    /// POST a JSON body to a path.
    pub async fn post_json(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        Ok(self.request(reqwest::Method::POST, path, Extra { body: Body::Json(body), ..Extra::default() }).await?.body)
    }

    /// Send one request until it gets a final answer. What the shared
    /// policy calls retryable ([`crate::retry::retryable`]: the upstream's
    /// `Stripe-Should-Retry`, else 409, 429 and 5xx), network errors and
    /// malformed JSON are retried with capped exponential backoff and jitter
    /// (honouring `Retry-After`); other answers are final. A 401 is sent
    /// once more when the credentials could be renewed (an expired token).
    pub async fn request<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        extra: Extra<'_>,
    ) -> Result<Answer<T>, ClientError> {
        let url = join(&self.base_url, path)?;
        let shown = format!("{method} {url}");
        let mut attempt: u32 = 0;
        let mut renewed = false;
        loop {
            match self.attempt(&method, url.clone(), &shown, extra).await {
                Ok((Ok(answer), _)) => {
                    metrics::counter!("tributary_pages_fetched_total", "source" => self.source.clone()).increment(1);
                    return Ok(answer);
                }
                Ok((Err(e), generation)) if e.status() == Some(401) && !renewed && self.auth.refused(generation).await => {
                    renewed = true;
                    tracing::info!(source = %self.source, url = %shown, "credentials refused (401); renewed them, sending again");
                }
                Ok((Err(final_error), _)) => return Err(final_error),
                Err(retry) => {
                    attempt += 1;
                    if extra.attempts.is_some_and(|most| attempt >= most) {
                        return Err(ClientError::Exhausted { url: shown, attempts: attempt, reason: retry.reason });
                    }
                    if retry.rate_limited {
                        metrics::counter!("tributary_upstream_rate_limited_total", "source" => self.source.clone()).increment(1);
                    } else {
                        metrics::counter!("tributary_upstream_errors_total", "source" => self.source.clone()).increment(1);
                    }
                    let delay = crate::retry::backoff(attempt, self.max_backoff).max(retry.retry_after.unwrap_or_default());
                    tracing::warn!(source = %self.source, url = %shown, attempt, retry_in_ms = delay.as_millis() as u64, "request failed, retrying: {}", retry.reason);
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// One try: a final answer (with the generation of the credentials it
    /// carried), or a failure worth retrying.
    async fn attempt<T: DeserializeOwned>(
        &self,
        method: &reqwest::Method,
        url: reqwest::Url,
        shown: &str,
        extra: Extra<'_>,
    ) -> Result<(Result<Answer<T>, ClientError>, u64), Retryable> {
        self.limiter.until_ready().await;
        let _permit = self.in_flight.acquire().await.expect("semaphore never closed");
        let mut request = self.http.request(method.clone(), url);
        for (name, value) in extra.headers {
            request = request.header(*name, *value);
        }
        if let Some((user, password)) = extra.basic {
            request = request.basic_auth(user, Some(password));
        }
        request = match extra.body {
            Body::None => request,
            Body::Json(body) => request.json(body),
            Body::Form(fields) => request.form(fields),
        };
        // the token endpoint's own client has retried what was worth it
        let (request, generation) = match self.auth.authorize(request).await {
            Ok(authorized) => authorized,
            Err(e) => return Ok((Err(e), 0)),
        };
        let response = match request.send().await {
            Ok(response) => response,
            // a request that cannot even be built fails the same way every time
            Err(e) if e.is_builder() => {
                return Ok((Err(ClientError::Request { url: shown.to_string(), reason: crate::telemetry::error_chain(&e) }), generation));
            }
            Err(e) => return Err(Retryable { reason: crate::telemetry::error_chain(&e), retry_after: None, rate_limited: false }),
        };
        let status = response.status();
        let header = |name: reqwest::header::HeaderName| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let retry_after = header(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| Duration::from_secs_f64(s.min(300.0)));
        let should_retry = header(reqwest::header::HeaderName::from_static("stripe-should-retry"));
        let link_next = header(reqwest::header::LINK).and_then(|link| link_next(&link));
        let body = response.bytes().await.map_err(|e| Retryable {
            reason: format!("reading body: {e}"),
            retry_after: None,
            rate_limited: false,
        })?;
        if !status.is_success() && crate::retry::retryable(status.as_u16(), should_retry.as_deref()) {
            let rate_limited = status == StatusCode::TOO_MANY_REQUESTS;
            return Err(Retryable { reason: format!("{status}: {}", snippet(&body)), retry_after, rate_limited });
        }
        if status.is_success() {
            return match serde_json::from_slice::<T>(&body) {
                Ok(body) => Ok((Ok(Answer { body, link_next }), generation)),
                Err(e) => {
                    tracing::error!(source = %self.source, url = %shown, "malformed json from upstream: {e}");
                    Err(Retryable { reason: format!("malformed json: {e}"), retry_after: None, rate_limited: false })
                }
            };
        }
        Ok((Err(api_error(shown, status.as_u16(), &body)), generation))
    }
}

/// The `Stripe-Account` header of a connected account's request.
fn stripe_account<'a>(account: &Option<&'a str>) -> Vec<(&'static str, &'a str)> {
    account.map(|a| ("Stripe-Account", a)).into_iter().collect()
}

/// A final error answer, read the ways APIs write one: Stripe's
/// `{"error":{"type","code","message"}}`, WhenIWork's `{"error":"…","code":1000}`,
/// Tiki's `{"errors":["…"]}`, else the start of the body.
fn api_error(url: &str, status: u16, body: &[u8]) -> ClientError {
    let answer = serde_json::from_slice::<Value>(body).unwrap_or(Value::Null);
    let error = &answer["error"];
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let message = text(&error["message"])
        .or_else(|| text(error))
        .or_else(|| answer["errors"].as_array().map(|list| list.iter().filter_map(text).collect::<Vec<_>>().join("; ")))
        .or_else(|| text(&answer["message"]))
        .unwrap_or_else(|| snippet(body));
    ClientError::Api {
        url: url.to_string(),
        status,
        kind: text(&error["type"]).unwrap_or_else(|| "unknown_error".into()),
        code: text(&error["code"]).or_else(|| text(&answer["code"])),
        message,
    }
}

/// The URL of `rel="next"` in a `Link` header (RFC 8288), as GitHub sends it:
/// `<https://api.github.com/…?page=2>; rel="next", <…>; rel="last"`.
pub fn link_next(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.trim().split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        let next = params.split(';').any(|p| {
            let p = p.trim();
            p.strip_prefix("rel=").is_some_and(|rel| rel.trim_matches('"').split_whitespace().any(|r| r.eq_ignore_ascii_case("next")))
        });
        next.then(|| target.to_string())
    })
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    text.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(url: &str) -> reqwest::Url {
        reqwest::Url::parse(url).unwrap()
    }

    #[test]
    fn join_appends_the_path_to_the_base_path_and_keeps_the_host() {
        let joined = join(&base("https://api.stripe.com"), "/v1/customers?limit=100&starting_after=cus_1").unwrap();
        assert_eq!(joined.as_str(), "https://api.stripe.com/v1/customers?limit=100&starting_after=cus_1");
        let joined = join(&base("http://127.0.0.1:9/proxy/stripe/"), "/v1/invoices/in_1/lines").unwrap();
        assert_eq!(joined.as_str(), "http://127.0.0.1:9/proxy/stripe/v1/invoices/in_1/lines");
    }

    #[test]
    fn join_refuses_whatever_could_reach_another_host() {
        // with text concatenation each of these moved the request (and its
        // bearer token) to another host
        for hostile in [
            "@127.0.0.2:17601/x",
            ":x@127.0.0.2:17601/y",
            ".evil.example/x",
            "http://other-host/v1/x",
            "//other/v1/x",
            "/\\other/v1/x",
            " http://other-host/",
            "/v1/../../x",
            "/v1/%2e%2E/x",
            "/v1/x#@other",
        ] {
            let refused = join(&base("https://api.stripe.com"), hostile);
            assert!(matches!(refused, Err(ClientError::Refused { .. })), "{hostile:?} was not refused: {refused:?}");
        }
    }

    #[test]
    fn the_next_link_is_read_from_a_link_header() {
        let github = r#"<https://api.github.com/repositories/1/issues?page=2>; rel="next", <https://api.github.com/repositories/1/issues?page=9>; rel="last""#;
        assert_eq!(link_next(github).as_deref(), Some("https://api.github.com/repositories/1/issues?page=2"));
        assert_eq!(link_next(r#"<https://x/a?page=1>; rel="prev first""#), None);
        assert_eq!(link_next(r#"<https://x/a?page=3>; rel="last next""#).as_deref(), Some("https://x/a?page=3"));
        assert_eq!(link_next("garbage"), None);
    }

    #[test]
    fn error_answers_are_read_in_each_api_shape() {
        let read = |body: &str| match api_error("GET /x", 401, body.as_bytes()) {
            ClientError::Api { message, code, .. } => (message, code),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            read(r#"{"error":{"type":"invalid_request_error","code":"resource_missing","message":"No such customer"}}"#),
            ("No such customer".into(), Some("resource_missing".into()))
        );
        assert_eq!(
            read(r#"{"error":"User login required for this resource.","code":1000}"#),
            ("User login required for this resource.".into(), Some("1000".into()))
        );
        assert_eq!(read(r#"{"errors":["token expired","try again"]}"#), ("token expired; try again".into(), None));
        assert_eq!(read("<html>gateway</html>"), ("<html>gateway</html>".into(), None));
    }

    #[test]
    fn upstream_paths_must_stay_under_the_prefix() {
        check_upstream_path("invoice in_1, field 'lines.url'", "/v1/invoices/in_1/lines", "/v1/").unwrap();
        check_upstream_path("subscription sub_1, field 'items.url'", "/v1/subscription_items?subscription=sub_1", "/v1/").unwrap();
        for hostile in ["@127.0.0.2:17601/x", "/v2/x", "/v1x/y", "/v1/../x", "https://api.stripe.com/v1/x", ""] {
            let error = check_upstream_path("invoice in_1, field 'lines.url'", hostile, "/v1/").unwrap_err();
            assert_eq!(error.kind(), "url_refused");
            assert!(error.to_string().contains("invoice in_1, field 'lines.url'"), "{error}");
        }
    }
}

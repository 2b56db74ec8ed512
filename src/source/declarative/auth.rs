//! How a declared API's requests prove who they are (`auth = { kind = … }`):
//! a static secret (bearer, any header, basic, a query parameter), or a
//! token fetched from the API and renewed before it expires or when a
//! request is refused with 401 (a login, OAuth2 client credentials, an
//! OAuth2 refresh token that rotates). Secrets always come from env vars.
//!
//! A rotated refresh token is committed to the store (checkpoint
//! `auth/{key}`) the moment it arrives, so a restart uses the newest one;
//! a new token in the env var (a fresh authorization) wins over it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::select::Path;
use crate::config::error::{ConfigError, secret};
use crate::source::http::{Anonymous, Authorize, Body, Client, ClientError, ClientOptions, Extra};
use crate::store::{Batch, Checkpoint, Store};

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AuthConfig {
    /// `Authorization: Bearer <token>`.
    Bearer(StaticToken),
    /// The token in a header of its own (`W-Token: <token>`).
    Header(HeaderToken),
    /// HTTP basic auth.
    Basic(BasicAuth),
    /// The token as a query parameter (`?api_key=…`).
    Query(QueryToken),
    /// A login request whose answer holds the token (WhenIWork).
    Login(LoginAuth),
    /// An OAuth2 token for the client itself (Tiki's app token).
    Oauth2ClientCredentials(ClientCredentials),
    /// An OAuth2 token from a refresh token, which may rotate (a seller's
    /// token for a public app).
    Oauth2RefreshToken(RefreshToken),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticToken {
    /// Env var holding the token.
    pub token_env: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderToken {
    /// The header's name (`W-Token`).
    pub name: String,
    /// Env var holding the token.
    pub token_env: String,
    /// Written before the token (`Token `); default none.
    #[serde(default)]
    pub prefix: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username_env: String,
    pub password_env: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryToken {
    /// The query parameter's name.
    pub name: String,
    pub token_env: String,
}

/// Where a fetched token goes on each request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenUse {
    /// The header carrying the token (`W-Token`); absent: `Authorization: Bearer`.
    #[serde(default)]
    pub token_header: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginAuth {
    /// URL of the login request (POST, JSON body); it may be on another
    /// host than `base_url` (`https://api.login.wheniwork.com/login`).
    pub url: String,
    /// Headers of the login request whose values are secrets: header name
    /// to env var (`{ "W-Key" = "WIW_KEY" }`).
    #[serde(default)]
    pub headers_env: BTreeMap<String, String>,
    /// Fields of the login body whose values are secrets: field to env var
    /// (`{ email = "WIW_EMAIL", password = "WIW_PASSWORD" }`).
    #[serde(default)]
    pub body_env: BTreeMap<String, String>,
    /// Where the answer holds the token.
    #[serde(default = "default_token_path")]
    pub token_path: Path,
    /// Where the answer holds the token's lifetime in seconds, if it does.
    #[serde(default)]
    pub expires_in_path: Option<Path>,
    /// The token's lifetime when the answer does not say; absent: used
    /// until a request is refused with 401.
    #[serde(default)]
    pub lifetime_secs: Option<u64>,
    #[serde(default)]
    pub token_header: Option<String>,
}

/// How an OAuth2 client proves itself at the token endpoint (fixed per
/// app when it is registered).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP basic auth (`client_secret_basic`).
    #[default]
    Basic,
    /// In the form body (`client_secret_post`).
    Form,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCredentials {
    /// The token endpoint (`https://api.tiki.vn/sc/oauth2/token`).
    pub token_url: String,
    pub client_id_env: String,
    pub client_secret_env: String,
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// The `scope` asked for; absent: none sent.
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub token_header: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshToken {
    pub token_url: String,
    pub client_id_env: String,
    pub client_secret_env: String,
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Env var holding the first refresh token (from the authorization);
    /// the rotated ones are kept in the store.
    #[serde(default)]
    pub refresh_token_env: Option<String>,
    /// Or a file holding it (a mounted secret), instead of the env var.
    #[serde(default)]
    pub refresh_token_file: Option<String>,
    #[serde(default)]
    pub token_header: Option<String>,
}

impl RefreshToken {
    /// The first refresh token, from its env var or its file; `field`
    /// names this auth in errors.
    fn first_token(&self, field: &str) -> Result<String, ConfigError> {
        match (&self.refresh_token_env, &self.refresh_token_file) {
            (Some(var), None) => secret(var, &format!("{field}.refresh_token_env")),
            (None, Some(path)) => match std::fs::read_to_string(path) {
                Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_string()),
                Ok(_) => Err(ConfigError::Invalid(format!("{field}.refresh_token_file: '{path}' is empty"))),
                Err(e) => Err(ConfigError::Invalid(format!("{field}.refresh_token_file: cannot read '{path}': {e}"))),
            },
            _ => Err(ConfigError::Invalid(format!("{field}: name one of refresh_token_env and refresh_token_file"))),
        }
    }
}

fn default_token_path() -> Path {
    Path::field("token")
}

/// Env vars read, as (var, field naming it) pairs.
type Vars = Vec<(String, String)>;

impl AuthConfig {
    /// Check what can be checked without I/O; `field` names this config
    /// (`sources.wiw.auth`) in errors.
    pub fn validate(&self, field: &str) -> Result<(), String> {
        let url = |name: &str, url: &str| match reqwest::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(()),
            _ => Err(format!("{field}.{name}: '{url}' is not an http(s) URL")),
        };
        let header = |name: &str, value: &str| {
            reqwest::header::HeaderName::from_bytes(value.as_bytes())
                .map(drop)
                .map_err(|_| format!("{field}.{name}: '{value}' is not a header name"))
        };
        match self {
            AuthConfig::Header(h) => header("name", &h.name)?,
            AuthConfig::Query(q) if q.name.is_empty() => return Err(format!("{field}.name: must not be empty")),
            AuthConfig::Login(l) => {
                url("url", &l.url)?;
                for name in l.headers_env.keys() {
                    header("headers_env", name)?;
                }
                if let Some(name) = &l.token_header {
                    header("token_header", name)?;
                }
                if l.lifetime_secs == Some(0) {
                    return Err(format!("{field}.lifetime_secs: must be above 0"));
                }
            }
            AuthConfig::Oauth2ClientCredentials(c) => {
                url("token_url", &c.token_url)?;
                if let Some(name) = &c.token_header {
                    header("token_header", name)?;
                }
            }
            AuthConfig::Oauth2RefreshToken(r) => {
                url("token_url", &r.token_url)?;
                if let Some(name) = &r.token_header {
                    header("token_header", name)?;
                }
                if r.refresh_token_env.is_some() == r.refresh_token_file.is_some() {
                    return Err(format!("{field}: name one of refresh_token_env and refresh_token_file"));
                }
            }
            _ => {}
        }
        for (var, name) in self.vars(field) {
            if var.trim().is_empty() {
                return Err(format!("{name}: must name an environment variable"));
            }
        }
        Ok(())
    }

    /// Every env var this auth reads, each with the field that names it.
    fn vars(&self, field: &str) -> Vars {
        let at = |name: &str, var: &str| (var.to_string(), format!("{field}.{name}"));
        match self {
            AuthConfig::Bearer(t) => vec![at("token_env", &t.token_env)],
            AuthConfig::Header(h) => vec![at("token_env", &h.token_env)],
            AuthConfig::Basic(b) => vec![at("username_env", &b.username_env), at("password_env", &b.password_env)],
            AuthConfig::Query(q) => vec![at("token_env", &q.token_env)],
            AuthConfig::Login(l) => l
                .headers_env
                .iter()
                .map(|(name, var)| at(&format!("headers_env.{name}"), var))
                .chain(l.body_env.iter().map(|(name, var)| at(&format!("body_env.{name}"), var)))
                .collect(),
            AuthConfig::Oauth2ClientCredentials(c) => {
                vec![at("client_id_env", &c.client_id_env), at("client_secret_env", &c.client_secret_env)]
            }
            AuthConfig::Oauth2RefreshToken(r) => {
                let mut vars = vec![at("client_id_env", &r.client_id_env), at("client_secret_env", &r.client_secret_env)];
                vars.extend(r.refresh_token_env.iter().map(|var| at("refresh_token_env", var)));
                vars
            }
        }
    }

    /// Every secret this auth needs is in the environment (or its file).
    pub fn check_env(&self, field: &str) -> Result<(), ConfigError> {
        for (var, name) in self.vars(field) {
            secret(&var, &name)?;
        }
        if let AuthConfig::Oauth2RefreshToken(r) = self {
            r.first_token(field)?;
        }
        Ok(())
    }
}

/// The runtime of an [`AuthConfig`]: what each request carries, and the
/// token cache behind it.
pub struct Auth {
    how: How,
    /// The source's name, in logs and in the store's checkpoints.
    source: String,
    token: tokio::sync::Mutex<Option<Token>>,
    /// Bumped with every new token: a 401 names the one it refused.
    generation: AtomicU64,
}

// one per source (or seller): its size does not matter
#[allow(clippy::large_enum_variant)]
enum How {
    Static { header: reqwest::header::HeaderName, value: String },
    Basic { username: String, password: String },
    Query { name: String, value: String },
    Fetched { fetch: Fetch, client: Client, path: String, token_header: Option<String> },
}

/// How a token is fetched.
enum Fetch {
    Login { headers: Vec<(String, String)>, body: Value, token_path: Path, expires_in_path: Option<Path>, lifetime: Option<Duration> },
    ClientCredentials { client: OAuthClient, scope: Option<String> },
    Refresh { client: OAuthClient, from_env: String, store: Arc<dyn Store>, key: String },
}

struct OAuthClient {
    id: String,
    secret: String,
    auth: ClientAuth,
}

struct Token {
    value: String,
    /// Fetch a new one from this moment (`None`: only after a 401).
    renew_at: Option<Instant>,
}

/// What the token endpoints answer (OAuth2, RFC 6749 §5.1).
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<f64>,
    #[serde(default)]
    refresh_token: Option<String>,
}

/// The checkpoint holding a rotated refresh token, and the digest of the
/// env var's token it descends from.
#[derive(serde::Serialize, Deserialize)]
struct StoredRefresh {
    refresh_token: String,
    from_env_sha256: String,
}

fn sha256(text: &str) -> String {
    Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

impl Auth {
    /// Build the runtime, reading the secrets; `key` tells apart the tokens
    /// of one source (one per seller) in the store.
    pub fn new(config: &AuthConfig, field: &str, options: &ClientOptions, store: Arc<dyn Store>, key: &str) -> Result<Auth, ClientError> {
        let env = |var: &str, name: &str| secret(var, &format!("{field}.{name}")).map_err(|e| ClientError::Build(e.to_string()));
        let header = |name: &str| {
            reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| ClientError::Build(format!("'{name}' is not a header name")))
        };
        let oauth_client = |id_env: &str, secret_env: &str, auth: ClientAuth| -> Result<OAuthClient, ClientError> {
            Ok(OAuthClient { id: env(id_env, "client_id_env")?, secret: env(secret_env, "client_secret_env")?, auth })
        };
        let fetched = |url: &str, fetch: Fetch, token_header: &Option<String>| -> Result<How, ClientError> {
            let (client, path) = token_client(url, options)?;
            Ok(How::Fetched { fetch, client, path, token_header: token_header.clone() })
        };
        let how = match config {
            AuthConfig::Bearer(t) => {
                How::Static { header: reqwest::header::AUTHORIZATION, value: format!("Bearer {}", env(&t.token_env, "token_env")?) }
            }
            AuthConfig::Header(h) => {
                How::Static { header: header(&h.name)?, value: format!("{}{}", h.prefix, env(&h.token_env, "token_env")?) }
            }
            AuthConfig::Basic(b) => {
                How::Basic { username: env(&b.username_env, "username_env")?, password: env(&b.password_env, "password_env")? }
            }
            AuthConfig::Query(q) => How::Query { name: q.name.clone(), value: env(&q.token_env, "token_env")? },
            AuthConfig::Login(l) => {
                let mut headers = Vec::new();
                for (name, var) in &l.headers_env {
                    headers.push((name.clone(), env(var, &format!("headers_env.{name}"))?));
                }
                let mut body = serde_json::Map::new();
                for (name, var) in &l.body_env {
                    body.insert(name.clone(), Value::String(env(var, &format!("body_env.{name}"))?));
                }
                let fetch = Fetch::Login {
                    headers,
                    body: Value::Object(body),
                    token_path: l.token_path.clone(),
                    expires_in_path: l.expires_in_path.clone(),
                    lifetime: l.lifetime_secs.map(Duration::from_secs),
                };
                fetched(&l.url, fetch, &l.token_header)?
            }
            AuthConfig::Oauth2ClientCredentials(c) => {
                let client = oauth_client(&c.client_id_env, &c.client_secret_env, c.client_auth)?;
                fetched(&c.token_url, Fetch::ClientCredentials { client, scope: c.scope.clone() }, &c.token_header)?
            }
            AuthConfig::Oauth2RefreshToken(r) => {
                let client = oauth_client(&r.client_id_env, &r.client_secret_env, r.client_auth)?;
                let from_env = r.first_token(field).map_err(|e| ClientError::Build(e.to_string()))?;
                let fetch = Fetch::Refresh { client, from_env, store, key: format!("auth/{key}") };
                fetched(&r.token_url, fetch, &r.token_header)?
            }
        };
        Ok(Auth { how, source: options.source.clone(), token: tokio::sync::Mutex::new(None), generation: AtomicU64::new(0) })
    }

    /// The current token, fetched when there is none or it is about to expire.
    async fn token(&self) -> Result<(String, u64), ClientError> {
        let How::Fetched { fetch, client, path, .. } = &self.how else { unreachable!("only fetched tokens are cached") };
        let mut held = self.token.lock().await;
        if let Some(token) = held.as_ref().filter(|t| t.renew_at.is_none_or(|at| Instant::now() < at)) {
            return Ok((token.value.clone(), self.generation.load(Ordering::SeqCst)));
        }
        let token = self.fetch(fetch, client, path).await?;
        let value = token.value.clone();
        *held = Some(token);
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        Ok((value, generation))
    }

    async fn fetch(&self, fetch: &Fetch, client: &Client, path: &str) -> Result<Token, ClientError> {
        let shape =
            |reason: String| ClientError::Shape { url: format!("POST {}{path}", client.base_url().origin().ascii_serialization()), reason };
        let started = Instant::now();
        let (value, lifetime) = match fetch {
            Fetch::Login { headers, body, token_path, expires_in_path, lifetime } => {
                let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
                let extra = Extra { headers: &headers, body: Body::Json(body), ..Extra::default() };
                let answer: Value = client.request(reqwest::Method::POST, path, extra).await?.body;
                let token = token_path.text(&answer).ok_or_else(|| shape(format!("no token at '{token_path}' in the login answer")))?;
                let expires_in = expires_in_path.as_ref().and_then(|p| p.get(&answer)).and_then(Value::as_f64);
                (token, expires_in.map(Duration::from_secs_f64).or(*lifetime))
            }
            Fetch::ClientCredentials { client: oauth, scope } => {
                let mut form = vec![("grant_type", "client_credentials")];
                if let Some(scope) = scope {
                    form.push(("scope", scope));
                }
                let answer = self.token_request(client, path, oauth, form).await?;
                (answer.access_token, answer.expires_in.map(Duration::from_secs_f64))
            }
            Fetch::Refresh { client: oauth, from_env, store, key } => {
                let from_env_sha256 = sha256(from_env);
                let stored =
                    store.checkpoints(&self.source).await.map_err(|e| ClientError::Build(format!("reading the refresh token: {e}")))?;
                let stored = stored.get(key).and_then(|v| serde_json::from_value::<StoredRefresh>(v.clone()).ok());
                // the newest rotated token, unless the env var holds a new authorization
                let refresh = match stored.filter(|s| s.from_env_sha256 == from_env_sha256) {
                    Some(s) => s.refresh_token,
                    None => from_env.clone(),
                };
                let answer =
                    self.token_request(client, path, oauth, vec![("grant_type", "refresh_token"), ("refresh_token", &refresh)]).await?;
                if let Some(rotated) = answer.refresh_token.as_ref().filter(|r| **r != refresh) {
                    let value = json!(StoredRefresh { refresh_token: rotated.clone(), from_env_sha256 });
                    let batch = Batch {
                        source: self.source.clone(),
                        checkpoints: vec![Checkpoint { key: key.clone(), value, position: None }],
                        ..Batch::default()
                    };
                    store.apply(batch).await.map_err(|e| ClientError::Build(format!("storing the rotated refresh token: {e}")))?;
                    tracing::info!(kind = "refresh_token_rotated", source = %self.source, key = %key, "the upstream rotated the refresh token; the new one is stored");
                }
                (answer.access_token, answer.expires_in.map(Duration::from_secs_f64))
            }
        };
        tracing::info!(kind = "token_fetched", source = %self.source, expires_in_secs = lifetime.map(|l| l.as_secs()), "fetched an access token");
        // renewed a tenth of its life early (at most 5 minutes), so no request carries an expired one
        let renew_at = lifetime.map(|life| started + life - (life / 10).min(Duration::from_secs(300)));
        Ok(Token { value, renew_at })
    }

    async fn token_request(
        &self,
        client: &Client,
        path: &str,
        oauth: &OAuthClient,
        mut form: Vec<(&str, &str)>,
    ) -> Result<TokenAnswer, ClientError> {
        let basic = match oauth.auth {
            ClientAuth::Basic => Some((oauth.id.as_str(), oauth.secret.as_str())),
            ClientAuth::Form => {
                form.push(("client_id", &oauth.id));
                form.push(("client_secret", &oauth.secret));
                None
            }
        };
        let extra = Extra { body: Body::Form(&form), basic, ..Extra::default() };
        Ok(client.request(reqwest::Method::POST, path, extra).await?.body)
    }
}

/// A client for a token endpoint (its own origin, no credentials of the
/// source's) and the path to post to.
fn token_client(url: &str, options: &ClientOptions) -> Result<(Client, String), ClientError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| ClientError::Build(format!("token url '{url}': {e}")))?;
    let path = match parsed.query() {
        Some(query) => format!("{}?{query}", parsed.path()),
        None => parsed.path().to_string(),
    };
    let token_options =
        ClientOptions { base_url: parsed.origin().ascii_serialization(), concurrency: 1, headers: Vec::new(), ..options.clone() };
    Ok((Client::with_auth(&token_options, Arc::new(Anonymous))?, path))
}

#[async_trait::async_trait]
impl Authorize for Auth {
    async fn authorize(&self, request: reqwest::RequestBuilder) -> Result<(reqwest::RequestBuilder, u64), ClientError> {
        match &self.how {
            How::Static { header, value } => Ok((request.header(header.clone(), value.as_str()), 0)),
            How::Basic { username, password } => Ok((request.basic_auth(username, Some(password)), 0)),
            How::Query { name, value } => Ok((request.query(&[(name, value)]), 0)),
            How::Fetched { token_header, .. } => {
                let (token, generation) = self.token().await?;
                let request = match token_header {
                    Some(name) => request.header(name.as_str(), token),
                    None => request.bearer_auth(token),
                };
                Ok((request, generation))
            }
        }
    }

    async fn refused(&self, generation: u64) -> bool {
        if !matches!(self.how, How::Fetched { .. }) {
            return false;
        }
        let mut held = self.token.lock().await;
        // a newer token than the refused one is tried as it is
        if self.generation.load(Ordering::SeqCst) == generation {
            *held = None;
        }
        tracing::info!(kind = "token_refused", source = %self.source, "the upstream refused the access token (401); fetching a new one");
        true
    }
}

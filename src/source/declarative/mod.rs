//! The declarative HTTP layer the `window`, `event_queue` and `rest` kinds
//! stand on: an API described as data, the way dlt's `rest_api` source and
//! Airbyte's low-code connectors describe one.
//!
//! - `auth`: how requests prove who they are, tokens fetched and renewed
//! - `paginate`: how a list is paged
//! - `select`: paths into an answer, ids, time formats
//! - `preset`: configs of real APIs (`preset = "wheniwork"`) merged under
//!   the user's own

pub mod auth;
pub mod paginate;
pub mod preset;
pub mod select;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::config::error::ConfigError;
use crate::source::http::{BearerKey, Client, ClientError, ClientOptions, Extra};
use crate::store::Store;
pub use auth::AuthConfig;
pub use paginate::Paginator;
pub use select::{Path, TimeFormat};

/// Where and how a declared source connects: the fields every declared
/// kind (`window`, `event_queue`, `rest`) has, seen through one view.
pub struct Connection<'a> {
    pub name: &'a str,
    pub base_url: &'a str,
    /// Env var of a bearer token, used when there is no `auth` (the older configs).
    pub api_key_env: &'a str,
    pub auth: &'a Option<AuthConfig>,
    pub headers: &'a BTreeMap<String, String>,
    pub rate_limit_per_sec: u32,
    pub request_timeout_ms: u64,
    pub retry_max_backoff_ms: u64,
}

/// `connection()` for a declared kind's config, whose fields of the same
/// names it views.
macro_rules! connection_of {
    ($config:ty) => {
        impl $config {
            /// Where and how the source connects.
            pub fn connection(&self) -> $crate::source::declarative::Connection<'_> {
                $crate::source::declarative::Connection {
                    name: &self.name,
                    base_url: &self.base_url,
                    api_key_env: &self.api_key_env,
                    auth: &self.auth,
                    headers: &self.headers,
                    rate_limit_per_sec: self.rate_limit_per_sec,
                    request_timeout_ms: self.request_timeout_ms,
                    retry_max_backoff_ms: self.retry_max_backoff_ms,
                }
            }
        }
    };
}
pub(crate) use connection_of;

impl Connection<'_> {
    /// One request at a time, within the budget, with the static headers.
    pub fn client_options(&self) -> ClientOptions {
        ClientOptions::sequential(self.name, self.base_url, self.rate_limit_per_sec, self.request_timeout_ms, self.retry_max_backoff_ms)
            .with_headers(self.headers)
    }

    /// Validate the auth, the headers, the client's options and the
    /// source's `paginator`, naming the field that is wrong.
    pub fn validate(&self, paginator: &Paginator) -> Result<(), String> {
        if let Some(auth) = self.auth {
            auth.validate(&format!("sources.{}.auth", self.name))?;
        }
        paginator.validate(&format!("sources.{}.paginator", self.name))?;
        for (header, value) in self.headers {
            reqwest::header::HeaderName::from_bytes(header.as_bytes())
                .map_err(|_| format!("sources.{}.headers: '{header}' is not a header name", self.name))?;
            reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| format!("sources.{}.headers.{header}: not a header value", self.name))?;
        }
        self.client_options().validate()
    }

    /// Every secret of the credentials is in the environment.
    pub fn check_env(&self) -> Result<(), ConfigError> {
        check_auth(self.name, self.auth, self.api_key_env)
    }

    /// The client, with the source's credentials (`key` tells apart several
    /// tokens of one source in the store).
    pub fn client(&self, store: Arc<dyn Store>, key: &str) -> Result<Client, ClientError> {
        client(&self.client_options(), self.auth, self.api_key_env, store, key)
    }
}

/// A declared source's credentials: its `auth` table, or (the older
/// configs) a bearer token from `api_key_env`.
pub fn check_auth(name: &str, auth: &Option<AuthConfig>, api_key_env: &str) -> Result<(), ConfigError> {
    match auth {
        Some(auth) => auth.check_env(&format!("sources.{name}.auth")),
        None => crate::config::error::secret(api_key_env, &format!("sources.{name}.api_key_env")).map(drop),
    }
}

/// The client of a declared source: its budget, static headers and
/// credentials. `key` tells apart several tokens of one source in the store.
pub fn client(
    options: &ClientOptions,
    auth: &Option<AuthConfig>,
    api_key_env: &str,
    store: Arc<dyn Store>,
    key: &str,
) -> Result<Client, ClientError> {
    let name = &options.source;
    match auth {
        Some(auth) => {
            let auth = auth::Auth::new(auth, &format!("sources.{name}.auth"), options, store, key)?;
            Client::with_auth(options, Arc::new(auth))
        }
        None => {
            let key = crate::config::error::secret(api_key_env, &format!("sources.{name}.api_key_env"))
                .map_err(|e| ClientError::Build(e.to_string()))?;
            Client::with_auth(options, Arc::new(BearerKey(key)))
        }
    }
}

/// Read every page of the list at `path`. `on_page` takes a page's items
/// out of its answer and says how many there were; what it leaves (a
/// cursor, a total) tells the paginator where the next page is. Returns
/// the requests made.
pub async fn each_page<E: From<ClientError>>(
    client: &Client,
    paginator: &Paginator,
    path: &str,
    mut on_page: impl FnMut(&str, &mut Value) -> Result<usize, E>,
) -> Result<u64, E> {
    let mut next = Some(paginator.first(path));
    let mut requests = 0;
    while let Some(path) = next.take() {
        let answer = client.request::<Value>(reqwest::Method::GET, &path, Extra::default()).await?;
        requests += 1;
        let mut body = answer.body;
        let items = on_page(&path, &mut body)?;
        let page = paginate::Page { path: &path, answer: &body, items, link_next: answer.link_next.as_deref() };
        next = paginator.next(&page, client.base_url())?;
    }
    Ok(requests)
}

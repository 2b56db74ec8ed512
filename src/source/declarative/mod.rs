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

/// A declared source's credentials: its `auth` table, or (the older
/// configs) a bearer token from `api_key_env`.
pub fn check_auth(name: &str, auth: &Option<AuthConfig>, api_key_env: &str) -> Result<(), ConfigError> {
    match auth {
        Some(auth) => auth.check_env(&format!("sources.{name}.auth")),
        None => crate::config::error::secret(api_key_env, &format!("sources.{name}.api_key_env")).map(drop),
    }
}

/// Validate the parts of the layer a source declares.
pub fn validate(name: &str, auth: &Option<AuthConfig>, paginator: &Paginator, headers: &BTreeMap<String, String>) -> Result<(), String> {
    if let Some(auth) = auth {
        auth.validate(&format!("sources.{name}.auth"))?;
    }
    paginator.validate(&format!("sources.{name}.paginator"))?;
    for (header, value) in headers {
        reqwest::header::HeaderName::from_bytes(header.as_bytes())
            .map_err(|_| format!("sources.{name}.headers: '{header}' is not a header name"))?;
        reqwest::header::HeaderValue::from_str(value).map_err(|_| format!("sources.{name}.headers.{header}: not a header value"))?;
    }
    Ok(())
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

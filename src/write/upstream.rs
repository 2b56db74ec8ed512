//! One write sent to the upstream: the stripe kind's form body, the derived
//! `Idempotency-Key` (so sending it again is harmless), the account header.
//! Which failures are worth another try is decided here.

use std::time::Duration;

use crate::source::http::join;
use crate::source::stripe::StripeConfig;
use crate::store::writes::{Answer, KeyRequest};

/// Where a source takes writes.
pub struct Upstream {
    http: reqwest::Client,
    base_url: reqwest::Url,
    api_key: String,
    /// Resources writes may name: the source's own.
    pub resources: Vec<&'static crate::stripe_api::Resource>,
    /// Reads the rest of a nested list the answer cut short, within the
    /// source's request budget.
    pub reader: crate::source::http::Client,
}

impl Upstream {
    pub fn new(config: &StripeConfig, api_key: String) -> Result<Upstream, String> {
        let version = reqwest::header::HeaderValue::from_str(&config.api_version).map_err(|e| format!("api_version: {e}"))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.request_timeout_ms))
            .user_agent(concat!("tributary/", env!("CARGO_PKG_VERSION")))
            .default_headers([(reqwest::header::HeaderName::from_static("stripe-version"), version)].into_iter().collect())
            .build()
            .map_err(|e| e.to_string())?;
        let base_url = reqwest::Url::parse(&config.base_url).map_err(|e| format!("base_url '{}': {e}", config.base_url))?;
        let reader = crate::source::http::Client::new(&config.client_options(&api_key), api_key.clone()).map_err(|e| e.to_string())?;
        Ok(Upstream { http, base_url, api_key, resources: config.resources(), reader })
    }

    /// Send the write. `Ok` is a final answer; `Err` says why no final
    /// answer came (the network, or an answer the shared policy retries:
    /// `Stripe-Should-Retry: true`, 409 for the key in use, 429, 5xx): the
    /// write may or may not have happened, and sending it again with its
    /// key is safe.
    pub async fn send(&self, request: &KeyRequest) -> Result<Answer, String> {
        // the path was built from checked parts; joined, it cannot leave the host
        let url = join(&self.base_url, &request.path).map_err(|e| e.to_string())?;
        let method = if request.method == "DELETE" { reqwest::Method::DELETE } else { reqwest::Method::POST };
        let mut call = self
            .http
            .request(method, url.clone())
            .bearer_auth(&self.api_key)
            .header("Idempotency-Key", upstream_key(&request.app_id, &request.key));
        if let Some(account) = &request.account {
            call = call.header("Stripe-Account", account);
        }
        if request.method != "DELETE" {
            call = call.header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded").body(request.params.clone());
        }
        let response = call.send().await.map_err(|e| format!("{} {url}: {e}", request.method))?;
        let status = response.status();
        let should_retry = response.headers().get("stripe-should-retry").and_then(|v| v.to_str().ok()).map(str::to_string);
        let body = response.text().await.map_err(|e| format!("{} {url}: reading the answer: {e}", request.method))?;
        if !status.is_success() && crate::retry::retryable(status.as_u16(), should_retry.as_deref()) {
            let code = serde_json::from_str::<serde_json::Value>(&body).ok().and_then(|v| v["error"]["code"].as_str().map(str::to_string));
            return Err(format!("{} {url}: {status}{}", request.method, code.map(|c| format!(" ({c})")).unwrap_or_default()));
        }
        Ok(Answer { status: status.as_u16(), body })
    }
}

/// The upstream's `Idempotency-Key` for an app's key: stable, so every
/// attempt of one request carries the same, and distinct per app.
pub fn upstream_key(app_id: &str, key: &str) -> String {
    format!("trb-{}", &crate::ids::sha256_hex(&format!("{app_id}\n{key}"))[..40])
}

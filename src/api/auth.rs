//! Who may call what: the admin token (apps, grants), the optional read
//! token (status, metrics and `/wait`), app tokens (queues, writes; see
//! `queues`). Tokens are kept and compared as SHA-256 hashes, so the time a
//! comparison takes says nothing about a token.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::{ApiError, AppState};
use crate::queue;

/// The API's own tokens, hashed.
#[derive(Debug, Default, Clone)]
pub struct Tokens {
    /// `None`: the admin routes are off.
    admin_hash: Option<String>,
    /// `None`: status, metrics and `/wait` are open to anyone who can
    /// reach the API.
    read_hash: Option<String>,
}

impl Tokens {
    pub fn new(admin: Option<&str>, read: Option<&str>) -> Tokens {
        Tokens { admin_hash: admin.map(queue::token_hash), read_hash: read.map(queue::token_hash) }
    }

    /// Whether the admin routes (and the console) are on.
    pub fn admin_enabled(&self) -> bool {
        self.admin_hash.is_some()
    }

    fn is_admin(&self, token: Option<&str>) -> bool {
        matches!((&self.admin_hash, token), (Some(expected), Some(token)) if queue::token_hash(token) == *expected)
    }

    fn is_reader(&self, token: Option<&str>) -> bool {
        match &self.read_hash {
            None => true,
            Some(expected) => token.is_some_and(|t| queue::token_hash(t) == *expected) || self.is_admin(token),
        }
    }
}

/// The token of an `Authorization: Bearer …` header. The scheme is matched
/// without regard to case (RFC 7235: `bearer` is as good as `Bearer`).
pub fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?.trim_start();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The caller holds the admin token.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if state.tokens.admin_hash.is_none() {
            return Err(ApiError::Unauthorized("the admin API is off: set [api] admin_token_env".into()));
        }
        if !state.tokens.is_admin(bearer(parts)) {
            return Err(ApiError::Unauthorized("admin token required (Authorization: Bearer …)".into()));
        }
        Ok(Admin)
    }
}

/// The caller may read status and metrics and wait on sources: anyone when
/// `[api] read_token_env` is unset, else the read or the admin token.
pub struct Reader;

impl FromRequestParts<AppState> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if !state.tokens.is_reader(bearer(parts)) {
            return Err(ApiError::Unauthorized("read token required (Authorization: Bearer …, [api] read_token_env)".into()));
        }
        Ok(Reader)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(authorization: &str) -> Parts {
        let request = axum::http::Request::get("/").header("authorization", authorization).body(()).unwrap();
        request.into_parts().0
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer(&parts("Bearer t1")), Some("t1"));
        assert_eq!(bearer(&parts("bearer t1")), Some("t1"));
        assert_eq!(bearer(&parts("BEARER   t1 ")), Some("t1"));
        assert_eq!(bearer(&parts("Basic dTpw")), None);
        assert_eq!(bearer(&parts("Bearer")), None);
        assert_eq!(bearer(&parts("Bearer ")), None);
    }

    #[test]
    fn readers_hold_the_read_or_the_admin_token_once_one_is_set() {
        let open = Tokens::new(Some("admin"), None);
        assert!(open.is_reader(None));
        let closed = Tokens::new(Some("admin"), Some("read"));
        assert!(!closed.is_reader(None));
        assert!(!closed.is_reader(Some("other")));
        assert!(closed.is_reader(Some("read")));
        assert!(closed.is_reader(Some("admin")));
        assert!(!closed.is_admin(Some("read")));
    }
}

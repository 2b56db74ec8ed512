//! Tiki's token endpoint (`POST /sc/oauth2/token`, form-encoded), as the
//! reference note describes it:
//!
//! - `grant_type=client_credentials`: the app's own token, with the client
//!   id and secret by HTTP basic auth or in the form; no refresh token;
//! - `grant_type=refresh_token`: a seller's token for the app, and a new
//!   refresh token; the one presented is spent (rotation), so a client that
//!   loses the new one is locked out until the seller authorizes it again.
//!
//! Access tokens expire after `--token-ttl-secs`. Each seller's first
//! refresh token (from the authorization the simulator does not model) is
//! listed at `/__sim/market`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::{Rng, rngs::StdRng};
use serde_json::{Value, json};

/// Whose token it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// The app itself (client credentials), by client id.
    App(String),
    /// A seller who authorized the app, by `sid`.
    Seller(String),
}

/// Counters tests compare against.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct TokenStats {
    pub client_credentials: u64,
    pub refreshes: u64,
    /// Refresh tokens refused (spent or never issued).
    pub refused: u64,
}

pub struct OAuth {
    access: HashMap<String, (Owner, Instant)>,
    /// Live refresh tokens, each to its seller.
    refresh: HashMap<String, String>,
    /// Each seller's first refresh token, as the authorization handed it out.
    pub authorized: Vec<(String, String)>,
    pub ttl: Duration,
    pub stats: TokenStats,
}

/// A token endpoint's refusal: its status and OAuth2 error body.
pub type Refusal = (u16, Value);

fn refusal(status: u16, error: &str, description: &str) -> Refusal {
    (status, json!({"error": error, "error_description": description}))
}

/// A random token: 32 hex digits after a prefix.
pub fn token(rng: &mut StdRng, prefix: &str) -> String {
    format!("{prefix}{:032x}", rng.r#gen::<u128>())
}

impl OAuth {
    pub fn new(sellers: &[String], rng: &mut StdRng) -> OAuth {
        let authorized: Vec<(String, String)> = sellers.iter().map(|sid| (sid.clone(), token(rng, "rt_"))).collect();
        OAuth {
            access: HashMap::new(),
            refresh: authorized.iter().map(|(sid, token)| (token.clone(), sid.clone())).collect(),
            authorized,
            ttl: Duration::from_secs(604_800),
            stats: TokenStats::default(),
        }
    }

    /// Whose live access token this is.
    pub fn owner(&self, token: &str) -> Option<&Owner> {
        self.access.get(token).filter(|(_, expires)| *expires > Instant::now()).map(|(owner, _)| owner)
    }

    /// Answer a token request: its form fields and the HTTP basic
    /// credentials, if any.
    pub fn grant(&mut self, form: &HashMap<String, String>, basic: Option<(String, String)>, rng: &mut StdRng) -> Result<Value, Refusal> {
        let field = |name: &str| form.get(name).filter(|v| !v.is_empty()).cloned();
        let (client_id, secret) = match basic {
            Some(pair) => pair,
            None => (field("client_id").unwrap_or_default(), field("client_secret").unwrap_or_default()),
        };
        if client_id.is_empty() || secret.is_empty() {
            return Err(refusal(401, "invalid_client", "client authentication failed (basic auth or client_id and client_secret)"));
        }
        let now = Instant::now();
        self.access.retain(|_, (_, expires)| *expires > now);
        let expires_in = self.ttl.as_secs();
        match field("grant_type").as_deref() {
            Some("client_credentials") => {
                self.stats.client_credentials += 1;
                let access = token(rng, "at_");
                self.access.insert(access.clone(), (Owner::App(client_id), now + self.ttl));
                Ok(json!({"access_token": access, "expires_in": expires_in, "token_type": "bearer", "scope": ""}))
            }
            Some("refresh_token") => {
                let presented = field("refresh_token").unwrap_or_default();
                let Some(sid) = self.refresh.remove(&presented) else {
                    self.stats.refused += 1;
                    return Err(refusal(400, "invalid_grant", "the refresh token is invalid, expired or already used"));
                };
                self.stats.refreshes += 1;
                let (access, rotated) = (token(rng, "at_"), token(rng, "rt_"));
                self.access.insert(access.clone(), (Owner::Seller(sid.clone()), now + self.ttl));
                self.refresh.insert(rotated.clone(), sid);
                Ok(json!({
                    "access_token": access, "expires_in": expires_in, "token_type": "bearer",
                    "scope": "offline product order inventory", "refresh_token": rotated,
                }))
            }
            other => Err(refusal(400, "unsupported_grant_type", &format!("grant_type {other:?} is not supported"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn form(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn refresh_tokens_rotate_and_are_spent_once() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut oauth = OAuth::new(&["SID1".into()], &mut rng);
        let first = oauth.authorized[0].1.clone();
        let client = Some(("app".to_string(), "secret".to_string()));
        let answer = oauth.grant(&form(&[("grant_type", "refresh_token"), ("refresh_token", &first)]), client.clone(), &mut rng).unwrap();
        let rotated = answer["refresh_token"].as_str().unwrap().to_string();
        assert_ne!(rotated, first);
        assert_eq!(oauth.owner(answer["access_token"].as_str().unwrap()), Some(&Owner::Seller("SID1".into())));
        let spent = oauth.grant(&form(&[("grant_type", "refresh_token"), ("refresh_token", &first)]), client.clone(), &mut rng);
        assert_eq!(spent.unwrap_err().1["error"], "invalid_grant");
        let form_auth = form(&[("grant_type", "client_credentials"), ("client_id", "app"), ("client_secret", "s")]);
        let app = oauth.grant(&form_auth, None, &mut rng).unwrap();
        assert_eq!(oauth.owner(app["access_token"].as_str().unwrap()), Some(&Owner::App("app".into())));
        assert!(app.get("refresh_token").is_none());
        assert_eq!(oauth.grant(&form(&[("grant_type", "client_credentials")]), None, &mut rng).unwrap_err().0, 401);
    }
}

//! The surface of Stripe's API that both sides agree on: the simulator serves
//! it, the `stripe` source reads it, writes go through to it.
//!
//! - `catalogue`: every list resource, as data
//! - `form`: Stripe's form encoding (`metadata[plan]=pro`) decoded into JSON

pub mod catalogue;
pub mod form;

pub use catalogue::{Ending, Events, Follow, Resource, Scope, Target, by_object, by_path, catalogue, mirrored, resolve};

/// The API version Tributary pins by default (`api_version`), and the one
/// the simulator renders: the version of Stripe's published fixtures the
/// simulator is shaped by (stripe-node 22.5.0 and stripe/openapi, August
/// 2026). Sent as `Stripe-Version` on every request.
pub const API_VERSION: &str = "2026-07-29.dahlia";

/// Whether `text` looks like a Stripe API version: `YYYY-MM-DD` with an
/// optional `.release` name of lowercase letters.
pub fn is_api_version(text: &str) -> bool {
    let (date, release) = text.split_once('.').unwrap_or((text, "x"));
    chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").is_ok()
        && date.len() == 10
        && !release.is_empty()
        && release.chars().all(|c| c.is_ascii_lowercase())
}

/// Items a nested list shows inline before it says `has_more`.
pub const NESTED_INLINE: usize = 10;

/// Largest page a list endpoint serves.
pub const MAX_PAGE: usize = 100;

/// Stripe's form encoding of a JSON object: `metadata[plan]=pro`,
/// `items[0][price]=price_1`, keys in sorted order (so one request has one
/// encoding). `null` sends an empty value (Stripe's "unset").
pub fn form_encode(params: &serde_json::Map<String, serde_json::Value>) -> String {
    fn flatten(prefix: String, value: &serde_json::Value, out: &mut Vec<(String, String)>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, inner) in map {
                    flatten(format!("{prefix}[{key}]"), inner, out);
                }
            }
            serde_json::Value::Array(items) => {
                for (i, inner) in items.iter().enumerate() {
                    flatten(format!("{prefix}[{i}]"), inner, out);
                }
            }
            serde_json::Value::String(text) => out.push((prefix, text.clone())),
            serde_json::Value::Null => out.push((prefix, String::new())),
            other => out.push((prefix, other.to_string())),
        }
    }
    let mut pairs = Vec::new();
    for (key, value) in params {
        flatten(key.clone(), value, &mut pairs);
    }
    pairs.sort();
    form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions_are_dates_with_a_release_name() {
        for good in [API_VERSION, "2025-03-31.basil", "2024-06-20"] {
            assert!(is_api_version(good), "{good}");
        }
        for bad in ["", "latest", "2025-3-31.basil", "2025-03-31.", "2025-03-31.Basil", "2025-02-30.basil", "2025-03-31.basil\r\nX: y"] {
            assert!(!is_api_version(bad), "{bad}");
        }
    }

    #[test]
    fn form_encoding_is_stripes_and_canonical() {
        let params = serde_json::json!({"name": "A & B", "metadata": {"z": 1, "a": true}, "items": [{"price": "p_1"}], "email": null});
        let text = form_encode(params.as_object().unwrap());
        assert_eq!(text, "email=&items%5B0%5D%5Bprice%5D=p_1&metadata%5Ba%5D=true&metadata%5Bz%5D=1&name=A+%26+B");
        let decoded = form::decode(text.as_bytes());
        assert_eq!(decoded["items"][0]["price"], "p_1");
        assert_eq!(decoded["metadata"]["z"], "1");
    }
}

//! The surface of Stripe's API that both sides agree on: the simulator serves
//! it, the `stripe` source reads it, writes go through to it.
//!
//! - `form`: Stripe's form encoding (`metadata[plan]=pro`) decoded into JSON

pub mod form;

/// Each list resource: URL segment under `/v1` and the `object` value of its items.
pub const RESOURCES: &[(&str, &str)] = &[
    ("customers", "customer"),
    ("products", "product"),
    ("prices", "price"),
    ("subscriptions", "subscription"),
    ("invoices", "invoice"),
    ("charges", "charge"),
    ("payment_intents", "payment_intent"),
];

/// Nested lists Stripe embeds in a parent object: (parent object, field).
pub const NESTED: &[(&str, &str)] = &[("invoice", "lines"), ("subscription", "items")];

/// Items a nested list shows inline before it says `has_more`.
pub const NESTED_INLINE: usize = 10;

/// Largest page a list endpoint serves.
pub const MAX_PAGE: usize = 100;

pub fn object_for_resource(resource: &str) -> Option<&'static str> {
    RESOURCES.iter().find(|(r, _)| *r == resource).map(|(_, o)| *o)
}

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
    fn form_encoding_is_stripes_and_canonical() {
        let params = serde_json::json!({"name": "A & B", "metadata": {"z": 1, "a": true}, "items": [{"price": "p_1"}], "email": null});
        let text = form_encode(params.as_object().unwrap());
        assert_eq!(text, "email=&items%5B0%5D%5Bprice%5D=p_1&metadata%5Ba%5D=true&metadata%5Bz%5D=1&name=A+%26+B");
        let decoded = form::decode(text.as_bytes());
        assert_eq!(decoded["items"][0]["price"], "p_1");
        assert_eq!(decoded["metadata"]["z"], "1");
    }
}

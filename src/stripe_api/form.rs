//! Stripe-style form bodies: `metadata[plan]=pro&items[0][price]=price_1` into JSON.
//!
//! Values stay strings (as Stripe receives them); `coerce` turns them into the
//! type an existing field already has.

use serde_json::{Map, Value};

/// Decode a form body or query string into nested JSON. Keys with `[n]`
/// segments become arrays when every index is numeric.
pub fn decode(body: &[u8]) -> Value {
    let mut root = Value::Object(Map::new());
    for (key, value) in form_urlencoded::parse(body) {
        let path = split_key(&key);
        insert(&mut root, &path, Value::String(value.into_owned()));
    }
    arrays_from_numeric_maps(root)
}

fn split_key(key: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let (head, mut rest) = match key.find('[') {
        Some(i) => (&key[..i], &key[i..]),
        None => (key, ""),
    };
    parts.push(head.to_string());
    while let Some(stripped) = rest.strip_prefix('[') {
        let Some(end) = stripped.find(']') else { break };
        parts.push(stripped[..end].to_string());
        rest = &stripped[end + 1..];
    }
    parts
}

fn insert(node: &mut Value, path: &[String], value: Value) {
    let Some((first, rest)) = path.split_first() else { return };
    let Value::Object(map) = node else { return };
    // `expand[]=a&expand[]=b`: an empty segment appends
    let key = if first.is_empty() { map.len().to_string() } else { first.clone() };
    if rest.is_empty() {
        map.insert(key, value);
        return;
    }
    let child = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !child.is_object() {
        *child = Value::Object(Map::new());
    }
    insert(child, rest, value);
}

fn arrays_from_numeric_maps(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let numeric = !map.is_empty() && map.keys().all(|k| k.parse::<usize>().is_ok());
            let mut entries: Vec<(String, Value)> = map.into_iter().map(|(k, v)| (k, arrays_from_numeric_maps(v))).collect();
            if numeric {
                entries.sort_by_key(|(k, _)| k.parse::<usize>().unwrap_or(usize::MAX));
                Value::Array(entries.into_iter().map(|(_, v)| v).collect())
            } else {
                Value::Object(entries.into_iter().collect())
            }
        }
        other => other,
    }
}

/// Convert a string parameter to the JSON type of the field it replaces.
pub fn coerce(param: &Value, existing: Option<&Value>) -> Value {
    let Value::String(text) = param else { return param.clone() };
    match existing {
        Some(Value::Number(_)) => {
            text.parse::<i64>().map(Value::from).or_else(|_| text.parse::<f64>().map(Value::from)).unwrap_or_else(|_| param.clone())
        }
        Some(Value::Bool(_)) => match text.as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => param.clone(),
        },
        _ if text.is_empty() => Value::Null,
        _ => param.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_keys_and_arrays() {
        let v = decode(b"email=a%40b.c&metadata[plan]=pro&items[0][price]=p1&items[1][price]=p2&expand[]=x");
        assert_eq!(v, json!({"email":"a@b.c","metadata":{"plan":"pro"},"items":[{"price":"p1"},{"price":"p2"}],"expand":["x"]}));
    }

    #[test]
    fn coerce_follows_existing_type() {
        assert_eq!(coerce(&json!("42"), Some(&json!(1))), json!(42));
        assert_eq!(coerce(&json!("true"), Some(&json!(false))), json!(true));
        assert_eq!(coerce(&json!("x"), Some(&json!(1))), json!("x"));
        assert_eq!(coerce(&json!(""), Some(&json!("old"))), Value::Null);
    }
}

//! Objects as text: a backfill page split into its items' JSON without
//! building a tree for each (most of a backfill's memory and much of its
//! time), what the backfill needs of an object read from its text, and the
//! text compacted as the store keeps it.

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::source::http::ClientError;

/// The fields of an object the backfill reads; the rest stays text.
#[derive(Debug, Default, Deserialize)]
pub struct Head {
    #[serde(default)]
    pub id: Option<Value>,
    #[serde(default)]
    pub object: Option<Value>,
    #[serde(default)]
    pub created: Option<Value>,
}

impl Head {
    pub fn id(&self) -> Option<&str> {
        self.id.as_ref().and_then(Value::as_str)
    }

    pub fn object(&self) -> Option<&str> {
        self.object.as_ref().and_then(Value::as_str)
    }

    pub fn created(&self) -> Option<i64> {
        self.created.as_ref().and_then(Value::as_i64)
    }
}

#[derive(Deserialize)]
struct RawList<'a> {
    #[serde(borrow, default)]
    object: Option<&'a RawValue>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    has_more: Option<&'a RawValue>,
}

/// Split a list response into its items' text and `has_more`, with the
/// same refusals as a parsed one (see [`super::sync::list_parts`]).
pub fn list_parts(page: &RawValue, url: &str) -> Result<(Vec<Box<RawValue>>, bool), ClientError> {
    let shape = |reason: &str| ClientError::Shape { url: url.to_string(), reason: reason.to_string() };
    let list: RawList = serde_json::from_str(page.get()).map_err(|_| shape("expected a list object"))?;
    if list.object.map(RawValue::get) != Some("\"list\"") {
        return Err(shape("expected a list object"));
    }
    let has_more = match list.has_more.map(RawValue::get) {
        Some("true") => true,
        Some("false") => false,
        _ => return Err(shape("list without has_more")),
    };
    let data = list.data.ok_or_else(|| shape("list without data"))?;
    let items: Vec<Box<RawValue>> = serde_json::from_str(data.get()).map_err(|_| shape("list without data"))?;
    Ok((items, has_more))
}

/// Whether an object's text may hold a nested list cut short
/// (`"has_more": true`), which must be completed on a parsed tree.
pub fn may_hold_truncated_list(text: &str) -> bool {
    text.match_indices("\"has_more\"").any(|(at, key)| {
        let rest = text[at + key.len()..].trim_start();
        rest.strip_prefix(':').is_some_and(|rest| rest.trim_start().starts_with("true"))
    })
}

/// The object's text without insignificant whitespace, as the store keeps
/// what it serializes itself (Stripe's answers are pretty-printed).
pub fn compact(text: &str) -> Result<String, serde_json::Error> {
    let mut out = Vec::with_capacity(text.len());
    let mut serializer = serde_json::Serializer::new(&mut out);
    serde_transcode::transcode(&mut serde_json::Deserializer::from_str(text), &mut serializer)?;
    Ok(String::from_utf8(out).expect("serde_json writes UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_string()).unwrap()
    }

    #[test]
    fn pages_split_into_item_texts_and_refuse_what_is_not_a_list() {
        let page = raw(r#"{"object": "list", "data": [{"id": "a", "n": [1, 2]}, {"id": "b"}], "has_more": true, "url": "/v1/x"}"#);
        let (items, more) = list_parts(&page, "/v1/x").unwrap();
        assert!(more);
        assert_eq!(items.iter().map(|i| i.get()).collect::<Vec<_>>(), [r#"{"id": "a", "n": [1, 2]}"#, r#"{"id": "b"}"#]);
        for bad in [r#"[1]"#, r#"{"object": "customer"}"#, r#"{"object": "list", "data": []}"#, r#"{"object": "list", "has_more": false}"#]
        {
            assert!(matches!(list_parts(&raw(bad), "/v1/x"), Err(ClientError::Shape { .. })), "{bad}");
        }
    }

    #[test]
    fn texts_are_compacted_and_truncated_lists_found() {
        let pretty = "{\n  \"id\": \"in_1\",\n  \"lines\": {\n    \"has_more\" : true,\n    \"data\": [ ]\n  },\n  \"note\": \"a  b\"\n}";
        assert_eq!(compact(pretty).unwrap(), r#"{"id":"in_1","lines":{"has_more":true,"data":[]},"note":"a  b"}"#);
        assert!(may_hold_truncated_list(pretty));
        assert!(!may_hold_truncated_list(r#"{"lines": {"has_more": false}, "text": "has_more true"}"#));
        let head: Head = serde_json::from_str(r#"{"id": "cus_1", "object": "customer", "created": 5, "big": [1, 2, 3]}"#).unwrap();
        assert_eq!((head.id(), head.object(), head.created()), (Some("cus_1"), Some("customer"), Some(5)));
    }
}

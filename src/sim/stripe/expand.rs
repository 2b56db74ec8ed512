//! `expand[]`: a reference (`"customer": "cus_…"`) replaced by the object it
//! names, through up to four levels (`data.customer.default_source` on a
//! list), and the lists Stripe shows on an object only when asked (a
//! customer's `tax_ids` since 2020-08-27).

use serde_json::{Map, Value};

use super::list::ApiError;

/// Deepest expansion Stripe serves.
pub const MAX_DEPTH: usize = 4;

/// Lists an object shows only when expanded, as Stripe documents them:
/// (object type, field). Each is its child list of the same name
/// (`customers/{id}/tax_ids`), or the top-level list of that name filtered
/// on the object (`subscriptions?customer=`).
pub const INCLUDABLE: &[(&str, &str)] = &[("customer", "sources"), ("customer", "subscriptions"), ("customer", "tax_ids")];

/// Where expansions find what they show.
pub trait Lookup {
    /// The object an id names, as the API shows it: `None` when the text
    /// is not a reference at all; the id itself when it names nothing
    /// (the object is gone).
    fn object(&self, field: &str, id: &str) -> Option<Value>;
    /// An includable list of `parent` (see [`INCLUDABLE`]).
    fn included(&self, parent: &Map<String, Value>, field: &str) -> Option<Value>;
}

/// The `expand[]` parameters of a request.
pub fn paths(params: &Value) -> Vec<String> {
    match params.get("expand") {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(String::from).collect(),
        Some(Value::String(one)) => vec![one.clone()],
        _ => Vec::new(),
    }
}

fn refused(path: &str, field: &str) -> ApiError {
    ApiError::invalid("expand", format!("This property cannot be expanded ({field}). You may want to try expanding '{path}' instead."))
}

/// Apply one `expand[]` path to an object (or, with `data.`, to a list).
pub fn expand(object: &mut Value, path: &str, lookup: &impl Lookup) -> Result<(), ApiError> {
    let segments: Vec<&str> = path.split('.').collect();
    let depth = segments.iter().filter(|s| **s != "data").count();
    if depth > MAX_DEPTH {
        return Err(ApiError::invalid("expand", format!("You cannot expand more than {MAX_DEPTH} levels of a property. Property: {path}")));
    }
    if segments.iter().any(|s| s.is_empty()) {
        return Err(refused(path, path));
    }
    expand_at(object, &segments, path, lookup)
}

fn expand_at(value: &mut Value, segments: &[&str], path: &str, lookup: &impl Lookup) -> Result<(), ApiError> {
    let Some((field, rest)) = segments.split_first() else { return Ok(()) };
    match value {
        // a list's items, or an object's array field item by item
        Value::Object(map) if map.get("object").and_then(Value::as_str) == Some("list") && *field == "data" => {
            for item in map.get_mut("data").and_then(Value::as_array_mut).into_iter().flatten() {
                expand_at(item, rest, path, lookup)?;
            }
            Ok(())
        }
        Value::Object(map) => {
            match map.get(*field) {
                None => {
                    let included = lookup.included(map, field).ok_or_else(|| refused(path, field))?;
                    map.insert(field.to_string(), included);
                }
                Some(Value::String(id)) => {
                    let found = lookup.object(field, id).ok_or_else(|| refused(path, field))?;
                    map.insert(field.to_string(), found);
                }
                Some(Value::Null) => return Ok(()),
                Some(Value::Object(_) | Value::Array(_)) => {}
                Some(_) => return Err(refused(path, field)),
            }
            match map.get_mut(*field) {
                Some(Value::Array(items)) => items.iter_mut().try_for_each(|item| expand_at(item, rest, path, lookup)),
                Some(inner) => expand_at(inner, rest, path, lookup),
                None => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Fake;

    impl Lookup for Fake {
        fn object(&self, _field: &str, id: &str) -> Option<Value> {
            match id {
                "cus_1" => Some(json!({"id": "cus_1", "object": "customer", "default_source": "card_1"})),
                "card_1" => Some(json!({"id": "card_1", "object": "card"})),
                "cus_gone" => Some(json!("cus_gone")),
                _ => None,
            }
        }

        fn included(&self, parent: &Map<String, Value>, field: &str) -> Option<Value> {
            (parent["object"] == "customer" && field == "tax_ids").then(|| json!({"object": "list", "data": [], "has_more": false}))
        }
    }

    #[test]
    fn references_expand_through_levels_and_lists() {
        let mut list = json!({"object": "list", "data": [{"id": "ch_1", "customer": "cus_1"}, {"id": "ch_2", "customer": null}]});
        expand(&mut list, "data.customer.default_source", &Fake).unwrap();
        assert_eq!(list["data"][0]["customer"]["default_source"]["object"], "card");
        assert_eq!(list["data"][1]["customer"], Value::Null);
        let mut charge = json!({"id": "ch_1", "customer": "cus_gone"});
        expand(&mut charge, "customer", &Fake).unwrap();
        assert_eq!(charge["customer"], "cus_gone", "a reference to nothing stays an id");
    }

    #[test]
    fn includable_lists_appear_only_where_stripe_has_them() {
        let mut customer = json!({"id": "cus_1", "object": "customer", "email": "a@b.c"});
        expand(&mut customer, "tax_ids", &Fake).unwrap();
        assert_eq!(customer["tax_ids"]["object"], "list");
        for bad in ["email", "payment_methods", "a.b.c.d.e", "data..x"] {
            let err = expand(&mut customer, bad, &Fake).unwrap_err();
            assert_eq!((err.status, err.param.as_deref()), (400, Some("expand")), "{bad}");
        }
    }
}

//! Stripe's list mechanics and error shape: `limit`, `starting_after`,
//! `ending_before` and `created[…]` over rows kept in creation order, and the
//! error envelope every answer that fails carries.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::Value;

pub use crate::sim::error::ApiError;

/// `limit`, `starting_after`, `ending_before` of a list request.
#[derive(Debug, Default, Clone)]
pub struct ListParams {
    pub limit: usize,
    pub starting_after: Option<String>,
    pub ending_before: Option<String>,
    /// `status` of lists that filter on it (subscriptions).
    pub status: Option<String>,
    /// `active` of lists that filter on it (prices, products).
    pub active: Option<bool>,
    /// `created` (unix seconds): an exact value, or any of
    /// `created[gt|gte|lt|lte]`, as the inclusive span `[from, to]`.
    pub created: Option<(i64, i64)>,
    /// `expand[]` paths, each `data.…`.
    pub expand: Vec<String>,
}

/// `created=T` or `created[gt|gte|lt|lte]=T` as an inclusive span.
pub fn created_span(query: &Value) -> Result<Option<(i64, i64)>, ApiError> {
    let number = |raw: &Value| -> Result<i64, ApiError> {
        let text = raw.as_str().unwrap_or_default();
        text.parse::<i64>().map_err(|_| ApiError::invalid("created", format!("Invalid integer: {text}")))
    };
    match query.get("created") {
        None => Ok(None),
        Some(Value::Object(bounds)) => {
            let (mut from, mut to) = (i64::MIN, i64::MAX);
            for (bound, raw) in bounds {
                let t = number(raw)?;
                match bound.as_str() {
                    "gt" => from = from.max(t.saturating_add(1)),
                    "gte" => from = from.max(t),
                    "lt" => to = to.min(t.saturating_sub(1)),
                    "lte" => to = to.min(t),
                    other => {
                        return Err(ApiError::invalid(
                            &format!("created[{other}]"),
                            format!("Received unknown parameter: created[{other}]"),
                        ));
                    }
                }
            }
            Ok(Some((from, to)))
        }
        Some(exact) => number(exact).map(|t| Some((t, t))),
    }
}

impl ListParams {
    pub fn from_query(query: &Value) -> Result<Self, ApiError> {
        let text = |k: &str| query.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(String::from);
        let limit = match text("limit") {
            None => 10,
            Some(raw) => match raw.parse::<usize>() {
                Ok(n) if (1..=100).contains(&n) => n,
                _ => return Err(ApiError::invalid("limit", format!("Invalid limit: must be an integer between 1 and 100, got '{raw}'"))),
            },
        };
        let starting_after = text("starting_after");
        let ending_before = text("ending_before");
        if starting_after.is_some() && ending_before.is_some() {
            return Err(ApiError::invalid("ending_before", "You may only specify one of starting_after and ending_before".into()));
        }
        // removed from list methods in 2025-03-31.basil: a 400, as Stripe answers
        if query.get("include").and_then(Value::as_array).is_some_and(|a| a.iter().any(|v| v == "total_count")) {
            return Err(ApiError {
                code: Some("property_forbidden"),
                ..ApiError::invalid("include", "total_count is no longer an includable property of lists; use has_more to page".into())
            });
        }
        let active = match text("active").as_deref() {
            None => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(other) => return Err(ApiError::invalid("active", format!("Invalid boolean: {other}"))),
        };
        let expand = super::expand::paths(query);
        if let Some(bad) = expand.iter().find(|p| !p.starts_with("data.")) {
            return Err(ApiError::invalid(
                "expand",
                format!("This property cannot be expanded ({bad}). You may want to try expanding 'data.{bad}' instead."),
            ));
        }
        Ok(ListParams { limit, starting_after, ending_before, status: text("status"), active, created: created_span(query)?, expand })
    }
}

/// Where a page starts, resolved from the cursor ids.
pub enum Anchor {
    Top,
    After(u64),
    Before(u64),
}

#[derive(serde::Serialize)]
struct ListPage<'a> {
    object: &'static str,
    data: Vec<Cow<'a, Value>>,
    has_more: bool,
    url: &'a str,
}

pub fn list_text(url: &str, data: Vec<Cow<'_, Value>>, has_more: bool) -> String {
    serde_json::to_string(&ListPage { object: "list", data, has_more, url }).unwrap_or_default()
}

/// Newest-first page around an anchor of the rows `keep` lets through:
/// `After` goes to older items, `Before` returns the `limit` items just
/// newer than the anchor.
pub fn page_desc_by<'a, T>(
    rows: &'a BTreeMap<u64, T>,
    anchor: Anchor,
    params: &ListParams,
    value: impl Fn(&'a T) -> &'a Value,
    keep: impl Fn(&'a T) -> bool,
) -> (Vec<&'a Value>, bool) {
    // rows are kept in creation order, so the `created` span is a run of
    // them: skip to it and stop past it instead of scanning every row
    let (from, to) = params.created.unwrap_or((i64::MIN, i64::MAX));
    let created = |v: &Value| v["created"].as_i64().unwrap_or_default();
    let limit = params.limit;
    let mut items: Vec<&Value> = match anchor {
        Anchor::Top | Anchor::After(_) => {
            let older = match anchor {
                Anchor::After(seq) => rows.range(..seq),
                _ => rows.range(..),
            };
            let in_span =
                older.rev().map(|(_, row)| (row, value(row))).skip_while(|(_, v)| created(v) > to).take_while(|(_, v)| created(v) >= from);
            in_span.filter(|(row, _)| keep(row)).map(|(_, v)| v).take(limit + 1).collect()
        }
        Anchor::Before(seq) => {
            let newer = rows
                .range(seq + 1..)
                .map(|(_, row)| (row, value(row)))
                .skip_while(|(_, v)| created(v) < from)
                .take_while(|(_, v)| created(v) <= to);
            let mut newer: Vec<&Value> = newer.filter(|(row, _)| keep(row)).map(|(_, v)| v).take(limit + 1).collect();
            let has_more = newer.len() > limit;
            newer.truncate(limit);
            newer.reverse();
            return (newer, has_more);
        }
    };
    let has_more = items.len() > limit;
    items.truncate(limit);
    (items, has_more)
}

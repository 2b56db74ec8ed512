//! Reads of the mirror tables in Stripe's shapes, for the Stripe-compatible
//! path: one object by id, or a list page newest first (by `created`, then
//! id, as Stripe lists) with Stripe's cursors. Both see only the rows of one
//! account (`None`: the platform's, whose `account` is null). Reconcile
//! and `verify` read it by ids, and ask which objects changed since a point
//! of the change log.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

/// Where a list page starts: Stripe's `starting_after` / `ending_before`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListCursor {
    /// The newest objects.
    Start,
    /// Objects older than this one (the next page).
    After(String),
    /// Objects newer than this one (the previous page), still newest first.
    Before(String),
}

impl ListCursor {
    /// The object the cursor names.
    pub fn id(&self) -> Option<&str> {
        match self {
            ListCursor::Start => None,
            ListCursor::After(id) | ListCursor::Before(id) => Some(id),
        }
    }
}

/// A list page: its objects, newest first, and whether more lie beyond it
/// in the direction it was read.
#[derive(Debug, Clone, PartialEq)]
pub struct MirrorPage {
    pub data: Vec<Value>,
    pub has_more: bool,
}

#[async_trait::async_trait]
pub trait MirrorStore: Send + Sync {
    /// One object of `source`'s `object` table, if `account` can see it.
    async fn mirror_object(&self, source: &str, object: &str, account: Option<&str>, id: &str) -> Result<Option<Value>, super::StoreError>;
    /// A page of up to `limit` objects; `None` when the cursor names an
    /// object that is not there (for this account).
    async fn mirror_list(
        &self,
        source: &str,
        object: &str,
        account: Option<&str>,
        cursor: &ListCursor,
        limit: usize,
    ) -> Result<Option<MirrorPage>, super::StoreError>;
    /// The objects of these ids that `account` can see, by id.
    async fn mirror_objects(
        &self,
        source: &str,
        object: &str,
        account: Option<&str>,
        ids: &[String],
    ) -> Result<HashMap<String, Value>, super::StoreError>;
    /// Every (id, created) of `account`'s rows of `object`, in no order.
    async fn mirror_keys(&self, source: &str, object: &str, account: Option<&str>)
    -> Result<Vec<(String, Option<i64>)>, super::StoreError>;
    /// The sequence number of the newest change (0 before the first).
    async fn change_head(&self) -> Result<i64, super::StoreError>;
    /// (object, id) of every object of `source` with a change after
    /// sequence number `after`.
    async fn changed_after(&self, source: &str, after: i64) -> Result<HashSet<(String, String)>, super::StoreError>;
}

/// Every (id, created) of one table: parameter 1 the account.
pub(crate) fn keys_sql(table: &str, d: &Dialect) -> String {
    format!("SELECT id, created FROM {table} WHERE account {} {}", d.null_safe_eq, (d.param)(1))
}

/// What changed after a sequence number: parameters 1 the sequence
/// number, 2 the source.
pub(crate) fn changed_after_sql(changes: &str, d: &Dialect) -> String {
    format!("SELECT DISTINCT object, object_id FROM {changes} WHERE id > {} AND source = {}", (d.param)(1), (d.param)(2))
}

/// How a backend writes what differs between the two: a placeholder and a
/// null-safe equality.
pub(crate) struct Dialect {
    /// The `n`th (1-based) parameter: `?1` or `$1`.
    pub param: fn(usize) -> String,
    /// `a IS b` (SQLite) or `a IS NOT DISTINCT FROM b` (Postgres).
    pub null_safe_eq: &'static str,
    /// How the `data` column is selected as text.
    pub data_text: &'static str,
}

/// The statements of a list page on `table` (quoted). Parameters: 1 the
/// account, 2 the limit, 3 the cursor's id (when there is a cursor). Rows
/// come newest first, or oldest first for [`ListCursor::Before`] (the
/// caller reverses them).
pub(crate) fn list_sql(table: &str, cursor: &ListCursor, d: &Dialect) -> String {
    let (account, limit, id) = ((d.param)(1), (d.param)(2), (d.param)(3));
    let key = "coalesce(created, 0), id";
    let visible = format!("account {} {account}", d.null_safe_eq);
    let (condition, order) = match cursor {
        ListCursor::Start => (String::new(), "DESC"),
        ListCursor::After(_) => (format!("AND ({key}) < (SELECT {key} FROM {table} WHERE id = {id} AND {visible})"), "DESC"),
        ListCursor::Before(_) => (format!("AND ({key}) > (SELECT {key} FROM {table} WHERE id = {id} AND {visible})"), "ASC"),
    };
    format!(
        "SELECT {data} FROM {table} WHERE {visible} {condition} ORDER BY coalesce(created, 0) {order}, id {order} LIMIT {limit}",
        data = d.data_text
    )
}

/// One object: parameters 1 the account, 2 the id.
pub(crate) fn object_sql(table: &str, d: &Dialect) -> String {
    format!("SELECT {} FROM {table} WHERE id = {} AND account {} {}", d.data_text, (d.param)(2), d.null_safe_eq, (d.param)(1))
}

/// Turn rows read for a page (`limit + 1` asked) into the page.
pub(crate) fn page(mut rows: Vec<Value>, cursor: &ListCursor, limit: usize) -> MirrorPage {
    let has_more = rows.len() > limit;
    rows.truncate(limit);
    if matches!(cursor, ListCursor::Before(_)) {
        rows.reverse();
    }
    MirrorPage { data: rows, has_more }
}

//! Mirror reads on SQLite, on the reader connection.

use std::collections::{HashMap, HashSet};

use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use serde_json::Value;

use super::{SqliteStore, parse_json};
use crate::store::StoreError;
use crate::store::ident::quote;
use crate::store::mirror::{self, Dialect, ListCursor, MirrorPage, MirrorStore};

const SQLITE: Dialect = Dialect { param: |n| format!("?{n}"), null_safe_eq: "IS", data_text: "data" };

/// Rows of one table by ids: parameters 1 the account, 2.. the ids.
fn objects_sql(table: &str, ids: usize, d: &Dialect) -> String {
    let list: Vec<String> = (0..ids).map(|i| (d.param)(i + 2)).collect();
    format!("SELECT id, {} FROM {table} WHERE account {} {} AND id IN ({})", d.data_text, d.null_safe_eq, (d.param)(1), list.join(", "))
}

/// The quoted mirror table of `source`'s `object`, if it has been created.
fn table(conn: &Connection, source: &str, object: &str) -> Result<Option<String>, StoreError> {
    let name: Option<String> = conn
        .query_row("SELECT table_name FROM tributary_tables WHERE source = ?1 AND object = ?2", params![source, object], |r| r.get(0))
        .optional()?;
    Ok(name.map(|n| quote(&n)))
}

#[async_trait::async_trait]
impl MirrorStore for SqliteStore {
    async fn mirror_object(&self, source: &str, object: &str, account: Option<&str>, id: &str) -> Result<Option<Value>, StoreError> {
        let (source, object, account, id) = (source.to_string(), object.to_string(), account.map(String::from), id.to_string());
        self.read(move |conn| {
            let Some(table) = table(conn, &source, &object)? else { return Ok(None) };
            let text: Option<String> =
                conn.query_row(&mirror::object_sql(&table, &SQLITE), params![account, id], |r| r.get(0)).optional()?;
            parse_json(&table, &id, text)
        })
        .await
    }

    async fn mirror_list(
        &self,
        source: &str,
        object: &str,
        account: Option<&str>,
        cursor: &ListCursor,
        limit: usize,
    ) -> Result<Option<MirrorPage>, StoreError> {
        let (source, object, account, cursor) = (source.to_string(), object.to_string(), account.map(String::from), cursor.clone());
        self.read(move |conn| {
            let Some(table) = table(conn, &source, &object)? else {
                // nothing mirrored yet: an empty list, and no cursor object
                return Ok(matches!(cursor, ListCursor::Start).then(|| MirrorPage { data: vec![], has_more: false }));
            };
            let cursor_id = cursor.id();
            if let Some(id) = cursor_id {
                let exists = conn.query_row(&mirror::object_sql(&table, &SQLITE), params![account, id], |_| Ok(())).optional()?.is_some();
                if !exists {
                    return Ok(None);
                }
            }
            let mut stmt = conn.prepare(&mirror::list_sql(&table, &cursor, &SQLITE))?;
            let fetch = (limit + 1) as i64;
            let rows: Vec<String> = match &cursor_id {
                Some(id) => stmt.query_map(params![account, fetch, id], |r| r.get(0))?.collect::<Result<_, _>>()?,
                None => stmt.query_map(params![account, fetch], |r| r.get(0))?.collect::<Result<_, _>>()?,
            };
            let rows = rows
                .into_iter()
                .map(|text| parse_json(&table, "(list)", Some(text)).map(Option::unwrap_or_default))
                .collect::<Result<_, _>>()?;
            Ok(Some(mirror::page(rows, &cursor, limit)))
        })
        .await
    }

    async fn mirror_objects(
        &self,
        source: &str,
        object: &str,
        account: Option<&str>,
        ids: &[String],
    ) -> Result<HashMap<String, Value>, StoreError> {
        let (source, object, account, ids) = (source.to_string(), object.to_string(), account.map(String::from), ids.to_vec());
        self.read(move |conn| {
            let mut out = HashMap::new();
            let Some(table) = table(conn, &source, &object)? else { return Ok(out) };
            // SQLite takes at most 32,766 parameters
            for chunk in ids.chunks(1_000) {
                let mut stmt = conn.prepare(&objects_sql(&table, chunk.len(), &SQLITE))?;
                let values = std::iter::once(account.clone()).chain(chunk.iter().map(|id| Some(id.clone())));
                let rows = stmt.query_map(params_from_iter(values), |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
                for row in rows {
                    let (id, text) = row?;
                    let data = parse_json(&table, &id, Some(text))?.unwrap_or_default();
                    out.insert(id, data);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn mirror_keys(&self, source: &str, object: &str, account: Option<&str>) -> Result<Vec<(String, Option<i64>)>, StoreError> {
        let (source, object, account) = (source.to_string(), object.to_string(), account.map(String::from));
        self.read(move |conn| {
            let Some(table) = table(conn, &source, &object)? else { return Ok(vec![]) };
            let mut stmt = conn.prepare(&mirror::keys_sql(&table, &SQLITE))?;
            let rows = stmt.query_map(params![account], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn change_head(&self) -> Result<i64, StoreError> {
        self.read(|conn| Ok(conn.query_row("SELECT coalesce(max(id), 0) FROM tributary_changes", [], |r| r.get(0))?)).await
    }

    async fn changed_after(&self, source: &str, after: i64) -> Result<HashSet<(String, String)>, StoreError> {
        let source = source.to_string();
        self.read(move |conn| {
            let mut stmt = conn.prepare(&mirror::changed_after_sql("tributary_changes", &SQLITE))?;
            let rows = stmt.query_map(params![after, source], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }
}

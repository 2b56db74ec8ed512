//! Mirror reads on Postgres.

use std::collections::{HashMap, HashSet};

use serde_json::Value;
use tokio_postgres::types::ToSql;

use super::{PgStore, pg};
use crate::store::StoreError;
use crate::store::mirror::{self, Dialect, ListCursor, MirrorPage, MirrorStore};

const POSTGRES: Dialect = Dialect { param: |n| format!("${n}"), null_safe_eq: "IS NOT DISTINCT FROM", data_text: "data::text" };

impl PgStore {
    /// The schema-qualified mirror table of `source`'s `object`, if it has
    /// been created.
    async fn mirror_table_of(&self, client: &deadpool_postgres::Client, source: &str, object: &str) -> Result<Option<String>, StoreError> {
        let sql = format!("SELECT table_name FROM {} WHERE source = $1 AND object = $2", self.t("tributary_tables"));
        let row = client.query_opt(&sql, &[&source, &object]).await.map_err(pg)?;
        Ok(row.map(|r| self.t(r.get::<_, &str>(0))))
    }
}

fn parse(table: &str, text: String) -> Result<Value, StoreError> {
    serde_json::from_str(&text).map_err(|e| StoreError::CorruptRow { table: table.to_string(), id: "(read)".into(), source: e })
}

#[async_trait::async_trait]
impl MirrorStore for PgStore {
    async fn mirror_object(&self, source: &str, object: &str, account: Option<&str>, id: &str) -> Result<Option<Value>, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let Some(table) = self.mirror_table_of(&client, source, object).await? else { return Ok(None) };
        let row = client.query_opt(&mirror::object_sql(&table, &POSTGRES), &[&account, &id]).await.map_err(pg)?;
        row.map(|r| parse(&table, r.get(0))).transpose()
    }

    async fn mirror_list(
        &self,
        source: &str,
        object: &str,
        account: Option<&str>,
        cursor: &ListCursor,
        limit: usize,
    ) -> Result<Option<MirrorPage>, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let Some(table) = self.mirror_table_of(&client, source, object).await? else {
            return Ok(matches!(cursor, ListCursor::Start).then(|| MirrorPage { data: vec![], has_more: false }));
        };
        let cursor_id = cursor.id();
        if let Some(id) = cursor_id
            && client.query_opt(&mirror::object_sql(&table, &POSTGRES), &[&account, &id]).await.map_err(pg)?.is_none()
        {
            return Ok(None);
        }
        let fetch = (limit + 1) as i64;
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&account, &fetch];
        if let Some(id) = &cursor_id {
            params.push(id);
        }
        let rows = client.query(&mirror::list_sql(&table, cursor, &POSTGRES), &params).await.map_err(pg)?;
        let rows = rows.into_iter().map(|r| parse(&table, r.get(0))).collect::<Result<_, _>>()?;
        Ok(Some(mirror::page(rows, cursor, limit)))
    }

    async fn mirror_objects(
        &self,
        source: &str,
        object: &str,
        account: Option<&str>,
        ids: &[String],
    ) -> Result<HashMap<String, Value>, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let Some(table) = self.mirror_table_of(&client, source, object).await? else { return Ok(HashMap::new()) };
        let sql = format!("SELECT id, {} FROM {table} WHERE account {} $1 AND id = ANY($2)", POSTGRES.data_text, POSTGRES.null_safe_eq);
        let rows = client.query(&sql, &[&account, &ids]).await.map_err(pg)?;
        rows.into_iter().map(|r| Ok((r.get::<_, String>(0), parse(&table, r.get(1))?))).collect()
    }

    async fn mirror_keys(&self, source: &str, object: &str, account: Option<&str>) -> Result<Vec<(String, Option<i64>)>, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let Some(table) = self.mirror_table_of(&client, source, object).await? else { return Ok(vec![]) };
        let rows = client.query(&mirror::keys_sql(&table, &POSTGRES), &[&account]).await.map_err(pg)?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn change_head(&self) -> Result<i64, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let sql = format!("SELECT coalesce(max(id), 0) FROM {}", self.t("tributary_changes"));
        Ok(client.query_one(&sql, &[]).await.map_err(pg)?.get(0))
    }

    async fn changed_after(&self, source: &str, after: i64) -> Result<HashSet<(String, String)>, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let rows =
            client.query(&mirror::changed_after_sql(&self.t("tributary_changes"), &POSTGRES), &[&after, &source]).await.map_err(pg)?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

//! Schema migrations: a database made by release 0.1.0 (with its DDL, which
//! is migration 0001 exactly, pinned by checksum in `store::migrate`, and
//! rows in it, but no version table) opens with this release, keeps every
//! row and records each migration once; processes starting together on one
//! Postgres database migrate once.

use std::collections::BTreeMap;

use serde_json::json;
use tributary::store::migrate::{POSTGRES, SQLITE};
use tributary::store::{ChangeCursor, Options, Store, testing};

/// The tables release 0.1.0 created, with its own DDL.
fn release_0_1_0(backend: &str) -> &'static str {
    if backend == "sqlite" { SQLITE[0].sql } else { POSTGRES[0].sql }
}

/// Rows as release 0.1.0 wrote them: a mirror table with its row, a change,
/// a checkpoint and an app. `$n` placeholders work on both backends.
const ROWS: &str = "
INSERT INTO tributary_tables (source, object, table_name, row_count) VALUES ('stripe', 'customer', 'stripe_customer', 1);
INSERT INTO tributary_changes (source, object, object_id, op, type, data, committed_at)
    VALUES ('stripe', 'customer', 'cus_old', 'read', 'customer.read', '{\"id\":\"cus_old\"}', '2026-11-01T00:00:00.000000Z');
INSERT INTO tributary_checkpoints (source, key, value, updated_at) VALUES ('stripe', 'platform/meta', '{\"generation\":1}', '2026-11-01T00:00:00Z');
INSERT INTO tributary_apps (id, name, kind, account, token_hash, created_at) VALUES ('app_old', 'old', 'inhouse', 'platform', 'hash-of-old-token', '2026-11-01T00:00:00Z');
";

/// Everything the old release wrote is read back through the store.
async fn assert_old_rows(store: &dyn Store) {
    let page = store.changes_after(ChangeCursor::START, 10).await.unwrap();
    assert_eq!(page.changes.len(), 1);
    assert_eq!(page.changes[0].object_id, "cus_old");
    assert_eq!(store.checkpoints("stripe").await.unwrap(), BTreeMap::from([("platform/meta".to_string(), json!({"generation": 1}))]));
    assert_eq!(store.app_by_token("hash-of-old-token").await.unwrap().expect("the app").id, "app_old");
    let rows = store.mirror_rows("stripe").await.unwrap();
    assert_eq!(rows["customer"][0].id, "cus_old");
    assert_eq!(store.object_counts("stripe").await.unwrap()["customer"], 1);
}

#[tokio::test]
async fn a_sqlite_database_of_release_0_1_0_opens_and_migrates_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(release_0_1_0("sqlite")).unwrap();
        conn.execute_batch(ROWS).unwrap();
        conn.execute_batch(
            "CREATE TABLE stripe_customer (id TEXT PRIMARY KEY, account TEXT, data TEXT NOT NULL, created INTEGER, updated_at TEXT NOT NULL, _generation INTEGER NOT NULL DEFAULT 0);
             INSERT INTO stripe_customer (id, data, created, updated_at, _generation) VALUES ('cus_old', '{\"id\":\"cus_old\"}', 1, '2026-11-01T00:00:00Z', 1);",
        )
        .unwrap();
    }
    let options = Options::url(&format!("sqlite://{}", path.display()));
    for _ in 0..2 {
        let store = tributary::store::open(&options).await.unwrap();
        assert_old_rows(store.as_ref()).await;
        drop(store);
        let conn = rusqlite::Connection::open(&path).unwrap();
        let versions: Vec<(i64, String)> = conn
            .prepare("SELECT version, name FROM tributary_schema_version ORDER BY version")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(versions, SQLITE.iter().map(|m| (m.version, m.name.to_string())).collect::<Vec<_>>(), "each migration once");
    }
}

async fn pg_client() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&testing::base_url(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

async fn pg_versions(client: &tokio_postgres::Client, schema: &str) -> Vec<(i64, String)> {
    let rows =
        client.query(&format!("SELECT version, name FROM \"{schema}\".tributary_schema_version ORDER BY version"), &[]).await.unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

fn expected_pg() -> Vec<(i64, String)> {
    POSTGRES.iter().map(|m| (m.version, m.name.to_string())).collect()
}

#[tokio::test]
async fn a_postgres_schema_of_release_0_1_0_opens_and_migrates_once() {
    let (guard, options) = testing::options();
    let schema = guard.0.clone();
    let client = pg_client().await;
    client
        .batch_execute(&format!(
            "CREATE SCHEMA \"{schema}\"; SET search_path TO \"{schema}\"; {}
             {ROWS}
             CREATE TABLE stripe_customer (id text PRIMARY KEY, account text, data jsonb NOT NULL, created bigint, updated_at timestamptz NOT NULL, _generation bigint NOT NULL DEFAULT 0);
             INSERT INTO stripe_customer (id, data, created, updated_at, _generation) VALUES ('cus_old', '{{\"id\":\"cus_old\"}}', 1, now(), 1);
             SET search_path TO public;",
            release_0_1_0("postgres")
        ))
        .await
        .unwrap();
    for _ in 0..2 {
        let store = tributary::store::open(&options).await.unwrap();
        assert_old_rows(store.as_ref()).await;
        assert_eq!(pg_versions(&client, &schema).await, expected_pg(), "each migration once");
    }
}

#[tokio::test]
async fn postgres_instances_starting_together_migrate_once() {
    let (guard, options) = testing::options();
    let opens: Vec<_> = (0..4).map(|_| tributary::store::open(&options)).collect();
    for store in futures::future::join_all(opens).await {
        store.expect("every instance opens");
    }
    assert_eq!(pg_versions(&pg_client().await, &guard.0).await, expected_pg());
}

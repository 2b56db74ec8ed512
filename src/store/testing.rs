//! Helpers for tests against Postgres (unit and end-to-end): a throwaway
//! schema per test in the database named by `TRIBUTARY_TEST_PG` (default:
//! the local server), dropped when the test ends.

use std::sync::Arc;

use super::{Options, Store, open};

pub fn base_url() -> String {
    std::env::var("TRIBUTARY_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Drops its schema when the test ends.
pub struct Schema(pub String);

impl Drop for Schema {
    fn drop(&mut self) {
        let (url, schema) = (base_url(), self.0.clone());
        // a fresh runtime on its own thread: Drop may run inside one
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime to drop the schema");
            rt.block_on(async {
                if let Ok((client, conn)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                    tokio::spawn(conn);
                    let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")).await;
                }
            });
        })
        .join();
    }
}

pub fn options() -> (Schema, Options) {
    let schema = format!("tributary_t_{}_{}", std::process::id(), rand::random::<u32>());
    let options = Options { url: base_url(), schema: schema.clone(), pool_size: 8 };
    (Schema(schema), options)
}

pub async fn store() -> (Schema, Arc<dyn Store>) {
    let (guard, options) = options();
    let store = open(&options).await.expect("postgres for tests (scripts/test.sh starts it)");
    (guard, store)
}

//! A schema registry of the test's own: no registry server can be installed
//! here, so this implements the two REST calls of Confluent's API the sink
//! and the decoder use: `POST /subjects/{subject}/versions` (the same schema
//! keeps its id) and `GET /schemas/ids/{id}`.

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use serde_json::{Value, json};

#[derive(Default)]
pub struct Registry {
    /// (subject, schema text), id = index + 1.
    pub schemas: Mutex<Vec<(String, String)>>,
}

async fn register(State(r): State<Arc<Registry>>, Path(subject): Path<String>, Json(body): Json<Value>) -> Json<Value> {
    let text = body["schema"].as_str().expect("a schema").to_string();
    let mut schemas = r.schemas.lock().unwrap();
    let id = match schemas.iter().position(|(_, s)| *s == text) {
        Some(at) => at + 1,
        None => {
            schemas.push((subject, text));
            schemas.len()
        }
    };
    Json(json!({ "id": id }))
}

async fn schema(State(r): State<Arc<Registry>>, Path(id): Path<usize>) -> Json<Value> {
    Json(json!({ "schema": r.schemas.lock().unwrap()[id - 1].1 }))
}

pub async fn start() -> (String, Arc<Registry>) {
    let registry = Arc::new(Registry::default());
    let app = axum::Router::new()
        .route("/subjects/{subject}/versions", post(register))
        .route("/schemas/ids/{id}", get(schema))
        .with_state(registry.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, registry)
}

//! One behaviour suite for every store backend: each test is an async fn
//! taking a fresh store; `store_suite!` instantiates them per backend.

use serde_json::{Value, json};

use super::*;

fn write(object: &str, id: &str, mutation: Mutation, origin: Origin, generation: i64) -> Write {
    Write { object: object.into(), id: id.into(), account: None, mutation, origin, generation }
}

fn event(id: &str, kind: &str, previous: Option<Value>) -> Origin {
    Origin::Event { id: id.into(), kind: kind.into(), previous_attributes: previous }
}

fn batch(writes: Vec<Write>) -> Batch {
    Batch { source: "stripe".into(), writes, ..Batch::default() }
}

pub async fn ops_follow_the_mirror(store: Arc<dyn Store>) {
    let v1 = json!({"id": "cus_1", "object": "customer", "name": "Ada", "created": 1700000000});
    let v2 = json!({"id": "cus_1", "object": "customer", "name": "Grace", "created": 1700000000});
    let a = store.apply(batch(vec![write("customer", "cus_1", Mutation::Upsert(v1.clone()), Origin::Backfill, 1)])).await.unwrap();
    assert_eq!(a, Applied { changes: 1, unchanged: 0 });
    // the same snapshot again records no change
    let again = store
        .apply(batch(vec![write("customer", "cus_1", Mutation::Upsert(v1.clone()), event("evt_1", "customer.updated", None), 1)]))
        .await
        .unwrap();
    assert_eq!(again, Applied { changes: 0, unchanged: 1 });
    let prev = json!({"name": "Ada"});
    store
        .apply(batch(vec![write(
            "customer",
            "cus_1",
            Mutation::Upsert(v2.clone()),
            event("evt_2", "customer.updated", Some(prev.clone())),
            1,
        )]))
        .await
        .unwrap();
    store
        .apply(batch(vec![write(
            "customer",
            "cus_2",
            Mutation::Upsert(json!({"id": "cus_2", "object": "customer"})),
            event("evt_3", "customer.created", None),
            1,
        )]))
        .await
        .unwrap();
    store.apply(batch(vec![write("customer", "cus_1", Mutation::Delete, event("evt_4", "customer.deleted", None), 1)])).await.unwrap();
    // deleting what the mirror does not hold records nothing
    let none =
        store.apply(batch(vec![write("customer", "cus_9", Mutation::Delete, event("evt_5", "customer.deleted", None), 1)])).await.unwrap();
    assert_eq!(none.changes, 0);

    let changes = store.changes_after(0, 100).await.unwrap();
    let summary: Vec<(&str, &str, &str, Option<&str>)> =
        changes.iter().map(|c| (c.op.as_str(), c.kind.as_str(), c.object_id.as_str(), c.upstream_event_id.as_deref())).collect();
    assert_eq!(
        summary,
        vec![
            ("read", "customer.read", "cus_1", None),
            ("update", "customer.updated", "cus_1", Some("evt_2")),
            ("insert", "customer.created", "cus_2", Some("evt_3")),
            ("delete", "customer.deleted", "cus_1", Some("evt_4")),
        ]
    );
    assert_eq!(changes[0].data, Some(v1));
    assert_eq!(changes[1].previous_attributes, Some(prev));
    assert_eq!(changes[3].data, None);
    assert!(changes.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(changes[0].id, change_id(changes[0].seq));
    assert_eq!(store.object_counts("stripe").await.unwrap().get("customer"), Some(&1));
    // paging by cursor returns the rest, in order
    let rest = store.changes_after(changes[1].seq, 100).await.unwrap();
    assert_eq!(rest, changes[2..].to_vec());
}

pub async fn previous_attributes_are_computed_without_an_event(store: Arc<dyn Store>) {
    let v1 = json!({"id": "p1", "object": "price", "nickname": "a", "active": true});
    let v2 = json!({"id": "p1", "object": "price", "nickname": "b", "active": true});
    store.apply(batch(vec![write("price", "p1", Mutation::Upsert(v1), Origin::Backfill, 1)])).await.unwrap();
    store.apply(batch(vec![write("price", "p1", Mutation::Upsert(v2), Origin::Backfill, 2)])).await.unwrap();
    let changes = store.changes_after(0, 10).await.unwrap();
    assert_eq!(changes[1].previous_attributes, Some(json!({"nickname": "a"})));
}

pub async fn sweep_deletes_rows_an_older_generation_saw(store: Arc<dyn Store>) {
    let row = |id: &str| json!({"id": id, "object": "product"});
    let gen1: Vec<Write> = ["a", "b", "c"].iter().map(|id| write("product", id, Mutation::Upsert(row(id)), Origin::Backfill, 1)).collect();
    store.apply(batch(gen1)).await.unwrap();
    let mut gen2 = batch(vec![write("product", "a", Mutation::Upsert(row("a")), Origin::Backfill, 2)]);
    gen2.sweeps.push(Sweep { object: "product".into(), account: None, below_generation: 2 });
    let applied = store.apply(gen2).await.unwrap();
    assert_eq!(applied.changes, 2, "b and c deleted, a unchanged");
    let deletes: Vec<String> =
        store.changes_after(0, 10).await.unwrap().into_iter().filter(|c| c.op == "delete").map(|c| c.object_id).collect();
    assert_eq!(deletes, ["b", "c"]);
    assert_eq!(store.object_counts("stripe").await.unwrap()["product"], 1);
}

pub async fn checkpoints_commit_with_the_data_or_not_at_all(store: Arc<dyn Store>) {
    let mut ok = batch(vec![write("customer", "c1", Mutation::Upsert(json!({"id": "c1"})), Origin::Backfill, 1)]);
    ok.checkpoints.push(("platform/meta".into(), json!({"cursor": "evt_1"})));
    store.apply(ok).await.unwrap();
    // a batch with a hostile object type fails whole: no row, no checkpoint
    let mut bad = batch(vec![
        write("customer", "c2", Mutation::Upsert(json!({"id": "c2"})), Origin::Backfill, 1),
        write("x\"; DROP TABLE tributary_changes; --", "c3", Mutation::Upsert(json!({"id": "c3"})), Origin::Backfill, 1),
    ]);
    bad.checkpoints.push(("platform/meta".into(), json!({"cursor": "evt_2"})));
    let err = store.apply(bad).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidIdentifier(_)), "{err}");
    let checkpoints = store.checkpoints("stripe").await.unwrap();
    assert_eq!(checkpoints["platform/meta"], json!({"cursor": "evt_1"}));
    assert_eq!(store.object_counts("stripe").await.unwrap()["customer"], 1);
    assert_eq!(store.changes_after(0, 10).await.unwrap().len(), 1);
}

pub async fn concurrent_batches_all_commit(store: Arc<dyn Store>) {
    let tasks = (0..20).map(|t| {
        let store = store.clone();
        tokio::spawn(async move {
            let writes = (0..50).map(|i| {
                let id = format!("ch_{t}_{i}");
                write("charge", &id, Mutation::Upsert(json!({"id": id})), Origin::Backfill, 1)
            });
            store.apply(batch(writes.collect())).await.unwrap()
        })
    });
    for task in futures::future::join_all(tasks).await {
        assert_eq!(task.unwrap().changes, 50);
    }
    assert_eq!(store.object_counts("stripe").await.unwrap()["charge"], 1000);
    let changes = store.changes_after(0, 2000).await.unwrap();
    assert_eq!(changes.len(), 1000);
}

/// Instantiate every suite test for one backend; `$open` is an async
/// expression yielding a fresh `Arc<dyn Store>`.
macro_rules! store_suite {
    ($backend:ident, $open:expr) => {
        mod $backend {
            use super::*;
            store_suite!(@tests $open; ops_follow_the_mirror, previous_attributes_are_computed_without_an_event,
                sweep_deletes_rows_an_older_generation_saw, checkpoints_commit_with_the_data_or_not_at_all, concurrent_batches_all_commit);
        }
    };
    (@tests $open:expr; $($name:ident),*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (_guard, store) = $open.await;
                super::$name(store).await;
            }
        )*
    };
}

async fn sqlite_store() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&format!("sqlite://{}", dir.path().join("t.db").display())).await.unwrap();
    (dir, store)
}

store_suite!(sqlite, sqlite_store());

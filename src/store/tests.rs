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

/// The `expected` changes, read in small pages through the cursor API. On
/// Postgres a change shows once every older transaction in the cluster has
/// finished (other tests run beside this one), so short waits are normal;
/// after the expected count, one more read checks nothing else appears.
async fn all_changes(store: &Arc<dyn Store>, expected: usize) -> Vec<Change> {
    let mut out = Vec::new();
    let mut cursor = ChangeCursor::START;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let page = store.changes_after(cursor, 7).await.unwrap();
        cursor = page.next;
        if page.changes.is_empty() {
            if out.len() >= expected {
                return out;
            }
            assert!(std::time::Instant::now() < deadline, "only {} of {expected} changes became visible", out.len());
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        out.extend(page.changes);
    }
}

/// A change as a reader would see it, for tests of logic above the store.
pub(crate) fn change_at(seq: i64) -> Change {
    Change {
        id: change_id(seq),
        seq,
        cursor: ChangeCursor { xid: 0, seq },
        source: "stripe".into(),
        object: "customer".into(),
        object_id: format!("cus_{seq}"),
        account: None,
        op: "insert".into(),
        kind: "customer.created".into(),
        data: None,
        previous_attributes: None,
        upstream_event_id: None,
        committed_at: timestamp(chrono::Utc::now()),
    }
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

    let changes = all_changes(&store, 4).await;
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
    assert_eq!(changes[0].data_value(), Some(v1));
    assert_eq!(changes[1].previous_value(), Some(prev));
    assert!(changes[3].data.is_none());
    assert!(changes.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(changes[0].id, change_id(changes[0].seq));
    assert_eq!(store.object_counts("stripe").await.unwrap().get("customer"), Some(&1));
    // paging by cursor returns the rest, in order
    let rest = store.changes_after(changes[1].cursor, 100).await.unwrap();
    let seqs = |list: &[Change]| list.iter().map(|c| c.seq).collect::<Vec<_>>();
    assert_eq!(seqs(&rest.changes), seqs(&changes[2..]));
    assert_eq!(rest.next, changes[3].cursor);
    assert_eq!(ChangeCursor::parse(&rest.next.to_string()), Some(rest.next));
    let empty = store.changes_after(rest.next, 100).await.unwrap();
    assert!(empty.changes.is_empty());
    assert_eq!(empty.next, rest.next, "an empty page keeps the cursor");
    let rows = store.mirror_rows("stripe").await.unwrap();
    assert_eq!(rows["customer"], vec![MirrorRow { id: "cus_2".into(), account: None, data: json!({"id": "cus_2", "object": "customer"}) }]);
}

pub async fn previous_attributes_are_computed_without_an_event(store: Arc<dyn Store>) {
    let v1 = json!({"id": "p1", "object": "price", "nickname": "a", "active": true});
    let v2 = json!({"id": "p1", "object": "price", "nickname": "b", "active": true});
    store.apply(batch(vec![write("price", "p1", Mutation::Upsert(v1), Origin::Backfill, 1)])).await.unwrap();
    store.apply(batch(vec![write("price", "p1", Mutation::Upsert(v2), Origin::Backfill, 2)])).await.unwrap();
    let changes = all_changes(&store, 2).await;
    assert_eq!(changes[1].previous_value(), Some(json!({"nickname": "a"})));
}

pub async fn sweep_deletes_rows_an_older_generation_saw(store: Arc<dyn Store>) {
    let row = |id: &str| json!({"id": id, "object": "product"});
    let gen1: Vec<Write> = ["a", "b", "c"].iter().map(|id| write("product", id, Mutation::Upsert(row(id)), Origin::Backfill, 1)).collect();
    store.apply(batch(gen1)).await.unwrap();
    let mut gen2 = batch(vec![write("product", "a", Mutation::Upsert(row("a")), Origin::Backfill, 2)]);
    gen2.sweeps.push(Sweep { object: "product".into(), account: None, below_generation: 2, created_before: None });
    let applied = store.apply(gen2).await.unwrap();
    assert_eq!(applied.changes, 2, "b and c deleted, a unchanged");
    let deletes: Vec<String> = all_changes(&store, 5).await.into_iter().filter(|c| c.op == "delete").map(|c| c.object_id).collect();
    assert_eq!(deletes, ["b", "c"]);
    assert_eq!(store.object_counts("stripe").await.unwrap()["product"], 1);
}

/// Writes through the engine carry generation 0: one that lands after the
/// running backfill read its row leaves the row at the backfill's
/// generation, and an object created after the backfill began (it could not
/// list it) is left to the events, so neither is swept (deleted, then
/// inserted again by the catch-up).
pub async fn engine_writes_during_a_backfill_are_not_swept(store: Arc<dyn Store>) {
    let row = |id: &str, name: &str, created: i64| json!({"id": id, "object": "product", "name": name, "created": created});
    let gen1: Vec<Write> =
        ["a", "b", "c"].iter().map(|id| write("product", id, Mutation::Upsert(row(id, "old", 100)), Origin::Backfill, 1)).collect();
    store.apply(batch(gen1)).await.unwrap();
    // generation 2 began at second 200: it reads a and b, then the engine
    // writes a (changed), b (unchanged) and creates d
    let read: Vec<Write> =
        ["a", "b"].iter().map(|id| write("product", id, Mutation::Upsert(row(id, "old", 100)), Origin::Backfill, 2)).collect();
    store.apply(batch(read)).await.unwrap();
    let engine = vec![
        write("product", "a", Mutation::Upsert(row("a", "new", 100)), Origin::Write, 0),
        write("product", "b", Mutation::Upsert(row("b", "old", 100)), Origin::Write, 0),
        write("product", "d", Mutation::Upsert(row("d", "new", 250)), Origin::Write, 0),
    ];
    store.apply(batch(engine)).await.unwrap();
    let mut end = batch(vec![]);
    end.sweeps.push(Sweep { object: "product".into(), account: None, below_generation: 2, created_before: Some(200) });
    store.apply(end).await.unwrap();
    let deletes: Vec<String> = all_changes(&store, 6).await.into_iter().filter(|c| c.op == "delete").map(|c| c.object_id).collect();
    assert_eq!(deletes, ["c"], "only the row gone upstream is swept");
    let mut ids: Vec<String> = store.mirror_rows("stripe").await.unwrap()["product"].iter().map(|r| r.id.clone()).collect();
    ids.sort();
    assert_eq!(ids, ["a", "b", "d"]);
}

pub async fn checkpoints_commit_with_the_data_or_not_at_all(store: Arc<dyn Store>) {
    let mut ok = batch(vec![write("customer", "c1", Mutation::Upsert(json!({"id": "c1"})), Origin::Backfill, 1)]);
    ok.checkpoints.push(Checkpoint::unordered("platform/meta", json!({"cursor": "evt_1"})));
    store.apply(ok).await.unwrap();
    // a batch with a hostile object type fails whole: no row, no checkpoint
    let mut bad = batch(vec![
        write("customer", "c2", Mutation::Upsert(json!({"id": "c2"})), Origin::Backfill, 1),
        write("x\"; DROP TABLE tributary_changes; --", "c3", Mutation::Upsert(json!({"id": "c3"})), Origin::Backfill, 1),
    ]);
    bad.checkpoints.push(Checkpoint::unordered("platform/meta", json!({"cursor": "evt_2"})));
    let err = store.apply(bad).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidIdentifier(_)), "{err}");
    let checkpoints = store.checkpoints("stripe").await.unwrap();
    assert_eq!(checkpoints["platform/meta"], json!({"cursor": "evt_1"}));
    assert_eq!(store.object_counts("stripe").await.unwrap()["customer"], 1);
    assert_eq!(all_changes(&store, 1).await.len(), 1);
}

/// A checkpoint behind the stored one is refused with the whole batch (no
/// row, no change); equal or ahead is written; unordered ones always are.
pub async fn checkpoints_never_move_backwards(store: Arc<dyn Store>) {
    let at = |major, minor, cursor: &str| Checkpoint::at("platform/meta", json!({"cursor": cursor}), Position { major, minor });
    let with = |checkpoint: Checkpoint, id: &str| {
        let mut b = batch(vec![write("customer", id, Mutation::Upsert(json!({"id": id})), Origin::Backfill, 1)]);
        b.checkpoints.push(checkpoint);
        b.checkpoints.push(Checkpoint::unordered("ack_id", json!(id)));
        b
    };
    store.apply(with(at(2, 3, "evt_1"), "c1")).await.unwrap();
    store.apply(with(at(2, 3, "evt_2"), "c2")).await.expect("the same position moves on");
    for behind in [at(2, 2, "evt_old"), at(1, 9, "evt_older")] {
        let error = store.apply(with(behind, "c3")).await.unwrap_err();
        assert!(matches!(&error, StoreError::CheckpointBehind { key, .. } if key == "platform/meta"), "{error}");
    }
    let checkpoints = store.checkpoints("stripe").await.unwrap();
    assert_eq!(checkpoints["platform/meta"], json!({"cursor": "evt_2"}));
    assert_eq!(checkpoints["ack_id"], json!("c2"), "nothing of a refused batch is committed");
    assert_eq!(store.object_counts("stripe").await.unwrap()["customer"], 2);
    assert_eq!(all_changes(&store, 2).await.len(), 2);
    store.apply(with(at(3, 1, "evt_3"), "c4")).await.expect("a new generation starts low");
    assert_eq!(store.checkpoints("stripe").await.unwrap()["platform/meta"], json!({"cursor": "evt_3"}));
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
    let changes = all_changes(&store, 1000).await;
    assert_eq!(changes.len(), 1000);

    // batches that insert the same new objects at once (a child listed
    // under two parents) all commit: a batch refused by the key another
    // took first is planned again against its row
    let tasks = (0..8).map(|t| {
        let store = store.clone();
        tokio::spawn(async move {
            let writes =
                (0..50).map(|i| write("item", &format!("li_{i}"), Mutation::Upsert(json!({"id": i, "by": t % 2})), Origin::Backfill, 1));
            store.apply(batch(writes.collect())).await
        })
    });
    for task in futures::future::join_all(tasks).await {
        task.unwrap().expect("a batch that met another's insert commits");
    }
    assert_eq!(store.object_counts("stripe").await.unwrap()["item"], 50);
}

/// Instantiate every suite test for one backend; `$open` is an async
/// expression yielding a fresh `Arc<dyn Store>`.
macro_rules! store_suite {
    ($backend:ident, $open:expr) => {
        mod $backend {
            use super::*;
            store_suite!(@tests $open; ops_follow_the_mirror, previous_attributes_are_computed_without_an_event,
                sweep_deletes_rows_an_older_generation_saw, engine_writes_during_a_backfill_are_not_swept, checkpoints_commit_with_the_data_or_not_at_all, checkpoints_never_move_backwards,
                concurrent_batches_all_commit,
                account_ids_and_types_are_data_not_sql, sink_cursors_and_dead_letters_commit_together,
                purge_keeps_what_a_reader_has_not_passed, apps_are_found_by_token_hash_until_revoked,
                queues_fan_out_pull_acknowledge_and_expire, idempotency_keys_follow_their_recovery_points,
                ledger_commits_with_the_batch_and_resends_emit_reads, mirror_reads_page_like_stripe_within_one_account,
                reconcile_reads_rows_by_id_and_what_changed_since_a_point, parked_events_commit_with_their_batch_once,
                rewinds_move_the_cursor_and_fence_batches_confirmed_before, dead_letters_are_listed_redriven_and_discarded,
                pauses_are_kept_and_the_change_log_is_filtered);
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

/// Lists are newest first by `created` then id, pages follow Stripe's
/// cursors both ways, and an account sees only its own rows.
pub async fn mirror_reads_page_like_stripe_within_one_account(store: Arc<dyn Store>) {
    use mirror::{ListCursor, MirrorPage};
    let customer = |id: &str, created: i64, account: Option<&str>| Write {
        account: account.map(String::from),
        ..write("customer", id, Mutation::Upsert(json!({"id": id, "object": "customer", "created": created})), Origin::Backfill, 1)
    };
    let empty = store.mirror_list("stripe", "customer", None, &ListCursor::Start, 10).await.unwrap();
    assert_eq!(empty, Some(MirrorPage { data: vec![], has_more: false }), "no table yet: an empty list");
    // c3 and c4 share a second: the id breaks the tie
    let writes = vec![
        customer("c1", 100, None),
        customer("c2", 200, None),
        customer("c3", 300, None),
        customer("c4", 300, None),
        customer("a1", 500, Some("acct_1")),
    ];
    store.apply(batch(writes)).await.unwrap();
    let ids = |page: &MirrorPage| page.data.iter().map(|o| o["id"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    let list = |cursor: ListCursor, limit| {
        let store = store.clone();
        async move { store.mirror_list("stripe", "customer", None, &cursor, limit).await.unwrap().expect("the cursor object exists") }
    };
    let first = list(ListCursor::Start, 2).await;
    assert_eq!((ids(&first), first.has_more), (vec!["c4".to_string(), "c3".into()], true));
    let next = list(ListCursor::After("c3".into()), 2).await;
    assert_eq!((ids(&next), next.has_more), (vec!["c2".to_string(), "c1".into()], false));
    let back = list(ListCursor::Before("c2".into()), 1).await;
    assert_eq!((ids(&back), back.has_more), (vec!["c3".to_string()], true));
    let back = list(ListCursor::Before("c2".into()), 5).await;
    assert_eq!((ids(&back), back.has_more), (vec!["c4".to_string(), "c3".into()], false), "still newest first");
    // one account's rows are invisible to another, cursors included
    assert_eq!(store.mirror_list("stripe", "customer", None, &ListCursor::After("a1".into()), 5).await.unwrap(), None);
    let theirs = store.mirror_list("stripe", "customer", Some("acct_1"), &ListCursor::Start, 5).await.unwrap().unwrap();
    assert_eq!(ids(&theirs), vec!["a1".to_string()]);
    assert_eq!(store.mirror_object("stripe", "customer", None, "a1").await.unwrap(), None);
    assert_eq!(store.mirror_object("stripe", "customer", Some("acct_1"), "a1").await.unwrap().unwrap()["created"], 500);
    assert_eq!(store.mirror_object("stripe", "customer", None, "c1").await.unwrap().unwrap()["id"], "c1");
    assert_eq!(store.mirror_object("stripe", "invoice", None, "c1").await.unwrap(), None, "no such table");
}

/// What reconcile reads: rows by ids and every (id, created) within one
/// account, the change log's head, and the objects changed after it; and
/// a repair applies only to the state it was compared with.
pub async fn reconcile_reads_rows_by_id_and_what_changed_since_a_point(store: Arc<dyn Store>) {
    let customer = |id: &str, created: Option<i64>, account: Option<&str>| Write {
        account: account.map(String::from),
        ..write("customer", id, Mutation::Upsert(json!({"id": id, "created": created})), Origin::Backfill, 1)
    };
    assert_eq!(store.change_head().await.unwrap(), 0);
    assert!(store.mirror_keys("stripe", "customer", None).await.unwrap().is_empty(), "no table yet");
    assert!(store.mirror_objects("stripe", "customer", None, &["c1".into()]).await.unwrap().is_empty());
    store
        .apply(batch(vec![customer("c1", Some(100), None), customer("c2", None, None), customer("a1", Some(7), Some("acct_1"))]))
        .await
        .unwrap();
    let mut keys = store.mirror_keys("stripe", "customer", None).await.unwrap();
    keys.sort();
    assert_eq!(keys, [("c1".to_string(), Some(100)), ("c2".to_string(), None)]);
    let ids: Vec<String> = ["c1", "a1", "nope", "c2"].iter().map(|s| s.to_string()).collect();
    let rows = store.mirror_objects("stripe", "customer", None, &ids).await.unwrap();
    assert_eq!(rows.len(), 2, "another account's row and an unknown id are not read: {rows:?}");
    assert_eq!(rows["c1"], json!({"id": "c1", "created": 100}));
    let many: Vec<String> = (0..2_500).map(|i| format!("c{i}")).collect();
    assert_eq!(store.mirror_objects("stripe", "customer", None, &many).await.unwrap().len(), 2, "more ids than one statement takes");

    let head = store.change_head().await.unwrap();
    assert!(head >= 3, "{head}");
    assert!(store.changed_after("stripe", head).await.unwrap().is_empty());
    let update = write("customer", "c2", Mutation::Upsert(json!({"id": "c2", "name": "new"})), event("evt_1", "customer.updated", None), 1);
    let elsewhere = Batch { source: "other".into(), writes: vec![customer("c9", None, None)], ..Batch::default() };
    store.apply(batch(vec![update])).await.unwrap();
    store.apply(elsewhere).await.unwrap();
    let changed = store.changed_after("stripe", head).await.unwrap();
    assert_eq!(changed, [("customer".to_string(), "c2".to_string())].into(), "only this source's changes after the head");
    assert_eq!(store.change_head().await.unwrap(), head + 2);

    // a repair compared with c2's state before the update is not applied
    let repair = |id: &str, expected: Value| {
        write(
            "customer",
            id,
            Mutation::Upsert(json!({"id": id, "fixed": true})),
            Origin::Reconcile { expected: Some(expected.to_string()) },
            0,
        )
    };
    // (the change log's readers see it once older transactions of the
    // server end: not read here, the plan's own test checks its type)
    let before = store.change_head().await.unwrap();
    let applied =
        store.apply(batch(vec![repair("c2", json!({"id": "c2", "created": null})), repair("c1", rows["c1"].clone())])).await.unwrap();
    assert_eq!(applied, Applied { changes: 1, unchanged: 1 });
    assert_eq!(store.changed_after("stripe", before).await.unwrap(), [("customer".to_string(), "c1".to_string())].into());
    assert_eq!(store.mirror_object("stripe", "customer", None, "c1").await.unwrap().unwrap()["fixed"], true);
    assert_eq!(store.mirror_object("stripe", "customer", None, "c2").await.unwrap().unwrap()["name"], "new");
}

pub async fn account_ids_and_types_are_data_not_sql(store: Arc<dyn Store>) {
    let hostile = "acct_'); DROP TABLE tributary_changes; --";
    let mut w = write("customer", "cus_'quote\"", Mutation::Upsert(json!({"id": "x", "o'k": "\"; --"})), Origin::Backfill, 1);
    w.account = Some(hostile.into());
    store.apply(batch(vec![w])).await.unwrap();
    let rows = store.mirror_rows("stripe").await.unwrap();
    assert_eq!(rows["customer"][0].account.as_deref(), Some(hostile));
    assert_eq!(rows["customer"][0].id, "cus_'quote\"");
    assert_eq!(all_changes(&store, 1).await.len(), 1);
}

pub async fn sink_cursors_and_dead_letters_commit_together(store: Arc<dyn Store>) {
    assert_eq!(store.sink_cursor("hooks").await.unwrap(), None);
    let mut commits = store.commits();
    let before = *commits.borrow_and_update();
    store.apply(batch(vec![write("customer", "c1", Mutation::Upsert(json!({"id": "c1"})), Origin::Backfill, 1)])).await.unwrap();
    // delivery is woken by the commit, not by polling
    tokio::time::timeout(std::time::Duration::from_secs(5), commits.wait_for(|n| *n > before)).await.expect("commit announced").unwrap();
    let changes = all_changes(&store, 1).await;
    let letter =
        DeadLetter { change_id: changes[0].id.clone(), error: "500 from endpoint".into(), envelope: "{\"id\":1}".into(), attempts: 3 };
    store.advance_sink("hooks", 0, changes[0].cursor, vec![letter]).await.unwrap();
    assert_eq!(store.sink_cursor("hooks").await.unwrap(), Some(changes[0].cursor));
    assert_eq!(store.dead_letter_count("hooks").await.unwrap(), 1);
    assert_eq!(store.dead_letter_count("other").await.unwrap(), 0);
    store.advance_sink("hooks", 0, changes[0].cursor, vec![]).await.unwrap();
    assert_eq!(store.dead_letter_count("hooks").await.unwrap(), 1);
}

/// Three changes to `c1`, `c2`, `c3` (one batch each), returned in order.
async fn three_changes(store: &Arc<dyn Store>) -> Vec<Change> {
    for id in ["c1", "c2", "c3"] {
        store.apply(batch(vec![write("customer", id, Mutation::Upsert(json!({"id": id})), Origin::Backfill, 1)])).await.unwrap();
    }
    let changes = all_changes(store, 3).await;
    assert_eq!(changes.len(), 3);
    changes
}

pub async fn rewinds_move_the_cursor_and_fence_batches_confirmed_before(store: Arc<dyn Store>) {
    use super::controls::SinkPosition;
    let changes = three_changes(&store).await;
    assert_eq!(store.sink_position("hooks").await.unwrap(), SinkPosition::default());
    store.advance_sink("hooks", 0, changes[2].cursor, vec![]).await.unwrap();
    // a change's position, and the first committed since a time
    assert_eq!(store.change_cursor(changes[1].seq).await.unwrap(), Some(changes[1].cursor));
    assert_eq!(store.change_cursor(changes[2].seq + 100).await.unwrap(), None);
    assert_eq!(store.first_change_since(&changes[1].committed_at).await.unwrap().map(|c| c.seq), Some(changes[1].seq));
    assert_eq!(store.first_change_since("2999-01-01T00:00:00.000000Z").await.unwrap(), None);
    // asked for: the cursor stays until the owner applies it
    let mut heard = store.controls_changed();
    let before = *heard.borrow_and_update();
    store.request_rewind("hooks", changes[0].cursor).await.unwrap();
    assert!(*heard.borrow() > before, "a request is announced in this process");
    let controls = store.controls().await.unwrap();
    assert_eq!(controls.len(), 1);
    assert_eq!((controls[0].name.as_str(), controls[0].rewind_to), ("hooks", Some(changes[0].cursor)));
    assert_eq!(store.sink_position("hooks").await.unwrap().cursor, changes[2].cursor);
    // applying another position than the one asked for does nothing
    assert!(!store.apply_rewind("hooks", changes[1].cursor).await.unwrap());
    assert!(store.apply_rewind("hooks", changes[0].cursor).await.unwrap());
    assert_eq!(store.sink_position("hooks").await.unwrap(), SinkPosition { cursor: changes[0].cursor, epoch: 1 });
    assert_eq!(store.controls().await.unwrap()[0].rewind_to, None);
    assert!(!store.apply_rewind("hooks", changes[0].cursor).await.unwrap(), "applied once");
    // a batch confirmed against the old epoch moves nothing, parks nothing
    let letter = DeadLetter { change_id: changes[2].id.clone(), error: "late".into(), envelope: "{}".into(), attempts: 1 };
    let raced = store.advance_sink("hooks", 0, changes[2].cursor, vec![letter]).await;
    assert!(matches!(raced, Err(StoreError::Raced(_))), "{raced:?}");
    assert_eq!(store.sink_position("hooks").await.unwrap().cursor, changes[0].cursor);
    assert_eq!(store.dead_letter_count("hooks").await.unwrap(), 0);
    store.advance_sink("hooks", 1, changes[1].cursor, vec![]).await.unwrap();
    assert_eq!(store.sink_position("hooks").await.unwrap(), SinkPosition { cursor: changes[1].cursor, epoch: 1 });
    // a sink without a cursor row can be rewound too
    store.request_rewind("fresh", changes[1].cursor).await.unwrap();
    assert!(store.apply_rewind("fresh", changes[1].cursor).await.unwrap());
    assert_eq!(store.sink_position("fresh").await.unwrap(), SinkPosition { cursor: changes[1].cursor, epoch: 1 });
}

pub async fn dead_letters_are_listed_redriven_and_discarded(store: Arc<dyn Store>) {
    use super::controls::{Redriven, dead_letter_row};
    let changes = three_changes(&store).await;
    let letters: Vec<DeadLetter> = changes
        .iter()
        .map(|c| DeadLetter {
            change_id: c.id.clone(),
            error: "410 gone".into(),
            envelope: format!("{{\"id\":\"{}\"}}", c.id),
            attempts: 2,
        })
        .collect();
    store.advance_sink("hooks", 0, changes[2].cursor, letters).await.unwrap();
    let listed = store.dead_letters("hooks", 0, 10).await.unwrap();
    assert_eq!(listed.iter().map(|l| l.change_id.as_str()).collect::<Vec<_>>(), changes.iter().map(|c| c.id.as_str()).collect::<Vec<_>>());
    assert!(listed.iter().all(|l| l.attempts == 2 && !l.redrive_requested && l.error == "410 gone"));
    assert_eq!(listed[0].envelope, format!("{{\"id\":\"{}\"}}", changes[0].id));
    let rows: Vec<i64> = listed.iter().map(|l| l.row).collect();
    assert_eq!(listed.iter().map(|l| dead_letter_row(&l.id)).collect::<Vec<_>>(), rows.iter().map(|r| Some(*r)).collect::<Vec<_>>());
    // pages go by row
    assert_eq!(store.dead_letters("hooks", rows[0], 1).await.unwrap()[0].id, listed[1].id);
    assert!(store.dead_letters("other", 0, 10).await.unwrap().is_empty());
    // one named: only it is marked, and the redrive count moves
    assert_eq!(store.request_redrive("hooks", Some(&[rows[1], 999_999])).await.unwrap(), 1);
    assert_eq!(
        store.redrive_requested("hooks", 10).await.unwrap().iter().map(|l| l.id.clone()).collect::<Vec<_>>(),
        [listed[1].id.clone()]
    );
    let redrives = |controls: Vec<super::controls::Control>| controls.iter().find(|c| c.name == "hooks").map(|c| c.redrives);
    assert_eq!(redrives(store.controls().await.unwrap()), Some(1));
    store.finish_redrive("hooks", rows[1], Redriven::Failed { error: "503 again".into(), attempts: 3 }).await.unwrap();
    let failed = &store.dead_letters("hooks", 0, 10).await.unwrap()[1];
    assert_eq!((failed.attempts, failed.error.as_str(), failed.redrive_requested), (5, "503 again", false));
    // all: every one is marked
    assert_eq!(store.request_redrive("hooks", None).await.unwrap(), 3);
    assert_eq!(redrives(store.controls().await.unwrap()), Some(2));
    store.finish_redrive("hooks", rows[0], Redriven::Delivered).await.unwrap();
    assert_eq!(store.dead_letter_count("hooks").await.unwrap(), 2);
    assert!(store.discard_dead_letter("hooks", rows[2]).await.unwrap());
    assert!(!store.discard_dead_letter("hooks", rows[2]).await.unwrap(), "gone already");
    assert!(!store.discard_dead_letter("other", rows[1]).await.unwrap(), "another sink's");
    assert_eq!(store.dead_letters("hooks", 0, 10).await.unwrap().iter().map(|l| l.id.clone()).collect::<Vec<_>>(), [listed[1].id.clone()]);
}

pub async fn pauses_are_kept_and_the_change_log_is_filtered(store: Arc<dyn Store>) {
    use super::controls::{ChangeFilter, Target};
    store.set_paused(Target::Source, "stripe", true).await.unwrap();
    store.set_paused(Target::Sink, "stripe", false).await.unwrap();
    let mut controls = store.controls().await.unwrap();
    controls.sort_by_key(|c| c.target);
    assert_eq!(controls.iter().map(|c| (c.target, c.paused)).collect::<Vec<_>>(), [(Target::Source, true), (Target::Sink, false)]);
    store.set_paused(Target::Source, "stripe", false).await.unwrap();
    assert!(store.controls().await.unwrap().iter().all(|c| !c.paused));

    let changes = three_changes(&store).await;
    store
        .apply(batch(vec![write("customer", "c2", Mutation::Upsert(json!({"id": "c2", "name": "Ada"})), Origin::Write, 1)]))
        .await
        .unwrap();
    let ids = |found: Vec<Change>| found.into_iter().map(|c| (c.object_id, c.op)).collect::<Vec<_>>();
    let history = store.find_changes(&ChangeFilter { object_id: Some("c2".into()), ..Default::default() }, 10).await.unwrap();
    assert_eq!(history[0].previous_value(), Some(json!({"name": null})));
    assert_eq!(ids(history), [("c2".to_string(), "update".to_string()), ("c2".into(), "read".into())]);
    let reads =
        ChangeFilter { op: Some("read".into()), source: Some("stripe".into()), object: Some("customer".into()), ..Default::default() };
    assert_eq!(ids(store.find_changes(&reads, 10).await.unwrap()).len(), 3);
    let older = ChangeFilter { before_seq: Some(changes[2].seq), ..Default::default() };
    assert_eq!(ids(store.find_changes(&older, 10).await.unwrap()), [("c2".to_string(), "read".to_string()), ("c1".into(), "read".into())]);
    assert_eq!(store.find_changes(&older, 1).await.unwrap().len(), 1);
    let typed = ChangeFilter { kind: Some("customer.updated".into()), ..Default::default() };
    assert_eq!(store.find_changes(&typed, 10).await.unwrap().len(), 1);
    let since = ChangeFilter { since: Some(changes[1].committed_at.clone()), ..Default::default() };
    assert_eq!(store.find_changes(&since, 10).await.unwrap().len(), 3);
    let until = ChangeFilter { until: Some(changes[0].committed_at.clone()), ..Default::default() };
    assert!(store.find_changes(&until, 10).await.unwrap().is_empty());
    let none = ChangeFilter { source: Some("other".into()), ..Default::default() };
    assert!(store.find_changes(&none, 10).await.unwrap().is_empty());
    // a reader's backlog, counted up to a bound (of what readers can see)
    let all = all_changes(&store, 4).await;
    let backlog = store.backlog(changes[0].cursor, 100).await.unwrap();
    assert_eq!((backlog.count, backlog.oldest_committed_at.as_deref()), (3, Some(changes[1].committed_at.as_str())));
    assert_eq!(store.backlog(changes[0].cursor, 2).await.unwrap().count, 2);
    assert_eq!(store.backlog(all[3].cursor, 100).await.unwrap(), super::controls::Backlog::default());
}

pub async fn apps_are_found_by_token_hash_until_revoked(store: Arc<dyn Store>) {
    use super::queues::{App, AppKind};
    let app = App {
        id: "app_1".into(),
        name: "shop".into(),
        kind: AppKind::Public,
        account: None,
        created_at: timestamp(chrono::Utc::now()),
        revoked: false,
    };
    store.create_app(&app, "hash-1").await.unwrap();
    assert_eq!(store.app_by_token("hash-1").await.unwrap().unwrap().id, "app_1");
    assert!(store.app_by_token("hash-2").await.unwrap().is_none());
    assert!(store.grant("app_1", "acct_a").await.unwrap());
    assert!(store.grant("app_1", "acct_a").await.unwrap(), "granting twice is fine");
    assert!(!store.grant("app_nope", "acct_a").await.unwrap());
    assert!(store.granted("app_1", "acct_a").await.unwrap());
    assert!(!store.granted("app_1", "acct_b").await.unwrap());
    assert!(store.revoke_app("app_1").await.unwrap());
    assert!(!store.revoke_app("app_nope").await.unwrap());
    assert!(store.app_by_token("hash-1").await.unwrap().is_none());
    assert!(store.apps().await.unwrap()[0].revoked);
}

/// Fan out the changes after `cursor` as the fan-out task does; returns the
/// new cursor.
async fn fan_out(store: &Arc<dyn Store>, cursor: ChangeCursor, expected: usize) -> ChangeCursor {
    let page = all_changes_after(store, cursor, expected).await;
    let subscriptions = store.all_subscriptions().await.unwrap();
    let replays: Vec<_> = subscriptions.iter().filter(|s| s.replay).cloned().collect();
    let next = page.last().map(|c| c.cursor).unwrap_or(cursor);
    store.fan_out(&replays, cursor, &crate::queue::fanout::entries(&subscriptions, &page), next).await.unwrap();
    next
}

async fn all_changes_after(store: &Arc<dyn Store>, mut cursor: ChangeCursor, expected: usize) -> Vec<Change> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut out = Vec::new();
    while out.len() < expected {
        assert!(std::time::Instant::now() < deadline, "only {} of {expected} changes became visible", out.len());
        let page = store.changes_after(cursor, 100).await.unwrap();
        cursor = page.next;
        if page.changes.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        out.extend(page.changes);
    }
    out
}

pub async fn queues_fan_out_pull_acknowledge_and_expire(store: Arc<dyn Store>) {
    use super::queues::{PullOutcome, Subscription};
    let pulled = |outcome: PullOutcome| match outcome {
        PullOutcome::Pulled(p) => p,
        other => panic!("expected events, got {other:?}"),
    };
    let customer = |id: &str, account: &str| {
        let mut w = write("customer", id, Mutation::Upsert(json!({"id": id})), Origin::Backfill, 1);
        w.account = Some(account.into());
        w
    };
    assert!(store.create_queue("app_1", "q_1", "orders", 1).await.unwrap().is_some());
    assert!(store.create_queue("app_1", "q_2", "more", 1).await.unwrap().is_none(), "the per-app limit holds");
    let now = timestamp(chrono::Utc::now());
    let subscription = |code: &str, event_type: &str, account: &str, replay: bool| Subscription {
        code: code.into(),
        queue_id: 0,
        event_type: event_type.into(),
        account: account.into(),
        start_at: if replay { timestamp(chrono::Utc::now() - chrono::Duration::days(1)) } else { now.clone() },
        replay,
        created_at: now.clone(),
    };
    assert!(store.subscribe("app_2", "q_1", &subscription("sub_x", "*", "acct_a", false)).await.unwrap().is_none(), "another app's queue");
    store.subscribe("app_1", "q_1", &subscription("sub_1", "customer.*", "acct_a", false)).await.unwrap().unwrap();
    // two subscriptions matching one change put it in the queue once
    store.subscribe("app_1", "q_1", &subscription("sub_2", "*", "acct_a", false)).await.unwrap().unwrap();
    store.apply(batch(vec![customer("c1", "acct_a"), customer("c2", "acct_b"), customer("c3", "acct_a")])).await.unwrap();
    let cursor = fan_out(&store, ChangeCursor::START, 3).await;

    let first = pulled(store.pull("app_1", "q_1", None, 10, "n1".into()).await.unwrap());
    let ids: Vec<&str> = first.events.iter().map(|(_, c)| c.object_id.as_str()).collect();
    assert_eq!(ids, ["c1", "c3"]);
    let ack = first.ack.clone().unwrap();
    assert!(matches!(store.pull("app_2", "q_1", None, 10, "n".into()).await.unwrap(), PullOutcome::NoQueue));
    // not acknowledged: the same events again
    let again = pulled(store.pull("app_1", "q_1", None, 1, "n2".into()).await.unwrap());
    assert_eq!(again.events[0].1.object_id, "c1");
    assert!(matches!(store.pull("app_1", "q_1", Some(ack), 10, "n".into()).await.unwrap(), PullOutcome::StaleAck));
    let after = pulled(store.pull("app_1", "q_1", again.ack.clone(), 10, "n3".into()).await.unwrap());
    assert_eq!(after.events.iter().map(|(_, c)| c.object_id.as_str()).collect::<Vec<_>>(), ["c3"]);
    let empty = pulled(store.pull("app_1", "q_1", after.ack.clone(), 10, "n4".into()).await.unwrap());
    assert!(empty.events.is_empty() && empty.ack.is_none());
    // a retried pull with the same acknowledgement is harmless
    assert!(pulled(store.pull("app_1", "q_1", after.ack, 10, "n5".into()).await.unwrap()).events.is_empty());

    // history replay: acct_b's change, committed before the subscription
    store.subscribe("app_1", "q_1", &subscription("sub_3", "customer.read", "acct_b", true)).await.unwrap().unwrap();
    store.apply(batch(vec![customer("c4", "acct_b")])).await.unwrap();
    fan_out(&store, cursor, 1).await;
    let replayed = pulled(store.pull("app_1", "q_1", None, 10, "n6".into()).await.unwrap());
    assert_eq!(replayed.events.iter().map(|(_, c)| c.object_id.as_str()).collect::<Vec<_>>(), ["c2", "c4"]);
    assert!(!store.all_subscriptions().await.unwrap().iter().any(|s| s.replay), "a replay runs once");

    // retention: unacknowledged events go and are reported as dropped once
    let future = timestamp(chrono::Utc::now() + chrono::Duration::hours(1));
    let (deleted, dropped) = store.purge_queue_events(&future, 1000).await.unwrap();
    assert_eq!((deleted, dropped), (4, vec![("q_1".to_string(), 2)]));
    let told = pulled(store.pull("app_1", "q_1", None, 10, "n7".into()).await.unwrap());
    assert_eq!((told.events.len(), told.dropped), (0, 2));
    assert_eq!(pulled(store.pull("app_1", "q_1", None, 10, "n8".into()).await.unwrap()).dropped, 0);
    assert_eq!(store.subscriptions("app_1", "q_1").await.unwrap().unwrap().len(), 3);
    assert!(store.unsubscribe("app_1", "q_1", "sub_3").await.unwrap());
    assert!(store.delete_queue("app_1", "q_1").await.unwrap());
    assert!(!store.delete_queue("app_1", "q_1").await.unwrap());
    assert!(matches!(store.pull("app_1", "q_1", None, 10, "n".into()).await.unwrap(), PullOutcome::NoQueue));
}

pub async fn purge_keeps_what_a_reader_has_not_passed(store: Arc<dyn Store>) {
    let writes = (0..10).map(|i| write("charge", &format!("ch_{i}"), Mutation::Upsert(json!({"id": i})), Origin::Backfill, 1)).collect();
    store.apply(batch(writes)).await.unwrap();
    let changes = all_changes(&store, 10).await;
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let past = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    // nothing is old enough yet
    assert_eq!(store.purge_changes(&past, changes[9].cursor, 100).await.unwrap(), 0);
    // old enough, but only what the slowest reader passed, in small batches
    assert_eq!(store.purge_changes(&future, changes[5].cursor, 4).await.unwrap(), 4);
    assert_eq!(store.purge_changes(&future, changes[5].cursor, 4).await.unwrap(), 2);
    assert_eq!(store.purge_changes(&future, changes[5].cursor, 4).await.unwrap(), 0);
    let left = all_changes(&store, 4).await;
    assert_eq!(left.iter().map(|c| c.seq).collect::<Vec<_>>(), changes[6..].iter().map(|c| c.seq).collect::<Vec<_>>());
}

async fn sqlite_store() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&Options::url(&format!("sqlite://{}", dir.path().join("t.db").display()))).await.unwrap();
    (dir, store)
}

store_suite!(sqlite, sqlite_store());

use super::testing as pg;

store_suite!(postgres, pg::store());

/// Transactions that commit out of order: the reader sees each change once
/// the older transactions have finished, never skips one, never repeats one.
#[tokio::test]
async fn postgres_reader_follows_commit_order_without_skipping() {
    let (guard, store) = pg::store().await;
    let table = format!("\"{}\".tributary_changes", guard.0);
    let connect = || async {
        let (client, conn) = tokio_postgres::connect(&pg::base_url(), tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        client
    };
    let insert = |label: &str| {
        format!("INSERT INTO {table} (source, object, object_id, op, type) VALUES ('s', 'o', '{label}', 'insert', 'o.created')")
    };
    let (older, newer) = (connect().await, connect().await);
    older.batch_execute(&format!("BEGIN; {}", insert("older"))).await.unwrap();
    newer.batch_execute(&format!("BEGIN; {}; COMMIT", insert("newer"))).await.unwrap();
    // `newer` committed, but `older` (an earlier transaction) is still open
    let page = store.changes_after(ChangeCursor::START, 100).await.unwrap();
    assert!(page.changes.is_empty(), "a change was read past an open older transaction");
    older.batch_execute("COMMIT").await.unwrap();
    let first = all_changes(&store, 2).await;
    let order: Vec<&str> = first.iter().map(|c| c.object_id.as_str()).collect();
    assert_eq!(order, ["older", "newer"]);
    let page = ChangePage { next: first[1].cursor, changes: first };

    // many writers committing in random order, one reader paging throughout
    let writers = (0..8).map(|w| {
        let insert = insert(&format!("w{w}"));
        tokio::spawn(async move {
            let (client, conn) = tokio_postgres::connect(&pg::base_url(), tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            for _ in 0..25 {
                let pause = rand::random::<u64>() % 5;
                client.batch_execute(&format!("BEGIN; {insert}; SELECT pg_sleep({pause} / 1000.0); {insert}; COMMIT")).await.unwrap();
            }
        })
    });
    let writers: Vec<_> = writers.collect();
    let mut seen: Vec<Change> = page.changes;
    let mut cursor = page.next;
    let expected = 2 + 8 * 25 * 2;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while seen.len() < expected {
        assert!(std::time::Instant::now() < deadline, "reader stuck at {} of {expected}", seen.len());
        let page = store.changes_after(cursor, 10).await.unwrap();
        cursor = page.next;
        seen.extend(page.changes);
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let rest = store.changes_after(cursor, 1000).await.unwrap();
    assert!(rest.changes.is_empty(), "{} changes appeared after the reader had passed them", rest.changes.len());
    let mut ids: Vec<i64> = seen.iter().map(|c| c.seq).collect();
    assert!(seen.windows(2).all(|w| w[0].cursor < w[1].cursor), "changes out of cursor order");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), expected, "a change was read twice or skipped");
    // the two inserts of each transaction are adjacent: transaction order,
    // not the interleaved order their ids were drawn in
    let mut positions: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (i, change) in seen.iter().enumerate() {
        positions.entry(change.cursor.xid).or_default().push(i);
    }
    assert!(positions.values().all(|p| p.windows(2).all(|w| w[1] == w[0] + 1)), "a transaction's changes were split");
}

/// Two instances on one database: a commit made through one wakes the
/// other's delivery (`LISTEN/NOTIFY`), not only its own.
#[tokio::test]
async fn postgres_commits_of_another_instance_wake_this_one() {
    let (guard, writer) = pg::store().await;
    let reader = open(&Options { url: pg::base_url(), schema: guard.0.clone(), pool_size: 2 }).await.unwrap();
    let mut commits = reader.commits();
    let before = *commits.borrow_and_update();
    writer.apply(batch(vec![write("customer", "c1", Mutation::Upsert(json!({"id": "c1"})), Origin::Backfill, 1)])).await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), commits.wait_for(|n| *n > before))
        .await
        .expect("the other instance's commit was announced here")
        .unwrap();
    assert_eq!(all_changes(&reader, 1).await.len(), 1);
}

pub async fn idempotency_keys_follow_their_recovery_points(store: Arc<dyn Store>) {
    use super::writes::{Answer, Begin, Finish, Handoff, KeyRequest, RecoveryPoint, StagedJob};
    let request = KeyRequest {
        app_id: "app_1".into(),
        key: "k1".into(),
        source: "stripe".into(),
        method: "POST".into(),
        path: "/v1/customers".into(),
        params: "email=a%40example.com".into(),
        fingerprint: "f1".into(),
        account: None,
    };
    let (t0, t1, t2) = ("2026-01-01T00:00:00.000000Z", "2026-01-01T00:00:01.000000Z", "2026-01-01T00:10:00.000000Z");
    let never = "2000-01-01T00:00:00.000000Z";
    let Begin::Proceed(first) = store.begin_write(&request, t0, never).await.unwrap() else { panic!("a new key proceeds") };
    assert_eq!((first.recovery_point, first.locked_at.as_deref()), (RecoveryPoint::Started, Some(t0)));
    // held: a second request with the key waits its turn (409)
    assert!(matches!(store.begin_write(&request, t1, never).await.unwrap(), Begin::InFlight));
    let other = KeyRequest { fingerprint: "f2".into(), ..request.clone() };
    assert!(matches!(store.begin_write(&other, t1, never).await.unwrap(), Begin::Mismatch));
    let upstream = Answer { status: 200, body: r#"{"id":"cus_9","object":"customer"}"#.into() };
    store.record_upstream("app_1", "k1", &upstream, t1).await.unwrap();
    store.release_key("app_1", "k1", t1).await.unwrap();
    // released: a retry takes it over at its recovery point, upstream answer kept
    let Begin::Proceed(resumed) = store.begin_write(&request, t2, never).await.unwrap() else { panic!("a released key proceeds") };
    assert_eq!((resumed.recovery_point, resumed.upstream.as_ref()), (RecoveryPoint::UpstreamCalled, Some(&upstream)));
    // a lock older than the cutoff is presumed abandoned
    assert!(matches!(store.begin_write(&request, t2, t1).await.unwrap(), Begin::InFlight));
    let later = "2026-01-01T00:10:00.000001Z";
    assert!(matches!(store.begin_write(&request, t2, later).await.unwrap(), Begin::Proceed(_)));

    // the last phase commits with the mirror write, or not at all
    let response = Answer { status: 200, body: r#"{"id": "cus_9",  "object":"customer"}"#.into() };
    let finish = Finish {
        app_id: "app_1".into(),
        key: "k1".into(),
        response: response.clone(),
        jobs: vec![StagedJob { kind: "write.completed".into(), payload: json!({"key": "k1"}) }],
    };
    let hostile = write("x\"; DROP TABLE t; --", "cus_9", Mutation::Upsert(json!({"id": "cus_9"})), Origin::Write, 1);
    let failed = Batch { finish: Some(finish.clone()), ..batch(vec![hostile]) };
    assert!(store.apply(failed).await.is_err());
    assert!(matches!(store.begin_write(&request, t2, later).await.unwrap(), Begin::Proceed(_)), "a failed last phase left the key open");
    let mirror = write("customer", "cus_9", Mutation::Upsert(json!({"id": "cus_9", "object": "customer"})), Origin::Write, 1);
    store.apply(Batch { finish: Some(finish), ..batch(vec![mirror]) }).await.unwrap();
    let Begin::Replay(replayed) = store.begin_write(&request, t2, later).await.unwrap() else { panic!("a finished key replays") };
    assert_eq!(replayed, response, "the stored answer, byte for byte");
    let changes = all_changes(&store, 1).await;
    assert_eq!((changes[0].op.as_str(), changes[0].kind.as_str()), ("insert", "customer.created"));

    // the staged job exists only because that transaction committed; the
    // hand-off moves it into the change log and deletes it, once
    let jobs = store.staged_jobs(10).await.unwrap();
    assert_eq!(jobs.len(), 1, "the failed last phase staged nothing");
    let (job_id, job) = jobs[0].clone();
    assert_eq!(job.kind, "write.completed");
    let handoff = || Batch { handoff: Some(Handoff { jobs: vec![job_id], notices: vec![job.clone()] }), ..batch(vec![]) };
    store.apply(handoff()).await.unwrap();
    assert!(matches!(store.apply(handoff()).await, Err(StoreError::Raced(_))), "handed on twice");
    assert!(store.staged_jobs(10).await.unwrap().is_empty());
    let changes = all_changes(&store, 2).await;
    assert_eq!(changes.len(), 2);
    assert_eq!((changes[1].object.as_str(), changes[1].kind.as_str()), ("write", "write.completed"));

    // the reaper: keys created before the cutoff go; the key starts anew
    assert_eq!(store.reap_keys(t0, later).await.unwrap(), (0, 0), "created at t0, not before");
    assert_eq!(store.reap_keys(later, later).await.unwrap(), (1, 0));
    let Begin::Proceed(fresh) = store.begin_write(&other, later, never).await.unwrap() else { panic!("a reaped key starts anew") };
    assert_eq!((fresh.recovery_point, fresh.upstream.is_none()), (RecoveryPoint::Started, true));
    let abandoned = store.abandoned_keys("2100-01-01T00:00:00.000000Z", 10).await.unwrap();
    assert_eq!(abandoned.len(), 1, "unfinished keys are the completer's");
    assert!(store.abandoned_keys(later, 10).await.unwrap().is_empty(), "touched at `later`, not before");
}

pub async fn ledger_commits_with_the_batch_and_resends_emit_reads(store: Arc<dyn Store>) {
    use ledger::{LedgerEntry, LedgerOp};
    let entry = |key: &str, fingerprint: &str, day: &str| LedgerEntry {
        key: key.into(),
        fingerprint: Some(fingerprint.into()),
        day: day.into(),
        seen_at: 100,
    };
    let shift = json!({"id": "shf_1", "object": "shift", "notes": "opening"});
    let poll = |resend| Origin::Poll { resend };
    let first = Batch {
        ledger: vec![LedgerOp::Put(entry("shf_1", "fp1", "2026-11-22")), LedgerOp::Put(entry("shf_2", "fp2", "2026-11-30"))],
        ..batch(vec![write("shift", "shf_1", Mutation::Upsert(shift.clone()), poll(false), 0)])
    };
    store.apply(first).await.unwrap();
    let in_window = store.ledger_range("stripe", "2026-11-20", "2026-11-25").await.unwrap();
    assert_eq!(in_window, vec![entry("shf_1", "fp1", "2026-11-22")]);
    let keys = vec!["shf_2".to_string(), "shf_9".to_string()];
    assert_eq!(store.ledger_known("stripe", &keys).await.unwrap(), vec!["shf_2".to_string()]);
    assert!(store.ledger_known("other", &keys).await.unwrap().is_empty(), "per source");

    // a failed batch leaves the ledger as it was
    let hostile = write("x\"; DROP TABLE t; --", "shf_1", Mutation::Upsert(shift.clone()), poll(false), 0);
    let failed = Batch { ledger: vec![LedgerOp::Remove("shf_1".into())], ..batch(vec![hostile]) };
    assert!(store.apply(failed).await.is_err());
    assert_eq!(store.ledger_range("stripe", "2026-11-22", "2026-11-22").await.unwrap().len(), 1);

    // the same state: no change, unless resent (then a `read`)
    let same = store.apply(batch(vec![write("shift", "shf_1", Mutation::Upsert(shift.clone()), poll(false), 0)])).await.unwrap();
    assert_eq!(same, Applied { changes: 0, unchanged: 1 });
    let resent = store.apply(batch(vec![write("shift", "shf_1", Mutation::Upsert(shift.clone()), poll(true), 0)])).await.unwrap();
    assert_eq!(resent, Applied { changes: 1, unchanged: 0 });
    let deleted =
        Batch { ledger: vec![LedgerOp::Remove("shf_1".into())], ..batch(vec![write("shift", "shf_1", Mutation::Delete, poll(false), 0)]) };
    store.apply(deleted).await.unwrap();
    let changes = all_changes(&store, 3).await;
    let kinds: Vec<(&str, &str)> = changes.iter().map(|c| (c.op.as_str(), c.kind.as_str())).collect();
    assert_eq!(kinds, [("insert", "shift.created"), ("read", "shift.read"), ("delete", "shift.deleted")]);
    assert!(store.ledger_range("stripe", "2026-11-01", "2026-12-31").await.unwrap().iter().all(|e| e.key != "shf_1"));

    assert_eq!(store.prune_ledger("stripe", "2026-12-01").await.unwrap(), 1);
    assert!(store.ledger_known("stripe", &keys).await.unwrap().is_empty());
}

#[test]
fn store_errors_know_their_kind() {
    assert_eq!(ErrorKind::of_sqlstate("40001"), ErrorKind::SerializationFailure);
    assert_eq!(ErrorKind::of_sqlstate("40P01"), ErrorKind::SerializationFailure);
    assert_eq!(ErrorKind::of_sqlstate("23505"), ErrorKind::UniqueViolation);
    assert_eq!(ErrorKind::of_sqlstate("53100"), ErrorKind::DiskFull);
    assert_eq!(ErrorKind::of_sqlstate("08006"), ErrorKind::ConnectionLost);
    assert_eq!(ErrorKind::of_sqlstate("57P01"), ErrorKind::ConnectionLost);
    assert_eq!(ErrorKind::of_sqlstate("42P01"), ErrorKind::Other);
    let sqlite = |code: i32| StoreError::Sqlite(rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)).kind();
    assert_eq!(sqlite(rusqlite::ffi::SQLITE_FULL), ErrorKind::DiskFull);
    assert_eq!(sqlite(rusqlite::ffi::SQLITE_BUSY), ErrorKind::SerializationFailure);
    assert_eq!(sqlite(rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE), ErrorKind::UniqueViolation);
    assert_eq!(sqlite(rusqlite::ffi::SQLITE_CORRUPT), ErrorKind::Other);
}

/// A server error keeps its SQLSTATE through the store: a duplicate key
/// inserted by hand is a unique violation, a dropped table is other.
#[tokio::test]
async fn postgres_errors_keep_their_sqlstate() {
    let (client, conn) = tokio_postgres::connect(&crate::store::testing::base_url(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client.batch_execute("CREATE TEMP TABLE kinds (id int PRIMARY KEY); INSERT INTO kinds VALUES (1)").await.unwrap();
    let duplicate = client.execute("INSERT INTO kinds VALUES (1)", &[]).await.unwrap_err();
    assert_eq!(crate::store::postgres::pg(duplicate).kind(), ErrorKind::UniqueViolation);
    let missing = client.execute("SELECT * FROM no_such_table_here", &[]).await.unwrap_err();
    assert_eq!(crate::store::postgres::pg(missing).kind(), ErrorKind::Other);
}

/// Parked events commit with the batch that parks them (with its
/// checkpoint, say the ack id), once per key however often they come.
pub async fn parked_events_commit_with_their_batch_once(store: Arc<dyn Store>) {
    use ledger::{LedgerOp, Parked};
    let parked = |key: &str, reason: &str| Parked {
        key: key.into(),
        event_id: Some(key.into()),
        event_type: Some("ORDER_STATUS_UPDATED".into()),
        reason: reason.into(),
        body: format!("{{\"id\":\"{key}\"}}"),
        parked_at: "2026-12-02T10:00:00Z".into(),
    };
    let ack = |value: &str| Checkpoint { key: "ack_id".into(), value: json!(value), position: None };
    let first = Batch {
        checkpoints: vec![ack("a1")],
        ledger: vec![LedgerOp::Park(parked("e1", "no object id")), LedgerOp::Park(parked("e2", "no object id"))],
        ..batch(vec![])
    };
    store.apply(first).await.unwrap();
    // the same event again (a batch handed out again): parked once, as it first was
    let again = Batch { checkpoints: vec![ack("a2")], ledger: vec![LedgerOp::Park(parked("e2", "another reason"))], ..batch(vec![]) };
    store.apply(again).await.unwrap();
    // a failed batch parks nothing
    let hostile = write("x\"; DROP TABLE t; --", "o", Mutation::Delete, Origin::Backfill, 0);
    let failed = Batch { ledger: vec![LedgerOp::Park(parked("e3", "r"))], ..batch(vec![hostile]) };
    assert!(store.apply(failed).await.is_err());
    let list = store.parked("stripe").await.unwrap();
    assert_eq!(
        list.iter().map(|p| (p.key.as_str(), p.reason.as_str())).collect::<Vec<_>>(),
        [("e1", "no object id"), ("e2", "no object id")]
    );
    assert_eq!(list[0], parked("e1", "no object id"), "kept as parked");
    assert_eq!(store.parked_count("stripe").await.unwrap(), 2);
    assert_eq!(store.parked_count("other").await.unwrap(), 0, "per source");
    assert_eq!(store.checkpoints("stripe").await.unwrap()["ack_id"], json!("a2"));
    // a redriven event leaves the table with the batch that stores it
    let unpark = Batch { ledger: vec![LedgerOp::Unpark("e1".into()), LedgerOp::Unpark("e9".into())], ..batch(vec![]) };
    store.apply(unpark).await.unwrap();
    assert_eq!(store.parked("stripe").await.unwrap().iter().map(|p| p.key.as_str()).collect::<Vec<_>>(), ["e2"]);
}

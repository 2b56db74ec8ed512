-- The schema of release 0.1.0, exactly as it created it (every statement
-- IF NOT EXISTS, so a database that release made takes it as it is).
CREATE TABLE IF NOT EXISTS tributary_changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    object TEXT NOT NULL,
    object_id TEXT NOT NULL,
    account TEXT,
    op TEXT NOT NULL,
    type TEXT NOT NULL,
    data TEXT,
    previous_attributes TEXT,
    upstream_event_id TEXT,
    committed_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tributary_checkpoints (
    source TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (source, key)
);
CREATE TABLE IF NOT EXISTS tributary_tables (
    source TEXT NOT NULL,
    object TEXT NOT NULL,
    table_name TEXT NOT NULL,
    -- kept by the writer in each transaction, so counts are O(1)
    row_count INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (source, object)
);
CREATE TABLE IF NOT EXISTS tributary_sink_cursors (
    sink TEXT PRIMARY KEY,
    cursor TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tributary_dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sink TEXT NOT NULL,
    change_id TEXT NOT NULL,
    error TEXT NOT NULL,
    envelope TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tributary_apps (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    account TEXT,
    token_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE TABLE IF NOT EXISTS tributary_app_grants (
    app_id TEXT NOT NULL,
    account TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (app_id, account)
);
CREATE TABLE IF NOT EXISTS tributary_queues (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    code TEXT NOT NULL UNIQUE,
    app_id TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL,
    -- the consumer's position: see store::queues::QueueState
    acked_through INTEGER NOT NULL DEFAULT 0,
    batches INTEGER NOT NULL DEFAULT 0,
    pending_batch INTEGER,
    pending_nonce TEXT,
    pending_through INTEGER,
    acked_batch INTEGER,
    acked_nonce TEXT,
    dropped INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS tributary_queues_app ON tributary_queues (app_id);
CREATE TABLE IF NOT EXISTS tributary_subscriptions (
    code TEXT PRIMARY KEY,
    queue_id INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    account TEXT NOT NULL,
    start_at TEXT NOT NULL,
    replay INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tributary_subscriptions_queue ON tributary_subscriptions (queue_id);
-- one row per (queue, change): a reference to the change log, no payload
CREATE TABLE IF NOT EXISTS tributary_queue_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue_id INTEGER NOT NULL,
    change_seq INTEGER NOT NULL,
    committed_at TEXT NOT NULL,
    UNIQUE (queue_id, change_seq)
);
CREATE INDEX IF NOT EXISTS tributary_queue_events_queue ON tributary_queue_events (queue_id, id);
CREATE INDEX IF NOT EXISTS tributary_queue_events_time ON tributary_queue_events (committed_at);

CREATE TABLE IF NOT EXISTS tributary_idempotency_keys (
    app_id TEXT NOT NULL,
    key TEXT NOT NULL,
    source TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    params TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    account TEXT,
    recovery_point TEXT NOT NULL,
    locked_at TEXT,
    upstream_status INTEGER,
    upstream_body TEXT,
    response_status INTEGER,
    response_body TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (app_id, key)
);
CREATE INDEX IF NOT EXISTS tributary_idempotency_keys_open ON tributary_idempotency_keys (recovery_point, updated_at);
CREATE INDEX IF NOT EXISTS tributary_idempotency_keys_age ON tributary_idempotency_keys (created_at);
-- objects written through Tributary, held at that state until the upstream echoes it
CREATE TABLE IF NOT EXISTS tributary_write_fences (
    table_name TEXT NOT NULL,
    id TEXT NOT NULL,
    state TEXT,
    expires_at TEXT NOT NULL,
    PRIMARY KEY (table_name, id)
);
-- jobs written with a write's last phase; the enqueuer hands them on after commit
CREATE TABLE IF NOT EXISTS tributary_staged_jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS tributary_ledger (
    source TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT,
    day TEXT NOT NULL,
    seen_at INTEGER NOT NULL,
    PRIMARY KEY (source, key)
);
CREATE INDEX IF NOT EXISTS tributary_ledger_day ON tributary_ledger (source, day);

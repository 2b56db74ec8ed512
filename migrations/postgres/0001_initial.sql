-- The schema of release 0.1.0, exactly as it created it (every statement
-- IF NOT EXISTS, so a database that release made takes it as it is). Run
-- with search_path set to the configured schema, which the migrator creates.
CREATE TABLE IF NOT EXISTS tributary_changes (
    id bigserial PRIMARY KEY,
    xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    source text NOT NULL,
    object text NOT NULL,
    object_id text NOT NULL,
    account text,
    op text NOT NULL,
    type text NOT NULL,
    -- json, not jsonb: stored and read back as text, which is
    -- all the change log needs (readers pass it on)
    data json,
    previous_attributes json,
    upstream_event_id text,
    committed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS tributary_changes_xid_id ON tributary_changes (xid, id);
CREATE TABLE IF NOT EXISTS tributary_checkpoints (
    source text NOT NULL,
    key text NOT NULL,
    value jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, key)
);
CREATE TABLE IF NOT EXISTS tributary_tables (
    source text NOT NULL,
    object text NOT NULL,
    table_name text NOT NULL,
    row_count bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (source, object)
);
CREATE TABLE IF NOT EXISTS tributary_sink_cursors (
    sink text PRIMARY KEY,
    cursor text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS tributary_dead_letters (
    id bigserial PRIMARY KEY,
    sink text NOT NULL,
    change_id text NOT NULL,
    error text NOT NULL,
    envelope json NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS tributary_apps (
    id text PRIMARY KEY,
    name text NOT NULL,
    kind text NOT NULL,
    account text,
    token_hash text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE TABLE IF NOT EXISTS tributary_app_grants (
    app_id text NOT NULL,
    account text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (app_id, account)
);
CREATE TABLE IF NOT EXISTS tributary_queues (
    id bigserial PRIMARY KEY,
    code text NOT NULL UNIQUE,
    app_id text NOT NULL,
    name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- the consumer's position: see store::queues::QueueState
    acked_through bigint NOT NULL DEFAULT 0,
    batches bigint NOT NULL DEFAULT 0,
    pending_batch bigint,
    pending_nonce text,
    pending_through bigint,
    acked_batch bigint,
    acked_nonce text,
    dropped bigint NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS tributary_queues_app ON tributary_queues (app_id);
CREATE TABLE IF NOT EXISTS tributary_subscriptions (
    code text PRIMARY KEY,
    queue_id bigint NOT NULL,
    event_type text NOT NULL,
    account text NOT NULL,
    start_at timestamptz NOT NULL,
    replay boolean NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS tributary_subscriptions_queue ON tributary_subscriptions (queue_id);
-- one row per (queue, change): a reference to the change log, no payload
CREATE TABLE IF NOT EXISTS tributary_queue_events (
    id bigserial,
    queue_id bigint NOT NULL,
    change_seq bigint NOT NULL,
    committed_at timestamptz NOT NULL,
    PRIMARY KEY (queue_id, id),
    UNIQUE (queue_id, change_seq)
);
CREATE INDEX IF NOT EXISTS tributary_queue_events_time ON tributary_queue_events (committed_at);
CREATE TABLE IF NOT EXISTS tributary_idempotency_keys (
    app_id text NOT NULL,
    key text NOT NULL,
    source text NOT NULL,
    method text NOT NULL,
    path text NOT NULL,
    params text NOT NULL,
    fingerprint text NOT NULL,
    account text,
    recovery_point text NOT NULL,
    -- RFC 3339 text, as on SQLite: one comparison rule for both
    locked_at text,
    upstream_status int,
    upstream_body text,
    response_status int,
    response_body text,
    created_at text NOT NULL,
    updated_at text NOT NULL,
    PRIMARY KEY (app_id, key)
);
CREATE INDEX IF NOT EXISTS tributary_idempotency_keys_open ON tributary_idempotency_keys (recovery_point, updated_at);
CREATE INDEX IF NOT EXISTS tributary_idempotency_keys_age ON tributary_idempotency_keys (created_at);
-- objects written through Tributary, held at that state until the upstream echoes it
CREATE TABLE IF NOT EXISTS tributary_write_fences (
    table_name text NOT NULL,
    id text NOT NULL,
    state text,
    expires_at text NOT NULL,
    PRIMARY KEY (table_name, id)
);
-- jobs written with a write's last phase; the enqueuer hands them on after commit
CREATE TABLE IF NOT EXISTS tributary_staged_jobs (
    id bigserial PRIMARY KEY,
    kind text NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS tributary_ledger (
    source text NOT NULL,
    key text NOT NULL,
    fingerprint text,
    day text NOT NULL,
    seen_at bigint NOT NULL,
    PRIMARY KEY (source, key)
);
CREATE INDEX IF NOT EXISTS tributary_ledger_day ON tributary_ledger (source, day);

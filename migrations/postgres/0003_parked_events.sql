-- Upstream events a source could not store (no object id at its path, …):
-- parked with the reason and the raw event, in the transaction that stores
-- the rest of their batch, so the queue keeps flowing. One row per event
-- (its id, or the digest of its body when it has none).
CREATE TABLE IF NOT EXISTS tributary_parked (
    source TEXT NOT NULL,
    key TEXT NOT NULL,
    event_id TEXT,
    event_type TEXT,
    reason TEXT NOT NULL,
    body TEXT NOT NULL,
    parked_at TEXT NOT NULL,
    PRIMARY KEY (source, key)
);

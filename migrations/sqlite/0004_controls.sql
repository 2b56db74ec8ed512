-- Operators steer sources and sinks from the API, the CLI or the console:
-- a request is a row here, and whichever process runs the source or sink
-- applies it (pause and resume; a sink's rewind to a position in the change
-- log; a redrive of its dead letters, counted so the owner notices it).
CREATE TABLE IF NOT EXISTS tributary_controls (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    paused INTEGER NOT NULL DEFAULT 0,
    rewind_to TEXT,
    redrives INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (kind, name)
);
-- a rewind moves the epoch on: a batch confirmed against the old position
-- cannot move the cursor past it afterwards
ALTER TABLE tributary_sink_cursors ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tributary_dead_letters ADD COLUMN attempts INTEGER NOT NULL DEFAULT 1;
ALTER TABLE tributary_dead_letters ADD COLUMN redrive_requested_at TEXT;
CREATE INDEX IF NOT EXISTS tributary_dead_letters_sink ON tributary_dead_letters (sink, id);
-- one object's history, and the console's filters
CREATE INDEX IF NOT EXISTS tributary_changes_object_id ON tributary_changes (object_id);

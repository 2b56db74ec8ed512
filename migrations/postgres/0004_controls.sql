-- Operators steer sources and sinks from the API, the CLI or the console:
-- a request is a row here, and whichever process runs the source or sink
-- applies it (pause and resume; a sink's rewind to a position in the change
-- log; a redrive of its dead letters, counted so the owner notices it).
CREATE TABLE IF NOT EXISTS tributary_controls (
    kind text NOT NULL,
    name text NOT NULL,
    paused boolean NOT NULL DEFAULT false,
    rewind_to text,
    redrives bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, name)
);
-- a rewind moves the epoch on: a batch confirmed against the old position
-- cannot move the cursor past it afterwards
ALTER TABLE tributary_sink_cursors ADD COLUMN IF NOT EXISTS epoch bigint NOT NULL DEFAULT 0;
ALTER TABLE tributary_dead_letters ADD COLUMN IF NOT EXISTS attempts integer NOT NULL DEFAULT 1;
ALTER TABLE tributary_dead_letters ADD COLUMN IF NOT EXISTS redrive_requested_at timestamptz;
CREATE INDEX IF NOT EXISTS tributary_dead_letters_sink ON tributary_dead_letters (sink, id);
-- one object's history, and the console's filters
CREATE INDEX IF NOT EXISTS tributary_changes_object_id ON tributary_changes (object_id);

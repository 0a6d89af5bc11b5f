"""SQLite schema, as ordered migrations; PRAGMA user_version is the version.

Never edit a released step: add a new one.
"""

from __future__ import annotations

V1 = """
CREATE TABLE channels (
    channel_id TEXT PRIMARY KEY,
    locked_window_ms INTEGER NOT NULL CHECK (locked_window_ms > 0),
    current_generation_id INTEGER NOT NULL DEFAULT 0,
    -- Replay history (publishes) is kept for generations above this.
    history_floor_generation INTEGER NOT NULL DEFAULT 0
);

-- Entries are versioned: a publish marks the entries it replaces with its
-- generation instead of deleting them, so the history can be replayed.
CREATE TABLE entries (
    id INTEGER PRIMARY KEY,
    channel_id TEXT NOT NULL REFERENCES channels (channel_id),
    block_id TEXT NOT NULL,
    block_index INTEGER NOT NULL,
    start_utc_ms INTEGER NOT NULL,
    end_utc_ms INTEGER NOT NULL CHECK (end_utc_ms > start_utc_ms),
    segments_json TEXT NOT NULL,
    programming_day_date TEXT NOT NULL,
    transmission_log_ref TEXT NOT NULL,
    is_operator_override INTEGER NOT NULL,
    generation_id INTEGER NOT NULL,
    override_record_id TEXT,
    superseded_by_generation INTEGER
);
CREATE INDEX entries_current_by_start ON entries (channel_id, start_utc_ms)
    WHERE superseded_by_generation IS NULL;
CREATE UNIQUE INDEX entries_current_block_id ON entries (channel_id, block_id)
    WHERE superseded_by_generation IS NULL;
CREATE INDEX entries_by_generation ON entries (channel_id, generation_id);
CREATE INDEX entries_by_superseded ON entries (channel_id, superseded_by_generation)
    WHERE superseded_by_generation IS NOT NULL;

-- An entry's content never changes; only its supersession is recorded.
CREATE TRIGGER entries_content_immutable
BEFORE UPDATE OF channel_id, block_id, block_index, start_utc_ms, end_utc_ms, segments_json,
    programming_day_date, transmission_log_ref, is_operator_override, generation_id,
    override_record_id ON entries
BEGIN
    SELECT RAISE(ABORT, 'INV-PLAYLOG-LOCKED-IMMUTABLE-001: entries are replaced, never updated');
END;

CREATE TABLE publishes (
    channel_id TEXT NOT NULL REFERENCES channels (channel_id),
    generation_id INTEGER NOT NULL,
    previous_generation_id INTEGER NOT NULL,
    range_start_utc_ms INTEGER NOT NULL,
    range_end_utc_ms INTEGER NOT NULL,
    reason_code TEXT NOT NULL,
    actor TEXT NOT NULL,
    operator_override INTEGER NOT NULL,
    override_record_id TEXT,
    committed_utc_ms INTEGER NOT NULL,
    PRIMARY KEY (channel_id, generation_id)
);

CREATE TABLE override_records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    layer TEXT NOT NULL,
    channel_id TEXT NOT NULL,
    target TEXT NOT NULL,
    reason_code TEXT NOT NULL,
    actor TEXT NOT NULL,
    actor_note TEXT NOT NULL,
    created_utc_ms INTEGER NOT NULL,
    resulting_generation_id INTEGER NOT NULL,
    superseded_json TEXT NOT NULL,
    superseded_schedule_day_id TEXT NOT NULL,
    previous_locked_window_ms INTEGER NOT NULL,
    range_start_utc_ms INTEGER NOT NULL,
    range_end_utc_ms INTEGER NOT NULL,
    programming_day_date TEXT NOT NULL
);
CREATE INDEX override_records_by_channel ON override_records (channel_id, seq);

-- Override records are append-only.
CREATE TRIGGER override_records_no_update BEFORE UPDATE ON override_records
BEGIN
    SELECT RAISE(ABORT, 'INV-OVERRIDE-RECORD-PRECEDES-ARTIFACT-001: override records are append-only');
END;
CREATE TRIGGER override_records_no_delete BEFORE DELETE ON override_records
BEGIN
    SELECT RAISE(ABORT, 'INV-OVERRIDE-RECORD-PRECEDES-ARTIFACT-001: override records are append-only');
END;

CREATE TABLE schedule_days (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    channel_id TEXT NOT NULL REFERENCES channels (channel_id),
    programming_day_date TEXT NOT NULL,
    plan_id TEXT,
    is_manual_override INTEGER NOT NULL,
    supersedes_id TEXT,
    slots_json TEXT NOT NULL,
    resolved_utc_ms INTEGER NOT NULL,
    is_authoritative INTEGER NOT NULL,
    override_record_id TEXT
);
-- One authoritative day per channel and date.
CREATE UNIQUE INDEX schedule_days_one_per_date ON schedule_days (channel_id, programming_day_date)
    WHERE is_authoritative = 1;
CREATE INDEX schedule_days_history ON schedule_days (channel_id, programming_day_date, seq);

-- A stored day never changes; it can only stop being authoritative.
CREATE TRIGGER schedule_days_immutable
BEFORE UPDATE OF id, channel_id, programming_day_date, plan_id, is_manual_override, supersedes_id,
    slots_json, resolved_utc_ms, override_record_id ON schedule_days
BEGIN
    SELECT RAISE(ABORT, 'INV-SCHEDULEDAY-IMMUTABLE-001: schedule days are never updated in place');
END;
CREATE TRIGGER schedule_days_authority_only_withdrawn
BEFORE UPDATE OF is_authoritative ON schedule_days
WHEN NEW.is_authoritative > OLD.is_authoritative
BEGIN
    SELECT RAISE(ABORT, 'INV-SCHEDULEDAY-IMMUTABLE-001: a superseded day stays superseded');
END;
CREATE TRIGGER schedule_days_no_delete BEFORE DELETE ON schedule_days
BEGIN
    SELECT RAISE(ABORT, 'INV-SCHEDULEDAY-IMMUTABLE-001: schedule days are kept for audit');
END;
"""

# The manual clock's time, so that it never moves backwards across restarts.
V2 = """
CREATE TABLE clock_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    manual_now_utc_ms INTEGER NOT NULL
);
"""

# Version 3 (issue 8): the cut of the entry on air, retention counted in
# publishes, and the latest instant the server acted on ("now" never moves
# backwards, restarts included).
V3 = """
ALTER TABLE publishes ADD COLUMN cut_block_id TEXT;
ALTER TABLE channels ADD COLUMN history_publishes INTEGER NOT NULL DEFAULT 0;
UPDATE channels SET history_publishes =
    (SELECT COUNT(*) FROM publishes p WHERE p.channel_id = channels.channel_id);
UPDATE channels SET history_floor_generation = COALESCE(
    (SELECT p.previous_generation_id FROM publishes p WHERE p.channel_id = channels.channel_id
     ORDER BY p.generation_id LIMIT 1),
    history_floor_generation);
CREATE TABLE clock_floor (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    acted_utc_ms INTEGER NOT NULL
);
INSERT INTO clock_floor (id, acted_utc_ms) VALUES (1, 0);
"""

# Version 4 (issue 9): each entry's wire form (a serialized
# playlog.v1.ExecutionEntry, generation stamped) is stored beside the columns
# checks and indexes need, so that reads and events send stored bytes. Older
# entries are encoded once by the migration's data step (sql.backfill_payloads);
# segments_json is no longer written ('').
V4 = """
ALTER TABLE entries ADD COLUMN payload BLOB;
CREATE TRIGGER entries_payload_immutable
BEFORE UPDATE OF payload ON entries
WHEN OLD.payload IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'INV-PLAYLOG-LOCKED-IMMUTABLE-001: entries are replaced, never updated');
END;
"""

# Version 5 (issue 11): engines' evidence. The latest acknowledgement of each
# engine on each channel, every NACK (append-only), and as-run events
# (append-only, idempotent by (engine_id, event_id)).
V5 = """
CREATE TABLE engine_status (
    channel_id TEXT NOT NULL REFERENCES channels (channel_id),
    engine_id TEXT NOT NULL,
    applied_generation_id INTEGER NOT NULL DEFAULT 0,
    last_acknowledged_utc_ms INTEGER NOT NULL DEFAULT 0,
    last_as_run_received_utc_ms INTEGER NOT NULL DEFAULT 0,
    last_as_run_ended_utc_ms INTEGER NOT NULL DEFAULT 0,
    last_nack_generation_id INTEGER NOT NULL DEFAULT 0,
    last_nack_utc_ms INTEGER NOT NULL DEFAULT 0,
    last_nack_detail TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (channel_id, engine_id)
);

CREATE TABLE engine_nacks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    channel_id TEXT NOT NULL REFERENCES channels (channel_id),
    engine_id TEXT NOT NULL,
    generation_id INTEGER NOT NULL,
    detail TEXT NOT NULL,
    nacked_utc_ms INTEGER NOT NULL,
    channel_generation_id INTEGER NOT NULL
);
CREATE INDEX engine_nacks_by_engine ON engine_nacks (channel_id, engine_id, seq);

CREATE TABLE as_run (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    engine_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    channel_id TEXT NOT NULL REFERENCES channels (channel_id),
    block_id TEXT NOT NULL,
    generation_id INTEGER NOT NULL,
    segment_id TEXT NOT NULL,
    asset_uri TEXT NOT NULL,
    started_utc_ms INTEGER NOT NULL,
    ended_utc_ms INTEGER NOT NULL CHECK (ended_utc_ms >= started_utc_ms),
    status TEXT NOT NULL,
    detail TEXT NOT NULL,
    received_utc_ms INTEGER NOT NULL,
    traced SMALLINT NOT NULL,
    UNIQUE (engine_id, event_id)
);
CREATE INDEX as_run_by_start ON as_run (channel_id, started_utc_ms, seq);

-- The longest as-run event of each channel: how far before a range's start
-- an event overlapping it can start (bounds the index search).
CREATE TABLE as_run_spans (
    channel_id TEXT PRIMARY KEY REFERENCES channels (channel_id),
    longest_ms INTEGER NOT NULL
);

-- Reconciliation looks up every version of a block by its id.
CREATE INDEX entries_by_block ON entries (channel_id, block_id, generation_id);

-- Evidence is append-only: never changed, never removed.
CREATE TRIGGER as_run_no_update BEFORE UPDATE ON as_run
BEGIN
    SELECT RAISE(ABORT, 'INV-PLAYLOG-AS-RUN-APPEND-ONLY-001: as-run events are append-only');
END;
CREATE TRIGGER as_run_no_delete BEFORE DELETE ON as_run
BEGIN
    SELECT RAISE(ABORT, 'INV-PLAYLOG-AS-RUN-APPEND-ONLY-001: as-run events are append-only');
END;
CREATE TRIGGER engine_nacks_no_update BEFORE UPDATE ON engine_nacks
BEGIN
    SELECT RAISE(ABORT, 'INV-PLAYLOG-AS-RUN-APPEND-ONLY-001: NACKs are append-only');
END;
CREATE TRIGGER engine_nacks_no_delete BEFORE DELETE ON engine_nacks
BEGIN
    SELECT RAISE(ABORT, 'INV-PLAYLOG-AS-RUN-APPEND-ONLY-001: NACKs are append-only');
END;"""

# Version 6 (issue 10): the latest instant acted on, per channel, so that
# writes to different channels (on different replicas) do not all wait on one
# row; the clock's floor is the latest of these and clock_floor's.
V6 = """
ALTER TABLE channels ADD COLUMN acted_utc_ms INTEGER NOT NULL DEFAULT 0;
"""

# Version 7 (issue 16): what a guide shows of a channel (SPEC section 14).
# Existing channels get none: the guide then shows the channel id as the
# name and a guide_id derived from it. Not part of any entry, so a change
# needs no new generation.
V7 = """
ALTER TABLE channels ADD COLUMN display_name TEXT NOT NULL DEFAULT '';
ALTER TABLE channels ADD COLUMN guide_number TEXT NOT NULL DEFAULT '';
ALTER TABLE channels ADD COLUMN icon_url TEXT NOT NULL DEFAULT '';
ALTER TABLE channels ADD COLUMN stream_url TEXT NOT NULL DEFAULT '';
ALTER TABLE channels ADD COLUMN guide_id TEXT NOT NULL DEFAULT '';
"""

MIGRATIONS: list[str] = [V1, V2, V3, V4, V5, V6, V7]
# The version whose migration also encodes older entries' payloads.
PAYLOAD_VERSION = 4

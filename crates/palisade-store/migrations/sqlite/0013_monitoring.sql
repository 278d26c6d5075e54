-- Alerts raised by the detectors: one row per de-duplicated alert.
CREATE TABLE alerts (
    id            TEXT PRIMARY KEY NOT NULL,
    dedup_key     TEXT NOT NULL,
    detector      TEXT NOT NULL,
    severity      TEXT NOT NULL,
    device_id     TEXT,               -- not a foreign key: findings may name unknown devices
    peer          TEXT,
    state         TEXT NOT NULL CHECK (state IN ('open', 'acknowledged', 'resolved')),
    summary       TEXT NOT NULL,
    evidence      TEXT NOT NULL,      -- JSON, the first finding's
    last_evidence TEXT NOT NULL,      -- JSON, the latest finding's
    count         INTEGER NOT NULL,
    first_ms      INTEGER NOT NULL,
    last_ms       INTEGER NOT NULL,
    acked_by      TEXT,
    acked_ms      INTEGER,
    resolved_by   TEXT,
    resolved_ms   INTEGER,
    note          TEXT NOT NULL DEFAULT '',
    responses     TEXT NOT NULL DEFAULT '[]'   -- JSON, automatic responses taken
) STRICT;
CREATE INDEX alerts_unresolved_by_key ON alerts(dedup_key) WHERE state != 'resolved';
CREATE INDEX alerts_by_device ON alerts(device_id, first_ms);
CREATE INDEX alerts_by_time ON alerts(last_ms);

-- What the timeline shows besides audit entries and alerts: sessions, source
-- addresses, firmware seen, per-minute flow summaries. Pruned by age.
CREATE TABLE device_events (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id TEXT NOT NULL,
    at_ms     INTEGER NOT NULL,
    kind      TEXT NOT NULL,
    summary   TEXT NOT NULL,
    detail    TEXT NOT NULL        -- JSON
) STRICT;
CREATE INDEX device_events_by_device ON device_events(device_id, at_ms);
CREATE INDEX device_events_by_time ON device_events(at_ms);
CREATE INDEX IF NOT EXISTS audit_entries_by_subject ON audit_entries(subject, seq);

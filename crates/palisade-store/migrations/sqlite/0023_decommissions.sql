-- A device's end: who decommissioned it, why, and what is known of its wipe
-- (not_requested, pending until the receipt or the deadline, verified with
-- the receipt the device signed, or unconfirmed). One row per device; an
-- audited reinstatement removes it (the audit log keeps the history).
CREATE TABLE decommissions (
    device_id    TEXT PRIMARY KEY NOT NULL REFERENCES devices (id),
    actor        TEXT NOT NULL,
    reason       TEXT NOT NULL,
    requested_ms INTEGER NOT NULL,
    wipe         TEXT NOT NULL,
    nonce        TEXT,
    serial       TEXT,
    deadline_ms  INTEGER,
    completed_ms INTEGER,
    receipt      TEXT,
    destroyed    TEXT NOT NULL DEFAULT '[]',
    detail       TEXT NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX decommissions_wipe ON decommissions (wipe, deadline_ms);

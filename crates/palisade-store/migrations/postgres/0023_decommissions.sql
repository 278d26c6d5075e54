-- A device's end: who decommissioned it, why, and what is known of its wipe
-- (not_requested, pending until the receipt or the deadline, verified with
-- the receipt the device signed, or unconfirmed). One row per device; an
-- audited reinstatement removes it (the audit log keeps the history).
CREATE TABLE decommissions (
    device_id    TEXT COLLATE "C" PRIMARY KEY NOT NULL REFERENCES devices (id),
    actor        TEXT NOT NULL,
    reason       TEXT NOT NULL,
    requested_ms BIGINT NOT NULL,
    wipe         TEXT COLLATE "C" NOT NULL,
    nonce        TEXT,
    serial       TEXT,
    deadline_ms  BIGINT,
    completed_ms BIGINT,
    receipt      TEXT,
    destroyed    TEXT NOT NULL DEFAULT '[]',
    detail       TEXT NOT NULL DEFAULT ''
);
CREATE INDEX decommissions_wipe ON decommissions (wipe, deadline_ms);

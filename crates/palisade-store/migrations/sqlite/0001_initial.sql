-- Palisade control-plane schema, version 1. Times are Unix milliseconds (UTC).

CREATE TABLE models (
    id                 TEXT PRIMARY KEY NOT NULL,
    description        TEXT NOT NULL DEFAULT '',
    cert_validity_days INTEGER NOT NULL,
    created_ms         INTEGER NOT NULL
) STRICT;

CREATE TABLE devices (
    id              TEXT PRIMARY KEY NOT NULL,
    model_id        TEXT NOT NULL REFERENCES models(id),
    state           TEXT NOT NULL CHECK (state IN
                      ('registered','enrolled','active','quarantined','decommissioned')),
    hardware_serial TEXT,
    created_ms      INTEGER NOT NULL,
    updated_ms      INTEGER NOT NULL
) STRICT;
CREATE INDEX devices_by_model ON devices(model_id);

CREATE TABLE certificates (
    serial        TEXT PRIMARY KEY NOT NULL,
    profile       TEXT NOT NULL,
    subject       TEXT NOT NULL,
    device_id     TEXT REFERENCES devices(id),
    not_before_ms INTEGER NOT NULL,
    not_after_ms  INTEGER NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('valid','revoked')),
    revoked_ms    INTEGER,
    reason        TEXT,
    der           BLOB NOT NULL,
    issued_ms     INTEGER NOT NULL
) STRICT;
CREATE INDEX certificates_by_device ON certificates(device_id);
CREATE INDEX certificates_revoked ON certificates(status) WHERE status = 'revoked';

CREATE TABLE tokens (
    id          TEXT PRIMARY KEY NOT NULL,
    operator    TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('admin','operator','auditor')),
    secret_hash BLOB NOT NULL,
    created_ms  INTEGER NOT NULL,
    expires_ms  INTEGER,
    revoked_ms  INTEGER
) STRICT;

-- The tamper-evident audit log: entries and the signed checkpoint of every batch.
CREATE TABLE audit_entries (
    seq        INTEGER PRIMARY KEY NOT NULL,
    time_ms    INTEGER NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    subject    TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    detail     TEXT NOT NULL,
    digest     BLOB NOT NULL
) STRICT;

CREATE TABLE audit_checkpoints (
    size    INTEGER PRIMARY KEY NOT NULL,
    note    TEXT NOT NULL,
    time_ms INTEGER NOT NULL
) STRICT;

CREATE TABLE counters (
    name  TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
) STRICT;

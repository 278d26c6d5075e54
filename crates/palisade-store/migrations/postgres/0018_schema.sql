-- The PostgreSQL schema: the same tables, columns and indexes as the SQLite
-- migrations 0001–0018 produce, in one step (PostgreSQL support starts here;
-- later migrations are added to both directories under the same number).
--
-- Integers are BIGINT (the store reads and writes i64), blobs BYTEA, and every
-- text column uses the "C" collation, so that ORDER BY compares bytes as SQLite
-- does and a list pages the same way on both backends whatever the database's
-- locale.

CREATE TABLE suppliers (
    name       TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    ca_der     BYTEA NOT NULL,
    ca_sha256  TEXT COLLATE "C" NOT NULL UNIQUE,
    created_ms BIGINT NOT NULL,
    disclosure_contact TEXT COLLATE "C"
);

CREATE TABLE models (
    id                 TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    description        TEXT COLLATE "C" NOT NULL DEFAULT '',
    cert_validity_days BIGINT NOT NULL,
    created_ms         BIGINT NOT NULL,
    policy_version BIGINT NOT NULL DEFAULT 1,
    approval_required BIGINT NOT NULL DEFAULT 0,
    allowed_key_types TEXT COLLATE "C" NOT NULL DEFAULT 'ecdsa-p256,ecdsa-p384,ed25519',
    attestation TEXT COLLATE "C" NOT NULL DEFAULT 'none',
    supplier TEXT COLLATE "C" REFERENCES suppliers(name),
    support_until_ms BIGINT,
    security_update_days BIGINT
);

CREATE TABLE devices (
    id              TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    model_id        TEXT COLLATE "C" NOT NULL REFERENCES models(id),
    state           TEXT COLLATE "C" NOT NULL CHECK (state IN
                      ('registered','enrolled','active','quarantined','decommissioned')),
    hardware_serial TEXT COLLATE "C",
    created_ms      BIGINT NOT NULL,
    updated_ms      BIGINT NOT NULL,
    supplier TEXT COLLATE "C",
    batch_id TEXT COLLATE "C",
    birth_cert_sha256 TEXT COLLATE "C",
    enrolled_key_sha256 TEXT COLLATE "C",
    attached_policy TEXT COLLATE "C",
    pending_since_ms BIGINT,
    approved_ms BIGINT,
    last_seen_ms BIGINT,
    reported_firmware TEXT COLLATE "C",
    key_protection TEXT COLLATE "C",
    ak_public BYTEA,
    ek_sha256 TEXT COLLATE "C",
    attestation_status TEXT COLLATE "C",
    attestation_detail TEXT COLLATE "C",
    attested_ms BIGINT
);

CREATE INDEX devices_by_model ON devices(model_id);

CREATE TABLE certificates (
    serial        TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    profile       TEXT COLLATE "C" NOT NULL,
    subject       TEXT COLLATE "C" NOT NULL,
    device_id     TEXT COLLATE "C" REFERENCES devices(id),
    not_before_ms BIGINT NOT NULL,
    not_after_ms  BIGINT NOT NULL,
    status        TEXT COLLATE "C" NOT NULL CHECK (status IN ('valid','revoked')),
    revoked_ms    BIGINT,
    reason        TEXT COLLATE "C",
    der           BYTEA NOT NULL,
    issued_ms     BIGINT NOT NULL

);

CREATE INDEX certificates_by_device ON certificates(device_id);

CREATE INDEX certificates_revoked ON certificates(status) WHERE status = 'revoked';

CREATE TABLE audit_entries (
    seq        BIGINT PRIMARY KEY NOT NULL,
    time_ms    BIGINT NOT NULL,
    actor      TEXT COLLATE "C" NOT NULL,
    action     TEXT COLLATE "C" NOT NULL,
    subject    TEXT COLLATE "C" NOT NULL,
    outcome    TEXT COLLATE "C" NOT NULL,
    detail     TEXT COLLATE "C" NOT NULL,
    digest     BYTEA NOT NULL

);

CREATE TABLE audit_checkpoints (
    size    BIGINT PRIMARY KEY NOT NULL,
    note    TEXT COLLATE "C" NOT NULL,
    time_ms BIGINT NOT NULL

);

CREATE TABLE counters (
    name  TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    value BIGINT NOT NULL

);

CREATE UNIQUE INDEX devices_by_birth_cert ON devices(birth_cert_sha256) WHERE birth_cert_sha256 IS NOT NULL;

CREATE TABLE batches (
    id           TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    supplier     TEXT COLLATE "C" NOT NULL REFERENCES suppliers(name),
    model_id     TEXT COLLATE "C" NOT NULL REFERENCES models(id),
    device_count BIGINT NOT NULL,
    imported_ms  BIGINT NOT NULL

);

CREATE TABLE enrollment_tokens (
    id          TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    model_id    TEXT COLLATE "C" NOT NULL REFERENCES models(id),
    secret_hash BYTEA NOT NULL,
    created_ms  BIGINT NOT NULL,
    expires_ms  BIGINT NOT NULL,
    used_ms     BIGINT,
    used_device TEXT COLLATE "C"

);

CREATE TABLE commands (
    id         TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    device_id  TEXT COLLATE "C" NOT NULL REFERENCES devices(id),
    name       TEXT COLLATE "C" NOT NULL,
    args       TEXT COLLATE "C" NOT NULL,
    status     TEXT COLLATE "C" NOT NULL CHECK (status IN ('queued','sent','acked','failed')),
    created_ms BIGINT NOT NULL,
    sent_ms    BIGINT,
    acked_ms   BIGINT,
    result     TEXT COLLATE "C"

);

CREATE INDEX commands_by_device ON commands(device_id, created_ms);

CREATE TABLE tpm_vendors (
    sha256     TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    subject    TEXT COLLATE "C" NOT NULL,
    ca_der     BYTEA NOT NULL,
    created_ms BIGINT NOT NULL

);

CREATE TABLE model_firmware (
    model_id   TEXT COLLATE "C" NOT NULL REFERENCES models(id),
    version    TEXT COLLATE "C" NOT NULL,
    sha256     TEXT COLLATE "C" NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (model_id, version)

);

CREATE TABLE supplier_keys (
    keyid      TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    supplier   TEXT COLLATE "C" NOT NULL REFERENCES suppliers(name),
    spki_der   BYTEA NOT NULL,
    created_ms BIGINT NOT NULL

);

CREATE TABLE releases (
    model_id          TEXT COLLATE "C" NOT NULL REFERENCES models(id),
    version           TEXT COLLATE "C" NOT NULL,
    security_version  BIGINT NOT NULL,
    hardware          TEXT COLLATE "C" NOT NULL,
    image_sha256      TEXT COLLATE "C" NOT NULL,
    image_len         BIGINT NOT NULL,
    sbom_sha256       TEXT COLLATE "C" NOT NULL,
    provenance_sha256 TEXT COLLATE "C" NOT NULL,
    signed_by         TEXT COLLATE "C" NOT NULL,
    builder_id        TEXT COLLATE "C" NOT NULL,
    uploaded_by       TEXT COLLATE "C" NOT NULL,
    created_ms        BIGINT NOT NULL,
    PRIMARY KEY (model_id, version)

);

CREATE TABLE tokens (
    id          TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    operator    TEXT COLLATE "C" NOT NULL,
    role        TEXT COLLATE "C" NOT NULL CHECK (role IN ('admin','operator','auditor','supplier')),
    secret_hash BYTEA NOT NULL,
    created_ms  BIGINT NOT NULL,
    expires_ms  BIGINT,
    revoked_ms  BIGINT

);

CREATE TABLE device_assignments (
    device_id  TEXT COLLATE "C" PRIMARY KEY NOT NULL REFERENCES devices(id),
    counter    BIGINT NOT NULL,
    signed     TEXT COLLATE "C" NOT NULL,
    created_ms BIGINT NOT NULL

);

CREATE TABLE device_updates (
    device_id  TEXT COLLATE "C" PRIMARY KEY NOT NULL REFERENCES devices(id),
    counter    BIGINT NOT NULL,
    target     TEXT COLLATE "C" NOT NULL,
    state      TEXT COLLATE "C" NOT NULL,
    detail     TEXT COLLATE "C" NOT NULL,
    updated_ms BIGINT NOT NULL

);

CREATE TABLE device_tags (
    device_id TEXT COLLATE "C" NOT NULL REFERENCES devices(id),
    tag       TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (device_id, tag)

);

CREATE INDEX device_tags_by_tag ON device_tags(tag);

CREATE TABLE rollouts (
    name            TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    model_id        TEXT COLLATE "C" NOT NULL REFERENCES models(id),
    release_version TEXT COLLATE "C" NOT NULL,
    spec            TEXT COLLATE "C" NOT NULL,   -- JSON RolloutSpec
    state           TEXT COLLATE "C" NOT NULL,   -- running, paused, cancelled, completed
    wave            BIGINT NOT NULL,
    reason          TEXT COLLATE "C" NOT NULL,
    created_by      TEXT COLLATE "C" NOT NULL,
    created_ms      BIGINT NOT NULL,
    updated_ms      BIGINT NOT NULL

);

CREATE TABLE rollout_devices (
    rollout    TEXT COLLATE "C" NOT NULL REFERENCES rollouts(name),
    device_id  TEXT COLLATE "C" NOT NULL REFERENCES devices(id),
    wave       BIGINT NOT NULL,
    state      TEXT COLLATE "C" NOT NULL,        -- pending, assigned, committed, failed
    counter    BIGINT NOT NULL,     -- the director assignment's counter
    detail     TEXT COLLATE "C" NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (rollout, device_id)

);

CREATE TABLE model_policies (
    model_id      TEXT COLLATE "C" PRIMARY KEY NOT NULL REFERENCES models(id),
    mud_url       TEXT COLLATE "C" NOT NULL,
    mud           TEXT COLLATE "C" NOT NULL,
    policy        TEXT COLLATE "C" NOT NULL,      -- JSON palisade_policy::Policy
    signed_by     TEXT COLLATE "C" NOT NULL,      -- the supplier key that signed the MUD file, or ''
    open_override BIGINT NOT NULL,   -- the operator accepted a policy that opens everything
    updated_ms    BIGINT NOT NULL

);

CREATE TABLE sites (
    name       TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    spec       TEXT COLLATE "C" NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL

);

CREATE TABLE device_placements (
    device_id  TEXT COLLATE "C" PRIMARY KEY NOT NULL REFERENCES devices(id),
    site       TEXT COLLATE "C" NOT NULL REFERENCES sites(name),
    segment    TEXT COLLATE "C" NOT NULL,
    address    TEXT COLLATE "C" NOT NULL,
    overrides  TEXT COLLATE "C" NOT NULL,         -- JSON palisade_policy::Policy added to the model's
    updated_ms BIGINT NOT NULL

);

CREATE INDEX device_placements_by_site ON device_placements(site);

CREATE TABLE site_edges (
    device_id       TEXT COLLATE "C" PRIMARY KEY NOT NULL REFERENCES devices(id),
    site            TEXT COLLATE "C" NOT NULL REFERENCES sites(name),
    applied_version BIGINT NOT NULL,
    status          TEXT COLLATE "C" NOT NULL,    -- JSON: counters, last error
    updated_ms      BIGINT NOT NULL

);

CREATE TABLE alerts (
    id            TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    dedup_key     TEXT COLLATE "C" NOT NULL,
    detector      TEXT COLLATE "C" NOT NULL,
    severity      TEXT COLLATE "C" NOT NULL,
    device_id     TEXT COLLATE "C",               -- not a foreign key: findings may name unknown devices
    peer          TEXT COLLATE "C",
    state         TEXT COLLATE "C" NOT NULL CHECK (state IN ('open', 'acknowledged', 'resolved')),
    summary       TEXT COLLATE "C" NOT NULL,
    evidence      TEXT COLLATE "C" NOT NULL,      -- JSON, the first finding's
    last_evidence TEXT COLLATE "C" NOT NULL,      -- JSON, the latest finding's
    count         BIGINT NOT NULL,
    first_ms      BIGINT NOT NULL,
    last_ms       BIGINT NOT NULL,
    acked_by      TEXT COLLATE "C",
    acked_ms      BIGINT,
    resolved_by   TEXT COLLATE "C",
    resolved_ms   BIGINT,
    note          TEXT COLLATE "C" NOT NULL DEFAULT '',
    responses     TEXT COLLATE "C" NOT NULL DEFAULT '[]'   -- JSON, automatic responses taken

);

CREATE INDEX alerts_unresolved_by_key ON alerts(dedup_key) WHERE state != 'resolved';

CREATE INDEX alerts_by_device ON alerts(device_id, first_ms);

CREATE INDEX alerts_by_time ON alerts(last_ms);

CREATE TABLE device_events (
    id        BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    device_id TEXT COLLATE "C" NOT NULL,
    at_ms     BIGINT NOT NULL,
    kind      TEXT COLLATE "C" NOT NULL,
    summary   TEXT COLLATE "C" NOT NULL,
    detail    TEXT COLLATE "C" NOT NULL        -- JSON

);

CREATE INDEX device_events_by_device ON device_events(device_id, at_ms);

CREATE INDEX device_events_by_time ON device_events(at_ms);

CREATE INDEX audit_entries_by_subject ON audit_entries(subject, seq);

CREATE TABLE posture_snapshots (
    day            TEXT COLLATE "C" NOT NULL,     -- YYYY-MM-DD, UTC
    framework      TEXT COLLATE "C" NOT NULL,
    scope          TEXT COLLATE "C" NOT NULL,
    pass           BIGINT NOT NULL,
    fail           BIGINT NOT NULL,
    unknown        BIGINT NOT NULL,
    not_assessable BIGINT NOT NULL,
    devices        BIGINT NOT NULL,
    PRIMARY KEY (day, framework, scope)

);

CREATE INDEX audit_entries_by_action ON audit_entries(action, seq);

CREATE TABLE operator_accounts (
    name          TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    role          TEXT COLLATE "C" NOT NULL,
    password_hash TEXT COLLATE "C" NOT NULL,
    created_ms    BIGINT NOT NULL,
    updated_ms    BIGINT NOT NULL,
    disabled_ms   BIGINT

);

CREATE TABLE console_sessions (
    id_hash      BYTEA PRIMARY KEY NOT NULL,
    operator     TEXT COLLATE "C" NOT NULL REFERENCES operator_accounts(name),
    csrf         TEXT COLLATE "C" NOT NULL,
    address      TEXT COLLATE "C" NOT NULL,
    created_ms   BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    expires_ms   BIGINT NOT NULL,
    revoked_ms   BIGINT

);

CREATE INDEX console_sessions_by_operator ON console_sessions(operator);

CREATE TABLE device_groups (
    name       TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    query      TEXT COLLATE "C" NOT NULL,
    created_by TEXT COLLATE "C" NOT NULL,
    created_ms BIGINT NOT NULL

);

CREATE INDEX devices_by_state ON devices(state, id);

CREATE INDEX certificates_valid_by_expiry ON certificates(not_after_ms) WHERE status = 'valid';

CREATE INDEX devices_by_last_seen ON devices(last_seen_ms, id);

CREATE INDEX devices_by_firmware ON devices(reported_firmware, id);

CREATE INDEX devices_by_model_id ON devices(model_id, id);

CREATE INDEX devices_by_model_state_seen ON devices(model_id, state, last_seen_ms, id);

CREATE INDEX device_placements_by_site_device ON device_placements(site, device_id);

CREATE TABLE unmanaged_hosts (
    site       TEXT COLLATE "C" NOT NULL REFERENCES sites(name),
    address    TEXT COLLATE "C" NOT NULL,
    mac        TEXT COLLATE "C",
    hostname   TEXT COLLATE "C",
    sources    TEXT COLLATE "C" NOT NULL,
    first_ms   BIGINT NOT NULL,
    last_ms    BIGINT NOT NULL,
    bytes      BIGINT NOT NULL DEFAULT 0,
    state      TEXT COLLATE "C" NOT NULL DEFAULT 'seen',
    device_id  TEXT COLLATE "C",
    decided_by TEXT COLLATE "C",
    decided_ms BIGINT,
    PRIMARY KEY (site, address)

);

CREATE INDEX unmanaged_hosts_by_state ON unmanaged_hosts(state);

-- The store's SQL is written once for both backends. These give PostgreSQL the
-- three SQLite functions it uses, over TEXT (a JSON array of strings for the
-- last two); PostgreSQL's own json_each(json) and json_array_length(json) are
-- untouched.
CREATE FUNCTION instr(haystack TEXT, needle TEXT) RETURNS INTEGER
    LANGUAGE SQL IMMUTABLE STRICT PARALLEL SAFE
    AS 'SELECT strpos(haystack, needle)';

CREATE FUNCTION json_each(list TEXT) RETURNS TABLE (value TEXT)
    LANGUAGE SQL IMMUTABLE STRICT PARALLEL SAFE
    AS 'SELECT json_array_elements_text(list::json)';

CREATE FUNCTION json_array_length(list TEXT) RETURNS INTEGER
    LANGUAGE SQL IMMUTABLE STRICT PARALLEL SAFE
    AS 'SELECT json_array_length(list::json)';

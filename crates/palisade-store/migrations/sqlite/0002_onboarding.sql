-- Zero-touch onboarding: suppliers' manufacturer CAs, imported batches, one-time
-- enrolment tokens, and what a device was given at enrolment.

ALTER TABLE models ADD COLUMN policy_version INTEGER NOT NULL DEFAULT 1;

ALTER TABLE devices ADD COLUMN supplier TEXT;
ALTER TABLE devices ADD COLUMN batch_id TEXT;
-- SHA-256 (hex) of the device's IDevID certificate, from the batch manifest.
ALTER TABLE devices ADD COLUMN birth_cert_sha256 TEXT;
-- SHA-256 (hex) of the SubjectPublicKeyInfo of the key the device enrolled with.
ALTER TABLE devices ADD COLUMN enrolled_key_sha256 TEXT;
-- JSON: the policy attached at enrolment (model, policy version, lifetime, key type).
ALTER TABLE devices ADD COLUMN attached_policy TEXT;
CREATE UNIQUE INDEX devices_by_birth_cert ON devices(birth_cert_sha256)
    WHERE birth_cert_sha256 IS NOT NULL;

CREATE TABLE suppliers (
    name       TEXT PRIMARY KEY NOT NULL,
    ca_der     BLOB NOT NULL,
    ca_sha256  TEXT NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL
) STRICT;

CREATE TABLE batches (
    id           TEXT PRIMARY KEY NOT NULL,
    supplier     TEXT NOT NULL REFERENCES suppliers(name),
    model_id     TEXT NOT NULL REFERENCES models(id),
    device_count INTEGER NOT NULL,
    imported_ms  INTEGER NOT NULL
) STRICT;

CREATE TABLE enrollment_tokens (
    id          TEXT PRIMARY KEY NOT NULL,
    model_id    TEXT NOT NULL REFERENCES models(id),
    secret_hash BLOB NOT NULL,
    created_ms  INTEGER NOT NULL,
    expires_ms  INTEGER NOT NULL,
    used_ms     INTEGER,
    used_device TEXT
) STRICT;

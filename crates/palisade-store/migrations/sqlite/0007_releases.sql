-- Firmware releases and the supply-chain gate: suppliers' signing keys, the
-- supplier that owns each model, and accepted releases (images, SBOMs and
-- provenance are content-addressed blobs on disk).

CREATE TABLE supplier_keys (
    keyid      TEXT PRIMARY KEY NOT NULL,
    supplier   TEXT NOT NULL REFERENCES suppliers(name),
    spki_der   BLOB NOT NULL,
    created_ms INTEGER NOT NULL
) STRICT;

ALTER TABLE models ADD COLUMN supplier TEXT REFERENCES suppliers(name);

CREATE TABLE releases (
    model_id          TEXT NOT NULL REFERENCES models(id),
    version           TEXT NOT NULL,
    security_version  INTEGER NOT NULL,
    hardware          TEXT NOT NULL,
    image_sha256      TEXT NOT NULL,
    image_len         INTEGER NOT NULL,
    sbom_sha256       TEXT NOT NULL,
    provenance_sha256 TEXT NOT NULL,
    signed_by         TEXT NOT NULL,
    builder_id        TEXT NOT NULL,
    uploaded_by       TEXT NOT NULL,
    created_ms        INTEGER NOT NULL,
    PRIMARY KEY (model_id, version)
) STRICT;

-- The supplier role: SQLite cannot alter a CHECK constraint, so the tokens
-- table is rebuilt with the wider one (nothing references it).
CREATE TABLE tokens_v2 (
    id          TEXT PRIMARY KEY NOT NULL,
    operator    TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('admin','operator','auditor','supplier')),
    secret_hash BLOB NOT NULL,
    created_ms  INTEGER NOT NULL,
    expires_ms  INTEGER,
    revoked_ms  INTEGER
) STRICT;
INSERT INTO tokens_v2 SELECT id, operator, role, secret_hash, created_ms, expires_ms, revoked_ms FROM tokens;
DROP TABLE tokens;
ALTER TABLE tokens_v2 RENAME TO tokens;

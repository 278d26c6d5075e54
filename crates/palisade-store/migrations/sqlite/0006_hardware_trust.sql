-- Hardware roots of trust: registered TPM vendor CAs, per-model attestation
-- policy and approved firmware measurements, and per-device key protection and
-- attestation results.

CREATE TABLE tpm_vendors (
    sha256     TEXT PRIMARY KEY NOT NULL,
    subject    TEXT NOT NULL,
    ca_der     BLOB NOT NULL,
    created_ms INTEGER NOT NULL
) STRICT;

-- 'none': any key; 'tpm': the identity key must be proven TPM-resident at
-- enrolment (EK/AK attestation), and measured boot is checked by quotes.
ALTER TABLE models ADD COLUMN attestation TEXT NOT NULL DEFAULT 'none';

CREATE TABLE model_firmware (
    model_id   TEXT NOT NULL REFERENCES models(id),
    version    TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (model_id, version)
) STRICT;

-- 'software', 'secure-element' (as reported by the agent) or 'tpm' (proven).
ALTER TABLE devices ADD COLUMN key_protection TEXT;
-- The attestation key's TPMT_PUBLIC and the EK certificate's SHA-256.
ALTER TABLE devices ADD COLUMN ak_public BLOB;
ALTER TABLE devices ADD COLUMN ek_sha256 TEXT;
-- Last quote check: 'ok' or 'failed', why, and when.
ALTER TABLE devices ADD COLUMN attestation_status TEXT;
ALTER TABLE devices ADD COLUMN attestation_detail TEXT;
ALTER TABLE devices ADD COLUMN attested_ms INTEGER;

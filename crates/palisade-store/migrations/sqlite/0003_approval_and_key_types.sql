-- Per-model enrolment policy: operator approval before issuance, allowed key types.
ALTER TABLE models ADD COLUMN approval_required INTEGER NOT NULL DEFAULT 0;
ALTER TABLE models ADD COLUMN allowed_key_types TEXT NOT NULL DEFAULT 'ecdsa-p256,ecdsa-p384,ed25519';
ALTER TABLE devices ADD COLUMN pending_since_ms INTEGER;
ALTER TABLE devices ADD COLUMN approved_ms INTEGER;

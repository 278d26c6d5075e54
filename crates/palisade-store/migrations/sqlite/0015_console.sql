-- People who sign in to the console: an operator account with a role and an
-- argon2id password hash (PHC string). Disabled accounts keep their row (the
-- audit log names them) and cannot sign in.
CREATE TABLE operator_accounts (
    name          TEXT PRIMARY KEY NOT NULL,
    role          TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_ms    INTEGER NOT NULL,
    updated_ms    INTEGER NOT NULL,
    disabled_ms   INTEGER
) STRICT;

-- Console sessions, by the SHA-256 of the cookie's secret (the secret itself is
-- never stored). Revoked on sign-out and when the account is disabled.
CREATE TABLE console_sessions (
    id_hash      BLOB PRIMARY KEY NOT NULL,
    operator     TEXT NOT NULL REFERENCES operator_accounts(name),
    csrf         TEXT NOT NULL,
    address      TEXT NOT NULL,
    created_ms   INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    expires_ms   INTEGER NOT NULL,
    revoked_ms   INTEGER
) STRICT;
CREATE INDEX console_sessions_by_operator ON console_sessions(operator);

-- Named device filters (groups) saved from the console's device list.
CREATE TABLE device_groups (
    name       TEXT PRIMARY KEY NOT NULL,
    query      TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_ms INTEGER NOT NULL
) STRICT;

-- The console's device list sorts and filters a large fleet on the server.
CREATE INDEX IF NOT EXISTS devices_by_state ON devices(state, id);
CREATE INDEX IF NOT EXISTS devices_by_last_seen ON devices(last_seen_ms);
CREATE INDEX IF NOT EXISTS certificates_valid_by_expiry ON certificates(not_after_ms) WHERE status = 'valid';

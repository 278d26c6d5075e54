-- Documents the platform signs and publishes, shared by every node: the TUF
-- repository's metadata (`tuf/<role>.json`, `tuf/<n>.root.json`) and the CRL
-- (`crl`). A new version replaces a stored one only if it names the version
-- it replaces, so two nodes never both publish "the next" version.
CREATE TABLE signed_documents (
    name       TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    version    BIGINT NOT NULL,
    body       BYTEA NOT NULL,
    updated_ms BIGINT NOT NULL
);

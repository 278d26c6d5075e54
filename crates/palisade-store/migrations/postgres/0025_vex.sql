-- What a release's supplier says about vulnerabilities in it (CSAF 2.0 VEX
-- or CycloneDX VEX, signed by the supplier's key): per vulnerability and
-- component ('' = the whole firmware), a status and, for not_affected, the
-- justification. An upload replaces the release's statements.
CREATE TABLE vex_statements (
    model_id        TEXT COLLATE "C" NOT NULL,
    version         TEXT COLLATE "C" NOT NULL,
    vulnerability   TEXT COLLATE "C" NOT NULL,
    component       TEXT COLLATE "C" NOT NULL,
    status          TEXT NOT NULL,
    justification   TEXT,
    detail          TEXT NOT NULL,
    supplier        TEXT NOT NULL,
    document_sha256 TEXT NOT NULL,
    uploaded_ms     BIGINT NOT NULL,
    PRIMARY KEY (model_id, version, vulnerability, component)
);
CREATE INDEX vex_statements_vulnerability ON vex_statements (vulnerability);

-- Vulnerability advisories (OSV records, as imported), the ids they are
-- known by (their own and aliases, upper case), the packages they name (to
-- find the records a release's components may match), and their matches
-- against accepted releases' SBOM components.
CREATE TABLE advisories (
    id            TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    modified      TEXT NOT NULL,
    withdrawn     TEXT,
    summary       TEXT NOT NULL,
    severity      TEXT,
    body          BYTEA NOT NULL,
    first_seen_ms BIGINT NOT NULL,
    updated_ms    BIGINT NOT NULL
);

CREATE TABLE advisory_ids (
    alias       TEXT COLLATE "C" NOT NULL,
    advisory_id TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (alias, advisory_id)
);

CREATE TABLE advisory_packages (
    ecosystem   TEXT COLLATE "C" NOT NULL,
    name        TEXT COLLATE "C" NOT NULL,
    advisory_id TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (ecosystem, name, advisory_id)
);
CREATE INDEX advisory_packages_advisory ON advisory_packages (advisory_id);

CREATE TABLE advisory_matches (
    advisory_id       TEXT COLLATE "C" NOT NULL,
    model_id          TEXT COLLATE "C" NOT NULL,
    version           TEXT COLLATE "C" NOT NULL,
    component         TEXT COLLATE "C" NOT NULL,
    component_version TEXT NOT NULL,
    why               TEXT NOT NULL,
    fixed             TEXT,
    PRIMARY KEY (advisory_id, model_id, version, component)
);
CREATE INDEX advisory_matches_release ON advisory_matches (model_id, version);

-- Vulnerability advisories (OSV records, as imported), the ids they are
-- known by (their own and aliases, upper case), the packages they name (to
-- find the records a release's components may match), and their matches
-- against accepted releases' SBOM components.
CREATE TABLE advisories (
    id            TEXT PRIMARY KEY NOT NULL,
    modified      TEXT NOT NULL,
    withdrawn     TEXT,
    summary       TEXT NOT NULL,
    severity      TEXT,
    body          BLOB NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    updated_ms    INTEGER NOT NULL
) STRICT;

CREATE TABLE advisory_ids (
    alias       TEXT NOT NULL,
    advisory_id TEXT NOT NULL,
    PRIMARY KEY (alias, advisory_id)
) STRICT;

CREATE TABLE advisory_packages (
    ecosystem   TEXT NOT NULL,
    name        TEXT NOT NULL,
    advisory_id TEXT NOT NULL,
    PRIMARY KEY (ecosystem, name, advisory_id)
) STRICT;
CREATE INDEX advisory_packages_advisory ON advisory_packages (advisory_id);

CREATE TABLE advisory_matches (
    advisory_id       TEXT NOT NULL,
    model_id          TEXT NOT NULL,
    version           TEXT NOT NULL,
    component         TEXT NOT NULL,
    component_version TEXT NOT NULL,
    why               TEXT NOT NULL,
    fixed             TEXT,
    PRIMARY KEY (advisory_id, model_id, version, component)
) STRICT;
CREATE INDEX advisory_matches_release ON advisory_matches (model_id, version);

-- A model's network policy: its MUD file as uploaded and the compiled policy.
CREATE TABLE model_policies (
    model_id      TEXT PRIMARY KEY NOT NULL REFERENCES models(id),
    mud_url       TEXT NOT NULL,
    mud           TEXT NOT NULL,
    policy        TEXT NOT NULL,      -- JSON palisade_policy::Policy
    signed_by     TEXT NOT NULL,      -- the supplier key that signed the MUD file, or ''
    open_override INTEGER NOT NULL,   -- the operator accepted a policy that opens everything
    updated_ms    INTEGER NOT NULL
) STRICT;

-- Sites: resolver, control-plane endpoints, controllers and segments (JSON).
CREATE TABLE sites (
    name       TEXT PRIMARY KEY NOT NULL,
    spec       TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
) STRICT;

-- Where a device sits: site, segment, address, and its policy overrides.
CREATE TABLE device_placements (
    device_id  TEXT PRIMARY KEY NOT NULL REFERENCES devices(id),
    site       TEXT NOT NULL REFERENCES sites(name),
    segment    TEXT NOT NULL,
    address    TEXT NOT NULL,
    overrides  TEXT NOT NULL,         -- JSON palisade_policy::Policy added to the model's
    updated_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX device_placements_by_site ON device_placements(site);

-- Edge gateways (enrolled identities) and what they last reported.
CREATE TABLE site_edges (
    device_id       TEXT PRIMARY KEY NOT NULL REFERENCES devices(id),
    site            TEXT NOT NULL REFERENCES sites(name),
    applied_version INTEGER NOT NULL,
    status          TEXT NOT NULL,    -- JSON: counters, last error
    updated_ms      INTEGER NOT NULL
) STRICT;

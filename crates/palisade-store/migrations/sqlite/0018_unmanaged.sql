-- Addresses the edges see at a site that map to no enrolled device: from flow
-- records, the edge's neighbour table and its DHCP leases. Listed for the
-- operator, who adopts (registers) or blocks each.
CREATE TABLE unmanaged_hosts (
    site       TEXT NOT NULL REFERENCES sites(name),
    address    TEXT NOT NULL,
    mac        TEXT,
    hostname   TEXT,
    sources    TEXT NOT NULL,
    first_ms   INTEGER NOT NULL,
    last_ms    INTEGER NOT NULL,
    bytes      INTEGER NOT NULL DEFAULT 0,
    state      TEXT NOT NULL DEFAULT 'seen',
    device_id  TEXT,
    decided_by TEXT,
    decided_ms INTEGER,
    PRIMARY KEY (site, address)
) STRICT;
CREATE INDEX unmanaged_hosts_by_state ON unmanaged_hosts(state);

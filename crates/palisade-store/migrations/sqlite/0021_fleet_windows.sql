-- Each device's fleet features over its last closed window (destinations,
-- bytes out, bytes in), written by the node that observed it, so the one
-- node that compares fleets (the `fleet-comparison` lead) sees every node's
-- devices.
CREATE TABLE fleet_windows (
    device_id TEXT PRIMARY KEY NOT NULL,
    model_id  TEXT NOT NULL,
    closed_ms INTEGER NOT NULL,
    dests     INTEGER NOT NULL,
    bytes_out INTEGER NOT NULL,
    bytes_in  INTEGER NOT NULL,
    node      TEXT NOT NULL
) STRICT;
CREATE INDEX fleet_windows_closed ON fleet_windows (closed_ms);

-- Each device's fleet features over its last closed window (destinations,
-- bytes out, bytes in), written by the node that observed it, so the one
-- node that compares fleets (the `fleet-comparison` lead) sees every node's
-- devices.
CREATE TABLE fleet_windows (
    device_id TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    model_id  TEXT COLLATE "C" NOT NULL,
    closed_ms BIGINT NOT NULL,
    dests     BIGINT NOT NULL,
    bytes_out BIGINT NOT NULL,
    bytes_in  BIGINT NOT NULL,
    node      TEXT COLLATE "C" NOT NULL
);
CREATE INDEX fleet_windows_closed ON fleet_windows (closed_ms);

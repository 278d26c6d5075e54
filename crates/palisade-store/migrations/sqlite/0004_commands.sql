-- Commands sent to devices over the gateway, with delivery and acknowledgement.
CREATE TABLE commands (
    id         TEXT PRIMARY KEY NOT NULL,
    device_id  TEXT NOT NULL REFERENCES devices(id),
    name       TEXT NOT NULL,
    args       TEXT NOT NULL,
    status     TEXT NOT NULL CHECK (status IN ('queued','sent','acked','failed')),
    created_ms INTEGER NOT NULL,
    sent_ms    INTEGER,
    acked_ms   INTEGER,
    result     TEXT
) STRICT;
CREATE INDEX commands_by_device ON commands(device_id, created_ms);

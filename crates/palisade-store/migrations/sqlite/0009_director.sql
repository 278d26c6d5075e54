-- The director's latest signed assignment per device; the counter only grows.
CREATE TABLE device_assignments (
    device_id  TEXT PRIMARY KEY NOT NULL REFERENCES devices(id),
    counter    INTEGER NOT NULL,
    signed     TEXT NOT NULL,
    created_ms INTEGER NOT NULL
) STRICT;

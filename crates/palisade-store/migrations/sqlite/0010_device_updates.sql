-- What each device last reported about its update: one row per device, the
-- state of the assignment with this counter (downloading, installed, trial,
-- committed, rolled-back, refused, failed).
CREATE TABLE device_updates (
    device_id  TEXT PRIMARY KEY NOT NULL REFERENCES devices(id),
    counter    INTEGER NOT NULL,
    target     TEXT NOT NULL,
    state      TEXT NOT NULL,
    detail     TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
) STRICT;

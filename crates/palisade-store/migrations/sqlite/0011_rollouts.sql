-- Device tags (rollout selectors).
CREATE TABLE device_tags (
    device_id TEXT NOT NULL REFERENCES devices(id),
    tag       TEXT NOT NULL,
    PRIMARY KEY (device_id, tag)
) STRICT;
CREATE INDEX device_tags_by_tag ON device_tags(tag);

-- Staged rollouts: a release for the devices a selector matches, in waves.
CREATE TABLE rollouts (
    name            TEXT PRIMARY KEY NOT NULL,
    model_id        TEXT NOT NULL REFERENCES models(id),
    release_version TEXT NOT NULL,
    spec            TEXT NOT NULL,   -- JSON RolloutSpec
    state           TEXT NOT NULL,   -- running, paused, cancelled, completed
    wave            INTEGER NOT NULL,
    reason          TEXT NOT NULL,
    created_by      TEXT NOT NULL,
    created_ms      INTEGER NOT NULL,
    updated_ms      INTEGER NOT NULL
) STRICT;

-- Each device a rollout reached: its wave and how it went.
CREATE TABLE rollout_devices (
    rollout    TEXT NOT NULL REFERENCES rollouts(name),
    device_id  TEXT NOT NULL REFERENCES devices(id),
    wave       INTEGER NOT NULL,
    state      TEXT NOT NULL,        -- pending, assigned, committed, failed
    counter    INTEGER NOT NULL,     -- the director assignment's counter
    detail     TEXT NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (rollout, device_id)
) STRICT;

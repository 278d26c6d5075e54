-- MQTT persistent sessions of offline devices (whether they had subscribed to
-- their commands) and devices' retained messages: kept in the store so that a
-- restart, or another node, resumes them.
CREATE TABLE mqtt_sessions (
    device_id  TEXT PRIMARY KEY NOT NULL,
    subscribed INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
) STRICT;

CREATE TABLE mqtt_retained (
    device_id  TEXT NOT NULL,
    topic      TEXT NOT NULL,
    payload    BLOB NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (device_id, topic)
) STRICT;

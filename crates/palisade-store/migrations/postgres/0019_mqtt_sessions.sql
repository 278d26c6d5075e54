-- MQTT persistent sessions of offline devices (whether they had subscribed to
-- their commands) and devices' retained messages: kept in the store so that a
-- restart, or another node, resumes them.
CREATE TABLE mqtt_sessions (
    device_id  TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    subscribed BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);

CREATE TABLE mqtt_retained (
    device_id  TEXT COLLATE "C" NOT NULL,
    topic      TEXT COLLATE "C" NOT NULL,
    payload    BYTEA NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (device_id, topic)
);

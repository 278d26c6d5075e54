-- For the CRA's vulnerability handling: how many devices each advisory
-- exposed, day by day (upserted, so every node may record it), and when the
-- manufacturer became aware that a vulnerability is actively exploited
-- (which starts the Article 14 reporting clock).
CREATE TABLE advisory_exposure (
    advisory_id TEXT COLLATE "C" NOT NULL,
    day         TEXT COLLATE "C" NOT NULL,
    devices     BIGINT NOT NULL,
    PRIMARY KEY (advisory_id, day)
);

CREATE TABLE advisory_exploitation (
    advisory_id TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    aware_ms    BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    note        TEXT NOT NULL,
    recorded_ms BIGINT NOT NULL
);

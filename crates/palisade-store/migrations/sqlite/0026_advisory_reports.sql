-- For the CRA's vulnerability handling: how many devices each advisory
-- exposed, day by day (upserted, so every node may record it), and when the
-- manufacturer became aware that a vulnerability is actively exploited
-- (which starts the Article 14 reporting clock).
CREATE TABLE advisory_exposure (
    advisory_id TEXT NOT NULL,
    day         TEXT NOT NULL,
    devices     INTEGER NOT NULL,
    PRIMARY KEY (advisory_id, day)
) STRICT;

CREATE TABLE advisory_exploitation (
    advisory_id TEXT PRIMARY KEY NOT NULL,
    aware_ms    INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    note        TEXT NOT NULL,
    recorded_ms INTEGER NOT NULL
) STRICT;

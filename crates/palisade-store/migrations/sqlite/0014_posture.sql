-- Posture: one row a day per framework and scope ('fleet', 'model:M', 'site:S'),
-- the outcome counts of that day's last evaluation, for the console's trend.
CREATE TABLE posture_snapshots (
    day            TEXT NOT NULL,     -- YYYY-MM-DD, UTC
    framework      TEXT NOT NULL,
    scope          TEXT NOT NULL,
    pass           INTEGER NOT NULL,
    fail           INTEGER NOT NULL,
    unknown        INTEGER NOT NULL,
    not_assessable INTEGER NOT NULL,
    devices        INTEGER NOT NULL,
    PRIMARY KEY (day, framework, scope)
) STRICT;

-- The posture engine reads a fleet's enrolment and lifecycle entries by action.
CREATE INDEX IF NOT EXISTS audit_entries_by_action ON audit_entries(action, seq);

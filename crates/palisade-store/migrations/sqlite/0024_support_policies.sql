-- What a model's support end does to its devices: an alert notify_days
-- before support_until, confinement to the control plane and update traffic
-- from restrict_ms, decommissioning (with a wipe if retire_wipe) at
-- retire_ms; and the stage the model has reached (each entered once,
-- compare-and-set, audited).
CREATE TABLE support_policies (
    model_id    TEXT PRIMARY KEY NOT NULL REFERENCES models (id),
    notify_days INTEGER NOT NULL,
    restrict_ms INTEGER,
    retire_ms   INTEGER,
    retire_wipe INTEGER NOT NULL,
    stage       TEXT NOT NULL,
    stage_ms    INTEGER,
    updated_ms  INTEGER NOT NULL
) STRICT;

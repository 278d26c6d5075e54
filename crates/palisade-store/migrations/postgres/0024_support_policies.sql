-- What a model's support end does to its devices: an alert notify_days
-- before support_until, confinement to the control plane and update traffic
-- from restrict_ms, decommissioning (with a wipe if retire_wipe) at
-- retire_ms; and the stage the model has reached (each entered once,
-- compare-and-set, audited).
CREATE TABLE support_policies (
    model_id    TEXT COLLATE "C" PRIMARY KEY NOT NULL REFERENCES models (id),
    notify_days BIGINT NOT NULL,
    restrict_ms BIGINT,
    retire_ms   BIGINT,
    retire_wipe BIGINT NOT NULL,
    stage       TEXT COLLATE "C" NOT NULL,
    stage_ms    BIGINT,
    updated_ms  BIGINT NOT NULL
);

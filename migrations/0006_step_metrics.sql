-- The metrics a step wrote (each `metrics.json` among its outputs, whole), kept
-- when the step is recorded, so `pipeline metrics diff` can compare runs whose
-- files were since overwritten.
CREATE TABLE step_metrics (
    step_id INTEGER NOT NULL REFERENCES steps(id),
    path    TEXT NOT NULL,               -- relative to the workspace
    json    TEXT NOT NULL,
    PRIMARY KEY (step_id, path)
);

-- Slurm: the last state the scheduler reported for a step's job, how many
-- times the step was resubmitted, and how many Slurm client calls a run made.
ALTER TABLE steps ADD COLUMN slurm_state TEXT;
ALTER TABLE steps ADD COLUMN attempts INTEGER NOT NULL DEFAULT 1;
ALTER TABLE runs ADD COLUMN slurm_calls INTEGER NOT NULL DEFAULT 0;

-- Slurm: how many restarts of a step's current job (requeues by Slurm that
-- ran again) are already counted in its attempts, so a head that re-attaches
-- counts only the ones it has not.
ALTER TABLE steps ADD COLUMN slurm_requeues INTEGER NOT NULL DEFAULT 0;

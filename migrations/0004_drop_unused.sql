-- Nothing read these: the per-item outcomes live in each step folder's
-- items.jsonl (and the item memo), and every step is a whole stage (a
-- Slurm array's shards are folders of one step), so `steps.shard` was
-- always NULL.
DROP TABLE shard_items;
ALTER TABLE steps DROP COLUMN shard;

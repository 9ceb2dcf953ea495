-- Who started each run (the login name), for lineage exports' agents. NULL
-- for runs recorded before this column existed.
ALTER TABLE runs ADD COLUMN user TEXT;

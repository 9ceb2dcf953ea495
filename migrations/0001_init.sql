-- The lineage store of one workspace. See docs/STORE.md for the meaning of
-- every table; the head process is the only writer.

-- One invocation of `pipeline run`.
CREATE TABLE runs (
    id          INTEGER PRIMARY KEY,
    started_at  INTEGER NOT NULL,            -- unix ms
    finished_at INTEGER,
    status      TEXT NOT NULL,               -- running | succeeded | failed | interrupted
    command     TEXT NOT NULL,               -- the command line, for the record
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    profile     TEXT NOT NULL,
    executor    TEXT NOT NULL
);

-- One execution of a stage (or one shard of it).
CREATE TABLE steps (
    id            INTEGER PRIMARY KEY,
    run_id        INTEGER NOT NULL REFERENCES runs(id),
    stage         TEXT NOT NULL,
    kind          TEXT NOT NULL,             -- built-in kind or 'cmd'
    shard         INTEGER,                   -- NULL: the whole stage
    fingerprint   TEXT NOT NULL,             -- hex BLAKE3 key, see src/engine/fingerprint.rs
    code_version  TEXT NOT NULL,
    command       TEXT,                      -- command stages
    params_json   TEXT NOT NULL,             -- resolved params, canonical JSON
    env_json      TEXT NOT NULL,             -- declared environment variables
    outs_json     TEXT NOT NULL,             -- declared outputs (name -> path)
    status        TEXT NOT NULL,             -- queued | running | succeeded | failed | interrupted
    reason        TEXT,                      -- why it ran (the staleness reasons)
    error         TEXT,
    exit_code     INTEGER,
    executor      TEXT NOT NULL,
    host          TEXT,
    pid           INTEGER,
    pid_start     INTEGER,                   -- process start time, guards pid reuse
    slurm_job_id  TEXT,
    queued_at     INTEGER NOT NULL,
    started_at    INTEGER,
    finished_at   INTEGER,
    peak_rss_kb   INTEGER
);
CREATE INDEX steps_stage ON steps(stage, status, id);
CREATE INDEX steps_fingerprint ON steps(fingerprint);

-- Every recorded version of an artifact (a file or a folder).
CREATE TABLE artifacts (
    id          INTEGER PRIMARY KEY,
    path        TEXT NOT NULL,               -- relative to the workspace
    hash        TEXT NOT NULL,               -- hex BLAKE3 (folders: Merkle root)
    size        INTEGER NOT NULL,            -- bytes, summed over files
    file_count  INTEGER NOT NULL,
    is_dir      INTEGER NOT NULL,
    recorded_at INTEGER NOT NULL,
    step_id     INTEGER REFERENCES steps(id) -- NULL: a source the pipeline did not make
);
CREATE INDEX artifacts_path ON artifacts(path, id);
CREATE INDEX artifacts_hash ON artifacts(hash);

CREATE TABLE step_inputs (
    step_id     INTEGER NOT NULL REFERENCES steps(id),
    name        TEXT NOT NULL,
    artifact_id INTEGER NOT NULL REFERENCES artifacts(id),
    PRIMARY KEY (step_id, name)
);
CREATE INDEX step_inputs_artifact ON step_inputs(artifact_id);

CREATE TABLE step_outputs (
    step_id     INTEGER NOT NULL REFERENCES steps(id),
    name        TEXT NOT NULL,
    artifact_id INTEGER NOT NULL REFERENCES artifacts(id),
    PRIMARY KEY (step_id, name)
);

-- Content-addressed folder listings: Merkle root -> (relative path, file hash, size) of
-- every file, so a changed input can be told as "3 of 12,000 files".
CREATE TABLE trees (
    hash    TEXT PRIMARY KEY,
    listing BLOB NOT NULL
);

-- What the last hash of a path saw on disk, so an up-to-date check re-reads no data:
-- one row per artifact root, its entries packed (see src/hash/statcache.rs).
CREATE TABLE stat_cache (
    path    TEXT PRIMARY KEY,
    hash    TEXT NOT NULL,
    entries BLOB NOT NULL
);

-- Per-item memo of sharded stages (one row per clip or conversion).
CREATE TABLE shard_items (
    stage      TEXT NOT NULL,
    item       TEXT NOT NULL,
    step_id    INTEGER NOT NULL REFERENCES steps(id),
    status     TEXT NOT NULL,                -- ok | failed
    reason     TEXT,
    recorded_at INTEGER NOT NULL,
    PRIMARY KEY (stage, item)
);

-- The workspace lock: at most one row.
CREATE TABLE lock (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    pid        INTEGER NOT NULL,
    pid_start  INTEGER,
    host       TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    command    TEXT NOT NULL
);

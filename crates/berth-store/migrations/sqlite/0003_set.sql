-- Fencing: every claim of a task takes the next epoch, and every change to
-- a running task names the epoch it was claimed at, so whoever held an
-- earlier claim can change nothing. Unfinished tasks claimed before this
-- migration had at least `attempt` claims, which keeps their epochs above
-- zero. Finished ones keep epoch 0: their output and logs were moved to
-- the blob layout's `output.0` and `logs.0`.
ALTER TABLE tasks ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
UPDATE tasks SET epoch = attempt WHERE finished_at IS NULL;

-- The lease owner becomes the task's node: who holds it while it runs,
-- and who last held it once it stopped (so it is no longer cleared). A
-- lease is live while `lease_expires` is set.
ALTER TABLE tasks RENAME COLUMN lease_owner TO node;

-- One row per claim of an async task, keyed by its epoch. A released
-- claim stays, marked `released`, but gives its attempt number back:
-- the next claim runs under the same number.
CREATE TABLE task_attempts (
    task_id TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    epoch INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    node TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    finished_at INTEGER,
    ended TEXT,
    PRIMARY KEY (task_id, epoch)
) WITHOUT ROWID;

-- Jobs that one holder runs at a time (lease reaper, retention, registry
-- GC), taken by whoever finds the row free or expired.
CREATE TABLE singletons (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);

-- Retention deletes the oldest finished tasks.
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;

-- The PostgreSQL schema: the SQLite one after all its migrations, so a
-- record reads the same from both. Times are integers (ms since the Unix
-- epoch) as the Store trait speaks them; every time the store itself
-- judges by (leases, singletons) comes from berth_now_ms(), the
-- database's clock, never from a replica's.

CREATE FUNCTION berth_now_ms() RETURNS bigint
    LANGUAGE sql VOLATILE
    AS $$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint $$;

CREATE TABLE tenants (
    name text PRIMARY KEY,
    created_at bigint NOT NULL,
    quotas text NOT NULL DEFAULT '{}'
);

CREATE TABLE api_keys (
    hash bytea PRIMARY KEY,
    tenant text NOT NULL,
    label text NOT NULL,
    created_at bigint NOT NULL
);
CREATE INDEX api_keys_tenant ON api_keys (tenant);

CREATE TABLE functions (
    tenant text NOT NULL,
    name text NOT NULL,
    latest_version bigint NOT NULL,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    PRIMARY KEY (tenant, name)
);

CREATE TABLE function_versions (
    tenant text NOT NULL,
    name text NOT NULL,
    version bigint NOT NULL,
    config text NOT NULL,
    image_id text NOT NULL,
    created_at bigint NOT NULL,
    PRIMARY KEY (tenant, name, version)
);

CREATE TABLE tasks (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id uuid NOT NULL UNIQUE,
    tenant text NOT NULL,
    function text NOT NULL,
    version bigint NOT NULL,
    kind text NOT NULL,
    status text NOT NULL,
    attempt bigint NOT NULL DEFAULT 0,
    max_attempts bigint NOT NULL,
    -- Grows by one with every claim and never goes back: (id, epoch)
    -- names one claim, and every change to a running task is conditional
    -- on it.
    epoch bigint NOT NULL DEFAULT 0,
    -- Who holds the task while it runs, and who last held it after.
    node text,
    -- Set exactly while the task runs.
    lease_expires bigint,
    exit_code bigint,
    error_code text,
    error_message text,
    created_at bigint NOT NULL,
    started_at bigint,
    finished_at bigint,
    cpu_ms bigint,
    peak_memory_bytes bigint,
    wall_ms bigint,
    queued_ms bigint,
    pull_ms bigint,
    start_ms bigint,
    run_ms bigint,
    input_bytes bigint,
    output_bytes bigint,
    request text NOT NULL,
    idempotency_key text,
    request_digest text
);

-- Claims scan the oldest queued async rows through this index.
CREATE INDEX tasks_queue ON tasks (status, kind, seq);
CREATE INDEX tasks_tenant ON tasks (tenant, seq);
CREATE INDEX tasks_tenant_function ON tasks (tenant, function, seq);
-- Queue quotas and the running limit count a tenant's tasks by status.
CREATE INDEX tasks_tenant_status ON tasks (tenant, status);
CREATE UNIQUE INDEX tasks_idempotency ON tasks (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- Retention deletes the oldest finished tasks.
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;

-- One row per claim of an async task, keyed by its epoch. A released
-- claim stays, marked 'released', but gives its attempt number back.
CREATE TABLE task_attempts (
    task_id uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    epoch bigint NOT NULL,
    attempt bigint NOT NULL,
    node text NOT NULL,
    started_at bigint NOT NULL,
    finished_at bigint,
    ended text,
    PRIMARY KEY (task_id, epoch)
);

-- Jobs that one replica runs at a time, held through an expiring row.
CREATE TABLE singletons (
    name text PRIMARY KEY,
    holder text NOT NULL,
    expires_at bigint NOT NULL
);

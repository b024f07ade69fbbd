CREATE TABLE api_keys (
    hash BLOB PRIMARY KEY,
    tenant TEXT NOT NULL,
    label TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE functions (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    latest_version INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, name)
);

CREATE TABLE function_versions (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    config TEXT NOT NULL,
    image_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, name, version)
);

CREATE TABLE tasks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    function TEXT NOT NULL,
    version INTEGER NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    exit_code INTEGER,
    error_code TEXT,
    error_message TEXT,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    cpu_ms INTEGER,
    peak_memory_bytes INTEGER,
    wall_ms INTEGER,
    queued_ms INTEGER,
    pull_ms INTEGER,
    start_ms INTEGER,
    run_ms INTEGER,
    input_bytes INTEGER,
    output_bytes INTEGER,
    request TEXT NOT NULL,
    lease_owner TEXT,
    lease_expires INTEGER
);

CREATE INDEX tasks_queue ON tasks (status, kind, seq);
CREATE INDEX tasks_tenant ON tasks (tenant, seq);
CREATE INDEX tasks_tenant_function ON tasks (tenant, function, seq);

PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE _sqlx_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    success BOOLEAN NOT NULL,
    checksum BLOB NOT NULL,
    execution_time BIGINT NOT NULL
);
INSERT INTO _sqlx_migrations VALUES(1,'init','2026-11-29 08:38:42',1,X'a513b3c6d0438daf26f9e131147b3b36b056908a779ee9d966aa8f07d4bb14d24c7e1ca4cf75021c45c8ae4df7f1b66f',1673756);
INSERT INTO _sqlx_migrations VALUES(2,'tenants','2026-11-29 08:38:42',1,X'2185ad9a18210296ac512df531f03314a2038ec5dbc45ddab8a0c86bc5ae889b9f87d6a85ca7ecb5f482d48816af70e3',1382007);
CREATE TABLE api_keys (
    hash BLOB PRIMARY KEY,
    tenant TEXT NOT NULL,
    label TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
INSERT INTO api_keys VALUES(X'0101010101010101010101010101010101010101010101010101010101010101','t','primary',1795941522622);
CREATE TABLE functions (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    latest_version INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, name)
);
INSERT INTO functions VALUES('t','f',1,1795941522624,1795941522624);
CREATE TABLE function_versions (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    config TEXT NOT NULL,
    image_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, name, version)
);
INSERT INTO function_versions VALUES('t','f',1,'{"image":"a","env":{},"cpu_millis":1000,"memory_mb":256,"timeout_secs":60,"mode":"exec","concurrency":4,"min_instances":0,"max_instances":10,"idle_timeout_secs":300,"max_queue":64,"queue_timeout_secs":10,"run_as_root":false}','sha256:1',1795941522624);
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
, idempotency_key TEXT, request_digest TEXT);
INSERT INTO tasks VALUES(1,'01900000-0000-7000-8000-000000000001','t','f',1,'async','queued',0,3,NULL,NULL,NULL,1700000000000,NULL,NULL,NULL,NULL,NULL,95941522626,NULL,NULL,NULL,NULL,NULL,'{"method":"","path":"","query":"","content_type":null,"content_length":null,"headers":[]}',NULL,NULL,NULL,NULL);
INSERT INTO tasks VALUES(2,'01900000-0000-7000-8000-000000000002','t','f',1,'async','succeeded',1,3,0,NULL,NULL,1700000000000,1795941522626,1795941522628,NULL,NULL,NULL,95941522626,NULL,NULL,NULL,NULL,2,'{"method":"","path":"","query":"","content_type":null,"content_length":null,"headers":[]}',NULL,NULL,NULL,NULL);
INSERT INTO tasks VALUES(3,'01900000-0000-7000-8000-000000000003','t','f',1,'async','running',1,3,NULL,NULL,NULL,1700000000000,1795941522626,NULL,NULL,NULL,NULL,95941522626,NULL,NULL,NULL,NULL,NULL,'{"method":"","path":"","query":"","content_type":null,"content_length":null,"headers":[]}','old-node',1795941582626,NULL,NULL);
CREATE TABLE tenants (
    name TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL,
    quotas TEXT NOT NULL DEFAULT '{}'
);
INSERT INTO tenants VALUES('t',1795941522622,'{}');
DELETE FROM sqlite_sequence;
INSERT INTO sqlite_sequence VALUES('tasks',3);
CREATE INDEX tasks_queue ON tasks (status, kind, seq);
CREATE INDEX tasks_tenant ON tasks (tenant, seq);
CREATE INDEX tasks_tenant_function ON tasks (tenant, function, seq);
CREATE UNIQUE INDEX tasks_idempotency ON tasks (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX tasks_tenant_status ON tasks (tenant, status);
COMMIT;

-- Tenants become records of their own: quotas hang off them, and a tenant
-- whose keys were all revoked still owns its functions and tasks.
CREATE TABLE tenants (
    name TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL,
    quotas TEXT NOT NULL DEFAULT '{}'
);

INSERT INTO tenants (name, created_at)
SELECT tenant, MIN(created_at) FROM api_keys GROUP BY tenant;

-- Idempotency keys of async submissions, scoped to the tenant. The digest
-- covers the function and the request, so a reused key with another body
-- is told apart from a retry.
ALTER TABLE tasks ADD COLUMN idempotency_key TEXT;
ALTER TABLE tasks ADD COLUMN request_digest TEXT;
CREATE UNIQUE INDEX tasks_idempotency ON tasks (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Queue quotas count a tenant's queued tasks on every submission.
CREATE INDEX tasks_tenant_status ON tasks (tenant, status);

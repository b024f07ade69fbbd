-- Executor nodes of a set. A node joins once with a single-use token and
-- from then on authenticates with a credential the set gave it; only
-- hashes of either are stored. Times are ms since the Unix epoch on the
-- store's clock, the one liveness is judged by.

-- `used_by` names the node that spent the token (tokens are single-use);
-- a used token stays listed, and revoking it keeps it so.
CREATE TABLE join_tokens (
    id TEXT PRIMARY KEY,
    hash BLOB NOT NULL UNIQUE,
    label TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    used_by TEXT,
    revoked INTEGER NOT NULL DEFAULT 0
);

-- `labels` is a JSON object of strings, `report` the node's last
-- heartbeat report (berth_core::NodeReport) as JSON; `state` is one of
-- active, cordoned, draining, lost.
CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    zone TEXT,
    labels TEXT NOT NULL,
    address TEXT NOT NULL,
    state TEXT NOT NULL,
    report TEXT NOT NULL,
    credential_hash BLOB NOT NULL UNIQUE,
    joined_at INTEGER NOT NULL,
    last_heartbeat INTEGER NOT NULL
);

-- Secrets every replica of a set must share, chosen by whichever stored
-- its candidate first and never changed after.
CREATE TABLE set_secrets (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

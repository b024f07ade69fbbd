-- Executor nodes of a set. A node joins once with a single-use token and
-- from then on authenticates with a credential the set gave it; only
-- hashes of either are stored. Every time here is berth_now_ms(), the
-- clock liveness is judged by, never a replica's or a node's.

-- `used_by` names the node that spent the token (tokens are single-use);
-- a used token stays listed, and revoking it keeps it so.
CREATE TABLE join_tokens (
    id text PRIMARY KEY,
    hash bytea NOT NULL UNIQUE,
    label text NOT NULL,
    created_at bigint NOT NULL,
    used_by text,
    revoked boolean NOT NULL DEFAULT false
);

-- `labels` is a JSON object of strings, `report` the node's last
-- heartbeat report (berth_core::NodeReport) as JSON; `state` is one of
-- active, cordoned, draining, lost.
CREATE TABLE nodes (
    id text PRIMARY KEY,
    zone text,
    labels text NOT NULL,
    address text NOT NULL,
    state text NOT NULL,
    report text NOT NULL,
    credential_hash bytea NOT NULL UNIQUE,
    joined_at bigint NOT NULL,
    last_heartbeat bigint NOT NULL
);

-- Secrets every replica of a set must share, chosen by whichever stored
-- its candidate first and never changed after.
CREATE TABLE set_secrets (
    name text PRIMARY KEY,
    value text NOT NULL
);

-- The registry's index (berth_registry::RegistryIndex): everything the
-- registry knows besides blob bytes, which live in the blob store under
-- their digests. Digests and names are text; times are ms since the Unix
-- epoch.

-- Every repository that ever had a layer link, a manifest or a tag.
CREATE TABLE registry_repositories (
    name text PRIMARY KEY,
    created_at bigint NOT NULL
);

-- Which blobs (layers, configs) a repository may read.
CREATE TABLE registry_layers (
    repo text NOT NULL,
    digest text NOT NULL,
    linked_at bigint NOT NULL,
    PRIMARY KEY (repo, digest)
);
CREATE INDEX registry_layers_digest ON registry_layers (digest);

-- A repository's manifests. The referrers of a manifest are the manifests
-- of its repository whose subject it is.
CREATE TABLE registry_manifests (
    repo text NOT NULL,
    digest text NOT NULL,
    media_type text NOT NULL,
    size bigint NOT NULL,
    subject text,
    artifact_type text,
    annotations text,
    pushed_at bigint NOT NULL,
    PRIMARY KEY (repo, digest)
);
CREATE INDEX registry_manifests_subject ON registry_manifests (repo, subject)
    WHERE subject IS NOT NULL;

CREATE TABLE registry_tags (
    repo text NOT NULL,
    tag text NOT NULL,
    digest text NOT NULL,
    updated_at bigint NOT NULL,
    PRIMARY KEY (repo, tag)
);
CREATE INDEX registry_tags_digest ON registry_tags (repo, digest);

-- When a push last relied on a blob (protected it), and whether a garbage
-- collection is deleting it (doomed). A blob is doomed only if it was not
-- protected since the collection's cutoff; a doomed blob cannot be
-- protected until the collection has deleted its bytes and this row.
CREATE TABLE registry_blobs (
    digest text PRIMARY KEY,
    touched_at bigint NOT NULL,
    doomed_at bigint
);
CREATE INDEX registry_blobs_doomed ON registry_blobs (doomed_at)
    WHERE doomed_at IS NOT NULL;

-- Chunked uploads in progress, whichever replica gets each request: the
-- bytes received so far and, per chunk, the blob holding it.
CREATE TABLE registry_uploads (
    id text PRIMARY KEY,
    repo text NOT NULL,
    received bigint NOT NULL,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL
);
CREATE INDEX registry_uploads_idle ON registry_uploads (updated_at);

CREATE TABLE registry_upload_chunks (
    upload_id text NOT NULL REFERENCES registry_uploads (id) ON DELETE CASCADE,
    first_byte bigint NOT NULL,
    len bigint NOT NULL,
    blob_key text NOT NULL,
    PRIMARY KEY (upload_id, first_byte)
);

//! The registry's index in SQLite (see `crate::registry`). Writers take
//! the database's one write lock, so every conditional statement here is
//! decided against everything committed before it.

use async_trait::async_trait;
use berth_core::now_ms;
use berth_registry::{
    BlobState, IndexResult, LegacyIndex, ManifestRecord, Protection, RegistryIndex, UploadChunk,
    UploadRecord,
};
use sqlx::{Sqlite, Transaction};

use super::{SqliteStore, singletons};
use crate::Result;
use crate::registry::{self as shared, index_error, int};

const MANIFEST_SELECT: &str = "SELECT digest, media_type, size, subject, artifact_type, \
     annotations FROM registry_manifests";

async fn add_repository(tx: &mut Transaction<'static, Sqlite>, repo: &str, now: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO registry_repositories (name, created_at) VALUES (?, ?) \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(repo)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn link_layer(s: &SqliteStore, repo: &str, digest: &str) -> Result<()> {
    let now = now_ms();
    let mut tx = s.write_tx(true).await?;
    add_repository(&mut tx, repo, now).await?;
    sqlx::query(
        "INSERT INTO registry_layers (repo, digest, linked_at) VALUES (?, ?, ?) \
         ON CONFLICT (repo, digest) DO NOTHING",
    )
    .bind(repo)
    .bind(digest)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

async fn put_manifest(
    s: &SqliteStore,
    repo: &str,
    m: &ManifestRecord,
    tag: Option<&str>,
) -> Result<()> {
    let now = now_ms();
    let mut tx = s.write_tx(true).await?;
    add_repository(&mut tx, repo, now).await?;
    sqlx::query(
        "INSERT INTO registry_manifests (repo, digest, media_type, size, subject, \
         artifact_type, annotations, pushed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (repo, digest) DO UPDATE SET media_type = excluded.media_type, \
         size = excluded.size, subject = excluded.subject, \
         artifact_type = excluded.artifact_type, annotations = excluded.annotations",
    )
    .bind(repo)
    .bind(&m.digest)
    .bind(&m.media_type)
    .bind(int(m.size))
    .bind(&m.subject)
    .bind(&m.artifact_type)
    .bind(&m.annotations)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    if let Some(tag) = tag {
        sqlx::query(
            "INSERT INTO registry_tags (repo, tag, digest, updated_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (repo, tag) DO UPDATE SET digest = excluded.digest, \
             updated_at = excluded.updated_at",
        )
        .bind(repo)
        .bind(tag)
        .bind(&m.digest)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn manifest(s: &SqliteStore, repo: &str, digest: &str) -> Result<Option<ManifestRecord>> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{MANIFEST_SELECT} WHERE repo = ? AND digest = ?"
    )))
    .bind(repo)
    .bind(digest)
    .fetch_optional(&s.pool)
    .await?;
    row.as_ref().map(shared::manifest).transpose()
}

async fn delete_manifest(s: &SqliteStore, repo: &str, digest: &str) -> Result<bool> {
    let mut tx = s.write_tx(true).await?;
    let gone = sqlx::query("DELETE FROM registry_manifests WHERE repo = ? AND digest = ?")
        .bind(repo)
        .bind(digest)
        .execute(&mut *tx)
        .await?;
    if gone.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query("DELETE FROM registry_tags WHERE repo = ? AND digest = ?")
        .bind(repo)
        .bind(digest)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(true)
}

async fn tags(s: &SqliteStore, repo: &str) -> Result<Option<Vec<String>>> {
    let known: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM registry_repositories WHERE name = ?")
            .bind(repo)
            .fetch_optional(&s.pool)
            .await?;
    if known.is_none() {
        return Ok(None);
    }
    let tags = sqlx::query_scalar("SELECT tag FROM registry_tags WHERE repo = ?")
        .bind(repo)
        .fetch_all(&s.pool)
        .await?;
    Ok(Some(tags))
}

async fn referrers(s: &SqliteStore, repo: &str, subject: &str) -> Result<Vec<ManifestRecord>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{MANIFEST_SELECT} WHERE repo = ? AND subject = ?"
    )))
    .bind(repo)
    .bind(subject)
    .fetch_all(&s.pool)
    .await?;
    rows.iter().map(shared::manifest).collect()
}

async fn protect_blob(s: &SqliteStore, digest: &str) -> Result<Protection> {
    let stamped: Option<i64> = sqlx::query_scalar(
        "INSERT INTO registry_blobs (digest, touched_at) VALUES (?1, ?2) \
         ON CONFLICT (digest) DO UPDATE SET \
         touched_at = max(registry_blobs.touched_at, excluded.touched_at) \
         WHERE registry_blobs.doomed_at IS NULL RETURNING 1",
    )
    .bind(digest)
    .bind(now_ms())
    .fetch_optional(&s.pool)
    .await?;
    Ok(match stamped {
        Some(_) => Protection::Protected,
        None => Protection::Doomed,
    })
}

async fn doom_blob(s: &SqliteStore, digest: &str, cutoff_ms: i64) -> Result<bool> {
    let doomed: Option<i64> = sqlx::query_scalar(
        "INSERT INTO registry_blobs (digest, touched_at, doomed_at) VALUES (?1, 0, ?3) \
         ON CONFLICT (digest) DO UPDATE SET \
         doomed_at = coalesce(registry_blobs.doomed_at, excluded.doomed_at) \
         WHERE registry_blobs.doomed_at IS NOT NULL OR registry_blobs.touched_at < ?2 \
         RETURNING 1",
    )
    .bind(digest)
    .bind(cutoff_ms)
    .bind(now_ms())
    .fetch_optional(&s.pool)
    .await?;
    Ok(doomed.is_some())
}

async fn forget_blob(s: &SqliteStore, digest: &str) -> Result<()> {
    let mut tx = s.write_tx(true).await?;
    let forgotten =
        sqlx::query("DELETE FROM registry_blobs WHERE digest = ? AND doomed_at IS NOT NULL")
            .bind(digest)
            .execute(&mut *tx)
            .await?;
    if forgotten.rows_affected() > 0 {
        sqlx::query("DELETE FROM registry_layers WHERE digest = ?")
            .bind(digest)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn blob_state(s: &SqliteStore, digest: &str) -> Result<Option<BlobState>> {
    let row = sqlx::query("SELECT touched_at, doomed_at FROM registry_blobs WHERE digest = ?")
        .bind(digest)
        .fetch_optional(&s.pool)
        .await?;
    row.as_ref().map(shared::blob_state).transpose()
}

async fn upload(s: &SqliteStore, id: &str) -> Result<Option<UploadRecord>> {
    let rows = sqlx::query(
        "SELECT u.id, u.repo, u.received, c.first_byte, c.len, c.blob_key \
         FROM registry_uploads u LEFT JOIN registry_upload_chunks c ON c.upload_id = u.id \
         WHERE u.id = ? ORDER BY c.first_byte",
    )
    .bind(id)
    .fetch_all(&s.pool)
    .await?;
    shared::upload(&rows)
}

async fn append_chunk(s: &SqliteStore, id: &str, chunk: &UploadChunk) -> Result<bool> {
    let mut tx = s.write_tx(true).await?;
    let moved = sqlx::query(
        "UPDATE registry_uploads SET received = ?, updated_at = ? WHERE id = ? AND received = ?",
    )
    .bind(int(chunk.start + chunk.len))
    .bind(now_ms())
    .bind(id)
    .bind(int(chunk.start))
    .execute(&mut *tx)
    .await?;
    if moved.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO registry_upload_chunks (upload_id, first_byte, len, blob_key) \
         VALUES (?, ?, ?, ?)",
    )
    .bind(id)
    .bind(int(chunk.start))
    .bind(int(chunk.len))
    .bind(&chunk.key)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

async fn import_legacy(s: &SqliteStore, legacy: &LegacyIndex) -> Result<bool> {
    let now = now_ms();
    let mut tx = s.write_tx(true).await?;
    let any: Option<i64> = sqlx::query_scalar("SELECT 1 FROM registry_repositories LIMIT 1")
        .fetch_optional(&mut *tx)
        .await?;
    if any.is_some() {
        return Ok(false);
    }
    let repos = legacy.repositories.iter();
    let linked = legacy.layers.iter().map(|(r, _)| r);
    let manifests = legacy.manifests.iter().map(|(r, _)| r);
    let tagged = legacy.tags.iter().map(|(r, _, _)| r);
    for repo in repos.chain(linked).chain(manifests).chain(tagged) {
        add_repository(&mut tx, repo, now).await?;
    }
    for (repo, digest) in &legacy.layers {
        sqlx::query(
            "INSERT INTO registry_layers (repo, digest, linked_at) VALUES (?, ?, ?) \
             ON CONFLICT (repo, digest) DO NOTHING",
        )
        .bind(repo)
        .bind(digest)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    for (repo, m) in &legacy.manifests {
        sqlx::query(
            "INSERT INTO registry_manifests (repo, digest, media_type, size, subject, \
             artifact_type, annotations, pushed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (repo, digest) DO NOTHING",
        )
        .bind(repo)
        .bind(&m.digest)
        .bind(&m.media_type)
        .bind(int(m.size))
        .bind(&m.subject)
        .bind(&m.artifact_type)
        .bind(&m.annotations)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    for (repo, tag, digest) in &legacy.tags {
        sqlx::query(
            "INSERT INTO registry_tags (repo, tag, digest, updated_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (repo, tag) DO NOTHING",
        )
        .bind(repo)
        .bind(tag)
        .bind(digest)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(true)
}

async fn rows_affected(
    s: &SqliteStore,
    sql: &'static str,
    a: &str,
    b: Option<&str>,
) -> Result<bool> {
    let mut q = sqlx::query(sql).bind(a);
    if let Some(b) = b {
        q = q.bind(b);
    }
    Ok(q.execute(&s.pool).await?.rows_affected() > 0)
}

#[async_trait]
impl RegistryIndex for SqliteStore {
    async fn repositories(&self) -> IndexResult<Vec<String>> {
        sqlx::query_scalar("SELECT name FROM registry_repositories")
            .fetch_all(&self.pool)
            .await
            .map_err(index_error)
    }

    async fn link_layer(&self, repo: &str, digest: &str) -> IndexResult<()> {
        link_layer(self, repo, digest).await.map_err(index_error)
    }

    async fn has_layer(&self, repo: &str, digest: &str) -> IndexResult<bool> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM registry_layers WHERE repo = ? AND digest = ?")
                .bind(repo)
                .bind(digest)
                .fetch_optional(&self.pool)
                .await
                .map_err(index_error)?;
        Ok(found.is_some())
    }

    async fn unlink_layer(&self, repo: &str, digest: &str) -> IndexResult<bool> {
        let sql = "DELETE FROM registry_layers WHERE repo = ? AND digest = ?";
        rows_affected(self, sql, repo, Some(digest))
            .await
            .map_err(index_error)
    }

    async fn put_manifest(
        &self,
        repo: &str,
        manifest: &ManifestRecord,
        tag: Option<&str>,
    ) -> IndexResult<()> {
        put_manifest(self, repo, manifest, tag)
            .await
            .map_err(index_error)
    }

    async fn manifest(&self, repo: &str, digest: &str) -> IndexResult<Option<ManifestRecord>> {
        manifest(self, repo, digest).await.map_err(index_error)
    }

    async fn delete_manifest(&self, repo: &str, digest: &str) -> IndexResult<bool> {
        delete_manifest(self, repo, digest)
            .await
            .map_err(index_error)
    }

    async fn tag(&self, repo: &str, tag: &str) -> IndexResult<Option<String>> {
        sqlx::query_scalar("SELECT digest FROM registry_tags WHERE repo = ? AND tag = ?")
            .bind(repo)
            .bind(tag)
            .fetch_optional(&self.pool)
            .await
            .map_err(index_error)
    }

    async fn tags(&self, repo: &str) -> IndexResult<Option<Vec<String>>> {
        tags(self, repo).await.map_err(index_error)
    }

    async fn delete_tag(&self, repo: &str, tag: &str) -> IndexResult<bool> {
        let sql = "DELETE FROM registry_tags WHERE repo = ? AND tag = ?";
        rows_affected(self, sql, repo, Some(tag))
            .await
            .map_err(index_error)
    }

    async fn referrers(&self, repo: &str, subject: &str) -> IndexResult<Vec<ManifestRecord>> {
        referrers(self, repo, subject).await.map_err(index_error)
    }

    async fn manifest_roots(&self) -> IndexResult<Vec<String>> {
        sqlx::query_scalar(
            "SELECT digest FROM registry_manifests UNION ALL SELECT digest FROM registry_tags",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(index_error)
    }

    async fn protect_blob(&self, digest: &str) -> IndexResult<Protection> {
        protect_blob(self, digest).await.map_err(index_error)
    }

    async fn doom_blob(&self, digest: &str, cutoff_ms: i64) -> IndexResult<bool> {
        doom_blob(self, digest, cutoff_ms)
            .await
            .map_err(index_error)
    }

    async fn forget_blob(&self, digest: &str) -> IndexResult<()> {
        forget_blob(self, digest).await.map_err(index_error)
    }

    async fn blob_state(&self, digest: &str) -> IndexResult<Option<BlobState>> {
        blob_state(self, digest).await.map_err(index_error)
    }

    async fn doomed_blobs(&self, before_ms: i64) -> IndexResult<Vec<String>> {
        sqlx::query_scalar("SELECT digest FROM registry_blobs WHERE doomed_at < ?")
            .bind(before_ms)
            .fetch_all(&self.pool)
            .await
            .map_err(index_error)
    }

    /// The node's own clock, as for the rest of this store.
    async fn now_ms(&self) -> IndexResult<i64> {
        Ok(now_ms())
    }

    async fn create_upload(&self, id: &str, repo: &str) -> IndexResult<()> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO registry_uploads (id, repo, received, created_at, updated_at) \
             VALUES (?, ?, 0, ?, ?)",
        )
        .bind(id)
        .bind(repo)
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(index_error)?;
        Ok(())
    }

    async fn count_uploads(&self) -> IndexResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM registry_uploads")
            .fetch_one(&self.pool)
            .await
            .map_err(index_error)?;
        Ok(u64::try_from(n).unwrap_or_default())
    }

    async fn upload(&self, id: &str) -> IndexResult<Option<UploadRecord>> {
        upload(self, id).await.map_err(index_error)
    }

    async fn append_chunk(&self, id: &str, chunk: &UploadChunk) -> IndexResult<bool> {
        append_chunk(self, id, chunk).await.map_err(index_error)
    }

    async fn touch_upload(&self, id: &str) -> IndexResult<bool> {
        let touched = sqlx::query("UPDATE registry_uploads SET updated_at = ? WHERE id = ?")
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(index_error)?;
        Ok(touched.rows_affected() > 0)
    }

    async fn delete_upload(&self, id: &str) -> IndexResult<bool> {
        // The chunks' rows go with it (ON DELETE CASCADE).
        let sql = "DELETE FROM registry_uploads WHERE id = ?";
        rows_affected(self, sql, id, None)
            .await
            .map_err(index_error)
    }

    async fn idle_uploads(&self, before_ms: i64) -> IndexResult<Vec<String>> {
        sqlx::query_scalar("SELECT id FROM registry_uploads WHERE updated_at < ?")
            .bind(before_ms)
            .fetch_all(&self.pool)
            .await
            .map_err(index_error)
    }

    async fn expire_upload(&self, id: &str, before_ms: i64) -> IndexResult<bool> {
        let gone = sqlx::query("DELETE FROM registry_uploads WHERE id = ? AND updated_at < ?")
            .bind(id)
            .bind(before_ms)
            .execute(&self.pool)
            .await
            .map_err(index_error)?;
        Ok(gone.rows_affected() > 0)
    }

    async fn hold_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> IndexResult<bool> {
        singletons::hold(self, name, holder, ttl_ms)
            .await
            .map_err(index_error)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> IndexResult<()> {
        singletons::release(self, name, holder)
            .await
            .map_err(index_error)
    }

    async fn import_legacy(&self, legacy: &LegacyIndex) -> IndexResult<bool> {
        import_legacy(self, legacy).await.map_err(index_error)
    }
}

//! Where the registry's bytes live in the blob store. Everything is under
//! one key prefix (`registry` by default, so on the local backend the
//! files sit exactly where the registry kept them before it had an index,
//! relative to the data directory):
//!
//! ```text
//! registry/blobs/<alg>/<hh>/<hex>              content, immutable, shared by all repositories
//! registry/uploads/<uuid>/<start>-<nonce>      one received chunk of an upload in progress
//! ```
//!
//! Manifests are stored as blobs too, so a pull of `<name>@<digest>` and a
//! blob GET read the same bytes. Content is written create-only under its
//! digest, and only after the digest was checked; chunks carry a nonce so
//! a chunk whose append lost a race (or whose replica died before it was
//! recorded) never blocks the next attempt at that offset. What a
//! repository may read, and which chunks an upload has, is the index's.

use berth_blobs::{Blob, BlobError, Blobs};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use crate::RegistryError;
use crate::digest::{Algorithm, Digest};

#[derive(Debug, Clone)]
pub(crate) struct Storage {
    blobs: Blobs,
    prefix: String,
}

impl Storage {
    pub fn new(blobs: Blobs, prefix: &str) -> Self {
        Self {
            blobs,
            prefix: prefix.trim_matches('/').to_owned(),
        }
    }

    pub fn blobs(&self) -> &Blobs {
        &self.blobs
    }

    pub fn blobs_prefix(&self) -> String {
        format!("{}/blobs", self.prefix)
    }

    pub fn blob_key(&self, d: &Digest) -> String {
        format!(
            "{}/blobs/{}/{}/{}",
            self.prefix,
            d.algorithm().as_str(),
            &d.hex()[..2],
            d.hex()
        )
    }

    /// The digest a listed key under [`Storage::blobs_prefix`] stores, if
    /// it is one of ours.
    pub fn digest_of_key(&self, key: &str) -> Option<Digest> {
        let rest = key.strip_prefix(&self.blobs_prefix())?.strip_prefix('/')?;
        let mut parts = rest.split('/');
        let (alg, shard, hex) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let d = Digest::from_parts(Algorithm::from_dir_name(alg)?, hex)?;
        (shard == &d.hex()[..2]).then_some(d)
    }

    pub fn uploads_prefix(&self) -> String {
        format!("{}/uploads", self.prefix)
    }

    pub fn upload_prefix(&self, id: &str) -> String {
        format!("{}/uploads/{id}", self.prefix)
    }

    /// A fresh key for an upload's chunk starting at byte `start`.
    pub fn chunk_key(&self, id: &str, start: u64) -> String {
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        format!("{}/uploads/{id}/{start}-{}", self.prefix, &nonce[..12])
    }

    /// The upload id a listed key under [`Storage::uploads_prefix`]
    /// belongs to, and the rest of its key.
    pub fn upload_of_key<'a>(&self, key: &'a str) -> Option<(&'a str, &'a str)> {
        let rest = key
            .strip_prefix(&self.uploads_prefix())?
            .strip_prefix('/')?;
        rest.split_once('/')
    }

    /// Older layouts kept small files here on their way to a rename.
    pub fn legacy_tmp_prefix(&self) -> String {
        format!("{}/tmp", self.prefix)
    }

    /// The size of blob `d`, or `None` if it is not stored.
    pub async fn size(&self, d: &Digest) -> Result<Option<u64>, BlobError> {
        self.blobs.head(&self.blob_key(d)).await
    }

    pub async fn open(&self, d: &Digest) -> Result<Option<Blob>, BlobError> {
        self.blobs.get(&self.blob_key(d)).await
    }

    /// The whole of a blob no larger than `max` bytes (a manifest);
    /// `None` if it is not stored or larger.
    pub async fn read_small(&self, d: &Digest, max: usize) -> Result<Option<Bytes>, RegistryError> {
        let Some(blob) = self.open(d).await? else {
            return Ok(None);
        };
        if blob.len > max as u64 {
            return Ok(None);
        }
        let mut buf = BytesMut::with_capacity(blob.len as usize);
        let mut stream = blob.stream;
        while let Some(piece) = stream.next().await {
            buf.extend_from_slice(&piece?);
        }
        Ok(Some(buf.freeze()))
    }

    /// Stores small content (a manifest) under its digest, create-only:
    /// content already there is the same content.
    pub async fn put_small(&self, d: &Digest, bytes: Bytes) -> Result<(), BlobError> {
        match self.blobs.put(&self.blob_key(d), bytes, true).await {
            Ok(()) | Err(BlobError::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let st = Storage::new(Blobs::local(dir.path()).unwrap(), "registry");
        let d = crate::digest::sha256_of(b"x");
        let key = st.blob_key(&d);
        assert_eq!(
            key,
            format!("registry/blobs/sha256/{}/{}", &d.hex()[..2], d.hex())
        );
        assert_eq!(st.digest_of_key(&key), Some(d.clone()));
        assert_eq!(st.digest_of_key(&format!("{key}/x")), None);
        let wrong_shard = key.replace(&format!("/{}/", &d.hex()[..2]), "/zz/");
        assert_eq!(st.digest_of_key(&wrong_shard), None);
        let chunk = st.chunk_key("u-1", 42);
        assert!(chunk.starts_with("registry/uploads/u-1/42-"), "{chunk}");
        assert_eq!(st.upload_of_key(&chunk).map(|(id, _)| id), Some("u-1"));
    }
}

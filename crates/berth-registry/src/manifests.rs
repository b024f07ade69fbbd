//! Manifests, tags and the listings: a manifest's bytes are a blob, what
//! a repository knows of it (type, size, subject, tags) is the index's.
//! A push stores and protects everything first and records the manifest
//! and its tag last, in one step, so a failure at any point leaves no tag
//! or manifest pointing at missing content.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::RegistryError;
use crate::auth::Principal;
use crate::digest::{Digest, sha256_of};
use crate::index::ManifestRecord;
use crate::manifest::{self, Descriptor, MAX_MANIFEST_BYTES};
use crate::names::RepoName;
use crate::registry::{Reference, Registry, page};

/// A manifest as fetched: the exact bytes pushed and their type.
pub(crate) struct FetchedManifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Bytes,
}

fn unknown(reference: &Reference) -> RegistryError {
    RegistryError::ManifestUnknown(match reference {
        Reference::Tag(t) => t.clone(),
        Reference::Digest(d) => d.to_string(),
    })
}

impl Registry {
    pub(crate) async fn lookup_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<ManifestRecord, RegistryError> {
        let digest = match reference {
            Reference::Digest(d) => d.to_string(),
            Reference::Tag(t) => self
                .index
                .tag(repo.as_str(), t)
                .await?
                .ok_or_else(|| unknown(reference))?,
        };
        self.index
            .manifest(repo.as_str(), &digest)
            .await?
            .ok_or_else(|| unknown(reference))
    }

    pub(crate) async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<FetchedManifest, RegistryError> {
        let record = self.lookup_manifest(repo, reference).await?;
        let digest = Digest::parse(&record.digest)?;
        let bytes = self
            .storage
            .read_small(&digest, MAX_MANIFEST_BYTES)
            .await?
            .ok_or_else(|| RegistryError::ManifestUnknown(record.digest.clone()))?;
        Ok(FetchedManifest {
            digest,
            media_type: record.media_type,
            bytes,
        })
    }

    /// Stores a manifest after checking it: its digest (when pushed by
    /// digest), its format, and that everything it refers to is in the
    /// repository. Returns the manifest's digest and subject.
    pub(crate) async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        bytes: Bytes,
        content_type: Option<&str>,
    ) -> Result<(Digest, Option<Digest>), RegistryError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(RegistryError::ManifestTooLarge {
                max: MAX_MANIFEST_BYTES,
            });
        }
        let digest = match reference {
            Reference::Digest(d) => {
                let mut h = d.algorithm().hasher();
                h.update(&bytes);
                let actual = h.finish();
                if actual != *d {
                    return Err(RegistryError::DigestMismatch {
                        expected: d.to_string(),
                        actual: actual.to_string(),
                    });
                }
                actual
            }
            Reference::Tag(_) => sha256_of(&bytes),
        };
        let parsed = manifest::parse(&bytes, content_type)?;
        for desc in &parsed.blobs {
            self.check_reference(repo, desc, false).await?;
        }
        for desc in &parsed.children {
            self.check_reference(repo, desc, true).await?;
        }
        let subject = parsed.subject.as_ref().map(|s| s.digest.clone());
        let record = ManifestRecord {
            digest: digest.to_string(),
            media_type: parsed.media_type,
            size: bytes.len() as u64,
            subject: subject.as_ref().map(ToString::to_string),
            artifact_type: parsed.artifact_type,
            annotations: parsed.annotations.map(|a| Value::Object(a).to_string()),
        };
        if !self.protect_now(&digest).await? {
            // Its old copy is being deleted right now; a retry stores it anew.
            return Err(std::io::Error::other(format!(
                "{digest} is being deleted by garbage collection; retry the push"
            ))
            .into());
        }
        self.storage.put_small(&digest, bytes).await?;
        let tag = match reference {
            Reference::Tag(t) => Some(t.as_str()),
            Reference::Digest(_) => None,
        };
        self.index.put_manifest(repo.as_str(), &record, tag).await?;
        Ok((digest, subject))
    }

    /// A config, layer (`is_manifest` false) or child manifest a pushed
    /// manifest names: it must be in the repository, of the size stated,
    /// and it is protected from collection before the manifest is linked.
    async fn check_reference(
        &self,
        repo: &RepoName,
        desc: &Descriptor,
        is_manifest: bool,
    ) -> Result<(), RegistryError> {
        let unknown = || RegistryError::ManifestBlobUnknown(desc.digest.to_string());
        let d = desc.digest.to_string();
        let linked = if is_manifest {
            self.index.manifest(repo.as_str(), &d).await?.is_some()
        } else {
            self.index.has_layer(repo.as_str(), &d).await?
        };
        if !linked || !self.protect_now(&desc.digest).await? {
            return Err(unknown());
        }
        match self.storage.size(&desc.digest).await? {
            None => Err(unknown()),
            Some(size) if size != desc.size => Err(RegistryError::ManifestInvalid(format!(
                "{} is {size} bytes, the manifest says {}",
                desc.digest, desc.size
            ))),
            Some(_) => Ok(()),
        }
    }

    /// By tag: removes the tag. By digest: removes the manifest from the
    /// repository with every tag pointing at it.
    pub(crate) async fn delete_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<(), RegistryError> {
        let deleted = match reference {
            Reference::Tag(t) => self.index.delete_tag(repo.as_str(), t).await?,
            Reference::Digest(d) => {
                self.index
                    .delete_manifest(repo.as_str(), &d.to_string())
                    .await?
            }
        };
        if deleted {
            Ok(())
        } else {
            Err(unknown(reference))
        }
    }

    /// Tags of `repo` after `last`, at most `n`; and whether more follow.
    pub(crate) async fn tags(
        &self,
        repo: &RepoName,
        n: usize,
        last: Option<&str>,
    ) -> Result<(Vec<String>, bool), RegistryError> {
        let mut all = self
            .index
            .tags(repo.as_str())
            .await?
            .ok_or_else(|| RegistryError::NameUnknown(repo.to_string()))?;
        all.sort();
        Ok(page(all, n, last))
    }

    /// Repositories the principal may pull, after `last`, at most `n`.
    pub(crate) async fn catalog(
        &self,
        who: &Principal,
        n: usize,
        last: Option<&str>,
    ) -> Result<(Vec<String>, bool), RegistryError> {
        let mut visible: Vec<String> = self
            .index
            .repositories()
            .await?
            .into_iter()
            .filter(|r| RepoName::parse(r).is_ok_and(|r| who.can_pull(&r)))
            .collect();
        visible.sort();
        Ok(page(visible, n, last))
    }

    /// The referrers of `subject` in `repo` as an OCI index.
    pub(crate) async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Value, RegistryError> {
        let mut found = self
            .index
            .referrers(repo.as_str(), &subject.to_string())
            .await?;
        found.sort_by(|a, b| a.digest.cmp(&b.digest));
        let manifests: Vec<Value> = found
            .into_iter()
            .filter(|m| artifact_type.is_none() || m.artifact_type.as_deref() == artifact_type)
            .map(descriptor)
            .collect();
        Ok(json!({
            "schemaVersion": 2,
            "mediaType": manifest::OCI_INDEX,
            "manifests": manifests,
        }))
    }
}

/// A manifest's entry in a referrers index.
fn descriptor(m: ManifestRecord) -> Value {
    let mut desc = json!({
        "mediaType": m.media_type,
        "digest": m.digest,
        "size": m.size,
    });
    if let Some(t) = m.artifact_type {
        desc["artifactType"] = json!(t);
    }
    let annotations = m
        .annotations
        .and_then(|a| serde_json::from_str::<Value>(&a).ok())
        .filter(Value::is_object);
    if let Some(a) = annotations {
        desc["annotations"] = a;
    }
    desc
}

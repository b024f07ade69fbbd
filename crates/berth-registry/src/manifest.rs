//! Just enough of the manifest formats to check a push and to walk
//! references. The bytes are stored and served exactly as pushed, so these
//! types only ever read; they accept Docker schema 2 and OCI documents
//! alike, which is why they are the registry's own rather than the strict
//! per-format types of an image-spec crate.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::RegistryError;
use crate::digest::Digest;

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Manifests larger than this are refused unread: real ones are a few KiB,
/// and the whole document has to be held in memory to be checked.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Image,
    Index,
}

fn kind_of(media_type: &str) -> Option<Kind> {
    match media_type {
        DOCKER_MANIFEST | OCI_MANIFEST => Some(Kind::Image),
        DOCKER_MANIFEST_LIST | OCI_INDEX => Some(Kind::Index),
        _ => None,
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Descriptor {
    pub digest: Digest,
    pub size: u64,
}

/// A checked manifest: its type and everything it points at.
#[derive(Debug)]
pub(crate) struct Manifest {
    pub media_type: String,
    /// Config and layers (image) that must be in the repository.
    pub blobs: Vec<Descriptor>,
    /// Child manifests (index) that must be in the repository.
    pub children: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    /// For the referrers listing: `artifactType`, else the config's type.
    pub artifact_type: Option<String>,
    pub annotations: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Doc {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
    manifests: Option<Vec<RawDescriptor>>,
    subject: Option<RawDescriptor>,
    annotations: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    media_type: Option<String>,
    digest: String,
    size: i64,
    #[serde(default)]
    urls: Vec<String>,
}

impl RawDescriptor {
    fn check(&self, what: &str) -> Result<Descriptor, RegistryError> {
        let digest = Digest::parse(&self.digest)
            .map_err(|_| invalid(format!("{what} has an invalid digest {:?}", self.digest)))?;
        let size =
            u64::try_from(self.size).map_err(|_| invalid(format!("{what} has a negative size")))?;
        Ok(Descriptor { digest, size })
    }

    /// Layers a registry is not expected to hold (Windows base layers and
    /// the like), fetched by clients from `urls` instead.
    fn is_foreign(&self) -> bool {
        !self.urls.is_empty()
            && self
                .media_type
                .as_deref()
                .is_some_and(|m| m.contains("foreign") || m.contains("nondistributable"))
    }
}

fn invalid(msg: impl Into<String>) -> RegistryError {
    RegistryError::ManifestInvalid(msg.into())
}

/// Checks a pushed manifest. `content_type` is the request's header; it
/// must agree with the document's own `mediaType` when both are given.
pub(crate) fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Manifest, RegistryError> {
    // JSON is UTF-8 (RFC 8259), but serde skips the strings of fields it
    // does not know without checking them, while garbage collection reads
    // the whole document: a manifest it could not read would lose its
    // blobs at the next collection.
    std::str::from_utf8(bytes).map_err(|e| invalid(format!("not UTF-8: {e}")))?;
    let doc: Doc = serde_json::from_slice(bytes)
        .map_err(|e| invalid(format!("not a manifest document: {e}")))?;
    let declared = content_type
        .map(|c| c.split(';').next().unwrap_or_default().trim())
        .filter(|c| !c.is_empty() && *c != "application/json" && *c != "application/octet-stream");
    let media_type = match (declared, doc.media_type.as_deref()) {
        (Some(header), Some(field)) if header != field => {
            return Err(invalid(format!(
                "Content-Type {header} does not match the mediaType {field}"
            )));
        }
        (Some(header), _) => header.to_owned(),
        (None, Some(field)) => field.to_owned(),
        // OCI documents may leave mediaType out; their shape tells.
        (None, None) if doc.manifests.is_some() => OCI_INDEX.to_owned(),
        (None, None) => OCI_MANIFEST.to_owned(),
    };
    let kind = kind_of(&media_type)
        .ok_or_else(|| invalid(format!("unsupported manifest media type {media_type}")))?;
    if doc.schema_version != Some(2) {
        return Err(invalid("schemaVersion must be 2"));
    }

    let mut blobs = Vec::new();
    let mut children = Vec::new();
    let mut artifact_type = doc.artifact_type.clone();
    match kind {
        Kind::Image => {
            let config = doc
                .config
                .as_ref()
                .ok_or_else(|| invalid("an image manifest needs a config"))?;
            if doc.manifests.is_some() {
                return Err(invalid("an image manifest has no manifests list"));
            }
            blobs.push(config.check("the config")?);
            if artifact_type.is_none() {
                artifact_type = config.media_type.clone();
            }
            for (i, layer) in doc.layers.iter().flatten().enumerate() {
                let d = layer.check(&format!("layer {i}"))?;
                if !layer.is_foreign() {
                    blobs.push(d);
                }
            }
        }
        Kind::Index => {
            let list = doc
                .manifests
                .as_ref()
                .ok_or_else(|| invalid("an index needs a manifests list"))?;
            if doc.config.is_some() || doc.layers.is_some() {
                return Err(invalid("an index has no config or layers"));
            }
            for (i, m) in list.iter().enumerate() {
                children.push(m.check(&format!("manifest {i}"))?);
            }
        }
    }
    let subject = doc
        .subject
        .as_ref()
        .map(|s| s.check("the subject"))
        .transpose()?;
    Ok(Manifest {
        media_type,
        blobs,
        children,
        subject,
        artifact_type,
        annotations: doc.annotations,
    })
}

/// What a stored manifest refers to, read leniently: garbage collection
/// must not stop at a document it cannot fully check, nor miss a reference
/// in one. Returns the plain blobs (config, layers) and the manifests
/// (index children, subject) whose own references count too.
pub(crate) fn references(bytes: &[u8]) -> (Vec<Digest>, Vec<Digest>) {
    let (mut blobs, mut manifests) = (Vec::new(), Vec::new());
    let Ok(doc) = serde_json::from_slice::<Value>(bytes) else {
        return (blobs, manifests);
    };
    let digest_of = |v: &Value| {
        v.get("digest")?
            .as_str()
            .and_then(|s| Digest::parse(s).ok())
    };
    let list = |key: &str| {
        doc.get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(digest_of)
            .collect::<Vec<_>>()
    };
    blobs.extend(doc.get("config").and_then(digest_of));
    blobs.extend(list("layers"));
    blobs.extend(list("blobs"));
    manifests.extend(list("manifests"));
    manifests.extend(doc.get("subject").and_then(digest_of));
    (blobs, manifests)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn image_and_index() {
        let m = json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": d('a'), "size": 3},
            "layers": [{"mediaType": "x", "digest": d('b'), "size": 4}],
        });
        let p = parse(m.to_string().as_bytes(), Some(DOCKER_MANIFEST)).unwrap();
        assert_eq!(p.blobs.len(), 2);
        assert!(p.children.is_empty());

        let i = json!({"schemaVersion": 2, "manifests": [{"digest": d('c'), "size": 10}]});
        let p = parse(i.to_string().as_bytes(), None).unwrap();
        assert_eq!(p.media_type, OCI_INDEX);
        assert_eq!(p.children.len(), 1);
        assert_eq!(references(i.to_string().as_bytes()).1.len(), 1);
    }

    #[test]
    fn rejects_bad_documents() {
        let ok = json!({
            "schemaVersion": 2,
            "config": {"digest": d('a'), "size": 3},
            "layers": [],
        });
        assert!(parse(ok.to_string().as_bytes(), Some(OCI_MANIFEST)).is_ok());
        // Header and body disagree.
        let typed = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"digest": d('a'), "size": 3}});
        assert!(parse(typed.to_string().as_bytes(), Some(DOCKER_MANIFEST)).is_err());
        for bad in [
            json!({"schemaVersion": 1, "config": {"digest": d('a'), "size": 3}}),
            json!({"schemaVersion": 2, "config": {"digest": "sha256:zz", "size": 3}}),
            json!({"schemaVersion": 2, "config": {"digest": d('a'), "size": -1}}),
            json!({"schemaVersion": 2, "mediaType": "application/x-other",
                   "config": {"digest": d('a'), "size": 3}}),
            json!([1, 2]),
        ] {
            assert!(parse(bad.to_string().as_bytes(), None).is_err(), "{bad}");
        }
        assert!(parse(b"{not json", None).is_err());
    }
}

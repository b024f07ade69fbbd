//! Image references as users write them when they deploy a function:
//! `[host[:port]/]repo[:tag|@digest]`.

use std::fmt;

use crate::RegistryError;
use crate::names::RepoName;
use crate::registry::Reference;

/// A reference split into its parts; `reference` is a tag or a digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageReference<'a> {
    pub host: Option<&'a str>,
    pub repo: &'a str,
    /// A tag or a digest.
    pub reference: &'a str,
}

/// The registry host a reference names, the way Docker tells it: the first
/// component, if it has a dot or a port or is `localhost`.
pub fn reference_host(r: &str) -> Option<&str> {
    let (first, _) = r.split_once('/')?;
    (first.contains('.') || first.contains(':') || first == "localhost").then_some(first)
}

/// Splits `[host[:port]/]repo[:tag|@digest]` the way Docker does, and
/// checks the repository name and the tag or digest against what a
/// registry can hold: a part that is not would otherwise be taken for a
/// repository or tag that merely does not exist.
pub fn parse_reference(r: &str) -> Result<ImageReference<'_>, RegistryError> {
    let host = reference_host(r);
    let rest = host.map_or(r, |h| &r[h.len() + 1..]);
    let (repo, reference) = if let Some((repo, digest)) = rest.split_once('@') {
        (repo, digest)
    } else {
        match rest.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, tag),
            _ => (rest, "latest"),
        }
    };
    RepoName::parse(repo)?;
    Reference::parse(reference)?;
    Ok(ImageReference {
        host,
        repo,
        reference,
    })
}

impl fmt::Display for ImageReference<'_> {
    /// Digests (`algorithm:hex`) follow an `@`, tags a `:`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(host) = self.host {
            write!(f, "{host}/")?;
        }
        let sep = if self.reference.contains(':') {
            '@'
        } else {
            ':'
        };
        write!(f, "{}{sep}{}", self.repo, self.reference)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_like_docker_does() {
        let p = parse_reference("127.0.0.1:8080/admin/imgops:v1").unwrap();
        assert_eq!(
            (p.host, p.repo, p.reference),
            (Some("127.0.0.1:8080"), "admin/imgops", "v1")
        );
        let p = parse_reference("imgops").unwrap();
        assert_eq!((p.host, p.repo, p.reference), (None, "imgops", "latest"));
        let digest = format!("sha256:{}", "ab".repeat(32));
        let r = format!("localhost:1/a/b@{digest}");
        let p = parse_reference(&r).unwrap();
        assert_eq!(
            (p.host, p.repo, p.reference),
            (Some("localhost:1"), "a/b", digest.as_str())
        );
        let p = parse_reference("berth-test/busybox:latest").unwrap();
        assert_eq!(
            (p.host, p.repo, p.reference),
            (None, "berth-test/busybox", "latest")
        );
        assert!(parse_reference(":tag").is_err());
    }

    #[test]
    fn parts_a_registry_cannot_hold_are_refused() {
        for bad in [
            "bysubox:1.:6",
            "Alpha/app",
            "127.0.0.1:5000/alpha/../beta/app",
            "127.0.0.1:5000/",
            "127.0.0.1:5000/alpha/app:",
            "127.0.0.1:5000/alpha/app:v1@sha256:ab",
            "alpha/app@sha256:ab",
            "a@b/c",
            "alpha/app:-v1",
        ] {
            assert!(parse_reference(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formatting_reads_back() {
        let digest = format!("sha256:{}", "0".repeat(64));
        for r in [
            "busybox:latest".to_owned(),
            "127.0.0.1:8080/admin/imgops:v1".to_owned(),
            format!("localhost/a/b@{digest}"),
        ] {
            assert_eq!(parse_reference(&r).unwrap().to_string(), r);
        }
        assert_eq!(parse_reference("app").unwrap().to_string(), "app:latest");
    }
}

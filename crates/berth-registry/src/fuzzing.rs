//! The properties the fuzz targets under `fuzz/` check. They live here so
//! that the unit tests below replay the targets' seeds and every saved
//! regression input through exactly the same checks: a crash found once
//! stays fixed under the ordinary test suite, without a fuzzer.
//!
//! Each check takes arbitrary bytes and panics when a property fails.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;

use crate::digest::{Algorithm, Digest, sha256_of};
use crate::manifest::{self, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};
use crate::names::{MAX_NAME_LEN, RepoName, is_valid_name, is_valid_tag};
use crate::reference::{parse_reference, reference_host};
use crate::registry::Reference;

/// Invalid UTF-8 is replaced rather than skipped, so every input still
/// reaches the parser.
fn text(data: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// `parse_reference`: accepted references name a valid repository and a
/// valid tag or digest, on the host Docker would pull from, and read back
/// the same after formatting.
pub fn check_image_reference(data: &[u8]) {
    let s = text(data);
    let Ok(parsed) = parse_reference(&s) else {
        return;
    };
    assert!(
        is_valid_name(parsed.repo),
        "{s:?} accepted with repository {:?}",
        parsed.repo
    );
    assert!(
        Reference::parse(parsed.reference).is_ok(),
        "{s:?} accepted with tag or digest {:?}",
        parsed.reference
    );
    assert_eq!(parsed.host, reference_host(&s), "{s:?}");
    let formatted = parsed.to_string();
    let again = parse_reference(&formatted)
        .unwrap_or_else(|e| panic!("{s:?} formats as {formatted:?}, which is refused: {e}"));
    assert_eq!(again, parsed, "{s:?} formats as {formatted:?}");
}

/// Written from the distribution spec's grammar independently of the
/// hand-written matcher in `names`, so the two can be compared.
static NAME_GRAMMAR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$")
        .expect("the name grammar compiles")
});
static TAG_GRAMMAR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$").expect("the tag grammar compiles")
});

/// Names and tags: the matchers agree with the spec's grammar, and an
/// accepted name can never step outside its directory.
pub fn check_repository_name(data: &[u8]) {
    let s = text(data);
    let valid = is_valid_name(&s);
    let expected = s.len() <= MAX_NAME_LEN && NAME_GRAMMAR.is_match(&s);
    assert_eq!(valid, expected, "is_valid_name({s:?})");
    match RepoName::parse(&s) {
        Ok(name) => {
            assert!(valid, "RepoName::parse accepted {s:?}");
            assert_eq!(name.as_str(), s);
            assert_eq!(name.to_string(), s);
            for component in s.split('/') {
                assert!(
                    !component.is_empty() && component != "." && component != "..",
                    "{s:?} has the path component {component:?}"
                );
            }
            assert!(!s.contains('\\') && !s.contains('%'), "{s:?}");
            assert_eq!(name.namespace(), s.split('/').next().unwrap_or_default());
            assert_eq!(name.is_namespaced(), s.contains('/'));
        }
        Err(_) => assert!(!valid, "RepoName::parse refused {s:?}"),
    }
    assert_eq!(
        is_valid_tag(&s),
        TAG_GRAMMAR.is_match(&s),
        "is_valid_tag({s:?})"
    );
}

fn hex_len(algorithm: Algorithm) -> usize {
    match algorithm {
        Algorithm::Sha256 => 64,
        Algorithm::Sha512 => 128,
    }
}

/// Digests: accepted ones print back exactly as given, with exactly the
/// algorithm's number of lowercase hex digits; the directory-listing
/// constructors agree with `parse`.
pub fn check_digest(data: &[u8]) {
    let s = text(data);
    if let Ok(d) = Digest::parse(&s) {
        assert_eq!(d.to_string(), s);
        assert_eq!(format!("{}:{}", d.algorithm().as_str(), d.hex()), s);
        assert_eq!(d.hex().len(), hex_len(d.algorithm()), "{s:?}");
        assert!(
            d.hex()
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{s:?}"
        );
        assert_eq!(s.parse::<Digest>().ok().as_ref(), Some(&d));
        assert_eq!(
            Digest::from_parts(d.algorithm(), d.hex()).as_ref(),
            Some(&d)
        );
    }
    // What a walk over `blobs/<algorithm>/<hex>` would be handed.
    for piece in s.split(['/', ':']) {
        if let Some(algorithm) = Algorithm::from_dir_name(piece) {
            assert_eq!(algorithm.as_str(), piece);
        }
        for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
            if let Some(d) = Digest::from_parts(algorithm, piece) {
                assert_eq!(d.hex(), piece);
                let full = format!("{}:{piece}", algorithm.as_str());
                assert_eq!(Digest::parse(&full).ok().as_ref(), Some(&d), "{full:?}");
            }
        }
    }
    let hashed = sha256_of(data);
    assert_eq!(
        Digest::parse(&hashed.to_string()).ok().as_ref(),
        Some(&hashed)
    );
}

/// Content types a push may declare: none, each supported one, and some
/// that must be told apart from them.
const CONTENT_TYPES: &[Option<&str>] = &[
    None,
    Some(DOCKER_MANIFEST),
    Some(DOCKER_MANIFEST_LIST),
    Some(OCI_MANIFEST),
    Some(OCI_INDEX),
    Some("application/json"),
    Some("application/vnd.oci.image.index.v1+json; charset=utf-8"),
    Some("text/plain"),
];

/// Manifests: checking a push never panics, and whatever a push accepts,
/// garbage collection's lenient reading finds every reference of, or it
/// would delete blobs a stored image still needs.
pub fn check_manifest(data: &[u8]) {
    let (blobs, manifests) = manifest::references(data);
    for &content_type in CONTENT_TYPES {
        let Ok(m) = manifest::parse(data, content_type) else {
            continue;
        };
        let is_index = match m.media_type.as_str() {
            DOCKER_MANIFEST | OCI_MANIFEST => false,
            DOCKER_MANIFEST_LIST | OCI_INDEX => true,
            other => panic!("accepted the media type {other:?} ({content_type:?})"),
        };
        if is_index {
            assert!(m.blobs.is_empty(), "an index with blobs ({content_type:?})");
        } else {
            assert!(
                m.children.is_empty(),
                "an image with children ({content_type:?})"
            );
        }
        for b in &m.blobs {
            assert!(
                blobs.contains(&b.digest),
                "collection misses blob {} ({content_type:?})",
                b.digest
            );
        }
        for c in m.children.iter().chain(&m.subject) {
            assert!(
                manifests.contains(&c.digest),
                "collection misses manifest {} ({content_type:?})",
                c.digest
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    use super::*;

    /// Runs `check` over every file of the target's seed corpus and of its
    /// saved regressions; the seeds keep the test from passing vacuously.
    fn replay(target: &str, check: fn(&[u8])) {
        let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
        let seeds = replay_dir(&fuzz.join("corpus").join(target), check);
        assert!(seeds >= 1, "no seed inputs for {target} under {fuzz:?}");
        replay_dir(&fuzz.join("regressions").join(target), check);
    }

    fn replay_dir(dir: &Path, check: fn(&[u8])) -> usize {
        // A target that never crashed has no regressions directory.
        let Ok(entries) = fs::read_dir(dir) else {
            return 0;
        };
        let mut replayed = 0;
        for entry in entries {
            let path = entry.expect("listing a fuzz directory").path();
            if path.is_file() {
                eprintln!("replaying {}", path.display());
                check(&fs::read(&path).expect("reading a fuzz input"));
                replayed += 1;
            }
        }
        replayed
    }

    #[test]
    fn image_reference_inputs_replay() {
        replay("image_reference", check_image_reference);
    }

    #[test]
    fn repository_name_inputs_replay() {
        replay("repository_name", check_repository_name);
    }

    #[test]
    fn digest_inputs_replay() {
        replay("digest", check_digest);
    }

    #[test]
    fn manifest_inputs_replay() {
        replay("manifest", check_manifest);
    }
}

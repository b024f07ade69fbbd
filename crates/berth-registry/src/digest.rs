//! Content digests: `sha256:<64 hex>` (required by the spec) and
//! `sha512:<128 hex>`, lowercase only so that one content has one name and
//! one path on disk.

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;

use crate::RegistryError;
use crate::names::truncate_for_message;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Self::Sha256 => 64,
            Self::Sha512 => 128,
        }
    }

    pub fn from_dir_name(s: &str) -> Option<Self> {
        match s {
            "sha256" => Some(Self::Sha256),
            "sha512" => Some(Self::Sha512),
            _ => None,
        }
    }

    pub fn hasher(self) -> Hasher {
        match self {
            Self::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Self::Sha512 => Hasher::Sha512(Box::new(sha2::Sha512::new())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        let invalid = || RegistryError::DigestInvalid(truncate_for_message(s));
        let (algo, hex) = s.split_once(':').ok_or_else(invalid)?;
        let algorithm = Algorithm::from_dir_name(algo).ok_or_else(invalid)?;
        Self::from_parts(algorithm, hex).ok_or_else(invalid)
    }

    /// From an algorithm and an encoded part, as found in a directory
    /// listing; `None` unless the encoded part is canonical lowercase hex.
    pub fn from_parts(algorithm: Algorithm, hex: &str) -> Option<Self> {
        let ok = hex.len() == algorithm.hex_len()
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| Self {
            algorithm,
            hex: hex.to_owned(),
        })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

impl FromStr for Digest {
    type Err = RegistryError;

    fn from_str(s: &str) -> Result<Self, RegistryError> {
        Self::parse(s)
    }
}

/// A running hash. Cloning it is how an upload keeps its state between
/// chunks and rolls back a chunk that failed halfway.
#[derive(Clone)]
pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(Box<sha2::Sha512>),
}

impl Hasher {
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Self::Sha256(h) => h.update(data),
            Self::Sha512(h) => h.update(data),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            Self::Sha256(_) => Algorithm::Sha256,
            Self::Sha512(_) => Algorithm::Sha512,
        }
    }

    pub fn finish(self) -> Digest {
        let (algorithm, hex) = match self {
            Self::Sha256(h) => (Algorithm::Sha256, hex::encode(h.finalize())),
            Self::Sha512(h) => (Algorithm::Sha512, hex::encode(h.finalize())),
        };
        Digest { algorithm, hex }
    }
}

pub fn sha256_of(data: &[u8]) -> Digest {
    let mut h = Algorithm::Sha256.hasher();
    h.update(data);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_canonical_digests() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert_eq!(Digest::parse(&good).unwrap().to_string(), good);
        assert!(Digest::parse(&format!("sha512:{}", "0".repeat(128))).is_ok());
        for bad in [
            "sha256:".to_owned(),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha256:{}", "a".repeat(63)),
            format!("md5:{}", "a".repeat(32)),
            format!("sha256:{}/..", "a".repeat(61)),
            "latest".to_owned(),
        ] {
            assert!(Digest::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hashes() {
        assert_eq!(
            sha256_of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}

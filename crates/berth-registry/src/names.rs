//! The grammars of repository names and tags, checked by hand on the raw
//! (never percent-decoded) path text. A name that passes can be joined to a
//! directory path as is: its components are non-empty runs of `[a-z0-9._-]`
//! that start and end with a letter or digit, so `.`, `..`, `%2e`, empty
//! components and absolute paths are all impossible.

use std::fmt;

use crate::RegistryError;

/// Longest repository name the spec allows (and the filesystem must take).
pub const MAX_NAME_LEN: usize = 255;
/// Longest tag the spec allows.
pub const MAX_TAG_LEN: usize = 128;

/// A repository name that matched
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`
/// and is at most 255 bytes long.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RepoName(String);

impl RepoName {
    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        if is_valid_name(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(RegistryError::NameInvalid(truncate_for_message(s)))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first path component: the tenant whose namespace this is.
    pub fn namespace(&self) -> &str {
        self.0.split('/').next().unwrap_or_default()
    }

    /// Whether the name has a component after its namespace, i.e. is
    /// `<tenant>/<something>` rather than a bare tenant name.
    pub fn is_namespaced(&self) -> bool {
        self.0.contains('/')
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub fn is_valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_NAME_LEN && s.split('/').all(is_valid_component)
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn is_valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let (Some(&first), Some(&last)) = (b.first(), b.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A run of separators between two alphanumeric runs.
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &b[start..i];
        let ok = sep == b"." || sep == b"_" || sep == b"__" || sep.iter().all(|&x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`
pub fn is_valid_tag(s: &str) -> bool {
    let b = s.as_bytes();
    let Some(&first) = b.first() else {
        return false;
    };
    b.len() <= MAX_TAG_LEN
        && (first.is_ascii_alphanumeric() || first == b'_')
        && b[1..]
            .iter()
            .all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'.' | b'_' | b'-'))
}

/// Error messages echo the offending input, but never an unbounded amount.
pub(crate) fn truncate_for_message(s: &str) -> String {
    const MAX: usize = 80;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "a",
            "admin/bb",
            "tenant/a/b",
            "a.b/c_d/e__f/g-h/i---j",
            "0/9",
        ] {
            assert!(is_valid_name(ok), "{ok}");
        }
        let long = "a".repeat(256);
        for bad in [
            "",
            "..",
            "a/..",
            "a/../b",
            "%2e%2e",
            "a/%2e%2e/b",
            "Admin/x",
            "a//b",
            "/a",
            "a/",
            "a/.b",
            "a/b.",
            "a___b",
            "a_-b",
            "a..b",
            "a b",
            "a\\b",
            long.as_str(),
        ] {
            assert!(!is_valid_name(bad), "{bad:?}");
        }
        assert!(is_valid_name(&"a".repeat(255)));
    }

    #[test]
    fn tags() {
        for ok in ["latest", "v1.2.3", "_x", "A-b_c.D", &"t".repeat(128)] {
            assert!(is_valid_tag(ok), "{ok}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", "a%2e", &"t".repeat(129)] {
            assert!(!is_valid_tag(bad), "{bad}");
        }
    }

    #[test]
    fn namespace() {
        let n = RepoName::parse("alpha/a/b").unwrap();
        assert_eq!(n.namespace(), "alpha");
        assert!(n.is_namespaced());
        assert!(!RepoName::parse("alpha").unwrap().is_namespaced());
    }
}

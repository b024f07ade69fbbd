//! The properties the `api_bodies` fuzz target under `fuzz/` checks. They
//! live here so that the unit tests below replay the target's seeds and
//! every saved regression input through exactly the same checks, without
//! a fuzzer.
//!
//! Each check takes arbitrary bytes and panics when a property fails.

use crate::{FunctionConfig, Limits, QuotaOverrides, Quotas, validate_name, validate_tenant_name};

/// A function definition as `PUT /v1/functions/{name}` reads its body:
/// parsing and validation never panic, and a definition that validates
/// is stored and read back unchanged.
pub fn check_function_config(data: &[u8]) {
    let Ok(config) = serde_json::from_slice::<FunctionConfig>(data) else {
        return;
    };
    if config.validate(&Limits::default()).is_err() {
        return;
    }
    let stored = serde_json::to_vec(&config).expect("a valid definition serializes");
    let back: FunctionConfig = serde_json::from_slice(&stored)
        .unwrap_or_else(|e| panic!("{config:?} does not read back: {e}"));
    assert_eq!(back, config);
    assert_eq!(back.validate(&Limits::default()), Ok(()));
}

/// Function names: accepted exactly when they are 1-63 characters of
/// `[a-z0-9_-]` starting with a letter or digit, so they are safe in URLs,
/// labels and file names.
pub fn check_function_name(data: &[u8]) {
    let name = String::from_utf8_lossy(data);
    let expected = (1..=63).contains(&name.len())
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    assert_eq!(validate_name(&name).is_ok(), expected, "{name:?}");
}

/// A tenant's quota settings as `POST /v1/tenants` and
/// `PUT /v1/tenants/{name}/quotas` read them: never a panic, and settings
/// that validate apply over the defaults and read back unchanged.
pub fn check_quota_overrides(data: &[u8]) {
    let Ok(o) = serde_json::from_slice::<QuotaOverrides>(data) else {
        return;
    };
    if o.validate().is_err() {
        return;
    }
    let q = Quotas::default().with(&o);
    assert!(
        q.max_concurrent_tasks >= 1 && q.max_body_bytes >= 1,
        "{o:?}"
    );
    let stored = serde_json::to_vec(&o).expect("quotas serialize");
    let back: QuotaOverrides =
        serde_json::from_slice(&stored).unwrap_or_else(|e| panic!("{o:?} does not read back: {e}"));
    assert_eq!(back, o);
}

/// Tenant names: lowercase letters, digits and single inner hyphens, at
/// most 63, so they are safe as registry namespaces, labels and logins.
pub fn check_tenant_name(data: &[u8]) {
    let name = String::from_utf8_lossy(data);
    let expected = (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    assert_eq!(validate_tenant_name(&name).is_ok(), expected, "{name:?}");
}

/// Everything the target checks on one input.
pub fn check_api_body(data: &[u8]) {
    check_function_config(data);
    check_function_name(data);
    check_quota_overrides(data);
    check_tenant_name(data);
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    use super::*;

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
    fn api_body_inputs_replay() {
        let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
        let seeds = replay_dir(&fuzz.join("corpus/api_bodies"), check_api_body);
        assert!(seeds >= 1, "no seed inputs under {fuzz:?}");
        replay_dir(&fuzz.join("regressions/api_bodies"), check_api_body);
    }
}

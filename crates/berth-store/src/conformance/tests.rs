//! Keeps the suite's list honest. The compiler already rejects a listed
//! case that does not exist; this catches the other way round, a case
//! written but never listed, which every backend would then skip.

use std::collections::BTreeSet;
use std::path::Path;

use super::CASES;

/// Every `pub async fn` in the suite's files is a case; helpers are private.
fn written_cases() -> BTreeSet<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/conformance");
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).expect("read the suite's directory") {
        let path = entry.expect("list the suite's directory").path();
        let source = std::fs::read_to_string(&path).expect("read a suite file");
        for line in source.lines() {
            if let Some(rest) = line.strip_prefix("pub async fn ") {
                let name = rest.split(['(', '<']).next().unwrap_or(rest);
                names.insert(name.to_owned());
            }
        }
    }
    names
}

#[test]
fn every_written_case_is_listed_once() {
    let listed: BTreeSet<String> = CASES.iter().map(|c| c.to_string()).collect();
    assert_eq!(listed.len(), CASES.len(), "a case is listed twice");
    assert_eq!(
        written_cases(),
        listed,
        "cases written in src/conformance/ and cases listed in \
         __store_conformance_cases! differ"
    );
}

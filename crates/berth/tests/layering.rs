//! The crate graph is written down once, in ARCHITECTURE.md's
//! `crate-graph` block; this test reads every Cargo manifest of the
//! project (workspace members and the fuzz crate) and fails on any
//! dependency between Berth crates, of any kind (normal, dev or build),
//! that the block does not allow, and on any crate the block does not
//! name.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `crate -> dep, dep` lines of the fenced block that follows the
/// `crate-graph` marker.
fn allowed_graph(architecture: &str) -> BTreeMap<String, BTreeSet<String>> {
    let start = architecture
        .find("```text crate-graph")
        .expect("ARCHITECTURE.md has a ```text crate-graph block");
    let block = &architecture[start..];
    let block = &block[block.find('\n').expect("block body") + 1..];
    let block = &block[..block.find("```").expect("the block ends")];
    let mut graph = BTreeMap::new();
    for line in block.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (name, deps) = line
            .split_once("->")
            .unwrap_or_else(|| panic!("graph line without '->': {line:?}"));
        let deps = deps
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(str::to_owned)
            .collect();
        let name = name.trim().to_owned();
        assert!(
            graph.insert(name.clone(), deps).is_none(),
            "{name} is listed twice"
        );
    }
    graph
}

/// A manifest's package name and every Berth crate it depends on in any
/// section (also target-specific ones).
fn edges(manifest: &Path, ours: &dyn Fn(&str) -> bool) -> (String, BTreeSet<(String, String)>) {
    let text = std::fs::read_to_string(manifest).expect("manifest");
    let doc: toml::Table = text.parse().expect("manifest is TOML");
    let name = doc["package"]["name"]
        .as_str()
        .expect("package.name")
        .to_owned();
    let mut found = BTreeSet::new();
    let mut sections: Vec<(&str, &toml::Table)> = Vec::new();
    for kind in ["dependencies", "dev-dependencies", "build-dependencies"] {
        if let Some(t) = doc.get(kind).and_then(|v| v.as_table()) {
            sections.push((kind, t));
        }
    }
    if let Some(targets) = doc.get("target").and_then(|v| v.as_table()) {
        for cfg in targets.values().filter_map(|v| v.as_table()) {
            for kind in ["dependencies", "dev-dependencies", "build-dependencies"] {
                if let Some(t) = cfg.get(kind).and_then(|v| v.as_table()) {
                    sections.push((kind, t));
                }
            }
        }
    }
    for (kind, table) in sections {
        for (dep, spec) in table {
            // `package = "..."` renames a dependency.
            let real = spec
                .as_table()
                .and_then(|t| t.get("package"))
                .and_then(|p| p.as_str())
                .unwrap_or(dep);
            if ours(real) {
                found.insert((real.to_owned(), kind.to_owned()));
            }
        }
    }
    (name, found)
}

fn manifests() -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = std::fs::read_dir(root().join("crates"))
        .expect("crates/")
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("Cargo.toml"))
        .filter(|p| p.is_file())
        .collect();
    all.push(root().join("fuzz/Cargo.toml"));
    all.sort();
    all
}

/// Every violation of `graph` by the manifests, as readable lines.
fn violations(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let ours = |name: &str| name == "berth" || name.starts_with("berth-");
    let mut out = Vec::new();
    for manifest in manifests() {
        let (name, deps) = edges(&manifest, &ours);
        let Some(allowed) = graph.get(&name) else {
            out.push(format!("{name} is not in the crate graph"));
            continue;
        };
        for (dep, kind) in deps {
            // A crate naming itself (to turn on its own features for its
            // tests) is no edge.
            if dep != name && !allowed.contains(&dep) {
                out.push(format!(
                    "{name} -> {dep} ({kind}) is not an edge of the crate graph"
                ));
            }
        }
    }
    out
}

#[test]
fn every_dependency_between_berth_crates_is_an_allowed_edge() {
    let architecture =
        std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let graph = allowed_graph(&architecture);
    let bad = violations(&graph);
    assert!(
        bad.is_empty(),
        "the crates depend on each other in ways ARCHITECTURE.md does not allow:\n  {}",
        bad.join("\n  ")
    );
    // Every crate the graph names exists, so the block cannot rot.
    let names: BTreeSet<String> = manifests().iter().map(|m| edges(m, &|_| false).0).collect();
    for (name, deps) in &graph {
        assert!(
            names.contains(name),
            "the graph names {name}, which does not exist"
        );
        for d in deps {
            assert!(
                names.contains(d),
                "the graph names {d}, which does not exist"
            );
        }
    }
}

#[test]
fn an_edge_outside_the_graph_is_caught() {
    let graph = allowed_graph("```text crate-graph\nberth-core ->\nberth-api -> berth-core\n```\n");
    let doc = "[package]\nname = \"berth-api\"\n[dependencies]\nberth-core = \"1\"\n\
               [dev-dependencies]\nberth-store = { path = \"x\" }\n";
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("Cargo.toml");
    std::fs::write(&manifest, doc).unwrap();
    let (name, deps) = edges(&manifest, &|n| n.starts_with("berth-"));
    assert_eq!(name, "berth-api");
    let outside: Vec<_> = deps
        .iter()
        .filter(|(d, _)| !graph[&name].contains(d))
        .collect();
    assert_eq!(
        outside,
        [&("berth-store".to_owned(), "dev-dependencies".to_owned())]
    );
}

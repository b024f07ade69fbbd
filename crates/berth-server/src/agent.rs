//! The static agent that warm instances run as their entrypoint: found
//! beside the binary unless given, and refused when dynamically linked
//! (it runs in images that may hold no libc at all).

use std::path::{Path, PathBuf};

use tracing::warn;

/// The agent given, else `berth-agent` beside this executable. It runs in
/// images that may hold no libc at all, so a dynamically linked build (a
/// plain `cargo build`) is refused with a pointer to the static build.
pub(crate) fn find_agent(given: Option<PathBuf>) -> Option<PathBuf> {
    let explicit = given.is_some();
    let candidate = given.or_else(|| {
        let exe = std::env::current_exe().ok()?;
        Some(exe.parent()?.join("berth-agent"))
    })?;
    let Ok(path) = candidate.canonicalize() else {
        if explicit {
            warn!(agent = %candidate.display(), "the agent does not exist");
        }
        return None;
    };
    match has_interpreter(&path) {
        Ok(false) => Some(path),
        Ok(true) => {
            warn!(agent = %path.display(),
                "the agent is dynamically linked; build it with scripts/build-agent.sh");
            None
        }
        Err(e) => {
            warn!(agent = %path.display(), error = %e, "cannot read the agent");
            None
        }
    }
}

/// Whether an ELF64 little-endian executable names a dynamic loader
/// (a `PT_INTERP` program header), i.e. is not statically linked.
fn has_interpreter(path: &Path) -> std::io::Result<bool> {
    use std::io::{Error, Read};
    const PT_INTERP: u32 = 3;
    let mut data = Vec::new();
    std::fs::File::open(path)?
        .take(64 * 1024)
        .read_to_end(&mut data)?;
    let bad = || Error::other("not an ELF64 little-endian executable");
    if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 || data[5] != 1 {
        return Err(bad());
    }
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(data[32..40].try_into().map_err(|_| bad())?) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    for i in 0..phnum {
        let at = phoff.saturating_add(i.saturating_mul(phentsize));
        let Some(kind) = data.get(at..at.saturating_add(4)) else {
            return Err(bad());
        };
        if u32::from_le_bytes(kind.try_into().map_err(|_| bad())?) == PT_INTERP {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_executable_names_an_interpreter_and_garbage_is_refused() {
        // This test binary is built like any cargo build: dynamically linked.
        let me = std::env::current_exe().unwrap();
        assert!(has_interpreter(&me).unwrap());
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk");
        std::fs::write(&junk, b"#!/bin/sh\necho not an ELF\n").unwrap();
        assert!(has_interpreter(&junk).is_err());
        assert_eq!(find_agent(Some(junk)), None);
        assert_eq!(find_agent(Some(dir.path().join("missing"))), None);
    }
}

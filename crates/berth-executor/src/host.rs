//! What a node has, read from the host: CPUs, memory, CPU feature flags.
//! Placement matches functions' needs against these; the reads are
//! Linux's (`/proc`), and a figure that cannot be read is reported as 0
//! rather than guessed.

use std::collections::BTreeSet;

/// CPU feature flags (`avx2`, `sse4_2`, `aes`, ...) from `/proc/cpuinfo`
/// text: those every processor lists, sorted. A flag only some cores have
/// (asymmetric cores) is left out, since a container may run on any.
pub fn cpu_flags(cpuinfo: &str) -> Vec<String> {
    let mut common: Option<BTreeSet<&str>> = None;
    for line in cpuinfo.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        // x86 says "flags", arm64 says "Features".
        let key = key.trim();
        if key != "flags" && key != "Features" {
            continue;
        }
        let these: BTreeSet<&str> = value.split_whitespace().collect();
        common = Some(match common {
            None => these,
            Some(c) => c.intersection(&these).copied().collect(),
        });
    }
    common
        .unwrap_or_default()
        .into_iter()
        .map(str::to_owned)
        .collect()
}

/// Total memory in MiB from `/proc/meminfo` text.
pub fn memory_mb(meminfo: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

/// This host's facts, read now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    pub cpu_millis: u64,
    pub memory_mb: u64,
    pub cpu_flags: Vec<String>,
}

impl HostFacts {
    pub fn read() -> Self {
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get() as u64);
        Self {
            cpu_millis: cpus * 1000,
            memory_mb: std::fs::read_to_string("/proc/meminfo")
                .map(|s| memory_mb(&s))
                .unwrap_or(0),
            cpu_flags: std::fs::read_to_string("/proc/cpuinfo")
                .map(|s| cpu_flags(&s))
                .unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const X86: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU\n\
flags\t\t: fpu vme de pse tsc msr sse sse2 ssse3 sse4_1 sse4_2 aes avx avx2 avx512f\n\
bugs\t\t: spectre_v1\n\nprocessor\t: 1\nvendor_id\t: GenuineIntel\n\
flags\t\t: fpu vme de pse tsc msr sse sse2 ssse3 sse4_1 sse4_2 aes avx avx2\n";

    const ARM: &str = "processor\t: 0\nBogoMIPS\t: 50.00\n\
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics\nCPU implementer\t: 0x41\n\n\
processor\t: 1\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics\n";

    #[test]
    fn x86_flags_are_those_every_core_has() {
        let flags = cpu_flags(X86);
        assert!(flags.contains(&"avx2".to_owned()));
        assert!(flags.contains(&"sse4_2".to_owned()));
        assert!(flags.contains(&"aes".to_owned()));
        // Only core 0 lists it: a container may land on core 1.
        assert!(!flags.contains(&"avx512f".to_owned()));
        let mut sorted = flags.clone();
        sorted.sort();
        assert_eq!(flags, sorted);
    }

    #[test]
    fn arm_features_are_read_too() {
        let flags = cpu_flags(ARM);
        assert_eq!(
            flags,
            [
                "aes", "asimd", "atomics", "crc32", "evtstrm", "fp", "pmull", "sha1", "sha2"
            ]
        );
    }

    #[test]
    fn no_flags_line_means_no_flags() {
        assert!(cpu_flags("processor : 0\n").is_empty());
        assert!(cpu_flags("").is_empty());
    }

    #[test]
    fn this_host_reads_real_facts() {
        let real = std::fs::read_to_string("/proc/cpuinfo").expect("Linux /proc/cpuinfo");
        let flags = cpu_flags(&real);
        // Every x86-64 CPU has sse2, every arm64 one asimd.
        assert!(
            flags.iter().any(|f| f == "sse2" || f == "asimd"),
            "{flags:?}"
        );
        let facts = HostFacts::read();
        assert!(facts.cpu_millis >= 1000);
        assert!(facts.memory_mb > 0);
    }

    #[test]
    fn memory_total_in_mib() {
        assert_eq!(
            memory_mb("MemTotal:       16384000 kB\nMemFree: 1 kB\n"),
            16000
        );
        assert_eq!(memory_mb("nothing"), 0);
    }
}

#![no_main]

// The property lives in the library so the unit tests replay the same
// check over the seeds and saved regressions.
libfuzzer_sys::fuzz_target!(|data: &[u8]| berth_registry::fuzzing::check_digest(data));

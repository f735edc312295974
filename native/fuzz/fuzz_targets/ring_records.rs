#![no_main]
// See rdmanio::fuzzing::ring_records.
libfuzzer_sys::fuzz_target!(|data: &[u8]| rdmanio::fuzzing::ring_records(data));

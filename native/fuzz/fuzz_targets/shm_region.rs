#![no_main]
// See rdmanio::fuzzing::shm_region.
libfuzzer_sys::fuzz_target!(|data: &[u8]| rdmanio::fuzzing::shm_region(data));

#![no_main]
// See rdmanio::fuzzing::hello.
libfuzzer_sys::fuzz_target!(|data: &[u8]| rdmanio::fuzzing::hello(data));

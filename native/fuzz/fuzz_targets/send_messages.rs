#![no_main]
// See rdmanio::fuzzing::send_messages.
libfuzzer_sys::fuzz_target!(|data: &[u8]| rdmanio::fuzzing::send_messages(data));

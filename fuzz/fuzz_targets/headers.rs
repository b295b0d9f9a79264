//! Fuzz target `headers`: see `moat::fuzz::headers`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| moat::fuzz::headers(data));

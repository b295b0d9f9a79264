//! Fuzz target `cedar`: see `moat::fuzz::cedar`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| moat::fuzz::cedar(data));

//! Fuzz target `jwt`: see `moat::fuzz::jwt`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| moat::fuzz::jwt(data));

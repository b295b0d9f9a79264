//! Fuzz target `jwks`: see `moat::fuzz::jwks`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| moat::fuzz::jwks(data));

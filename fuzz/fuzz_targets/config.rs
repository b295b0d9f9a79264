//! Fuzz target `config`: see `moat::fuzz::config`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| moat::fuzz::config(data));

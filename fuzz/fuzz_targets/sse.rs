//! Fuzz target `sse`: see `moat::fuzz::sse`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| moat::fuzz::sse(data));

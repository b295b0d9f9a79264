//! Fuzz target `list_filter`: see `moat::fuzz::list_filter`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| moat::fuzz::list_filter(data));

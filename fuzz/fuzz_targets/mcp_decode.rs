//! Fuzz target `mcp_decode`: see `moat::fuzz::mcp_decode`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| moat::fuzz::mcp_decode(data));

//! The authorization server Moat runs for MCP clients; so far: fetching and checking the client
//! ID metadata documents clients identify themselves with ([`cimd`]).
#![cfg_attr(
    not(test),
    allow(
        dead_code,
        unused_imports,
        reason = "the authorization server that uses these building blocks comes next"
    )
)]

pub mod cimd;
pub mod federation;

//! Moat: kernel-enforced protection and audit for MCP servers. The `moat` binary is a thin
//! command line over [`app`]; the modules are public for the benchmarks.
pub mod admin;
pub mod app;
pub mod audit;
pub mod auth;
pub mod background;
pub mod config;
pub mod conn_limits;
pub mod error;
pub mod events;
pub mod http;
pub mod idle;
pub mod instance;
pub mod listen;
pub mod mcp;
pub mod policy;
pub mod serve;
pub mod steer;
pub mod tls;
pub mod upstream;
pub mod vocab;

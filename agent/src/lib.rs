//! Moat: kernel-enforced protection and audit for MCP servers. The `moat` binary is a thin
//! command line over [`app`]. The modules are the crate's own; what the binary, the benchmarks
//! and the integration tests use is re-exported below, and nothing else is public.
mod admin;
pub mod app;
mod audit;
mod auth;
mod authz;
mod background;
mod config;
mod conn_limits;
pub mod control;
pub mod error;
mod events;
mod http;
mod idle;
mod instance;
mod integrity;
mod listen;
pub mod log_lines;
mod mcp;
mod policy;
mod serve;
pub mod status;
mod steer;
mod store;
mod tls;
mod upstream;
mod vocab;

pub use crate::{
    audit::{
        chain::Chain as AuditChain, head_path as audit_head_path, verify::verify as audit_verify,
    },
    auth::install_crypto,
    config::Config,
    listen::Mode,
    tls::selfsigned::write as write_self_signed,
};

/// What the benchmarks measure: a policy decision and a rate count, with what they take.
pub mod bench {
    pub use crate::{
        config::{Policy, PolicyMode},
        policy::{Engine, Input, Rates, load},
        vocab::{Principal, Target},
    };
}

/// Resource URI normalisation, as Moat decides on it (for the differential tests).
pub use crate::mcp::uri;

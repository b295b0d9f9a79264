//! Moat: kernel-enforced protection and audit for MCP servers. The `moat` binary is a thin
//! command line over [`app`]. The modules are the crate's own; what the binary, the benchmarks
//! and the integration tests use is re-exported below, and nothing else is public.
mod admin;
pub mod app;
mod audit;
mod auth;
mod authz;
mod background;
mod behaviour;
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
pub mod lockdown;
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

    /// How Moat reads a `tools/list` result passing through (JSON, read whole), without pins
    /// or against the pins of a store in `state_dir` (every entry pinned on first use).
    pub struct ListReading(crate::http::filter::ListRead);

    impl ListReading {
        pub fn new(state_dir: Option<&std::path::Path>) -> Self {
            use std::sync::Arc;
            let pins = state_dir.map(|dir| {
                let store = Arc::new(crate::store::Store::open(dir).expect("a store"));
                let config = crate::config::Integrity {
                    mode: crate::config::IntegrityMode::Enforce,
                    pin_on_first_use: true,
                    hide_flagged: false,
                    recheck: None,
                };
                let g =
                    crate::integrity::Guard::open("files".into(), config, store, Arc::default());
                Arc::new(g.expect("a guard"))
            });
            Self(crate::http::filter::ListRead {
                list: crate::vocab::List::Tools,
                lister: None,
                pins,
            })
        }

        /// The bytes the client gets of `body`, and how many tools it lists.
        pub fn read(&self, body: &[u8]) -> (bytes::Bytes, usize) {
            let (bytes, listing) =
                crate::http::filter::judge_whole(&self.0, body).expect("a list result");
            (bytes, listing.tools.map_or(0, |t| t.len()))
        }
    }
}

/// Resource URI normalisation, as Moat decides on it (for the differential tests).
pub use crate::mcp::uri;

//! The harness of the end-to-end tests, one module per job: a test host with the real `moat`
//! binary ([`host`]), the namespaces a privileged host runs in ([`netns`], shared with xtask), the fixtures and scripts ([`fixtures`]), the recording test upstream
//! ([`upstream`]), raw HTTP ([`http`]), the audit records ([`audit`]), loopback ports for plain
//! hosts ([`ports`]) and a small tmpfs ([`tmpfs`]).
#![allow(dead_code)]

mod audit;
mod browser;
mod fixtures;
mod host;
mod http;
mod netns;
mod ports;
mod tmpfs;
mod upstream;

#[allow(unused_imports)]
pub use self::{
    audit::*, browser::*, fixtures::*, host::*, http::*, netns::*, ports::*, tmpfs::*, upstream::*,
};

pub const MOAT: &str = env!("CARGO_BIN_EXE_moat");

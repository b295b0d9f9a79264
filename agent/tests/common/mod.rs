//! The harness of the end-to-end tests, one module per job: a test host with the real `moat`
//! binary ([`host`]), the fixtures and scripts ([`fixtures`]), the recording test upstream
//! ([`upstream`]), raw HTTP ([`http`]) and the audit records ([`audit`]).
#![allow(dead_code)]

mod audit;
mod fixtures;
mod host;
mod http;
mod tmpfs;
mod upstream;

#[allow(unused_imports)]
pub use self::{audit::*, fixtures::*, host::*, http::*, tmpfs::*, upstream::*};

pub const MOAT: &str = env!("CARGO_BIN_EXE_moat");

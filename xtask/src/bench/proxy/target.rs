//! The targets of `bench proxy`: what each is (direct, through Moat, through HAProxy), where
//! wrk and the latency client send to, and with which wrk script.
use std::path::PathBuf;

use super::{AUTH, DIRECT, FULL, HAPROXY_PLAIN, HAPROXY_TLS, PLAIN, TLS, load, site::Tokens};
use crate::{Result, host::Lab};

/// What serves a target: nothing (the upstream directly), Moat, or HAProxy. Its process's
/// CPU time, context switches and memory are the target's.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Proxy {
    None,
    Moat,
    Haproxy,
}

pub struct Target {
    /// How the report finds it: `direct`, `http`, `https`, `haproxy-http`, ...
    pub id: &'static str,
    pub label: String,
    /// For wrk.
    pub url: String,
    /// For the latency client: `http:PORT` or `https:PORT`.
    pub spec: String,
    pub proxy: Proxy,
    /// The wrk script, if not the common one.
    pub script: Option<PathBuf>,
}

impl Target {
    pub fn new(id: &'static str, label: &str, tls: bool, port: u16, proxy: Proxy) -> Self {
        let scheme = if tls { "https" } else { "http" };
        Self {
            id,
            label: format!("{label:<13} :{port}"),
            url: format!("{scheme}://127.0.0.1:{port}/mcp"),
            spec: format!("{scheme}:{port}"),
            proxy,
            script: None,
        }
    }

    /// Through Moat: the agent's CPU time is attributed to it, its requests are audited, and
    /// a baseline `moat` runs it too.
    pub fn moat(&self) -> bool {
        self.proxy == Proxy::Moat
    }

    /// The label without its padding (for the JSON line).
    pub fn name(&self) -> String {
        self.label.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

/// The index of target `id` in `targets` (every list has them all).
pub fn at(targets: &[Target], id: &str) -> usize {
    targets
        .iter()
        .position(|t| t.id == id)
        .unwrap_or_else(|| panic!("no target {id}"))
}

/// The targets, the latency client's (LAT_TARGETS) first: direct, moat http and https,
/// haproxy http and https; then auth cached, auth fresh, auth users and moat full.
pub fn targets(lab: &Lab, tokens: &Tokens) -> Result<Vec<Target>> {
    use Proxy::{Haproxy, Moat};
    Ok(vec![
        Target::new("direct", "direct", false, DIRECT, Proxy::None),
        Target::new("http", "moat http", false, PLAIN, Moat),
        Target::new("https", "moat https", true, TLS, Moat),
        Target::new(
            "haproxy-http",
            "haproxy http",
            false,
            HAPROXY_PLAIN,
            Haproxy,
        ),
        Target::new("haproxy-https", "haproxy https", true, HAPROXY_TLS, Haproxy),
        Target {
            script: Some(load::write_token_script(lab, "token", &tokens.one)?),
            ..Target::new("cached", "auth cached", false, AUTH, Moat)
        },
        Target {
            script: Some(load::write_tokens_script(lab, "fresh", &tokens.fresh)?),
            ..Target::new("fresh", "auth fresh", false, AUTH, Moat)
        },
        Target {
            script: Some(load::write_tokens_script(lab, "users", &tokens.users)?),
            ..Target::new("users", "auth users", false, AUTH, Moat)
        },
        Target {
            script: Some(load::write_token_script(lab, "full", &tokens.full)?),
            ..Target::new("full", "moat full", true, FULL, Moat)
        },
    ])
}

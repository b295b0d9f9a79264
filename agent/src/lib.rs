//! Moat: kernel-enforced protection and audit for MCP servers. The `moat` binary is a thin
//! command line over [`app`]. The modules are the crate's own; what the binary, the benchmarks
//! and the integration tests use is re-exported below, and nothing else is public.
mod admin;
pub mod app;
mod approval;
mod audit;
mod auth;
mod authz;
mod background;
mod behaviour;
mod config;
mod conn_limits;
pub mod control;
pub mod doctor;
pub mod error;
mod events;
#[cfg(any(fuzzing, test))]
pub mod fuzz;
mod http;
mod idle;
mod inspect;
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
mod thirdparty;
mod tls;
mod upstream;
mod vault;
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

/// The built-in rules of content inspection (`moat inspect rules`): each one's `id`, `kind`,
/// `default` action and what it `finds`.
pub fn inspect_rules() -> serde_json::Value {
    vocab::RULES
        .iter()
        .map(|r| {
            serde_json::json!({
                "id": r.id,
                "kind": r.kind.name(),
                "default": r.action.name(),
                "finds": r.about,
            })
        })
        .collect()
}

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

    /// Behaviour scoring as a request pays it: one server's monitor over a store holding the
    /// learned baselines of many subjects.
    pub struct Scoring {
        monitor: crate::behaviour::Monitor,
        principals: Vec<Principal>,
        process: crate::vocab::Process,
        arguments: serde_json::Value,
    }

    /// 2026-01-05, a Monday.
    const START: u64 = 1_767_571_200;

    impl Scoring {
        /// A store in `state_dir` with the baselines of `n` subjects, each learned from 120
        /// calls over eight days; the monitor reads each from the store when first asked.
        pub fn new(state_dir: &std::path::Path, n: usize) -> Self {
            use std::sync::Arc;
            let store = Arc::new(crate::store::Store::open(state_dir).expect("a store"));
            let config = crate::config::Behaviour {
                mode: crate::config::BehaviourMode::Enforce,
                ..crate::config::Behaviour::default()
            };
            let monitor =
                || crate::behaviour::Monitor::new("files", config, store.clone()).expect("on");
            let mut s = Self {
                monitor: monitor(),
                principals: (0..n)
                    .map(|i| Principal {
                        sub: format!("user-{i}@example.com"),
                        client_id: Some(format!("client-{}", i % 50)),
                        iss: "https://idp.example.com".into(),
                        scopes: vec!["mcp:tools".into()],
                        claims: serde_json::Map::new(),
                    })
                    .collect(),
                process: crate::vocab::Process {
                    pid: 4242,
                    uid: 1000,
                    gid: 1000,
                    comm: "python3".into(),
                    cgroup_id: 7,
                },
                arguments: serde_json::json!({"path": "/srv/data/report.txt", "limit": 20}),
            };
            // Every 96 minutes for eight days: every hour of the day, every weekday.
            for k in 0..120 {
                for i in 0..n {
                    s.score(i, START + k * 96 * 60);
                }
            }
            s.monitor.flush().expect("baselines written");
            s.monitor = monitor();
            s
        }

        /// Judges and settles one `tools/call` of subject `i` at `at` (seconds); its score.
        pub fn score(&self, i: usize, at: u64) -> u32 {
            let p = &self.principals[i % self.principals.len()];
            let event = crate::behaviour::Event {
                at,
                action: "tools/call",
                target: Some((Target::Tool, "read_file")),
                arguments: Some(&self.arguments),
                address: std::net::IpAddr::from([10, 0, (i >> 8) as u8, i as u8]),
                process: Some(&self.process),
            };
            let a = self.monitor.judge(&p.sub, [event]);
            self.monitor.settle(p, [event], &a, true);
            a.score
        }

        /// A time after the baselines' learning, `minutes` on.
        pub fn later(minutes: u64) -> u64 {
            START + 9 * 86_400 + minutes * 60
        }
    }

    /// Content inspection as a result pays it: a server's rules with `inspect: {}` (every
    /// built-in rule, its default action).
    pub struct Inspecting(crate::inspect::Inspector);

    impl Default for Inspecting {
        fn default() -> Self {
            let config = crate::config::Inspect {
                arguments: true,
                results: true,
                max_size: 4 << 20,
                rules: Default::default(),
                custom: Vec::new(),
                allow: Vec::new(),
                tools: Default::default(),
            };
            Self(crate::inspect::Inspector::new(&config).expect("the built-in rules compile"))
        }
    }

    impl Inspecting {
        /// Inspects a `tools/call` result message as it passes (redacting in place); how
        /// many findings it had.
        pub fn result(&self, message: &mut serde_json::Value) -> usize {
            let o = self.0.response(Some("read"), message);
            o.found.findings.len() + o.found.more
        }
    }
}

/// Resource URI normalisation, as Moat decides on it (for the differential tests).
pub use crate::mcp::uri;

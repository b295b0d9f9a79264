//! `cargo xtask bench <steer | proxy | audit | streams | integrity | behaviour | inspect>`: picks the benchmark, and holds what
//! they share: the machine line of their reports and the MCP request they send.
//!
//! The benchmarks: `steer` (what steering costs: new connections to other ports, and a new
//! connection through the proxy), `proxy` (the proxy's throughput and cost per request),
//! `audit` (what writing the audit log to disk costs), `streams` (what long-lived event
//! streams cost: memory, CPU, latency, and behaviour at the connection limit), `integrity`
//! (what checking a list result against pins adds) and `behaviour` (what scoring a request
//! against its subject's baseline costs; `proxy` reports it too) and `inspect` (what content
//! inspection costs a result; `proxy` reports it too, against its own CPU per request).
pub mod behaviour;
pub mod inspect;
mod integrity;
pub mod proxy;
mod stats;
mod steer;
pub mod streams;

use std::{fmt, path::Path, process::Command};

use crate::{Result, sh};

/// Runs the criterion bench `name` of the agent (`agent/benches/NAME.rs`).
fn run_criterion(name: &str) -> Result {
    sh(
        Command::new(env!("CARGO"))
            .args(["bench", "-p", "moat", "--bench", name, "--", "--noplot"]),
    )
}

/// The median of criterion's last run of `id` in `group`, in µs.
fn median_us(group: &str, id: &str) -> Result<f64> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/criterion")
        .join(group)
        .join(id)
        .join("new/estimates.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    v["median"]["point_estimate"]
        .as_f64()
        .map(|ns| ns / 1e3)
        .ok_or_else(|| format!("{}: no median", path.display()))
}

const USAGE: &str = "usage: cargo xtask bench <steer | proxy [--baseline <git ref>] [--rounds <n>] [--profile] | audit | streams [--streams <n,...>] [--targets direct,http,https] [--period-ms <ms>] [--measure-s <s>] | integrity | behaviour | inspect>";

/// The MCP request both benchmarks send: a `tools/call` the proxy admits and forwards.
const MCP_CALL: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#;

pub fn run(args: &[String]) -> Result {
    match args {
        [a] if a == "steer" => steer::run(),
        [a, rest @ ..] if a == "proxy" => proxy::run(rest),
        [a] if a == "audit" => proxy::audit::run(),
        [a, rest @ ..] if a == "streams" => streams::run(rest),
        [a] if a == "integrity" => integrity::run(),
        [a] if a == "behaviour" => behaviour::run(),
        [a] if a == "inspect" => inspect::run(),
        _ => Err(USAGE.into()),
    }
}

/// MCP_CALL as an HTTP/1.1 POST to /mcp, with `host` as its Host header.
fn mcp_post(host: &str) -> Vec<u8> {
    format!(
        "POST /mcp HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\n\r\n{MCP_CALL}",
        MCP_CALL.len()
    )
    .into_bytes()
}

/// The machine a report describes: the kernel release and the CPUs this process may use.
/// Displays as `Linux <release>, <n> CPUs`.
struct Machine {
    kernel: String,
    cpus: usize,
}

impl Machine {
    fn new() -> Self {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        Self {
            kernel: kernel.trim().to_owned(),
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        }
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Linux {}, {} CPUs", self.kernel, self.cpus)
    }
}

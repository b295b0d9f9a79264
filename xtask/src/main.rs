//! `cargo xtask`: set up the toolchain, run the demo, check the module graph, run the tests,
//! the benchmarks and the fuzz targets.
mod bench;
mod demo;
mod deps;
mod fixtures;
mod fuzz;
mod host;
mod setup;

use std::process::{Command, ExitCode};

const USAGE: &str = "usage: cargo xtask <setup | demo | deps | test [cargo test args] | bench <steer | proxy [--baseline <git ref>] [--rounds <n>] [--profile] | audit | streams [...]> | fuzz [TARGET] [--time S] [--jobs N] | soak [--minutes N]>";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup::run(),
        Some("demo") => setup::run().and_then(|()| demo::run()),
        Some("deps") => deps::run(&args[1..]),
        // The module graph first: it takes a second, the tests take minutes.
        Some("test") => deps::check()
            .and_then(|()| setup::run())
            .and_then(|()| test(&args[1..])),
        Some("bench") => setup::run().and_then(|()| bench::run(&args[1..])),
        Some("fuzz") => fuzz::run(&args[1..]),
        Some("soak") => setup::run().and_then(|()| bench::proxy::soak::run(&args[1..])),
        // Internal: the upstream server and the latency client of `bench proxy`, which runs
        // them (release build).
        Some(bench::proxy::UPSTREAM_CMD) => bench::proxy::serve_upstream(&args[1..]),
        Some(bench::proxy::LATENCY_CMD) => bench::proxy::latency_client(&args[1..]),
        // Internal: the upstream server and the client of `bench streams`.
        Some(bench::streams::UPSTREAM_CMD) => bench::streams::serve_upstream(&args[1..]),
        Some(bench::streams::CLIENT_CMD) => bench::streams::run_client(&args[1..]),
        _ => Err(USAGE.into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

pub type Result<T = ()> = std::result::Result<T, String>;

/// Runs a command, failing with its name when it fails.
pub fn sh(cmd: &mut Command) -> Result {
    let status = cmd.status().map_err(|e| format!("{cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed: {status}"))
    }
}

/// Unit tests, then the privileged end-to-end tests (root: network namespaces, kernel programs).
fn test(extra: &[String]) -> Result {
    if !nix::unistd::geteuid().is_root() {
        return Err(
            "the tests load kernel programs and create network namespaces: run as root".into(),
        );
    }
    // As root every privileged test runs; should one ever find it is not root, it fails
    // rather than skip.
    sh(Command::new(env!("CARGO"))
        .args(["test", "--workspace", "--exclude", "agent-ebpf"])
        .env("MOAT_REQUIRE_PRIVILEGED", "1")
        .args(extra))
}

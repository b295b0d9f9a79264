//! Installs what building and testing Moat needs, when it is missing: LLVM 22, rust-src,
//! bpf-linker, cargo-deb, a mounted bpffs, the real MCP clients and servers of the tests (`fixtures`).
//! Fast when everything is present.
use std::{path::Path, process::Command};

use crate::{Result, sh};

const LLVM: &str = "/usr/lib/llvm-22";
const APT: &[&str] = &[
    "llvm-22-dev",
    "iproute2",
    "util-linux",
    "python3",
    "python3-venv",
    "curl",
    // The syslog sink's tests hand records to a real rsyslog.
    "rsyslog",
    // promtool, which checks the agent's /metrics in the tests (its service is not started
    // where there is no init system; apt-get succeeds either way).
    "prometheus",
    // The headless browser (/usr/bin/chromium, driven by npm playwright-core) that logs in
    // through the authorization server's HTML pages in the OAuth tests.
    "chromium",
];

pub fn run() -> Result {
    apt()?;
    rust_src()?;
    bpf_linker()?;
    cargo_deb()?;
    bpffs()?;
    crate::fixtures::install()
}

fn have(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn apt() -> Result {
    let missing: Vec<&str> = APT
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask setup: installing {}", missing.join(" "));
    sh(Command::new("apt-get").args(["update", "-qq"]))?;
    sh(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn rust_src() -> Result {
    let out = Command::new("rustup")
        .args(["component", "list", "--installed"])
        .output()
        .map_err(|e| format!("rustup: {e}"))?;
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.starts_with("rust-src"))
    {
        return Ok(());
    }
    sh(Command::new("rustup").args(["component", "add", "rust-src"]))
}

fn bpf_linker() -> Result {
    if have("bpf-linker", "--version") {
        return Ok(());
    }
    eprintln!("xtask setup: building bpf-linker (about 2 minutes)");
    sh(Command::new(env!("CARGO"))
        .args([
            "install",
            "bpf-linker",
            "--locked",
            "--no-default-features",
            "--features",
            "llvm-22",
        ])
        .env("LLVM_PREFIX", LLVM))
}

/// cargo-deb, which the package test builds the Debian package with (a pinned version: the
/// test builds it from the dev profile's binary).
fn cargo_deb() -> Result {
    let ok = Command::new(env!("CARGO"))
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Ok(());
    }
    eprintln!("xtask setup: building cargo-deb (about a minute)");
    sh(
        Command::new(env!("CARGO")).args([
            "install",
            "cargo-deb",
            "--version",
            "3.8.0",
            "--locked",
        ]),
    )
}

fn bpffs() -> Result {
    let mounts =
        std::fs::read_to_string("/proc/mounts").map_err(|e| format!("/proc/mounts: {e}"))?;
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("bpf"))
    {
        return Ok(());
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "xtask setup: no bpffs mounted; `moat run` needs one (as root: mount -t bpf bpf /sys/fs/bpf)"
        );
        return Ok(());
    }
    std::fs::create_dir_all("/sys/fs/bpf").map_err(|e| format!("/sys/fs/bpf: {e}"))?;
    if Path::new("/sys/fs/bpf").exists() {
        sh(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))?;
    }
    Ok(())
}

//! `moat doctor`: checks the kernel and the host for everything Moat needs (kernel version and
//! BTF, cgroup2 and bpffs, the privileges to load its programs, each program through the
//! kernel's verifier, the upstream ports kept out of automatic choice, a synchronised clock) and, with a config, what it names (certificates, the
//! reachability of each server's token issuer); prints what is missing and how to fix it.
use std::{path::Path, time::Duration};

use serde::Serialize;
use serde_json::Value;

use crate::config::{Config, Issuer};

/// How one check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    /// Works, but something is off (said in the detail).
    Warn,
    /// Moat cannot run (or protect) without it.
    Missing,
}

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub outcome: Outcome,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn check(name: &str, outcome: Outcome, detail: impl Into<String>, fix: Option<&str>) -> Check {
    Check {
        name: name.into(),
        outcome,
        detail: detail.into(),
        fix: fix.map(str::to_string),
    }
}

/// The oldest kernel with what Moat's programs use (sk_lookup and `bpf_sk_assign` there).
const KERNEL: (u32, u32) = (5, 9);

/// Every check, the host's first, then the config's.
pub async fn run(config: Option<&Config>) -> Vec<Check> {
    let mut out = vec![
        kernel(),
        btf(),
        cgroup2(),
        bpffs(config),
        privileges(),
        clock(),
    ];
    out.extend(programs());
    out.push(bpf_lsm());
    if let Some(c) = config {
        out.push(reserved_ports(c));
        out.extend(certificates(c));
        out.extend(issuers(c).await);
    }
    out
}

fn kernel() -> Check {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let release = release.trim();
    let mut parts = release.split(['.', '-']).map(|p| p.parse::<u32>().ok());
    let version = (parts.next().flatten(), parts.next().flatten());
    match version {
        (Some(a), Some(b)) if (a, b) >= KERNEL => check("kernel", Outcome::Ok, release, None),
        _ => check(
            "kernel",
            Outcome::Missing,
            format!("Linux {release}: sk_lookup needs 5.9 or later"),
            Some("run Moat on Linux 5.9 or later (6.x is tested)"),
        ),
    }
}

fn btf() -> Check {
    if Path::new("/sys/kernel/btf/vmlinux").exists() {
        check("btf", Outcome::Ok, "/sys/kernel/btf/vmlinux", None)
    } else {
        check(
            "btf",
            Outcome::Warn,
            "no /sys/kernel/btf/vmlinux: the kernel was built without BTF",
            Some(
                "a kernel with CONFIG_DEBUG_INFO_BTF=y (Moat's programs load without it, diagnostics are poorer)",
            ),
        )
    }
}

/// The mount points of file systems of type `fstype`.
fn mounts(fstype: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, dir, t) = (f.next()?, f.next()?, f.next()?);
            (t == fstype).then(|| dir.to_string())
        })
        .collect()
}

fn cgroup2() -> Check {
    match mounts("cgroup2").first() {
        Some(dir) => check("cgroup2", Outcome::Ok, format!("mounted at {dir}"), None),
        None => check(
            "cgroup2",
            Outcome::Missing,
            "no cgroup2 file system: the bind guard and the local process identity attach there",
            Some("mount -t cgroup2 none /sys/fs/cgroup (or boot with systemd's unified hierarchy)"),
        ),
    }
}

fn bpffs(config: Option<&Config>) -> Check {
    let found = mounts("bpf");
    let want = config.map(|c| c.agent.bpffs.clone());
    let covered = |p: &Path| found.iter().any(|m| p.starts_with(m));
    match (found.first(), want) {
        (None, _) => check(
            "bpffs",
            Outcome::Missing,
            "no bpf file system: Moat pins its programs and maps there, so the ports stay closed while it is down",
            Some("mount -t bpf bpf /sys/fs/bpf"),
        ),
        (Some(_), Some(w)) if !covered(&w) => check(
            "bpffs",
            Outcome::Missing,
            format!(
                "agent.bpffs {} is not on a bpf file system ({})",
                w.display(),
                found.join(", ")
            ),
            Some("set agent.bpffs to a directory under a bpf mount, e.g. /sys/fs/bpf/moat"),
        ),
        (Some(m), _) => check("bpffs", Outcome::Ok, format!("mounted at {m}"), None),
    }
}

/// Moat loads programs (CAP_BPF or CAP_SYS_ADMIN), attaches to cgroups and changes network
/// settings (CAP_NET_ADMIN), and names local processes (CAP_PERFMON or CAP_SYS_ADMIN).
fn privileges() -> Check {
    let lacking = lacking_capabilities();
    if lacking.is_empty() {
        check(
            "privileges",
            Outcome::Ok,
            "may load and attach Moat's programs",
            None,
        )
    } else {
        check(
            "privileges",
            Outcome::Missing,
            format!("this process lacks {}", lacking.join(", ")),
            Some("run `moat run` as root, or with CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON"),
        )
    }
}

/// The capabilities Moat needs that this process's effective set lacks.
fn lacking_capabilities() -> Vec<&'static str> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let caps = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |bit: u32| caps & (1u64 << bit) != 0;
    let (net_admin, sys_admin, perfmon, bpf) = (has(12), has(21), has(38), has(39));
    let mut lacking = Vec::new();
    if !(bpf || sys_admin) {
        lacking.push("CAP_BPF");
    }
    if !net_admin {
        lacking.push("CAP_NET_ADMIN");
    }
    if !(perfmon || sys_admin) {
        lacking.push("CAP_PERFMON");
    }
    lacking
}

fn privileged() -> bool {
    lacking_capabilities().is_empty()
}

/// Each of Moat's programs loaded through the kernel's verifier (not attached): proof that
/// this kernel has the program types and helpers they use, beyond what its version says.
fn programs() -> Vec<Check> {
    if !privileged() {
        return vec![check(
            "programs",
            Outcome::Warn,
            "not checked: loading them needs the privileges above",
            Some("run `moat doctor` as root"),
        )];
    }
    crate::steer::probe()
        .into_iter()
        .map(|(program, kind, loaded)| {
            let name = format!("program {program} ({kind})");
            match loaded {
                Ok(()) => check(&name, Outcome::Ok, "the kernel accepts it (loaded, not attached)", None),
                Err(e) if crate::steer::optional(program) => check(
                    &name,
                    Outcome::Warn,
                    format!("not loadable: {e}; tampering with the links is then seen by `moat status` and /readyz only"),
                    Some(lsm_fix(&e, lsm_active())),
                ),
                Err(e) => check(
                    &name,
                    Outcome::Missing,
                    format!("not loadable: {e}"),
                    Some("a kernel with sk_lookup, cgroup bind hooks and sock_ops (5.9 or later, with BTF), bpf not restricted by lockdown"),
                ),
            }
        })
        .collect()
}

/// What to do when the kernel refuses the BPF LSM program. A refusal with EPERM to a process
/// that may load programs, with `bpf` among the LSMs, comes before the verifier: such kernels
/// refuse every program attached through BTF (lsm, tracing, ext), a restriction of their
/// build or host that no setting changes.
fn lsm_fix(error: &str, active: Option<bool>) -> &'static str {
    if error.contains("os error 1)") && active == Some(true) {
        "none on this host: its kernel refuses every BTF-attached program type (lsm, tracing, \
         ext) even to root, before verifying it (`bpftool feature probe kernel` says `lsm is NOT \
         available`); a kernel without that restriction records tampering"
    } else {
        "a kernel with CONFIG_BPF_LSM and `bpf` among its LSMs (lsm=...,bpf on the kernel command line)"
    }
}

/// Whether `bpf` is among the active LSMs; `None` when securityfs cannot be read.
fn lsm_active() -> Option<bool> {
    active_lsms().ok().map(|list| has_bpf(&list))
}

/// The kernel's active LSMs, comma-separated.
fn active_lsms() -> std::io::Result<String> {
    std::fs::read_to_string("/sys/kernel/security/lsm").map(|l| l.trim().to_string())
}

fn has_bpf(list: &str) -> bool {
    list.split(',').any(|l| l == "bpf")
}

/// The BPF LSM, which records attempts to detach or replace Moat's programs.
fn bpf_lsm() -> Check {
    let fix =
        Some("boot with `bpf` among the LSMs (kernel command line lsm=...,bpf; CONFIG_BPF_LSM)");
    match active_lsms() {
        Ok(list) if has_bpf(&list) => {
            check("bpf lsm", Outcome::Ok, format!("active ({list})"), None)
        }
        Ok(list) => check(
            "bpf lsm",
            Outcome::Warn,
            format!(
                "not among the active LSMs ({list}): tampering with the links is seen by `moat status` and /readyz only"
            ),
            fix,
        ),
        Err(e) => check(
            "bpf lsm",
            Outcome::Warn,
            format!("cannot tell (/sys/kernel/security/lsm: {e}; securityfs not mounted?)"),
            Some("mount -t securityfs securityfs /sys/kernel/security"),
        ),
    }
}

/// Token lifetimes (`exp`, `nbf`) and audit timestamps need the right time.
fn clock() -> Check {
    // SAFETY: `timex` is a plain C struct of integers, for which all zeroes is a valid value.
    let mut t: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: with `modes` 0, adjtimex only reads the kernel's clock state into `t`, a valid
    // exclusive reference for the call.
    let state = unsafe { libc::adjtimex(&mut t) };
    if state == libc::TIME_ERROR || t.status & libc::STA_UNSYNC != 0 {
        check(
            "clock",
            Outcome::Warn,
            "the clock is not synchronised: tokens' exp and nbf are judged by it",
            Some("run an NTP client (systemd-timesyncd, chrony)"),
        )
    } else {
        check("clock", Outcome::Ok, "synchronised", None)
    }
}

fn reserved_ports(c: &Config) -> Check {
    let range = c.agent.upstream_ports.to_string();
    let current =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_reserved_ports").unwrap_or_default();
    if current.trim().split(',').any(|e| e.trim() == range) {
        check(
            "reserved_ports",
            Outcome::Ok,
            format!("{range} reserved"),
            None,
        )
    } else {
        check(
            "reserved_ports",
            Outcome::Warn,
            format!(
                "{range} is not in net.ipv4.ip_local_reserved_ports yet (moat run adds it when it starts)"
            ),
            Some(&format!(
                "sysctl -w net.ipv4.ip_local_reserved_ports={range} (and in /etc/sysctl.d/ to keep it)"
            )),
        )
    }
}

fn certificates(c: &Config) -> Vec<Check> {
    c.servers
        .iter()
        .filter(|s| !s.tls.certs.is_empty())
        .map(|s| match crate::tls::ServerTls::load(&s.tls.certs) {
            Ok(_) => check(&format!("certificates {}", s.name), Outcome::Ok, "load", None),
            Err(e) => check(
                &format!("certificates {}", s.name),
                Outcome::Missing,
                e.to_string(),
                Some("fix servers[].tls (PEM certificate chain and its private key, readable by Moat)"),
            ),
        })
        .collect()
}

/// Each remote issuer's JWKS (what every token is checked against) can be fetched.
async fn issuers(c: &Config) -> Vec<Check> {
    let mut out = Vec::new();
    for s in &c.servers {
        let Some(a) = &s.auth else { continue };
        let Issuer::Remote {
            jwks_uri: Some(uri),
            ..
        } = &a.issuer
        else {
            continue;
        };
        let name = format!("issuer {}", s.name);
        let fetched = async {
            let client = crate::auth::fetch::client(a.ca_file.as_deref())?;
            let r = client.get(uri).send().await.map_err(|e| e.to_string())?;
            if !r.status().is_success() {
                return Err(format!("answered {}", r.status()));
            }
            let v: Value = r.json().await.map_err(|e| e.to_string())?;
            v["keys"]
                .as_array()
                .map(Vec::len)
                .ok_or_else(|| "not a JWKS".to_string())
        };
        out.push(
            match tokio::time::timeout(Duration::from_secs(10), fetched).await {
                Ok(Ok(n)) => check(&name, Outcome::Ok, format!("{uri}: {n} keys"), None),
                Ok(Err(e)) => check(
                    &name,
                    Outcome::Missing,
                    format!("{uri}: {e}"),
                    Some("check auth.jwks_uri and auth.ca_file, and that this host reaches the issuer"),
                ),
                Err(_) => check(
                    &name,
                    Outcome::Missing,
                    format!("{uri}: no answer in 10 s"),
                    Some("check that this host reaches the issuer"),
                ),
            },
        );
    }
    out
}

/// The report, one line per check.
pub fn text(checks: &[Check]) -> String {
    let mut s = String::new();
    for c in checks {
        let mark = match c.outcome {
            Outcome::Ok => "ok     ",
            Outcome::Warn => "warn   ",
            Outcome::Missing => "MISSING",
        };
        s.push_str(&format!("{mark} {}: {}\n", c.name, c.detail));
        if let Some(f) = &c.fix {
            s.push_str(&format!("        fix: {f}\n"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::lsm_fix;

    const EPERM: &str =
        "the kernel refused it before verifying it (Operation not permitted (os error 1))";

    #[test]
    fn a_refusal_with_the_bpf_lsm_active_is_the_kernels_own_restriction() {
        assert!(lsm_fix(EPERM, Some(true)).starts_with("none on this host"));
    }

    #[test]
    fn otherwise_the_fix_is_to_enable_the_bpf_lsm() {
        for (error, active) in [
            (EPERM, Some(false)),
            (EPERM, None),
            ("Invalid argument (os error 22)", Some(true)),
        ] {
            assert!(
                lsm_fix(error, active).contains("lsm=...,bpf"),
                "{error} {active:?}"
            );
        }
    }
}

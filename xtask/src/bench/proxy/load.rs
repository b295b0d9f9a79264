//! The load of `bench proxy`: wrk runs (installing wrk on first use) and rounds of the latency
//! client, each with what the agent, wrk and the upstream spent on it.
use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use serde_json::Value;

use super::{
    LAT_SAMPLES, Proxy, Target,
    client::LATENCY_CMD,
    usage::{Audit, PerRequest, Usage, children_cpu_us, proc_cpu_us, proc_status_kib},
};
use crate::{
    Result,
    bench::{
        MCP_CALL,
        stats::{median, median_by},
    },
    host::Lab,
    sh,
};

/// wrk: a static POST (built once, no Lua per request) and one JSON line with the summary.
const WRK_LUA: &str = r#"
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.body = '__BODY__'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"errors":%d,"status_errors":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"#;

/// One wrk run.
#[derive(Clone, Default)]
pub struct Run {
    /// Responses with a 2xx/3xx status, and their rate.
    pub ok: u64,
    pub rps: f64,
    /// Responses with another status, and connect/read/write/timeout errors.
    pub bad_status: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Per answered request, the proxy's (Moat's or HAProxy's; none for direct): CPU time,
    /// user and system, and context switches.
    pub proxy_us: Option<f64>,
    pub proxy_user_us: Option<f64>,
    pub proxy_sys_us: Option<f64>,
    pub proxy_cs: Option<f64>,
    /// The CPU time of wrk and of the upstream per answered request.
    pub gen_us: f64,
    pub upstream_us: f64,
    /// The proxy's VmRSS after the run, KiB.
    pub rss_kib: Option<u64>,
}

impl Run {
    /// The runs taken together: the medians of the rates, times and costs, the sums of the
    /// counts, and the largest RSS.
    pub fn combined(runs: &[Run]) -> Run {
        let opt = |f: fn(&Run) -> Option<f64>| {
            let v: Vec<f64> = runs.iter().filter_map(f).collect();
            (!v.is_empty()).then(|| median(&v))
        };
        Run {
            ok: runs.iter().map(|r| r.ok).sum(),
            rps: median_by(runs, |r| r.rps),
            bad_status: runs.iter().map(|r| r.bad_status).sum(),
            errors: runs.iter().map(|r| r.errors).sum(),
            p50_ms: median_by(runs, |r| r.p50_ms),
            p99_ms: median_by(runs, |r| r.p99_ms),
            proxy_us: opt(|r| r.proxy_us),
            proxy_user_us: opt(|r| r.proxy_user_us),
            proxy_sys_us: opt(|r| r.proxy_sys_us),
            proxy_cs: opt(|r| r.proxy_cs),
            gen_us: median_by(runs, |r| r.gen_us),
            upstream_us: median_by(runs, |r| r.upstream_us),
            rss_kib: runs.iter().filter_map(|r| r.rss_kib).max(),
        }
    }
}

/// One round of the latency client: per target.
#[derive(Clone, Default)]
pub struct LatRound {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub samples: u64,
    /// Requests sent, warm-up included, and failed ones.
    pub calls: u64,
    pub errors: u64,
}

impl LatRound {
    /// The rounds taken together: the medians of the percentiles, the sums of the counts.
    pub fn combined(rounds: &[LatRound]) -> LatRound {
        LatRound {
            p50_ms: median_by(rounds, |r| r.p50_ms),
            p90_ms: median_by(rounds, |r| r.p90_ms),
            p99_ms: median_by(rounds, |r| r.p99_ms),
            samples: rounds.iter().map(|r| r.samples).sum(),
            calls: rounds.iter().map(|r| r.calls).sum(),
            errors: rounds.iter().map(|r| r.errors).sum(),
        }
    }
}

pub struct Bench<'a> {
    pub lab: &'a Lab,
    /// The wrk script (`write_script`).
    pub script: &'a Path,
    /// The release build of this program (the latency client).
    pub xtask: &'a Path,
    /// The CA of Moat's certificate, for the latency client.
    pub ca: PathBuf,
    pub agent: u32,
    /// HAProxy's pid, where it runs.
    pub haproxy: Option<u32>,
    /// The upstream server's pid.
    pub upstream: u32,
    pub audit: Audit,
}

impl Bench<'_> {
    /// The pid of the process that proxies `t`, if any.
    fn proxy_of(&self, t: &Target) -> Option<u32> {
        match t.proxy {
            Proxy::None => None,
            Proxy::Moat => Some(self.agent),
            Proxy::Haproxy => self.haproxy,
        }
    }

    /// One wrk run against `t`, with what the proxy, wrk and the upstream spent on it.
    pub fn wrk(&self, t: &Target, conns: u32, secs: u32) -> Result<Run> {
        let proxy = self.proxy_of(t);
        let proxy0 = proxy.and_then(Usage::of);
        let upstream_stat = format!("/proc/{}/stat", self.upstream);
        let up0 = proc_cpu_us(&upstream_stat).unwrap_or(f64::NAN);
        let gen0 = children_cpu_us();
        let out = self
            .lab
            .command("wrk")
            .args(["-t1", &format!("-c{conns}"), &format!("-d{secs}s")])
            .args(["--timeout", "2s", "-s"])
            .arg(t.script.as_deref().unwrap_or(self.script))
            .arg(&t.url)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("wrk: {e}"))?;
        let gen_us = children_cpu_us() - gen0;
        let upstream_us = proc_cpu_us(&upstream_stat).unwrap_or(f64::NAN) - up0;
        let proxy1 = proxy.and_then(Usage::of);
        let summary = last_json(&out, &format!("wrk {} gave no summary", t.url))?;
        let n = |k: &str| summary[k].as_u64().unwrap_or(0);
        let (requests, bad_status) = (n("requests"), n("status_errors"));
        let ok = requests.saturating_sub(bad_status);
        let per = |x: f64| x / ok.max(1) as f64;
        let used = proxy0.zip(proxy1).map(|(a, b)| b.per_request(a, ok));
        let rss_kib = proxy.and_then(|p| proc_status_kib(p, "VmRSS"));
        if t.moat() {
            self.audit.collect(&self.lab.audit);
        }
        Ok(Run {
            ok,
            rps: ok as f64 / (n("duration_us").max(1) as f64 / 1e6),
            bad_status,
            errors: n("errors"),
            p50_ms: n("p50_us") as f64 / 1e3,
            p99_ms: n("p99_us") as f64 / 1e3,
            proxy_us: used.map(|u| u.cpu_us),
            proxy_user_us: used.map(|u| u.user_us),
            proxy_sys_us: used.map(|u| u.sys_us),
            proxy_cs: used.map(|u| u.switches),
            gen_us: per(gen_us),
            upstream_us: per(upstream_us),
            rss_kib,
        })
    }

    /// One round of the latency client against all targets, and what the agent spent per
    /// request through it.
    pub fn latency(&self, targets: &[Target]) -> Result<(Vec<LatRound>, PerRequest)> {
        let agent0 = Usage::of(self.agent);
        let out = self
            .lab
            .command(self.xtask)
            .arg(LATENCY_CMD)
            .arg(&self.ca)
            .arg(LAT_SAMPLES.to_string())
            .args(targets.iter().map(|t| &t.spec))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("latency client: {e}"))?;
        let agent1 = Usage::of(self.agent);
        let report = last_json(&out, "the latency client failed")?;
        let rounds: Vec<LatRound> = report["targets"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|t| LatRound {
                        p50_ms: t["p50_us"].as_f64().unwrap_or(f64::NAN) / 1e3,
                        p90_ms: t["p90_us"].as_f64().unwrap_or(f64::NAN) / 1e3,
                        p99_ms: t["p99_us"].as_f64().unwrap_or(f64::NAN) / 1e3,
                        samples: t["samples"].as_u64().unwrap_or(0),
                        calls: t["calls"].as_u64().unwrap_or(0),
                        errors: t["errors"].as_u64().unwrap_or(0),
                    })
                    .collect()
            })
            .unwrap_or_default();
        if rounds.len() != targets.len() {
            return Err(format!("the latency client reported {report}"));
        }
        let through_moat: u64 = targets
            .iter()
            .zip(&rounds)
            .filter(|(t, _)| t.moat())
            .map(|(_, r)| r.calls - r.errors)
            .sum();
        let usage = agent0
            .zip(agent1)
            .map(|(a, b)| b.per_request(a, through_moat))
            .unwrap_or(PerRequest::UNKNOWN);
        self.audit.collect(&self.lab.audit);
        Ok((rounds, usage))
    }
}

/// The last line of `out`'s stdout that is JSON; without one, an error: `what`, then the exit
/// status and the output.
fn last_json(out: &Output, what: &str) -> Result<Value> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| {
            format!(
                "{what} ({}): {} {}",
                out.status,
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })
}

/// Writes the wrk script into the lab's directory, and returns its path.
pub fn write_script(lab: &Lab) -> Result<PathBuf> {
    let script = lab.dir.join("bench-proxy.lua");
    std::fs::write(&script, WRK_LUA.replace("__BODY__", MCP_CALL)).map_err(|e| e.to_string())?;
    Ok(script)
}

/// A wrk script that sends `token` with every request; `name` names its file.
pub fn write_token_script(lab: &Lab, name: &str, token: &str) -> Result<PathBuf> {
    let script = lab.dir.join(format!("bench-proxy-{name}.lua"));
    let lua = WRK_LUA.replace("__BODY__", MCP_CALL)
        + &format!("wrk.headers[\"Authorization\"] = \"Bearer {token}\"\n");
    std::fs::write(&script, lua).map_err(|e| e.to_string())?;
    Ok(script)
}

/// A wrk script that sends the tokens of `tokens` (one per line) in turn, a different one with
/// each request; `name` names its files.
pub fn write_tokens_script(lab: &Lab, name: &str, tokens: &[String]) -> Result<PathBuf> {
    let list = lab.dir.join(format!("bench-proxy-{name}.txt"));
    std::fs::write(&list, tokens.join("\n") + "\n").map_err(|e| e.to_string())?;
    let script = lab.dir.join(format!("bench-proxy-{name}.lua"));
    let lua = WRK_LUA.replace("__BODY__", MCP_CALL)
        + &format!(
            r#"local tokens = {{}}
for line in io.lines("{}") do tokens[#tokens + 1] = line end
local i = 0
request = function()
  i = i + 1
  wrk.headers["Authorization"] = "Bearer " .. tokens[(i % #tokens) + 1]
  return wrk.format()
end
"#,
            list.display()
        );
    std::fs::write(&script, lua).map_err(|e| e.to_string())?;
    Ok(script)
}

/// The binary `name`, installed from Debian's `package` on first use (wrk, haproxy: not by
/// `cargo xtask setup`, only this benchmark needs them).
pub fn ensure_apt(name: &str, package: &str) -> Result<PathBuf> {
    let found = || {
        std::env::var_os("PATH").and_then(|p| {
            std::env::split_paths(&p)
                .chain(["/usr/sbin".into(), "/sbin".into()])
                .map(|d| d.join(name))
                .find(|f| f.is_file())
        })
    };
    if let Some(w) = found() {
        return Ok(w);
    }
    eprintln!("xtask bench proxy: installing {package} (apt)");
    let install = || {
        sh(Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends", package])
            .env("DEBIAN_FRONTEND", "noninteractive"))
    };
    if install().is_err() {
        sh(Command::new("apt-get").args(["update", "-qq"]))?;
        install()?;
    }
    found().ok_or_else(|| format!("{name} is not on PATH after installing {package}"))
}

pub fn wrk_version(wrk: &Path) -> String {
    // `wrk -v` prints its version and usage, and exits 1.
    Command::new(wrk)
        .arg("-v")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.split(" [").next().unwrap_or(l).trim().to_owned())
        })
        .unwrap_or_else(|| "wrk".into())
}

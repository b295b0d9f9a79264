//! `moat status`: what is attached and counted, read from the pins alone (so it works while
//! the agent is down), an agent running unprotected, and per server with `integrity` on how
//! its entries stand against their pins, and the lockdowns in force (both from the running
//! agent).
use std::path::Path;

use agent_common::HOST_COUNTERS;
use serde_json::{Value, json};

use crate::{
    config::{Config, IntegrityMode},
    error::AppError,
    listen,
    steer::{self, Kernel},
};

/// Status as JSON, read from the pins alone: works while the agent is down. With the config, an
/// agent running unprotected is named too (`unprotected`: its pid and listeners).
pub fn status(bpffs: &Path, config: Option<&Config>) -> Result<Value, AppError> {
    let mut s = kernel_status(bpffs, config)?;
    if let Some(agent) = config.and_then(|c| listen::plain::running(&c.agent.state_dir)) {
        s["unprotected"] = agent;
    }
    let integrity = config.filter(|c| {
        c.servers
            .iter()
            .any(|s| s.integrity.mode != IntegrityMode::Off)
    });
    if let Some(c) = integrity {
        // From the running agent (the store is the agent's while it runs, and opening it
        // here could keep one that is starting from opening it).
        s["integrity"] = match crate::control::ask(c, &crate::control::Request::ToolsCounts) {
            Some(Ok(v)) => v,
            Some(Err(e)) => json!({ "error": e }),
            None => json!({ "error": "no agent answers on the control socket" }),
        };
    }
    // The lockdowns in force, as the running agent has them.
    if let Some(Ok(l)) =
        config.and_then(|c| crate::control::ask(c, &crate::control::Request::Lockdowns))
    {
        s["lockdowns"] = l;
    }
    Ok(s)
}

fn kernel_status(bpffs: &Path, config: Option<&Config>) -> Result<Value, AppError> {
    let links: serde_json::Map<String, Value> = steer::LINKS
        .iter()
        .map(|l| ((*l).to_string(), bpffs.join(l).exists().into()))
        .collect();
    let kernel = match Kernel::open(bpffs, true) {
        Ok(k) => k,
        Err(steer::SteerError::NotAttached { .. }) => {
            return Ok(json!({ "bpffs": bpffs.display().to_string(), "attached": false }));
        }
        Err(e) => return Err(e.into()),
    };
    let settings = kernel.settings()?;
    let programs = kernel.verify();
    let agent_running =
        settings.agent_tgid != 0 && Path::new(&format!("/proc/{}", settings.agent_tgid)).exists();
    let host = kernel.counters(HOST_COUNTERS);
    let ports: Vec<Value> = kernel
        .ports()
        .into_iter()
        .map(|(port, id)| {
            let c = kernel.counters(port.into());
            let name = config
                .and_then(|c| c.server_by_port(port))
                .map(|s| s.name.clone());
            json!({
                "port": port, "server_id": id, "server": name,
                "steered": c.steered, "dropped": c.dropped, "passed": c.passed,
            })
        })
        .collect();
    let sealed: Vec<Value> = kernel
        .sealed()
        .into_iter()
        .map(|(port, id)| {
            let c = kernel.counters(port.into());
            let name = config
                .and_then(|c| c.server_by_upstream_port(port))
                .map(|s| s.name.clone());
            json!({
                "port": port, "server_id": id, "server": name,
                "blocked": c.blocked, "passed": c.passed,
            })
        })
        .collect();
    Ok(json!({
        "bpffs": bpffs.display().to_string(),
        "attached": links.values().all(|v| v == &Value::Bool(true)),
        "links": links,
        "programs": programs,
        "tampered": programs.iter().filter_map(steer::verify::LinkCheck::problem).collect::<Vec<_>>(),
        "proxy_socket": kernel.proxy_socket()?,
        "agent_pid": settings.agent_tgid,
        "agent_running": agent_running,
        "upstream_ports": format!("{}-{}", settings.upstream_port_lo, settings.upstream_port_hi),
        "bind_denied": host.bind_denied,
        "events_lost": host.events_lost,
        "ports": ports,
        "sealed": sealed,
    }))
}

/// Human-readable status.
pub fn status_text(s: &Value) -> String {
    let mut out = kernel_status_text(s);
    for l in s["lockdowns"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "LOCKED DOWN: {} (by {}, reason: {:?}); `moat unlock` lifts it\n",
            l["scope"].as_str().unwrap_or("?"),
            l["by"].as_str().unwrap_or("?"),
            l["reason"].as_str().unwrap_or(""),
        ));
    }
    if let Some(Value::Object(servers)) = s.get("integrity") {
        out.push_str(&format!(
            "{:<20} {:>8} {:>8} {:>8} {:>8}   (tool integrity)\n",
            "SERVER", "PINNED", "CHANGED", "UNPINNED", "FLAGGED"
        ));
        if let Some(e) = servers.get("error") {
            out.push_str(&format!("  unknown: {}\n", e.as_str().unwrap_or("?")));
        }
        for (name, c) in servers.iter().filter(|(k, _)| *k != "error") {
            let n = |k: &str| c[k].to_string();
            out.push_str(&format!(
                "{:<20} {:>8} {:>8} {:>8} {:>8}\n",
                name,
                n("pinned"),
                n("changed"),
                n("unpinned"),
                n("flagged")
            ));
        }
    }
    out
}

fn kernel_status_text(s: &Value) -> String {
    let mut out = format!("pins: {}\n", s["bpffs"].as_str().unwrap_or("?"));
    if let Some(u) = s.get("unprotected") {
        out.push_str(&format!(
            "agent: pid {} running UNPROTECTED (moat run --unprotected), plain listeners {}: \
             nothing is steered, sealed or guarded by the kernel\n",
            u["pid"], u["listeners"]
        ));
    }
    if s["attached"] != true && s.get("links").is_none() {
        out.push_str("not attached: no protected ports (run `moat run`)\n");
        return out;
    }
    let attached = if s["attached"] == true {
        "attached"
    } else {
        "PARTIALLY attached (run `moat detach`, then `moat run`)"
    };
    out.push_str(&format!("programs: {attached}\n"));
    let tampered = s["tampered"].as_array().map_or(&[][..], Vec::as_slice);
    if tampered.is_empty() && s["programs"].as_array().is_some_and(|p| !p.is_empty()) {
        out.push_str("program check: every link is attached and runs Moat's pinned program\n");
    }
    for t in tampered {
        out.push_str(&format!("TAMPERED: {}\n", t.as_str().unwrap_or("?")));
    }
    out.push_str(&match s["proxy_socket"].as_u64() {
        Some(c) => {
            format!("proxy socket: present (cookie {c}), connections are steered to the agent\n")
        }
        None => "proxy socket: ABSENT, connections to protected ports are dropped (fail closed)\n"
            .into(),
    });
    out.push_str(&format!(
        "agent: pid {} ({})\nupstream source ports: {}\nbind denied: {}   events lost: {}\n",
        s["agent_pid"],
        if s["agent_running"] == true {
            "running"
        } else {
            "not running"
        },
        s["upstream_ports"].as_str().unwrap_or("?"),
        s["bind_denied"],
        s["events_lost"],
    ));
    out.push_str(&format!(
        "{:<7} {:<20} {:>10} {:>10} {:>10}\n",
        "PORT", "SERVER", "STEERED", "DROPPED", "PASSED"
    ));
    for p in s["ports"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<7} {:<20} {:>10} {:>10} {:>10}\n",
            p["port"].to_string(),
            p["server"]
                .as_str()
                .map_or_else(|| format!("#{}", p["server_id"]), str::to_string),
            p["steered"].to_string(),
            p["dropped"].to_string(),
            p["passed"].to_string()
        ));
    }
    let sealed = s["sealed"].as_array().map_or(&[][..], Vec::as_slice);
    if !sealed.is_empty() {
        out.push_str(&format!(
            "{:<7} {:<20} {:>10} {:>10}\n",
            "SEALED", "UPSTREAM OF", "BLOCKED", "PASSED"
        ));
    }
    for p in sealed {
        out.push_str(&format!(
            "{:<7} {:<20} {:>10} {:>10}\n",
            p["port"].to_string(),
            p["server"]
                .as_str()
                .map_or_else(|| format!("#{}", p["server_id"]), str::to_string),
            p["blocked"].to_string(),
            p["passed"].to_string()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::status_text;

    #[test]
    fn integrity_counts_are_shown_in_columns_or_why_they_are_not() {
        let s = json!({"bpffs": "/sys/fs/bpf/moat", "attached": false,
            "integrity": {"files": {"pinned": 12, "changed": 1, "unpinned": 0, "flagged": 2}}});
        let text = status_text(&s);
        assert!(
            text.contains("files                      12        1        0        2\n"),
            "{text}"
        );
        let s = json!({"bpffs": "/x", "attached": false,
            "lockdowns": [{"scope": "server/files", "by": "uid 0 (root)", "reason": "incident"}],
            "integrity": {"error": "no agent answers on the control socket"}});
        assert!(
            status_text(&s).contains(
                "LOCKED DOWN: server/files (by uid 0 (root), reason: \"incident\"); `moat unlock` lifts it\n"
            ),
            "{}",
            status_text(&s)
        );
        assert!(
            status_text(&s).contains("  unknown: no agent answers on the control socket\n"),
            "{}",
            status_text(&s)
        );
    }
}

//! Privileged end-to-end test of the systemd unit's privileges: the agent, given only the
//! capabilities `packaging/moat.service` grants (and no new privileges), attaches its programs,
//! steers, seals, upgrades through the links and drains; nothing it does needs more.
mod common;

use common::*;

/// The unit's `CapabilityBoundingSet`, as setpriv takes it (`-all,+bpf,...`).
fn unit_capabilities() -> String {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../packaging/moat.service"
    ))
    .unwrap();
    let caps: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit bounds the capabilities")
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    assert!(!caps.is_empty() && !caps.contains(&"+sys_admin".to_string()));
    format!("-all,{}", caps.join(","))
}

#[test]
fn the_agent_needs_no_more_than_its_unit_grants() {
    if !privileged() {
        return;
    }
    let mut host = Host::new();
    let server = host.start_server(PORT);
    let bounding = unit_capabilities();
    let wrapper = ["setpriv", "--no-new-privs", "--bounding-set", &bounding];
    host.start_agent_under(&wrapper, &[]);
    let agent = host.agent_pid();
    let status = std::fs::read_to_string(format!("/proc/{agent}/status")).unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    assert_eq!(eff & (1 << 21), 0, "no CAP_SYS_ADMIN: {status}");

    let seen = host.ping_local().unwrap();
    assert!(in_reserved(seen), "steered and forwarded: {seen}");
    assert_eq!(server.count(), 1);
    assert_eq!(host.status()["tampered"], serde_json::json!([]));
    assert_eq!(host.admin_get("/readyz").0, 200);

    // Restarting under the same privileges adopts and checks the pins, and drains on stop.
    host.stop_agent();
    host.start_agent_under(&wrapper, &[]);
    let seen = host.ping_local().unwrap();
    assert!(in_reserved(seen));
    let started = host.wait_audit("the restart", |r| {
        r["event"] == "started" && r["adopted_pins"] == true
    });
    assert!(
        started["programs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["how"] == "kept"),
        "{started}"
    );
}

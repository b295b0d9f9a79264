//! The agent's memory: its heap is made of small pages, so an idle agent holds what it uses
//! (mimalloc asks for transparent huge pages, which keep 2 MiB resident per region touched).
mod common;

use common::*;

fn status_field(pid: i32, file: &str, key: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/{file}:\n{text}"))
        .trim()
        .to_string()
}

#[test]
fn the_agent_takes_no_transparent_huge_pages() {
    let mut host = Host::plain();
    host.start_server(host.upstream_port());
    host.start_agent();
    let dst = host.addr();
    for id in 0..200 {
        let raw = post(
            dst,
            &format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#),
            "",
        );
        let r = host.in_ns(false, move || exchange(dst, &raw)).unwrap();
        assert_eq!(r.status, 200, "{r:?}");
    }
    let pid = host.agent_pid();
    // Turned off for the whole process, before its first allocation.
    assert_eq!(status_field(pid, "status", "THP_enabled:"), "0");
    assert_eq!(
        status_field(pid, "smaps_rollup", "AnonHugePages:"),
        "0 kB",
        "huge pages in the agent's memory"
    );
}

//! Reads kernel events from the ring buffer and writes each one to the audit log.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::{Duration, SystemTime},
};

use agent_common::{AF_INET, Event, EventKind};
use aya::maps::{MapData, RingBuf};
use serde_json::{Value, json};
use tokio::io::unix::AsyncFd;

use crate::{audit::AuditLog, config::Config};

/// Forwards events until the ring buffer fails. Events that arrived while no agent ran are
/// still in the (pinned) buffer and are written first.
pub async fn forward(ring: RingBuf<MapData>, config: &Config, audit: AuditLog) {
    // SAFETY: the ring buffer owns its file descriptor and is moved into the AsyncFd, which
    // keeps it (and so the descriptor) alive and unshared until the AsyncFd is dropped.
    let mut fd = match unsafe { AsyncFd::register(ring) } {
        Ok(fd) => fd,
        Err(e) => {
            tracing::error!("cannot poll the kernel event buffer: {e}");
            return;
        }
    };
    loop {
        let mut batch = Vec::new();
        {
            let mut guard = match fd.readable_mut().await {
                Ok(g) => g,
                Err(e) => {
                    tracing::error!("kernel event buffer: {e}");
                    return;
                }
            };
            let ring = guard.get_inner_mut();
            while let Some(item) = ring.next() {
                if item.len() >= size_of::<Event>() {
                    // SAFETY: the kernel wrote a whole `Event` (plain #[repr(C)] data) here; the
                    // read is unaligned-safe.
                    batch.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<Event>()) });
                }
            }
            guard.clear_ready();
        }
        for e in &batch {
            audit.record("kernel", record(e, config)).await;
        }
    }
}

/// The audit fields of one kernel event.
pub fn record(e: &Event, config: &Config) -> Value {
    let kind = EventKind::from_u32(e.kind).map_or("unknown", EventKind::as_str);
    let src = SocketAddr::new(ip(e.family, &e.src_addr), e.src_port as u16);
    let ts = humantime::format_rfc3339_micros(wall_clock(e.ktime_ns)).to_string();
    match EventKind::from_u32(e.kind) {
        // Which bpf(2) command another process made, with the process (the BPF LSM program).
        Some(EventKind::Tamper) => json!({
            "event": kind,
            "event_ts": ts,
            "command": match e.src_port {
                9 => "prog_detach".to_string(),
                29 => "link_update".to_string(),
                34 => "link_detach".to_string(),
                other => format!("bpf command {other}"),
            },
            "process": process(e),
        }),
        Some(EventKind::BindDenied) => json!({
            "event": kind,
            "event_ts": ts,
            "addr": src.to_string(),
            "process": process(e),
        }),
        Some(EventKind::Blocked) => {
            let dst = SocketAddr::new(ip(e.family, &e.dst_addr), e.dst_port as u16);
            let mut conn =
                json!({ "peer": src.to_string(), "dst": dst.to_string(), "proto": "tcp" });
            // The connect program knew the process: the connection came from this host.
            if e.pid != 0 {
                conn["process"] = process(e);
            }
            json!({
                "event": kind,
                "event_ts": ts,
                "server": config.server_by_upstream_port(dst.port()).map(|s| s.name.clone()),
                "conn": conn,
            })
        }
        _ => {
            let dst = SocketAddr::new(ip(e.family, &e.dst_addr), e.dst_port as u16);
            json!({
                "event": kind,
                "event_ts": ts,
                "server": config.server_by_port(dst.port()).map(|s| s.name.clone()),
                "conn": { "peer": src.to_string(), "dst": dst.to_string(), "proto": "tcp" },
            })
        }
    }
}

fn process(e: &Event) -> Value {
    let end = e.comm.iter().position(|&b| b == 0).unwrap_or(e.comm.len());
    json!({
        "pid": e.pid,
        "uid": e.uid,
        "comm": String::from_utf8_lossy(&e.comm[..end]),
        "cgroup_id": e.cgroup_id,
    })
}

fn ip(family: u32, b: &[u8; 16]) -> IpAddr {
    if family == AF_INET {
        IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    } else {
        let v6 = Ipv6Addr::from(*b);
        v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
    }
}

/// Kernel events carry CLOCK_MONOTONIC nanoseconds; turn them into wall-clock time.
fn wall_clock(ktime_ns: u64) -> SystemTime {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill in.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let now_mono = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
    SystemTime::now() - Duration::from_nanos(now_mono.saturating_sub(ktime_ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::parse(
            "t.yaml",
            "servers: [{name: files, port: 8000, upstream: 'http://127.0.0.1:9003', dangerous: {plaintext: true, unauthenticated: true}}]",
        )
        .unwrap()
    }

    fn blocked(family: u32, src: &[u8], dst: &[u8], pid: u32) -> Event {
        let mut e = Event {
            kind: EventKind::Blocked as u32,
            family,
            src_addr: [0; 16],
            dst_addr: [0; 16],
            src_port: 41000,
            dst_port: 9003,
            pid,
            uid: 1000,
            cgroup_id: 7,
            ktime_ns: 0,
            comm: [0; 16],
        };
        e.src_addr[..src.len()].copy_from_slice(src);
        e.dst_addr[..dst.len()].copy_from_slice(dst);
        e.comm[..4].copy_from_slice(b"curl");
        e
    }

    #[test]
    fn a_blocked_connection_names_the_upstream_server_and_the_local_process() {
        let local = blocked(AF_INET, &[127, 0, 0, 1], &[127, 0, 0, 1], 4242);
        let r = record(&local, &config());
        assert_eq!(r["event"], "blocked");
        assert_eq!(r["server"], "files", "the server whose upstream port it is");
        assert_eq!(
            r["conn"],
            json!({"peer": "127.0.0.1:41000", "dst": "127.0.0.1:9003", "proto": "tcp",
                   "process": {"pid": 4242, "uid": 1000, "comm": "curl", "cgroup_id": 7}})
        );
        // From another host, the kernel knows no process.
        let v6 = |last: u8| {
            let mut a = [0u8; 16];
            a[0] = 0xfd;
            a[15] = last;
            a
        };
        let remote = blocked(agent_common::AF_INET6, &v6(2), &v6(1), 0);
        let r = record(&remote, &config());
        assert_eq!(
            r["conn"],
            json!({"peer": "[fd00::2]:41000", "dst": "[fd00::1]:9003", "proto": "tcp"})
        );
    }

    #[test]
    fn steered_event_names_server_and_addresses() {
        let mut e = Event {
            kind: EventKind::Steered as u32,
            family: AF_INET,
            src_addr: [0; 16],
            dst_addr: [0; 16],
            src_port: 41000,
            dst_port: 8000,
            pid: 0,
            uid: 0,
            cgroup_id: 0,
            ktime_ns: 0,
            comm: [0; 16],
        };
        e.src_addr[..4].copy_from_slice(&[10, 0, 0, 2]);
        e.dst_addr[..4].copy_from_slice(&[10, 0, 0, 1]);
        let r = record(&e, &config());
        assert_eq!(r["event"], "steered");
        assert_eq!(r["server"], "files");
        assert_eq!(r["conn"]["peer"], "10.0.0.2:41000");
        assert_eq!(r["conn"]["dst"], "10.0.0.1:8000");
    }

    #[test]
    fn bind_denied_event_names_the_process() {
        let mut comm = [0u8; 16];
        comm[..7].copy_from_slice(b"python3");
        let e = Event {
            kind: EventKind::BindDenied as u32,
            family: agent_common::AF_INET6,
            src_addr: Ipv6Addr::LOCALHOST.octets(),
            dst_addr: [0; 16],
            src_port: 64000,
            dst_port: 0,
            pid: 4242,
            uid: 1000,
            cgroup_id: 7,
            ktime_ns: 0,
            comm,
        };
        let r = record(&e, &config());
        assert_eq!(r["event"], "bind_denied");
        assert_eq!(r["addr"], "[::1]:64000");
        assert_eq!(
            r["process"],
            json!({"pid": 4242, "uid": 1000, "comm": "python3", "cgroup_id": 7})
        );
    }

    #[test]
    fn a_tamper_event_names_the_command_and_the_process() {
        let mut comm = [0u8; 16];
        comm[..7].copy_from_slice(b"bpftool");
        let e = |cmd| Event {
            kind: EventKind::Tamper as u32,
            family: 0,
            src_addr: [0; 16],
            dst_addr: [0; 16],
            src_port: cmd,
            dst_port: 0,
            pid: 99,
            uid: 0,
            cgroup_id: 3,
            ktime_ns: 0,
            comm,
        };
        let r = record(&e(34), &config());
        assert_eq!(r["event"], "tamper");
        assert_eq!(r["command"], "link_detach");
        assert_eq!(
            r["process"],
            json!({"pid": 99, "uid": 0, "comm": "bpftool", "cgroup_id": 3})
        );
        assert_eq!(record(&e(29), &config())["command"], "link_update");
        assert_eq!(record(&e(9), &config())["command"], "prog_detach");
        assert_eq!(record(&e(77), &config())["command"], "bpf command 77");
    }
}

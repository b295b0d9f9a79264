//! Loopback ports for plain hosts: many tests run at once in one network namespace (threads of
//! one process, and maybe other test processes), so each host needs ports of its own.
use std::{
    collections::BTreeSet,
    net::TcpListener,
    sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    },
};

use super::RESERVED;

/// Ports below the kernel's ephemeral range start here.
const FIRST: u16 = 10_000;

/// A loopback port nothing is bound to now, never handed out before in this process, outside
/// RESERVED and below the kernel's ephemeral range (`ip_local_port_range`): so neither an
/// outgoing connection nor a bind to port 0 (which the tests make by the thousand) can take it
/// before the agent or a server binds it. Processes start at different places in the range, so
/// two test processes rarely pick the same port at once.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let end = ephemeral_start().max(FIRST + 1000);
    let span = u32::from(end - FIRST);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % span,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..span {
        let port = FIRST + (NEXT.fetch_add(1, Ordering::Relaxed) % span) as u16;
        if (RESERVED.0..=RESERVED.1).contains(&port) || GIVEN.lock().unwrap().contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() && GIVEN.lock().unwrap().insert(port) {
            return port;
        }
    }
    panic!("no free loopback port from {FIRST} to {end}");
}

/// The first port the kernel hands out on its own (32768 unless configured otherwise).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

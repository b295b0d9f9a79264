//! cgroup bind4/bind6: only the agent may bind the reserved upstream source ports; others get EPERM.
use core::ptr::{addr_of, read_volatile};

use agent_common::{Event, EventKind, HOST_COUNTERS};
use aya_ebpf::{
    bindings::bpf_sock_addr,
    helpers::{bpf_get_current_pid_tgid, generated::bpf_get_current_cgroup_id},
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use aya_log_ebpf::debug;

use crate::maps::{by_current, count, in_upstream_range, report, settings};

const ALLOW: i32 = 1;
const DENY: i32 = 0;

#[cgroup_sock_addr(bind4)]
pub fn moat_bind4(ctx: SockAddrContext) -> i32 {
    let a = ctx.sock_addr;
    // SAFETY: context pointer from the kernel; user_ip4 is readable in bind4 programs.
    let ip4 = unsafe { read_volatile(addr_of!((*a).user_ip4)) };
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&ip4.to_ne_bytes());
    guard(&ctx, addr)
}

#[cgroup_sock_addr(bind6)]
pub fn moat_bind6(ctx: SockAddrContext) -> i32 {
    let a = ctx.sock_addr;
    let mut addr = [0u8; 16];
    for i in 0..4 {
        // SAFETY: context pointer from the kernel; user_ip6 is readable in bind6 programs.
        let w = unsafe { read_volatile(addr_of!((*a).user_ip6[i])) };
        addr[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
    }
    guard(&ctx, addr)
}

fn guard(ctx: &SockAddrContext, addr: [u8; 16]) -> i32 {
    let a: *const bpf_sock_addr = ctx.sock_addr;
    // SAFETY: context pointer from the kernel; both fields are allowed, aligned 4-byte loads.
    let (family, user_port) = unsafe {
        (
            read_volatile(addr_of!((*a).user_family)),
            read_volatile(addr_of!((*a).user_port)),
        )
    };
    // user_port holds the port in network order in its low 16 bits.
    let port = u16::from_be(user_port as u16) as u32;
    let s = settings();
    if !in_upstream_range(&s, port) {
        return ALLOW;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: helper without arguments.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    if s.agent_tgid != 0 && tgid == s.agent_tgid && cgroup_id == s.agent_cgroup_id {
        return ALLOW;
    }

    count(HOST_COUNTERS, |c| &mut c.bind_denied);
    debug!(
        ctx,
        "guard: bind of upstream port {} by pid {} denied", port, tgid
    );
    report(&Event {
        family,
        src_addr: addr,
        src_port: port,
        ..by_current(EventKind::BindDenied, tgid, cgroup_id)
    });
    DENY
}

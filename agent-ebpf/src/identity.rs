//! sock_ops at connect(): which local process opens each connection to a protected or sealed
//! port, recorded by the connection's addresses for the agent to read after it accepts it (and
//! for the steering program to name when it blocks one). This runs in the connecting process's
//! context (sk_lookup does not).
use core::ptr::{addr_of, read_volatile};

use agent_common::{AF_INET, AF_INET6, ConnKey, ConnProcess};
use aya_ebpf::{
    bindings::{BPF_SOCK_OPS_TCP_CONNECT_CB, bpf_sock_ops},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::bpf_get_current_cgroup_id,
    },
    macros::sock_ops,
    programs::SockOpsContext,
};

use crate::maps::{CONNS, in_upstream_range, settings, watched};

#[sock_ops]
pub fn moat_connect(ctx: SockOpsContext) -> u32 {
    let o: *const bpf_sock_ops = ctx.ops;
    // Every field is read once, whatever the family, so that the verifier sees plain ctx
    // loads (see DESIGN: modified ctx pointers).
    // SAFETY: context pointer from the kernel; these are allowed, aligned 4-byte loads.
    let (op, family, remote_port, local_port, r4, l4, r6, l6) = unsafe {
        (
            read_volatile(addr_of!((*o).op)),
            read_volatile(addr_of!((*o).family)),
            read_volatile(addr_of!((*o).remote_port)),
            read_volatile(addr_of!((*o).local_port)),
            read_volatile(addr_of!((*o).remote_ip4)),
            read_volatile(addr_of!((*o).local_ip4)),
            [
                read_volatile(addr_of!((*o).remote_ip6[0])),
                read_volatile(addr_of!((*o).remote_ip6[1])),
                read_volatile(addr_of!((*o).remote_ip6[2])),
                read_volatile(addr_of!((*o).remote_ip6[3])),
            ],
            [
                read_volatile(addr_of!((*o).local_ip6[0])),
                read_volatile(addr_of!((*o).local_ip6[1])),
                read_volatile(addr_of!((*o).local_ip6[2])),
                read_volatile(addr_of!((*o).local_ip6[3])),
            ],
        )
    };
    if op != BPF_SOCK_OPS_TCP_CONNECT_CB {
        return 1;
    }
    // remote_port: network order in the high 16 bits; local_port: host order.
    let dst_port = u16::from_be((remote_port >> 16) as u16) as u32;
    if !watched(dst_port) || in_upstream_range(&settings(), local_port) {
        // Neither a protected nor a sealed port, or the agent's own upstream connection.
        return 1;
    }
    let mut key = ConnKey {
        src_port: local_port,
        dst_port,
        ..ConnKey::default()
    };
    if family == AF_INET {
        key.src_addr = mapped(l4);
        key.dst_addr = mapped(r4);
    } else if family == AF_INET6 {
        key.src_addr = words(l6);
        key.dst_addr = words(r6);
    } else {
        return 1;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    let p = ConnProcess {
        pid: (pid_tgid >> 32) as u32,
        uid: uid_gid as u32,
        gid: (uid_gid >> 32) as u32,
        _pad: 0,
        // SAFETY: helper without arguments.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        comm: bpf_get_current_comm().unwrap_or_default(),
    };
    let _ = CONNS.insert(&key, &p, 0);
    1
}

/// ::ffff:a.b.c.d from an IPv4 address in network order.
pub fn mapped(ip4: u32) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[10] = 0xff;
    a[11] = 0xff;
    a[12..].copy_from_slice(&ip4.to_ne_bytes());
    a
}

/// 16 bytes from four 32-bit words in network order.
pub fn words(w: [u32; 4]) -> [u8; 16] {
    let mut a = [0u8; 16];
    for i in 0..4 {
        a[i * 4..i * 4 + 4].copy_from_slice(&w[i].to_ne_bytes());
    }
    a
}

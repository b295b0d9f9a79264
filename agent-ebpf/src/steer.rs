//! sk_lookup: every TCP connection to a protected port goes to the proxy's socket, or is dropped;
//! a sealed port (an upstream that is not protected) takes only the agent's own connections.
use core::ptr::{addr_of, read_volatile};

use agent_common::{AF_INET, ConnKey, Event, EventKind, LOOPBACK_IFINDEX, PROXY_SLOT};
use aya_ebpf::{
    EbpfContext as _,
    bindings::{
        bpf_sk_lookup,
        sk_action::{SK_DROP, SK_PASS},
    },
    helpers::generated::{bpf_ktime_get_ns, bpf_map_lookup_elem, bpf_sk_assign, bpf_sk_release},
    macros::sk_lookup,
    programs::SkLookupContext,
};
use aya_log_ebpf::debug;

use crate::{
    identity::{mapped, words},
    maps::{CONNS, PORTS, PROXY, SEALED, count, in_upstream_range, report, settings},
};

const IPPROTO_TCP: u32 = 6;

/// The fields of one lookup, each read once from the context. Reading them unconditionally,
/// before any branch on the family, keeps LLVM from merging loads into a form the verifier
/// rejects ("dereference of modified ctx ptr").
struct Lookup {
    family: u32,
    protocol: u32,
    remote_ip4: u32,
    remote_ip6: [u32; 4],
    remote_port: u16,
    local_ip4: u32,
    local_ip6: [u32; 4],
    local_port: u32,
    ingress_ifindex: u32,
}

impl Lookup {
    fn read(ctx: &SkLookupContext) -> Self {
        let l: *const bpf_sk_lookup = ctx.lookup;
        // SAFETY: `l` is the context pointer the kernel passed in; every field read is a
        // plain, aligned load of a field the sk_lookup context allows reading.
        unsafe {
            Self {
                family: read_volatile(addr_of!((*l).family)),
                protocol: read_volatile(addr_of!((*l).protocol)),
                remote_ip4: read_volatile(addr_of!((*l).remote_ip4)),
                remote_ip6: [
                    read_volatile(addr_of!((*l).remote_ip6[0])),
                    read_volatile(addr_of!((*l).remote_ip6[1])),
                    read_volatile(addr_of!((*l).remote_ip6[2])),
                    read_volatile(addr_of!((*l).remote_ip6[3])),
                ],
                remote_port: u16::from_be(read_volatile(addr_of!((*l).remote_port))),
                local_ip4: read_volatile(addr_of!((*l).local_ip4)),
                local_ip6: [
                    read_volatile(addr_of!((*l).local_ip6[0])),
                    read_volatile(addr_of!((*l).local_ip6[1])),
                    read_volatile(addr_of!((*l).local_ip6[2])),
                    read_volatile(addr_of!((*l).local_ip6[3])),
                ],
                local_port: read_volatile(addr_of!((*l).local_port)),
                ingress_ifindex: read_volatile(addr_of!((*l).ingress_ifindex)),
            }
        }
    }

    fn same_address(&self) -> bool {
        if self.family == AF_INET {
            self.remote_ip4 == self.local_ip4
        } else {
            self.remote_ip6 == self.local_ip6
        }
    }

    fn event(&self, kind: EventKind) -> Event {
        let mut e = Event {
            kind: kind as u32,
            family: self.family,
            src_addr: [0; 16],
            dst_addr: [0; 16],
            src_port: self.remote_port as u32,
            dst_port: self.local_port,
            pid: 0,
            uid: 0,
            cgroup_id: 0,
            // SAFETY: helper without arguments.
            ktime_ns: unsafe { bpf_ktime_get_ns() },
            comm: [0; 16],
        };
        if self.family == AF_INET {
            e.src_addr[..4].copy_from_slice(&self.remote_ip4.to_ne_bytes());
            e.dst_addr[..4].copy_from_slice(&self.local_ip4.to_ne_bytes());
        } else {
            for i in 0..4 {
                e.src_addr[i * 4..i * 4 + 4].copy_from_slice(&self.remote_ip6[i].to_ne_bytes());
                e.dst_addr[i * 4..i * 4 + 4].copy_from_slice(&self.local_ip6[i].to_ne_bytes());
            }
        }
        e
    }

    /// The key the connect program recorded this connection's process under.
    fn conn_key(&self) -> ConnKey {
        let (src_addr, dst_addr) = if self.family == AF_INET {
            (mapped(self.remote_ip4), mapped(self.local_ip4))
        } else {
            (words(self.remote_ip6), words(self.local_ip6))
        };
        ConnKey {
            src_addr,
            dst_addr,
            src_port: self.remote_port as u32,
            dst_port: self.local_port,
        }
    }

    /// A blocked connection's event, with the local process that opened it when the connect
    /// program saw it (this runs in softirq: the current task is not the client).
    fn blocked_event(&self) -> Event {
        let mut e = self.event(EventKind::Blocked);
        // SAFETY: the value is only copied out, never held across another map operation.
        if let Some(p) = unsafe { CONNS.get(&self.conn_key()) } {
            e.pid = p.pid;
            e.uid = p.uid;
            e.cgroup_id = p.cgroup_id;
            e.comm = p.comm;
        }
        e
    }
}

#[sk_lookup]
pub fn moat_steer(ctx: SkLookupContext) -> u32 {
    let l = Lookup::read(&ctx);
    if l.protocol != IPPROTO_TCP {
        return SK_PASS;
    }
    let port = l.local_port;
    // SAFETY: the values are only tested, never held across another map operation.
    let protected = unsafe { PORTS.get(&port) }.is_some();
    if !protected && unsafe { SEALED.get(&port) }.is_none() {
        return SK_PASS;
    }

    // The agent's own upstream connection: from the reserved source port range, which only the
    // agent may bind (bind guard), and local (arrived on lo, or from the destination address
    // itself). A remote peer can pick the source port but not these.
    let s = settings();
    if in_upstream_range(&s, l.remote_port as u32)
        && (l.ingress_ifindex == LOOPBACK_IFINDEX || l.same_address())
    {
        count(port, |c| &mut c.passed);
        debug!(
            &ctx,
            "steer: port {} passed: the agent's own connection from port {}", port, l.remote_port
        );
        return SK_PASS;
    }

    if !protected {
        // A sealed upstream port: nobody but the agent reaches the server behind it, whether
        // the agent runs or not.
        count(port, |c| &mut c.blocked);
        debug!(
            &ctx,
            "steer: sealed port {} blocked a connection from port {}", port, l.remote_port
        );
        report(&l.blocked_event());
        return SK_DROP;
    }
    if assign_proxy(&ctx) {
        count(port, |c| &mut c.steered);
        debug!(&ctx, "steer: port {} steered to the proxy", port);
        report(&l.event(EventKind::Steered));
        SK_PASS
    } else {
        // No proxy socket (agent down): fail closed.
        count(port, |c| &mut c.dropped);
        debug!(
            &ctx,
            "steer: port {} dropped: no proxy socket (fail closed)", port
        );
        report(&l.event(EventKind::Dropped));
        SK_DROP
    }
}

/// Assigns the proxy's listening socket to this lookup; false when the slot is empty or the
/// kernel refuses the socket.
fn assign_proxy(ctx: &SkLookupContext) -> bool {
    let key: u32 = PROXY_SLOT;
    // SAFETY: PROXY is a sockmap; a lookup returns a referenced socket or null, and every
    // non-null socket is released below exactly once.
    unsafe {
        let sk = bpf_map_lookup_elem(PROXY.as_ptr(), addr_of!(key).cast());
        if sk.is_null() {
            return false;
        }
        let ret = bpf_sk_assign(ctx.as_ptr(), sk, 0);
        bpf_sk_release(sk);
        ret == 0
    }
}

//! Types and map names shared by the kernel programs and the agent: the kernel only ever sees numbers.
#![no_std]

/// Map of protected ports: key = port (host order, u32), value = [`PortEntry`].
pub const MAP_PORTS: &str = "MOAT_PORTS";
/// Sockmap with one slot ([`PROXY_SLOT`]) holding the proxy's listening socket. Value size is 8 so
/// that userspace can read the socket cookie and tell whether the slot is filled.
pub const MAP_PROXY: &str = "MOAT_PROXY";
/// Map of sealed ports: upstream ports of protected servers that are not protected ports
/// themselves. Only the agent's upstream identity may connect to them. Key = port (host order,
/// u32), value = [`PortEntry`] (the first server whose upstream it is).
pub const MAP_SEALED: &str = "MOAT_SEALED";
/// Per-CPU [`Counters`] keyed by protected or sealed port (u32); key [`HOST_COUNTERS`] holds
/// host-wide counts.
pub const MAP_COUNTERS: &str = "MOAT_COUNTERS";
/// Array with one [`Settings`] entry.
pub const MAP_SETTINGS: &str = "MOAT_SETTINGS";
/// Ring buffer of [`Event`]s.
pub const MAP_EVENTS: &str = "MOAT_EVENTS";
/// LRU hash: [`ConnKey`] of a local connection to a protected or sealed port -> [`ConnProcess`],
/// the process that opened it (written at connect time, read by the agent after accept, and by
/// the steering program when it blocks a connection to a sealed port).
pub const MAP_CONNS: &str = "MOAT_CONNS";
pub const MAX_CONNS: u32 = 65536;

/// Program names (the function names in the eBPF object).
pub const PROG_STEER: &str = "moat_steer";
pub const PROG_BIND4: &str = "moat_bind4";
pub const PROG_BIND6: &str = "moat_bind6";
pub const PROG_CONNECT: &str = "moat_connect";
/// The BPF LSM program (`lsm/bpf`) that reports bpf(2) calls able to detach or replace programs,
/// made by any process but the agent; attached where the kernel has the BPF LSM.
pub const PROG_TAMPER: &str = "moat_tamper";

pub const PROXY_SLOT: u32 = 0;
/// Counters key for events that belong to no protected port (bind guard, lost events).
pub const HOST_COUNTERS: u32 = 0;
/// Protected ports, and (separately) sealed ports.
pub const MAX_PORTS: u32 = 1024;
/// Counter entries: every protected and sealed port, and [`HOST_COUNTERS`].
pub const MAX_COUNTERS: u32 = 2 * MAX_PORTS + 1;
pub const EVENTS_BYTES: u32 = 256 * 1024;
/// The loopback device has this index in every network namespace.
pub const LOOPBACK_IFINDEX: u32 = 1;

/// Value of [`MAP_PORTS`] and [`MAP_SEALED`]: the server's index in the agent's config (names stay in userspace).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortEntry {
    pub server_id: u32,
}

/// Agent-wide settings the programs read on every decision.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// Reserved upstream source port range, inclusive, host order. Only the agent may bind it.
    pub upstream_port_lo: u32,
    pub upstream_port_hi: u32,
    /// Thread group id of the running agent (0 while no agent has started).
    pub agent_tgid: u32,
    /// Thread group id of an agent replacing the programs before it is the running agent (a
    /// restart, a take-over): its bpf(2) calls are not reported as tampering.
    pub manager_tgid: u32,
    /// cgroup v2 id of the running agent: a process that reuses the agent's pid while the
    /// agent is down is still refused unless it also sits in the agent's cgroup.
    pub agent_cgroup_id: u64,
}

/// Per-port counters. Per-CPU in the kernel; userspace sums them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Connections assigned to the proxy's socket.
    pub steered: u64,
    /// Connections dropped because no proxy socket was present (fail closed).
    pub dropped: u64,
    /// The agent's own upstream connections let through to the real server.
    pub passed: u64,
    /// Binds of the reserved upstream identity by another process (host counters only).
    pub bind_denied: u64,
    /// Events that did not fit in the ring buffer.
    pub events_lost: u64,
    /// Connections to a sealed port that did not come from the agent, dropped.
    pub blocked: u64,
}

impl Counters {
    pub fn add(&mut self, other: &Self) {
        self.steered += other.steered;
        self.dropped += other.dropped;
        self.passed += other.passed;
        self.bind_denied += other.bind_denied;
        self.events_lost += other.events_lost;
        self.blocked += other.blocked;
    }
}

/// What happened, in an [`Event`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Steered = 1,
    Dropped = 2,
    Passed = 3,
    BindDenied = 4,
    /// A connection to a sealed port from anyone but the agent, dropped.
    Blocked = 5,
    /// A bpf(2) call by a process other than the agent that can detach or replace programs
    /// (`src_port` holds the command).
    Tamper = 6,
}

impl EventKind {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Steered),
            2 => Some(Self::Dropped),
            3 => Some(Self::Passed),
            4 => Some(Self::BindDenied),
            5 => Some(Self::Blocked),
            6 => Some(Self::Tamper),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Steered => "steered",
            Self::Dropped => "dropped",
            Self::Passed => "passed",
            Self::BindDenied => "bind_denied",
            Self::Blocked => "blocked",
            Self::Tamper => "tamper",
        }
    }
}

pub const AF_INET: u32 = 2;
pub const AF_INET6: u32 = 10;

/// One kernel event. Addresses are 16 bytes in network order (IPv4 in the first 4 bytes when
/// `family` is [`AF_INET`]); ports are host order. `pid`, `uid`, `comm` and `cgroup_id` are set
/// where the kernel knows the process: the bind guard runs in its context, and a blocked
/// connection's process is the one the connect program recorded in [`MAP_CONNS`]; zero otherwise.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: u32,
    pub family: u32,
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    pub src_port: u32,
    pub dst_port: u32,
    pub pid: u32,
    pub uid: u32,
    pub cgroup_id: u64,
    pub ktime_ns: u64,
    pub comm: [u8; 16],
}

/// A TCP connection as its client sees it: addresses 16 bytes in network order (IPv4 as
/// ::ffff:a.b.c.d), ports host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnKey {
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    pub src_port: u32,
    pub dst_port: u32,
}

/// The local process that called connect().
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnProcess {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    pub _pad: u32,
    pub cgroup_id: u64,
    pub comm: [u8; 16],
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)] plain data made only of integers and byte arrays,
    // with no padding holes that could hold uninitialised bytes.
    unsafe impl aya::Pod for super::PortEntry {}
    unsafe impl aya::Pod for super::Settings {}
    unsafe impl aya::Pod for super::Counters {}
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::ConnKey {}
    unsafe impl aya::Pod for super::ConnProcess {}
}

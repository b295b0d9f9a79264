//! The maps shared with the agent, and the small helpers every program uses to count and report.
use core::cell::UnsafeCell;

use agent_common::{
    ConnKey, ConnProcess, Counters, EVENTS_BYTES, Event, EventKind, HOST_COUNTERS, MAX_CONNS,
    MAX_COUNTERS, MAX_PORTS, PortEntry, Settings,
};
use aya_ebpf::{
    bindings::{bpf_map_def, bpf_map_type::BPF_MAP_TYPE_SOCKMAP},
    helpers::{bpf_get_current_comm, bpf_get_current_uid_gid, generated::bpf_ktime_get_ns},
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuHashMap, RingBuf},
};

#[map(name = "MOAT_PORTS")]
pub static PORTS: HashMap<u32, PortEntry> = HashMap::with_max_entries(MAX_PORTS, 0);

#[map(name = "MOAT_SEALED")]
pub static SEALED: HashMap<u32, PortEntry> = HashMap::with_max_entries(MAX_PORTS, 0);

#[map(name = "MOAT_COUNTERS")]
pub static COUNTERS: PerCpuHashMap<u32, Counters> =
    PerCpuHashMap::with_max_entries(MAX_COUNTERS, 0);

#[map(name = "MOAT_SETTINGS")]
pub static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);

#[map(name = "MOAT_EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

#[map(name = "MOAT_CONNS")]
pub static CONNS: LruHashMap<ConnKey, ConnProcess> = LruHashMap::with_max_entries(MAX_CONNS, 0);

/// A sockmap whose value is 8 bytes wide, so that userspace can look the slot up (the kernel
/// returns the socket cookie) and tell whether the proxy socket is present. aya-ebpf's `SockMap`
/// fixes the value at 4 bytes, for which the kernel refuses lookups from userspace.
#[repr(transparent)]
pub struct ProxySockMap(UnsafeCell<bpf_map_def>);

// SAFETY: the definition is only read by the loader and passed by address to helpers.
unsafe impl Sync for ProxySockMap {}

impl ProxySockMap {
    pub fn as_ptr(&self) -> *mut core::ffi::c_void {
        self.0.get().cast()
    }
}

#[unsafe(link_section = "maps")]
#[unsafe(export_name = "MOAT_PROXY")]
pub static PROXY: ProxySockMap = ProxySockMap(UnsafeCell::new(bpf_map_def {
    type_: BPF_MAP_TYPE_SOCKMAP,
    key_size: 4,
    value_size: 8,
    max_entries: 1,
    map_flags: 0,
    id: 0,
    pinning: 0,
}));

pub fn settings() -> Settings {
    SETTINGS.get(0).copied().unwrap_or_default()
}

/// A port the connect program records the process for: protected or sealed.
pub fn watched(port: u32) -> bool {
    // SAFETY: read-only lookups in maps of plain data; nothing is held.
    unsafe { PORTS.get(&port).is_some() || SEALED.get(&port).is_some() }
}

pub fn in_upstream_range(s: &Settings, port: u32) -> bool {
    s.upstream_port_lo != 0 && port >= s.upstream_port_lo && port <= s.upstream_port_hi
}

/// Adds one to a counter of `key`'s entry (the agent creates an entry for each protected and
/// sealed port and for [`HOST_COUNTERS`]).
pub fn count(key: u32, field: impl FnOnce(&mut Counters) -> &mut u64) {
    if let Some(c) = COUNTERS.get_ptr_mut(key) {
        // SAFETY: per-CPU value, only this CPU writes it while the program runs.
        unsafe { *field(&mut *c) += 1 };
    }
}

/// An event of `kind` made by the current process (`tgid` in `cgroup_id`): its uid, name and
/// the time filled in, the addresses and ports left for the caller.
pub fn by_current(kind: EventKind, tgid: u32, cgroup_id: u64) -> Event {
    Event {
        kind: kind as u32,
        family: 0,
        src_addr: [0; 16],
        dst_addr: [0; 16],
        src_port: 0,
        dst_port: 0,
        pid: tgid,
        uid: bpf_get_current_uid_gid() as u32,
        cgroup_id,
        // SAFETY: helper without arguments.
        ktime_ns: unsafe { bpf_ktime_get_ns() },
        comm: bpf_get_current_comm().unwrap_or_default(),
    }
}

/// Sends an event to the agent; when the ring buffer is full, counts the loss instead.
pub fn report(event: &Event) {
    if EVENTS.output::<Event>(event, 0).is_err() {
        count(HOST_COUNTERS, |c| &mut c.events_lost);
    }
}

//! Which local process opened an accepted connection: the sock_ops program's record, keyed by
//! the connection's addresses, taken (read and removed) once the proxy has accepted it.
use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    sync::Mutex,
};

use agent_common::{ConnKey, ConnProcess, MAP_CONNS};
use aya::maps::{HashMap, Map, MapData};

use super::pin_file;
use crate::vocab::Process;

pub struct Identity {
    conns: Mutex<HashMap<MapData, ConnKey, ConnProcess>>,
}

impl Identity {
    /// Opens the pinned map of the instance in `dir`; None when the pins predate it (the
    /// programs were attached by an older agent: `moat detach` and start again to get it).
    pub fn open(dir: &Path) -> Option<Self> {
        let data = MapData::from_pin(dir.join(pin_file(MAP_CONNS))).ok()?;
        let map = HashMap::try_from(Map::LruHashMap(data)).ok()?;
        Some(Self {
            conns: Mutex::new(map),
        })
    }

    /// The process behind the connection from `peer` to `local`, if it came from this host.
    pub fn take(&self, peer: SocketAddr, local: SocketAddr) -> Option<Process> {
        let key = ConnKey {
            src_addr: mapped(peer.ip()),
            dst_addr: mapped(local.ip()),
            src_port: u32::from(peer.port()),
            dst_port: u32::from(local.port()),
        };
        let mut conns = self.conns.lock().ok()?;
        let p = conns.get(&key, 0).ok()?;
        let _ = conns.remove(&key);
        let len = p.comm.iter().position(|&b| b == 0).unwrap_or(p.comm.len());
        Some(Process {
            pid: p.pid,
            uid: p.uid,
            gid: p.gid,
            comm: String::from_utf8_lossy(&p.comm[..len]).into_owned(),
            cgroup_id: p.cgroup_id,
        })
    }
}

/// 16 bytes, IPv4 as ::ffff:a.b.c.d (as the kernel program writes them).
fn mapped(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

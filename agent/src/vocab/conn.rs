//! What the connection says about a request: its addresses, its TLS, the local process.
use std::{net::SocketAddr, sync::Arc};

use serde::{Deserialize, Serialize};

/// Who is asking, as far as the connection tells.
#[derive(Clone, Debug)]
pub struct Conn {
    pub peer: SocketAddr,
    /// The original destination (a protected server's address and port).
    pub dst: SocketAddr,
    /// The TLS version, e.g. `TLSv1_3`; None for plaintext.
    pub tls: Option<Arc<str>>,
    /// The local process that opened it, when it came from this host and the kernel knows it.
    pub process: Option<Arc<Process>>,
}

/// The local process behind a connection from this host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    pub comm: String,
    /// The cgroup v2 id (the inode of its cgroup directory).
    #[serde(default)]
    pub cgroup_id: u64,
}

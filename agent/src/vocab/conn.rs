//! What the connection says about a request: its addresses, its TLS, the local process.
use std::{
    net::SocketAddr,
    sync::{Arc, OnceLock},
};

use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

/// Who is asking, as far as the connection tells (and as the audit record names it).
#[derive(Clone, Debug, Serialize)]
pub struct Conn {
    #[serde(serialize_with = "display")]
    pub peer: SocketAddr,
    /// The original destination (a protected server's address and port).
    #[serde(serialize_with = "display")]
    pub dst: SocketAddr,
    /// The TLS version, e.g. `TLSv1_3`; None for plaintext.
    pub tls: Option<Arc<str>>,
    /// The local process that opened it, when it came from this host and the kernel knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<Arc<Process>>,
    /// This, serialized: the same in every request's audit record, so made once.
    #[serde(skip)]
    pub serialized: OnceLock<Arc<RawValue>>,
}

impl Conn {
    /// This connection as a JSON object, serialized the first time it is asked for.
    pub fn to_json(&self) -> Arc<RawValue> {
        self.serialized
            .get_or_init(|| {
                serde_json::value::to_raw_value(self)
                    .map(Arc::from)
                    // Addresses, strings and numbers always serialize.
                    .unwrap_or_else(|_| Arc::from(RawValue::NULL.to_owned()))
            })
            .clone()
    }
}

fn display<S: Serializer>(addr: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(addr)
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

//! `moat run --unprotected`: one plain listener per protected server, on 127.0.0.1 and the
//! server's port, and no kernel programs at all (no root, bpffs, cgroup or sysctl needed). It
//! protects NOTHING the kernel would: a local process can still connect to an upstream
//! directly, nothing is sealed, no bind is guarded, no local process is named and no kernel
//! event is recorded. It serves the proxy, authentication, policies and audit exactly as the
//! protected agent does, for tests and for machines without eBPF.
use std::{
    io,
    net::{Ipv4Addr, SocketAddr, TcpListener},
    path::{Path, PathBuf},
};

use serde_json::{Value, json};
use socket2::{Domain, Protocol, Socket, Type};

use crate::{config::Config, error::AppError, steer};

/// The address of the plain listeners: loopback only, so no other host reaches them. (Not
/// `::1` as well: it may not exist, and IPv4 loopback is what every client can use.)
pub const ADDR: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// Binds 127.0.0.1 and its port for each server. Refused while this instance's kernel programs
/// are attached: they would steer the ports away from these listeners (and drop the
/// connections, failing closed).
pub fn open(config: &Config) -> Result<Vec<TcpListener>, AppError> {
    let pins = &config.agent.bpffs;
    if steer::LINKS.iter().any(|l| pins.join(l).exists()) {
        return Err(AppError::StillAttached { path: pins.clone() });
    }
    tracing::warn!(
        "DANGEROUS: --unprotected: no kernel programs; the protected ports are plain listeners on \
         {ADDR}, and nothing stops a local process from connecting to an upstream directly"
    );
    config
        .servers
        .iter()
        .map(|s| {
            let addr = SocketAddr::from((ADDR, s.port));
            listener(addr).map_err(AppError::io(format!(
                "listening on {addr} for server `{}` (--unprotected)",
                s.name
            )))
        })
        .collect()
}

fn listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

/// `<state_dir>/unprotected`, there while an unprotected agent serves: `moat status` reads it.
pub struct Marker(PathBuf);

fn marker_path(state_dir: &Path) -> PathBuf {
    state_dir.join("unprotected")
}

impl Marker {
    pub fn write(state_dir: &Path, listeners: &[SocketAddr]) -> io::Result<Self> {
        let path = marker_path(state_dir);
        let text = json!({"pid": std::process::id(), "listeners": listeners}).to_string();
        std::fs::write(&path, text)?;
        Ok(Self(path))
    }
}

impl Drop for Marker {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Removes the marker a killed unprotected agent left (the caller holds the instance lock).
pub fn clear_marker(state_dir: &Path) {
    let _ = std::fs::remove_file(marker_path(state_dir));
}

/// The unprotected agent of the instance in `state_dir` (its pid and listeners), if one runs:
/// its marker names the pid that holds the instance lock, and that process is alive.
pub fn running(state_dir: &Path) -> Option<Value> {
    let marker: Value =
        serde_json::from_slice(&std::fs::read(marker_path(state_dir)).ok()?).ok()?;
    let pid = marker["pid"].as_u64()?;
    let holder = std::fs::read_to_string(state_dir.join("agent.lock")).ok()?;
    let alive = holder.trim() == pid.to_string() && Path::new(&format!("/proc/{pid}")).exists();
    alive.then(|| json!({"pid": pid, "listeners": marker["listeners"]}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_names_a_running_agent_only() {
        let dir = std::env::temp_dir().join(format!("moat-plain-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let addr: SocketAddr = "127.0.0.1:8000".parse().unwrap();
        let marker = Marker::write(&dir, &[addr]).unwrap();
        assert_eq!(running(&dir), None, "no agent holds the lock");
        std::fs::write(dir.join("agent.lock"), std::process::id().to_string()).unwrap();
        assert_eq!(
            running(&dir),
            Some(json!({"pid": std::process::id(), "listeners": ["127.0.0.1:8000"]}))
        );
        std::fs::write(dir.join("agent.lock"), "1").unwrap();
        assert_eq!(running(&dir), None, "another process holds the lock");
        drop(marker);
        assert!(!marker_path(&dir).exists(), "removed when the agent stops");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_taken_port_names_the_server_and_pins_in_place_refuse_to_start() {
        let taken = TcpListener::bind((ADDR, 0)).unwrap();
        let port = taken.local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(format!("moat-plain-pins-{}", std::process::id()));
        let text = format!(
            "agent: {{bpffs: {}}}\nservers:\n  - {{name: files, port: {port}, upstream: 'http://127.0.0.1:9', dangerous: {{plaintext: true, unauthenticated: true}}}}\n",
            dir.display()
        );
        let config = Config::parse("t.yaml", &text).unwrap();
        let e = open(&config).unwrap_err().to_string();
        assert!(
            e.contains(&format!("listening on 127.0.0.1:{port} for server `files`")),
            "{e}"
        );
        std::fs::create_dir_all(dir.join(steer::LINKS[0])).unwrap();
        let e = open(&config).unwrap_err().to_string();
        assert!(e.contains("moat detach"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

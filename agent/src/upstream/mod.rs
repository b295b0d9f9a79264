//! Connections to the real server from the reserved upstream identity, which the kernel lets through.
pub mod pool;

use std::{
    io,
    net::SocketAddr,
    sync::atomic::{AtomicU32, Ordering},
};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpSocket, TcpStream};

use crate::config::PortRange;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("refusing to connect upstream to the proxy's own address {0}")]
    Loop(SocketAddr),
    #[error("every reserved upstream source port ({0}) is in use")]
    Exhausted(PortRange),
    #[error("connecting to {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
}

/// Binds each upstream socket to (upstream address, a reserved source port): local, from the
/// reserved range, and so passed by the steering program to the real server's socket.
pub struct Upstream {
    ports: PortRange,
    next: AtomicU32,
    /// Where the agent itself listens.
    own: Vec<SocketAddr>,
}

impl Upstream {
    /// For an agent whose proxy socket is `proxy`.
    #[cfg(test)]
    pub fn new(ports: PortRange, proxy: SocketAddr) -> Self {
        Self::listening_on(ports, vec![proxy])
    }

    /// For an agent listening on each of `own` (an unspecified address: every local one).
    pub fn listening_on(ports: PortRange, own: Vec<SocketAddr>) -> Self {
        Self {
            ports,
            next: AtomicU32::new(std::process::id()),
            own,
        }
    }

    /// Whether `addr` (a local address) is where the agent itself listens.
    fn is_own(&self, addr: SocketAddr) -> bool {
        self.own.iter().any(|o| {
            o.port() == addr.port()
                && (o.ip().is_unspecified() || o.ip().to_canonical() == addr.ip().to_canonical())
        })
    }

    pub async fn connect(&self, addr: SocketAddr) -> Result<TcpStream, UpstreamError> {
        let err = |source| UpstreamError::Connect { addr, source };
        let n = self.ports.len();
        for _ in 0..n {
            let port = self.ports.lo + (self.next.fetch_add(1, Ordering::Relaxed) % n) as u16;
            let socket = new_socket(addr).map_err(err)?;
            match socket.bind(&SocketAddr::new(addr.ip(), port).into()) {
                // A local address: the proxy listens on [::] and its port, so the same port on
                // any local address is the proxy itself (a plain listener: on its address).
                Ok(()) if self.is_own(addr) => {
                    return Err(UpstreamError::Loop(addr));
                }
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => continue,
                // Not (or no longer) an address of this host: the config only takes local
                // upstreams, and Moat never connects from anything but the reserved identity.
                Err(e) => return Err(err(e)),
            }
            let socket = TcpSocket::from_std_stream(std::net::TcpStream::from(socket));
            match socket.connect(addr).await {
                Ok(stream) => {
                    stream.set_nodelay(true).map_err(err)?;
                    return Ok(stream);
                }
                // The same 4-tuple is still in use (e.g. TIME_WAIT): try the next port.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EADDRNOTAVAIL | libc::EADDRINUSE)
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(err(e)),
            }
        }
        Err(UpstreamError::Exhausted(self.ports))
    }
}

fn new_socket(addr: SocketAddr) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Keeps the kernel's automatic port choice out of `ports` in this network namespace
/// (`net.ipv4.ip_local_reserved_ports`, which also covers IPv6).
pub fn reserve_ports(ports: PortRange) -> io::Result<()> {
    const PATH: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";
    let current = std::fs::read_to_string(PATH)?;
    let current = current.trim();
    let entry = ports.to_string();
    if current.split(',').any(|e| e.trim() == entry) {
        return Ok(());
    }
    let value = if current.is_empty() {
        entry
    } else {
        format!("{current},{entry}")
    };
    std::fs::write(PATH, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_proxy_never_connects_upstream_to_itself() {
        let proxy = std::net::TcpListener::bind("[::]:0").unwrap();
        let port = proxy.local_addr().unwrap().port();
        let up = Upstream::new(
            PortRange {
                lo: 61000,
                hi: 61099,
            },
            proxy.local_addr().unwrap(),
        );
        for addr in [format!("127.0.0.1:{port}"), format!("[::1]:{port}")] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert!(
                matches!(up.connect(addr).await, Err(UpstreamError::Loop(_))),
                "{addr}"
            );
        }
        // Another local port is a server like any other.
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(up.connect(server.local_addr().unwrap()).await.is_ok());
    }

    #[tokio::test]
    async fn nor_to_a_plain_listener_of_its_own() {
        let own = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let own = own.local_addr().unwrap();
        let up = Upstream::listening_on(
            PortRange {
                lo: 61100,
                hi: 61199,
            },
            vec![own],
        );
        assert!(matches!(up.connect(own).await, Err(UpstreamError::Loop(_))));
        // The same port on another address is not the listener.
        let v6 = std::net::TcpListener::bind(("::1", own.port()));
        if let Ok(v6) = v6 {
            assert!(up.connect(v6.local_addr().unwrap()).await.is_ok());
        }
    }
}

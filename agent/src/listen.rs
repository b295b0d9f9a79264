//! The proxy's listening socket: one dual-stack socket that sk_lookup hands every protected connection.
use std::{
    io,
    net::{IpAddr, Ipv6Addr, SocketAddr},
};

use socket2::{Domain, Protocol, Socket, Type};
use std::net::TcpListener;

/// A dual-stack (IPV6_V6ONLY=0) listener on [::] and a kernel-chosen port. It serves IPv4, IPv6
/// and v4-mapped lookups from one sockmap slot. It must be bound to the unspecified address:
/// binding an IPv6 socket to any other address makes it IPv6-only, and the kernel then refuses
/// to assign it IPv4 connections. Connections made to its own port name no protected server
/// and are closed.
pub fn proxy_listener() -> io::Result<TcpListener> {
    let s = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))?;
    s.set_only_v6(false)?;
    s.set_nonblocking(true)?;
    s.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)).into())?;
    s.listen(1024)?;
    Ok(s.into())
}

/// IPv4-mapped IPv6 addresses (as a dual-stack socket reports IPv4 peers) as plain IPv4.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

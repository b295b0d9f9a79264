//! Which addresses belong to this host (in the agent's network namespace): an upstream must be
//! one, and not one where the agent itself listens.
use std::{io, net::IpAddr};

/// The addresses of this host's interfaces; loopback addresses always count as local.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostAddrs {
    addrs: Vec<IpAddr>,
    /// The agent itself listens on loopback at every protected port (`moat run --unprotected`).
    plain_listeners: bool,
}

impl HostAddrs {
    /// The addresses of the interfaces of the network namespace this process runs in.
    pub fn of_this_host() -> io::Result<Self> {
        let addrs = nix::ifaddrs::getifaddrs()
            .map_err(io::Error::from)?
            .filter_map(|i| i.address)
            .filter_map(|a| {
                a.as_sockaddr_in()
                    .map(|v4| IpAddr::V4(v4.ip()))
                    .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
            })
            .collect();
        Ok(Self {
            addrs,
            plain_listeners: false,
        })
    }

    /// A host with these interface addresses (besides loopback).
    pub fn new(addrs: impl IntoIterator<Item = IpAddr>) -> Self {
        Self {
            addrs: addrs.into_iter().map(|a| a.to_canonical()).collect(),
            plain_listeners: false,
        }
    }

    /// The same host, where the agent listens on loopback at every protected port itself (`moat
    /// run --unprotected`): an upstream there would be the agent, and is refused.
    pub fn with_plain_listeners(self) -> Self {
        Self {
            plain_listeners: true,
            ..self
        }
    }

    pub fn plain_listeners(&self) -> bool {
        self.plain_listeners
    }

    /// Whether a connection to `ip` stays on this host: a loopback address, or an address of
    /// one of its interfaces. The unspecified address is no host's.
    pub fn is_local(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        !ip.is_unspecified() && (ip.is_loopback() || self.addrs.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// A server whose upstream is `upstream`, on a host with the interface address 10.0.0.1.
    fn parse_on(upstream: &str) -> Result<Config, crate::config::Problems> {
        let text = format!(
            "servers:\n  - name: files\n    port: 8000\n    upstream: {upstream}\n    dangerous: {{plaintext: true, unauthenticated: true}}\n"
        );
        let host = HostAddrs::new(["10.0.0.1".parse().unwrap(), "fd00::1".parse().unwrap()]);
        Config::parse_on("moat.yaml", &text, &host)
    }

    #[test]
    fn an_upstream_on_another_host_is_refused_with_file_line_and_key() {
        for (upstream, ip) in [
            ("http://10.0.0.2:9003", "10.0.0.2"),
            ("http://192.0.2.7:8000", "192.0.2.7"),
            ("'http://[fd00::2]:9003'", "fd00::2"),
            ("http://[::ffff:10.0.0.2]:9003", "10.0.0.2"),
        ] {
            let e = parse_on(upstream).unwrap_err();
            assert_eq!(e.problems.len(), 1, "{upstream}: {e}");
            let shown = e.to_string();
            assert!(
                shown.contains(&format!(
                    "moat.yaml:4:15: servers[0].upstream: {ip} is not an address of this host"
                )),
                "{upstream}: {shown}"
            );
        }
        // Without a host to check against (status, detach), the file still reads.
        let text = "servers:\n  - name: files\n    port: 8000\n    upstream: http://10.0.0.2:9003\n    dangerous: {plaintext: true, unauthenticated: true}\n";
        assert!(Config::parse("moat.yaml", text).is_ok());
    }

    #[test]
    fn the_unspecified_address_is_refused_everywhere() {
        for (upstream, ip) in [
            ("http://0.0.0.0:9003", "0.0.0.0"),
            ("'http://[::]:9003'", "::"),
            ("http://0.0.0.0", "0.0.0.0"),
        ] {
            let shown = parse_on(upstream).unwrap_err().to_string();
            assert!(
                shown.contains(&format!(
                    "moat.yaml:4:15: servers[0].upstream: {ip} is no address to connect to"
                )),
                "{upstream}: {shown}"
            );
            let text = format!(
                "servers:\n  - name: files\n    port: 8000\n    upstream: {upstream}\n    dangerous: {{plaintext: true, unauthenticated: true}}\n"
            );
            assert!(Config::parse("moat.yaml", &text).is_err(), "{upstream}");
        }
    }

    #[test]
    fn loopback_and_interface_upstreams_are_accepted() {
        for (upstream, addr) in [
            ("http://127.0.0.1:9003", "127.0.0.1:9003"),
            ("'http://[::1]:9003'", "[::1]:9003"),
            ("http://10.0.0.1:9003", "10.0.0.1:9003"),
            ("'http://[fd00::1]'", "[fd00::1]:8000"),
        ] {
            let c = parse_on(upstream).unwrap_or_else(|e| panic!("{upstream}: {e}"));
            assert_eq!(c.servers[0].upstream, addr.parse().unwrap());
        }
    }

    #[test]
    fn loopback_and_interface_addresses_are_local_others_are_not() {
        let host = HostAddrs::new(["10.0.0.1".parse().unwrap(), "fd00::1".parse().unwrap()]);
        for local in [
            "127.0.0.1",
            "127.8.9.10",
            "::1",
            "::ffff:127.0.0.1",
            "10.0.0.1",
            "fd00::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(host.is_local(local.parse().unwrap()), "{local}");
        }
        for other in [
            "10.0.0.2",
            "192.0.2.7",
            "fd00::2",
            "0.0.0.0",
            "::",
            "::ffff:0.0.0.0",
            "224.0.0.1",
        ] {
            assert!(!host.is_local(other.parse().unwrap()), "{other}");
        }
    }

    #[test]
    fn with_plain_listeners_a_loopback_upstream_on_a_protected_port_is_refused() {
        let host = HostAddrs::new(["10.0.0.1".parse().unwrap()]).with_plain_listeners();
        let text = "servers:\n\
                    - {name: a, port: 8000, dangerous: {plaintext: true, unauthenticated: true}}\n\
                    - {name: b, port: 8001, upstream: 'http://127.0.0.1:8000', dangerous: {plaintext: true, unauthenticated: true}}\n\
                    - {name: c, port: 8002, upstream: 'http://[::1]:8002', dangerous: {plaintext: true, unauthenticated: true}}\n\
                    - {name: d, port: 8003, upstream: 'http://127.0.0.1:9003', dangerous: {plaintext: true, unauthenticated: true}}\n\
                    - {name: e, port: 8004, upstream: 'http://10.0.0.1:8004', dangerous: {plaintext: true, unauthenticated: true}}\n";
        let e = Config::parse_on("moat.yaml", text, &host).unwrap_err();
        let shown = e.to_string();
        assert_eq!(e.problems.len(), 3, "{shown}");
        for needle in [
            "moat.yaml:2:3: servers[0]: with --unprotected the agent itself listens on 127.0.0.1:8000 (server `a`): \
             the upstream must listen on another port (the default upstream is 127.0.0.1:8000)",
            "moat.yaml:3:35: servers[1].upstream: with --unprotected the agent itself listens on 127.0.0.1:8000 (server `a`)",
            "moat.yaml:4:35: servers[2].upstream: with --unprotected the agent itself listens on 127.0.0.1:8002 (server `c`)",
        ] {
            assert!(shown.contains(needle), "no {needle:?} in {shown}");
        }
        // Without plain listeners the kernel tells the agent's connections from the server's.
        let host = HostAddrs::new(["10.0.0.1".parse().unwrap()]);
        assert!(Config::parse_on("moat.yaml", text, &host).is_ok());
    }

    #[test]
    fn this_host_has_its_loopback_interface() {
        let host = HostAddrs::of_this_host().unwrap();
        assert!(host.addrs.iter().any(IpAddr::is_loopback), "{host:?}");
        assert!(host.is_local("127.0.0.1".parse().unwrap()));
    }
}

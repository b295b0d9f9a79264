//! Which addresses Moat fetches client documents from: public unicast only, unless the operator
//! allows a private network. Every address a host resolves to is checked, and only a checked
//! address is ever connected to.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Why an address is not a public one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Class {
    #[error("loopback")]
    Loopback,
    #[error("private (RFC 1918)")]
    Private,
    #[error("unique local (fc00::/7)")]
    UniqueLocal,
    #[error("site-local (fec0::/10)")]
    SiteLocal,
    #[error("link-local")]
    LinkLocal,
    #[error("shared address space (100.64.0.0/10, carrier-grade NAT)")]
    Shared,
    #[error("\"this network\" (0.0.0.0/8)")]
    ThisNetwork,
    #[error("unspecified")]
    Unspecified,
    #[error("multicast")]
    Multicast,
    #[error("broadcast")]
    Broadcast,
    #[error("documentation")]
    Documentation,
    #[error("benchmarking")]
    Benchmarking,
    #[error("IETF protocol assignment")]
    ProtocolAssignment,
    #[error("reserved")]
    Reserved,
    #[error("not global unicast")]
    NotGlobalUnicast,
}

impl Class {
    /// Not a host at all: never fetched from, whatever the operator allows.
    fn never_allowed(self) -> bool {
        matches!(
            self,
            Self::Unspecified | Self::ThisNetwork | Self::Multicast | Self::Broadcast
        )
    }
}

/// The address classes Moat fetches from, and the private networks the operator allows.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    allow_private: Vec<IpNet>,
}

impl Guard {
    pub fn new(allow_private: Vec<IpNet>) -> Self {
        Self { allow_private }
    }

    /// `Ok` if Moat may connect to `ip`; else why not.
    pub fn check(&self, ip: IpAddr) -> Result<(), Class> {
        let Some(class) = classify(ip) else {
            return Ok(());
        };
        let canonical = ip.to_canonical();
        let allowed = self
            .allow_private
            .iter()
            .any(|net| net.contains(&ip) || net.contains(&canonical));
        if allowed && !class.never_allowed() {
            Ok(())
        } else {
            Err(class)
        }
    }
}

/// `None` for a public unicast address; else its class. IPv6 forms that carry an IPv4 address
/// (mapped, NAT64, 6to4) are classed by the IPv4 address they reach.
pub fn classify(ip: IpAddr) -> Option<Class> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], len: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn in_v6(ip: Ipv6Addr, net: u128, len: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
    u128::from(ip) & mask == net & mask
}

fn classify_v4(ip: Ipv4Addr) -> Option<Class> {
    use Class::*;
    let table: &[([u8; 4], u32, Class)] = &[
        ([0, 0, 0, 0], 32, Unspecified),
        ([0, 0, 0, 0], 8, ThisNetwork),
        ([10, 0, 0, 0], 8, Private),
        ([100, 64, 0, 0], 10, Shared),
        ([127, 0, 0, 0], 8, Loopback),
        ([169, 254, 0, 0], 16, LinkLocal),
        ([172, 16, 0, 0], 12, Private),
        ([192, 0, 0, 0], 24, ProtocolAssignment),
        ([192, 0, 2, 0], 24, Documentation),
        ([192, 88, 99, 0], 24, Reserved),
        ([192, 168, 0, 0], 16, Private),
        ([198, 18, 0, 0], 15, Benchmarking),
        ([198, 51, 100, 0], 24, Documentation),
        ([203, 0, 113, 0], 24, Documentation),
        ([224, 0, 0, 0], 4, Multicast),
        ([255, 255, 255, 255], 32, Broadcast),
        ([240, 0, 0, 0], 4, Reserved),
    ];
    table
        .iter()
        .find(|(net, len, _)| in_v4(ip, *net, *len))
        .map(|(_, _, class)| *class)
}

fn classify_v6(ip: Ipv6Addr) -> Option<Class> {
    use Class::*;
    let bits = u128::from(ip);
    if ip.is_unspecified() {
        return Some(Unspecified);
    }
    if ip.is_loopback() {
        return Some(Loopback);
    }
    // ::ffff:0:0/96 (IPv4-mapped) and 64:ff9b::/96 (NAT64): the IPv4 address in the low bits.
    if in_v6(ip, 0xffff << 32, 96) || in_v6(ip, 0x64_ff9b << 96, 96) {
        return classify_v4(Ipv4Addr::from(bits as u32));
    }
    // 2002::/16 (6to4): the IPv4 address in bits 16..48.
    if in_v6(ip, 0x2002 << 112, 16) {
        return classify_v4(Ipv4Addr::from((bits >> 80) as u32));
    }
    let table: &[(u128, u32, Class)] = &[
        (0, 96, Reserved), // IPv4-compatible (deprecated)
        (0xff << 120, 8, Multicast),
        (0xfc << 120, 7, UniqueLocal),
        (0xfe80 << 112, 10, LinkLocal),
        (0xfec0 << 112, 10, SiteLocal),
        (0x2001_0db8 << 96, 32, Documentation),
        (0x3fff << 112, 20, Documentation),
        (0x2001 << 112, 23, ProtocolAssignment), // includes Teredo 2001::/32
    ];
    if let Some((_, _, class)) = table.iter().find(|(net, len, _)| in_v6(ip, *net, *len)) {
        return Some(*class);
    }
    // Everything else outside 2000::/3 (global unicast) is not a public host.
    (!in_v6(ip, 0x2 << 124, 3)).then_some(NotGlobalUnicast)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(text: &str) -> Option<Class> {
        classify(text.parse().unwrap())
    }

    #[test]
    fn public_addresses_pass() {
        for ok in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.3.1",
            "198.20.0.1",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450:4001::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(class(ok), None, "{ok}");
        }
    }

    #[test]
    fn every_special_range_is_refused() {
        use Class::*;
        for (ip, want) in [
            ("127.0.0.1", Loopback),
            ("127.255.255.254", Loopback),
            ("10.1.2.3", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("192.168.1.1", Private),
            ("169.254.169.254", LinkLocal),
            ("100.64.0.1", Shared),
            ("100.127.255.255", Shared),
            ("0.0.0.0", Unspecified),
            ("0.1.2.3", ThisNetwork),
            ("224.0.0.1", Multicast),
            ("239.255.255.255", Multicast),
            ("255.255.255.255", Broadcast),
            ("240.0.0.1", Reserved),
            ("192.0.2.1", Documentation),
            ("198.51.100.1", Documentation),
            ("203.0.113.1", Documentation),
            ("198.18.0.1", Benchmarking),
            ("192.0.0.8", ProtocolAssignment),
            ("::", Unspecified),
            ("::1", Loopback),
            ("fc00::1", UniqueLocal),
            ("fd12:3456::1", UniqueLocal),
            ("fe80::1", LinkLocal),
            ("febf::1", LinkLocal),
            ("fec0::1", SiteLocal),
            ("ff02::1", Multicast),
            ("2001:db8::1", Documentation),
            ("3fff::1", Documentation),
            ("2001::1", ProtocolAssignment),
            ("::127.0.0.1", Reserved),
            ("100::1", NotGlobalUnicast),
            ("4000::1", NotGlobalUnicast),
            // IPv4 addresses inside IPv6 forms are classed by what they reach.
            ("::ffff:127.0.0.1", Loopback),
            ("::ffff:10.0.0.1", Private),
            ("::ffff:169.254.169.254", LinkLocal),
            ("::ffff:0.0.0.0", Unspecified),
            ("::ffff:100.64.0.1", Shared),
            ("64:ff9b::7f00:1", Loopback),
            ("64:ff9b::a9fe:a9fe", LinkLocal),
            ("2002:7f00:1::1", Loopback),
            ("2002:c0a8:101::", Private),
        ] {
            assert_eq!(class(ip), Some(want), "{ip}");
        }
    }

    #[test]
    fn the_operator_may_allow_private_networks_but_not_non_hosts() {
        let guard = Guard::new(vec![
            "127.0.0.1/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
            "0.0.0.0/0".parse().unwrap(),
        ]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(guard.check(ip("127.0.0.1")), Ok(()));
        assert_eq!(guard.check(ip("::ffff:127.0.0.1")), Ok(()));
        assert_eq!(guard.check(ip("10.9.8.7")), Ok(()));
        assert_eq!(guard.check(ip("::1")), Err(Class::Loopback));
        assert_eq!(guard.check(ip("0.0.0.0")), Err(Class::Unspecified));
        assert_eq!(guard.check(ip("0.0.0.1")), Err(Class::ThisNetwork));
        assert_eq!(guard.check(ip("255.255.255.255")), Err(Class::Broadcast));
        assert_eq!(guard.check(ip("224.0.0.1")), Err(Class::Multicast));

        let none = Guard::default();
        assert_eq!(none.check(ip("127.0.0.1")), Err(Class::Loopback));
        assert_eq!(none.check(ip("8.8.8.8")), Ok(()));
    }
}

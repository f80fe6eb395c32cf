//! IP addresses as GB28181 writes them: `host:port` with bracketed IPv6 (`[::1]:5060`) in
//! Via / Contact / Request-URI, `IN IP4` / `IN IP6` in SDP, v4-mapped IPv6 sources (from a
//! dual-stack socket) normalised to IPv4 so that address comparisons (registration source,
//! dialog peer, media sender) see one form, and the family checks that turn "an IPv4 socket
//! cannot reach an IPv6 server" into a clear error instead of silence.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

/// An IP literal as a user writes it in a property or flag: `1.2.3.4`, `::1` or `[::1]`.
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    let s = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    s.parse().ok()
}

/// `host:port` or `[v6]:port` (also a bare IP without port: port `None`).
pub fn parse_host_port(s: &str) -> Option<(IpAddr, Option<u16>)> {
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some((a.ip(), Some(a.port())));
    }
    parse_ip(s).map(|ip| (ip, None))
}

/// The one form of an address used for comparisons: v4-mapped IPv6 (`::ffff:1.2.3.4`, what a
/// dual-stack socket reports for an IPv4 peer) becomes the IPv4 address.
pub fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// The address to hand to a socket bound to `local` for sending to `dest`: an IPv6 socket
/// (dual-stack) reaches an IPv4 destination through its v4-mapped form.
pub fn wire_addr(local: SocketAddr, dest: SocketAddr) -> SocketAddr {
    match (local.ip(), dest.ip()) {
        (IpAddr::V6(_), IpAddr::V4(v4)) => {
            SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), dest.port())
        }
        _ => dest,
    }
}

/// `host:port` for Via / Contact / URIs: IPv6 literals bracketed (RFC 3261 §19.1.1 / RFC 5118).
pub fn host_port(host: &str, port: u16) -> String {
    format!("{}:{port}", bracketed(host))
}

/// An IPv6 literal in brackets (other hosts unchanged).
pub fn bracketed(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// SDP address type of an address (`IP6` for IPv6 literals, else `IP4`).
pub fn sdp_addrtype(ip: &str) -> &'static str {
    if ip.contains(':') { "IP6" } else { "IP4" }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: IpAddr) -> Family {
        match ip.to_canonical() {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    pub fn unspecified(self) -> IpAddr {
        match self {
            Family::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Family::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// Whether a socket bound to `local` can send to `remote`: same family, or an unspecified
/// IPv6 (dual-stack) socket towards IPv4.
pub fn can_reach(local: IpAddr, remote: IpAddr) -> bool {
    Family::of(local) == Family::of(remote)
        || (local == IpAddr::V6(Ipv6Addr::UNSPECIFIED) && Family::of(remote) == Family::V4)
}

/// The clear message for a `local` address that cannot reach `remote` (None when it can).
pub fn family_mismatch(what: &str, local: IpAddr, remote: SocketAddr) -> Option<String> {
    (!can_reach(local, remote.ip())).then(|| {
        format!(
            "{what} {local} is {} but {remote} is {}: use an {} address",
            Family::of(local),
            Family::of(remote.ip()),
            Family::of(remote.ip())
        )
    })
}

/// Our address as seen from `dest`: the source address the OS picks for it (a UDP socket of
/// `dest`'s family, connected, sends nothing).
pub fn local_ip_towards(dest: SocketAddr) -> std::io::Result<IpAddr> {
    let s = UdpSocket::bind(SocketAddr::new(Family::of(dest.ip()).unspecified(), 0))?;
    s.connect(canonical(dest))?;
    Ok(s.local_addr()?.ip())
}

/// Whether `ip` is a LAN-only address (RFC 1918, carrier-grade NAT 100.64/10, link-local,
/// IPv6 ULA or link-local, unspecified): what a device behind NAT writes in its SDP.
pub fn is_lan_only(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || (o[0] == 100 && (o[1] & 0xC0) == 64)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments()[0];
            v6.is_unspecified() || (s & 0xFE00) == 0xFC00 || (s & 0xFFC0) == 0xFE80
        }
    }
}

/// Where to send media to (or connect to) for a device: the address of its SDP, unless that
/// is LAN-only while its SIP comes from elsewhere, from an address that is not (a device
/// behind NAT writing its LAN address, wvp's "one-way audio" and "stream receive timeout"
/// cases): then its SIP source IP with the SDP's port (what a port-preserving NAT maps).
pub fn media_target(sdp: SocketAddr, sip_source: SocketAddr) -> SocketAddr {
    let (sdp_ip, sip_ip) = (sdp.ip().to_canonical(), sip_source.ip().to_canonical());
    if sdp_ip != sip_ip && is_lan_only(sdp_ip) && !is_lan_only(sip_ip) && !sip_ip.is_loopback() {
        SocketAddr::new(sip_ip, sdp.port())
    } else {
        sdp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_targets_behind_nat() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        // Behind NAT: the LAN address of the SDP is replaced by the SIP source.
        assert_eq!(
            media_target(a("192.168.1.64:15060"), a("203.0.113.7:5060")),
            a("203.0.113.7:15060")
        );
        assert_eq!(
            media_target(a("100.72.0.9:9000"), a("198.51.100.2:5060")),
            a("198.51.100.2:9000")
        );
        assert_eq!(
            media_target(a("[fd00::5]:9000"), a("[2001:db8::1]:5060")),
            a("[2001:db8::1]:9000")
        );
        // Same LAN, public SDP, loopback, or an SDP naming another public host: as written.
        assert_eq!(
            media_target(a("192.168.1.64:15060"), a("192.168.1.64:5060")),
            a("192.168.1.64:15060")
        );
        assert_eq!(
            media_target(a("192.168.1.64:15060"), a("10.0.0.3:5060")),
            a("192.168.1.64:15060")
        );
        assert_eq!(
            media_target(a("203.0.113.9:15060"), a("203.0.113.7:5060")),
            a("203.0.113.9:15060")
        );
        assert_eq!(
            media_target(a("127.0.0.1:15060"), a("127.0.0.1:5060")),
            a("127.0.0.1:15060")
        );
        assert_eq!(
            media_target(a("10.1.1.1:15060"), a("127.0.0.1:5060")),
            a("10.1.1.1:15060")
        );
        assert_eq!(
            media_target(a("0.0.0.0:15060"), a("203.0.113.7:5060")),
            a("203.0.113.7:15060")
        );
    }

    #[test]
    fn literals() {
        assert_eq!(parse_ip("::1"), Some("::1".parse().unwrap()));
        assert_eq!(parse_ip("[::1]"), Some("::1".parse().unwrap()));
        assert_eq!(parse_ip(" 10.0.0.1 "), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(parse_ip("[10.0.0.1"), None);
        assert_eq!(parse_ip("host"), None);
        assert_eq!(
            parse_host_port("[::1]:5060"),
            Some(("::1".parse().unwrap(), Some(5060)))
        );
        assert_eq!(
            parse_host_port("1.2.3.4:5"),
            Some(("1.2.3.4".parse().unwrap(), Some(5)))
        );
        assert_eq!(
            parse_host_port("fe80::1"),
            Some(("fe80::1".parse().unwrap(), None))
        );
        assert_eq!(
            parse_host_port("::1:5060"),
            Some(("::1:5060".parse().unwrap(), None))
        );
    }

    #[test]
    fn mapped_addresses_compare_as_ipv4() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5060".parse().unwrap();
        let v4: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        assert_eq!(canonical(mapped), v4);
        assert_eq!(canonical(v4), v4);
        let v6: SocketAddr = "[::1]:5060".parse().unwrap();
        assert_eq!(canonical(v6), v6);
        let any6: SocketAddr = "[::]:0".parse().unwrap();
        assert_eq!(wire_addr(any6, v4), mapped);
        assert_eq!(wire_addr(v4, v4), v4);
        assert_eq!(wire_addr(any6, v6), v6);
    }

    #[test]
    fn formatting() {
        assert_eq!(host_port("::1", 5060), "[::1]:5060");
        assert_eq!(host_port("[::1]", 5060), "[::1]:5060");
        assert_eq!(host_port("10.0.0.1", 5060), "10.0.0.1:5060");
        assert_eq!(host_port("3402000000", 5060), "3402000000:5060");
        assert_eq!(sdp_addrtype("::1"), "IP6");
        assert_eq!(sdp_addrtype("10.0.0.1"), "IP4");
    }

    #[test]
    fn families() {
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        let v6: IpAddr = "::1".parse().unwrap();
        let any6 = Family::V6.unspecified();
        assert!(can_reach(v4, v4));
        assert!(can_reach(v6, v6));
        assert!(can_reach(any6, v4));
        assert!(!can_reach(v4, v6));
        assert!(!can_reach(Family::V4.unspecified(), v6));
        assert!(!can_reach(v6, v4));
        let msg = family_mismatch("local-ip", v4, "[::1]:5060".parse().unwrap()).unwrap();
        assert!(msg.contains("IPv4") && msg.contains("[::1]:5060"), "{msg}");
        assert!(family_mismatch("x", v6, "[::1]:1".parse().unwrap()).is_none());
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

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

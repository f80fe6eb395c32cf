//! RTSP multicast for readers: with `multicast_ip_range` (and/or `multicast_ipv6_range`) set,
//! the gateway's RTSP server offers `RTP/AVP;multicast` transport: each stream of a media gets
//! a group from the range (gst-rtsp-server's address pool), the i-th group of a range on the
//! port pair `multicast_rtp_port + 2i`/`+1` (gst-rtsp-server binds a multicast stream's
//! sockets to the wildcard address, so two streams cannot share a port), sent with
//! `multicast_ttl`; at most [`MAX_GROUPS`] groups per range. The server chooses the group: a
//! client's own destination or TTL is never taken (see `rtsp_auth`). Medias are one per
//! reader (each starts at a clean key frame), so each multicast reader gets groups of its own
//! and the range bounds how many there can be; over it, SETUP fails.
//!
//! The range parsing is GStreamer-free; [`address_pool`] builds the pool.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Largest range taken (addresses).
pub const MAX_RANGE_ADDRESSES: u128 = 65_536;
/// Groups used of a range at most (each takes two ports).
pub const MAX_GROUPS: u32 = 1024;

/// The first and last address of a multicast CIDR range (`224.1.0.0/24`,
/// `ff15::8:0/120`): IPv4 within 224.0.0.0/4, IPv6 within ff00::/8, at most
/// [`MAX_RANGE_ADDRESSES`] addresses, the network address given (no host bits set).
pub fn range_bounds(cidr: &str) -> Result<(IpAddr, IpAddr), String> {
    let bad = |why: &str| {
        format!("{cidr:?}: {why} (a multicast range like 224.1.0.0/24 or ff15::8:0/120)")
    };
    let (addr, prefix) = cidr.split_once('/').ok_or_else(|| bad("no /prefix"))?;
    let ip: IpAddr = addr.parse().map_err(|_| bad("not an IP address"))?;
    let prefix: u32 = prefix.parse().map_err(|_| bad("bad prefix length"))?;
    if !ip.is_multicast() {
        return Err(bad("not a multicast address"));
    }
    let bits = if ip.is_ipv4() { 32 } else { 128 };
    if prefix > bits {
        return Err(bad("prefix longer than the address"));
    }
    let host_bits = bits - prefix;
    if host_bits >= 128 || (1u128 << host_bits) > MAX_RANGE_ADDRESSES {
        return Err(bad(&format!("more than {MAX_RANGE_ADDRESSES} addresses")));
    }
    let size = 1u128 << host_bits;
    let (first, last) = match ip {
        IpAddr::V4(v4) => {
            let n = u128::from(u32::from(v4));
            let base = n & !(size - 1);
            if base != n {
                return Err(bad("host bits set"));
            }
            let last = u32::try_from(base + size - 1).map_err(|_| bad("range overflows"))?;
            (ip, IpAddr::V4(Ipv4Addr::from(last)))
        }
        IpAddr::V6(v6) => {
            let n = u128::from(v6);
            let base = n & !(size - 1);
            if base != n {
                return Err(bad("host bits set"));
            }
            (ip, IpAddr::V6(Ipv6Addr::from(base + size - 1)))
        }
    };
    // The whole range must stay multicast (224.0.0.0/4 is 4 bits, ff00::/8 is 8).
    if !last.is_multicast() {
        return Err(bad("range leaves the multicast block"));
    }
    Ok((first, last))
}

/// The addresses from `first` to `last`, at most [`MAX_GROUPS`].
fn groups(first: IpAddr, last: IpAddr) -> impl Iterator<Item = IpAddr> {
    let n = |ip: IpAddr| match ip {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    };
    let (a, b) = (n(first), n(last));
    (a..=b).take(MAX_GROUPS as usize).map(move |x| match first {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(x as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(x)),
    })
}

/// The pool of groups for the RTSP server's factories (None: no range set, no multicast).
pub fn address_pool(
    ipv4_range: &str,
    ipv6_range: &str,
    rtp_port: u16,
    ttl: u8,
) -> Result<Option<gst_rtsp_server::RTSPAddressPool>, String> {
    use gst_rtsp_server::prelude::*;
    if ipv4_range.is_empty() && ipv6_range.is_empty() {
        return Ok(None);
    }
    let pool = gst_rtsp_server::RTSPAddressPool::new();
    for range in [ipv4_range, ipv6_range] {
        if range.is_empty() {
            continue;
        }
        let (first, last) = range_bounds(range)?;
        for (i, group) in groups(first, last).enumerate() {
            let Ok(port) = u16::try_from(u32::from(rtp_port) + 2 * i as u32) else {
                break;
            };
            if port == u16::MAX {
                break;
            }
            let g = group.to_string();
            pool.add_range(&g, &g, port, port + 1, ttl)
                .map_err(|e| format!("multicast range {range}: {e}"))?;
        }
    }
    Ok(Some(pool))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            range_bounds("224.1.0.0/24"),
            Ok((ip("224.1.0.0"), ip("224.1.0.255")))
        );
        assert_eq!(
            range_bounds("239.255.1.7/32"),
            Ok((ip("239.255.1.7"), ip("239.255.1.7")))
        );
        assert_eq!(
            range_bounds("224.1.0.0/16"),
            Ok((ip("224.1.0.0"), ip("224.1.255.255")))
        );
        assert_eq!(
            range_bounds("ff15::8:0/120"),
            Ok((ip("ff15::8:0"), ip("ff15::8:ff")))
        );
        for bad in [
            "224.1.0.0",
            "10.0.0.0/24",
            "224.1.0.1/24",
            "224.0.0.0/4",
            "224.1.0.0/33",
            "ff15::/64",
            "fe80::/120",
            "x/24",
            "224.1.0.0/-1",
            "",
        ] {
            let e = range_bounds(bad).unwrap_err();
            assert!(e.contains("multicast range like"), "{bad}: {e}");
        }
    }
}

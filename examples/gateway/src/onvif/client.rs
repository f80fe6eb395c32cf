//! The network side of ONVIF discovery: one WS-Discovery probe (multicast, or unicast to a
//! given address), the answers of a bounded wait, then per device GetProfiles and
//! GetStreamUri over HTTP/1.0 (blocking, with timeouts). Trust: a device's service address is
//! only followed when its host is the address the answer came from (an answer cannot send the
//! gateway to another host), every answer is size-bounded, and at most [`MAX_ITEMS`] devices
//! and [`MAX_PROFILES`] profiles per device are asked.

use super::*;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant, SystemTime};

/// Profiles of one device whose stream URI is asked at most.
pub const MAX_PROFILES: usize = 8;
/// Longest HTTP head of a device's answer.
const MAX_HEAD: usize = 8 * 1024;

/// What to probe and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// [`DISCOVERY_ADDR`], or a device's own address (unicast probe).
    pub target: SocketAddr,
    /// How long answers are waited for (also each HTTP exchange's timeout).
    pub wait: Duration,
    /// The device user for GetProfiles/GetStreamUri (empty: no UsernameToken).
    pub user: String,
    pub password: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, utoipa::ToSchema)]
pub struct Profile {
    pub token: String,
    pub stream_uri: Option<String>,
    pub error: Option<String>,
}

/// A device that answered.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, utoipa::ToSchema)]
pub struct Device {
    /// The address its answer came from.
    pub address: String,
    pub xaddrs: Vec<String>,
    pub scopes: Vec<String>,
    pub profiles: Vec<Profile>,
    /// Why its profiles are missing (unreachable, refused credentials, ...).
    pub error: Option<String>,
}

/// Probes, waits `opts.wait` for answers, asks each device for its stream URIs.
pub fn discover(opts: &Options) -> std::io::Result<Vec<Device>> {
    let bind: SocketAddr = match opts.target.ip() {
        IpAddr::V4(a) if a.is_loopback() => ([127, 0, 0, 1], 0).into(),
        IpAddr::V4(_) => ([0, 0, 0, 0], 0).into(),
        IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = UdpSocket::bind(bind)?;
    if opts.target.ip().is_multicast() && opts.target.is_ipv4() {
        sock.set_multicast_ttl_v4(1)?;
    }
    let id = uuid(gstgb28181::core::random::bytes::<16>());
    sock.send_to(probe_message(&id).as_bytes(), opts.target)?;
    let end = Instant::now() + opts.wait;
    let mut found: Vec<(IpAddr, ProbeMatch)> = Vec::new();
    let mut buf = vec![0u8; MAX_MESSAGE + 1];
    while found.len() < MAX_ITEMS {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        sock.set_read_timeout(Some(left))?;
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            break;
        };
        if n > MAX_MESSAGE || found.iter().any(|(a, _)| *a == from.ip()) {
            continue;
        }
        match parse_probe_matches(&buf[..n]) {
            Ok(m) => {
                if let Some(m) = m.into_iter().next() {
                    found.push((from.ip(), m));
                }
            }
            Err(e) => gst::debug!(crate::factory::CAT, "ONVIF answer from {from}: {e}"),
        }
    }
    Ok(found
        .into_iter()
        .map(|(ip, m)| describe(ip, m, opts))
        .collect())
}

fn describe(ip: IpAddr, m: ProbeMatch, opts: &Options) -> Device {
    let mut d = Device {
        address: ip.to_string(),
        xaddrs: m.xaddrs.clone(),
        scopes: m.scopes,
        ..Default::default()
    };
    let service = m.xaddrs.iter().find_map(|x| {
        let u = url::Url::parse(x).ok()?;
        let host_ip = match u.host()? {
            url::Host::Ipv4(a) => IpAddr::V4(a),
            url::Host::Ipv6(a) => IpAddr::V6(a),
            url::Host::Domain(_) => return None,
        };
        (u.scheme() == "http" && host_ip == ip).then_some(u)
    });
    let Some(service) = service else {
        d.error = Some(format!(
            "no http:// service address on {ip} itself: not followed"
        ));
        return d;
    };
    let call = |body: String| {
        let created = created(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |t| t.as_secs()),
        );
        let nonce = gstgb28181::core::random::bytes::<16>();
        let req = soap_request(&body, &opts.user, &opts.password, &nonce, &created);
        soap_post(&service, &req, opts.wait.max(Duration::from_secs(1)))
    };
    let tokens = match call(get_profiles_body()).and_then(|a| parse_profiles(&a)) {
        Ok(t) => t,
        Err(e) => {
            d.error = Some(format!("GetProfiles: {e}"));
            return d;
        }
    };
    d.profiles = tokens
        .into_iter()
        .take(MAX_PROFILES)
        .map(
            |token| match call(get_stream_uri_body(&token)).and_then(|a| parse_stream_uri(&a)) {
                Ok(uri) => Profile {
                    token,
                    stream_uri: Some(uri),
                    error: None,
                },
                Err(e) => Profile {
                    token,
                    stream_uri: None,
                    error: Some(format!("GetStreamUri: {e}")),
                },
            },
        )
        .collect();
    d
}

/// POSTs a SOAP request (HTTP/1.0: no chunked answers); the answer's body, bounded. HTTP
/// error statuses with a SOAP body are given back (the fault says why).
pub fn soap_post(url: &url::Url, body: &str, timeout: Duration) -> Result<Vec<u8>, String> {
    let addr = url
        .socket_addrs(|| Some(80))
        .ok()
        .and_then(|a| a.into_iter().next())
        .ok_or("bad service address")?;
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let req = format!(
        "POST {} HTTP/1.0\r\nHost: {}\r\nContent-Type: application/soap+xml; charset=utf-8\r\n\
         Content-Length: {}\r\n\r\n{body}",
        url.path(),
        addr,
        body.len()
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    s.take((MAX_HEAD + MAX_MESSAGE + 1) as u64)
        .read_to_end(&mut answer)
        .map_err(|e| format!("{addr}: {e}"))?;
    let head_end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .filter(|p| *p <= MAX_HEAD)
        .ok_or("no HTTP answer")?;
    let body = answer.split_off(head_end + 4);
    if body.len() > MAX_MESSAGE {
        return Err(format!("answer larger than {MAX_MESSAGE} bytes"));
    }
    let head = String::from_utf8_lossy(&answer);
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("no HTTP status")?;
    if status == 401 && body.is_empty() {
        return Err("HTTP 401 (the device wants HTTP authentication)".into());
    }
    if !(200..300).contains(&status) && body.is_empty() {
        return Err(format!("HTTP {status}"));
    }
    Ok(body)
}

//! The gateway's HTTP side: one server type ([`server::HttpServer`], hyper under axum on a
//! tokio runtime the gateway owns) with connection, time and size limits; the routers it
//! serves today ([`routes`]: `/metrics`, HLS files) behind an authorization hook; the private
//! HLS directory and its path checks ([`files`]); and a tiny blocking client for tests and
//! tools ([`get`]).

pub mod files;
pub mod limits;
pub mod routes;
pub mod server;

pub use routes::{Authorize, Denied};
pub use server::{HttpRuntime, HttpServer, Limits};

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

/// A blocking GET (tests and tools): status and body.
pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    request(None, addr, path, &[]).map(|r| (r.status, r.body))
}

/// A response as [`request`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    /// Header lines, names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A blocking GET with extra header lines (e.g. `("Authorization", "Basic ...")`), from the
/// local address `from` when given (tests use other loopback addresses as other clients).
pub fn request(
    from: Option<IpAddr>,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Reply> {
    let mut s = match from {
        None => TcpStream::connect_timeout(&addr, Duration::from_secs(2))?,
        Some(ip) => {
            let domain = socket2::Domain::for_address(addr);
            let sock = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
            sock.bind(&SocketAddr::new(ip, 0).into())?;
            sock.connect_timeout(&addr.into(), Duration::from_secs(2))?;
            sock.into()
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Reply {
        status,
        headers,
        body: buf[split + 4..].to_vec(),
    })
}

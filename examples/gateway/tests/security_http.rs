//! Attacks on the gateway's HTTP servers (metrics, HLS), performed over loopback against the
//! real gateway: slowloris, connection floods, slow readers, oversized requests, path and
//! symlink escapes from the HLS directory, and requests without the right credentials.
//! Every wait is bounded; attack pacing is the only sleeping.

mod common;
use common::*;

use gst_ipcam_gateway::auth::{Action, PermissionConfig, UserConfig, basic_value, hash_sha256};
use gst_ipcam_gateway::config::Config;
use gst_ipcam_gateway::gateway::Gateway;
use gst_ipcam_gateway::http::{self, Reply};
use gst_ipcam_gateway::sim::wait_until;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Another client than the attacker (all of 127.0.0.0/8 is loopback on Linux).
const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// A scratch directory that is private (0700), as the gateway wants its HLS dir.
fn private_scratch(name: &str) -> PathBuf {
    let d = scratch(name);
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
    d
}

const CH: &str = "34020000001320000001";

fn user(name: &str, pass: &str, perms: &[(Action, &str)]) -> UserConfig {
    UserConfig {
        user: name.into(),
        pass: hash_sha256(pass).unwrap(),
        permissions: perms
            .iter()
            .map(|(action, path)| PermissionConfig {
                action: *action,
                path: path.to_string(),
            })
            .collect(),
        ..UserConfig::default()
    }
}

/// `admin` reads everything and the metrics; `viewer` reads channel [`CH`] only; `bot` has a
/// bearer token for the metrics.
fn test_users() -> Vec<UserConfig> {
    vec![
        user(
            "admin",
            "admin-pw",
            &[(Action::Read, ""), (Action::Metrics, "")],
        ),
        user("viewer", "viewer-pw", &[(Action::Read, CH)]),
        UserConfig {
            user: "bot".into(),
            tokens: vec![hash_sha256("tok-123").unwrap()],
            permissions: vec![PermissionConfig {
                action: Action::Metrics,
                path: String::new(),
            }],
            ..UserConfig::default()
        },
    ]
}

fn admin() -> String {
    basic_value("admin", "admin-pw")
}

/// A gateway without cameras: only its HTTP servers matter here. Every port is picked by
/// the OS.
fn test_config() -> Config {
    Config {
        users: test_users(),
        sip_address: "127.0.0.1".into(),
        sip_port: 0,
        listen_address: "127.0.0.1".into(),
        rtsp_port: 0,
        metrics_port: 0,
        hls_port: 0,
        simulate: 0,
        summary_interval_s: 0,
        ..Config::default()
    }
}

/// A GET as `admin`.
fn get(from: Option<IpAddr>, addr: SocketAddr, path: &str) -> Reply {
    get_as(from, addr, path, Some(&admin()))
}

fn get_as(from: Option<IpAddr>, addr: SocketAddr, path: &str, auth: Option<&str>) -> Reply {
    let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
    http::request(from, addr, path, &headers).unwrap()
}

/// Whether the server closed `s` (EOF or reset); `s` is non-blocking.
fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 512];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// 300 connections from 127.0.0.1 sending one byte a second: the per-source cap closes all
/// but 32 at once, the header deadline closes those 32, and a normal client (127.0.0.2) gets
/// /metrics within 1 s all along. (The old server: 256 slots held 5 s per byte; /metrics went
/// unanswered.)
#[test]
fn slowloris_does_not_starve_metrics() {
    let _g = serial();
    let mut cfg = test_config();
    cfg.http_header_timeout_s = 3;
    let gw = Gateway::start(cfg).unwrap();
    let addr = gw.metrics_addr().unwrap();
    assert_eq!(get(Some(OTHER), addr, "/metrics").status, 200);

    let started = Instant::now();
    let mut slow: Vec<(TcpStream, Option<Duration>)> = (0..300)
        .map(|_| {
            let s = TcpStream::connect(addr).unwrap();
            s.set_nonblocking(true).unwrap();
            (s, None)
        })
        .collect();
    let request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let (tx, rx) = std::sync::mpsc::channel();
    let attacker = std::thread::spawn(move || {
        let mut sent = 0;
        while started.elapsed() < Duration::from_secs(15) {
            for (s, at) in slow.iter_mut().filter(|(_, at)| at.is_none()) {
                if closed(s) || s.write(&request[sent % request.len()..][..1]).is_err() {
                    *at = Some(started.elapsed());
                }
            }
            if slow.iter().all(|(_, at)| at.is_some()) {
                break;
            }
            sent += 1;
            std::thread::sleep(Duration::from_millis(1000));
        }
        let _ = tx.send(slow.iter().map(|(_, at)| *at).collect::<Vec<_>>());
    });

    let mut worst = Duration::ZERO;
    let mut probes = 0;
    let closes = loop {
        let t = Instant::now();
        let r = get(Some(OTHER), addr, "/metrics");
        worst = worst.max(t.elapsed());
        probes += 1;
        assert_eq!(r.status, 200);
        if let Ok(c) = rx.recv_timeout(Duration::from_millis(100)) {
            break c;
        }
    };
    attacker.join().unwrap();
    eprintln!("slowest /metrics {worst:?} in {probes} probes during the attack");
    assert!(
        worst < Duration::from_secs(1),
        "slowest /metrics {worst:?} in {probes} probes"
    );
    assert!(probes >= 10, "{probes} probes");
    let closed: Vec<Duration> = closes
        .iter()
        .map(|c| c.expect("every slow connection closed"))
        .collect();
    let at_once = closed
        .iter()
        .filter(|d| **d < Duration::from_secs(2))
        .count();
    let by_deadline = closed
        .iter()
        .filter(|d| **d >= Duration::from_secs(2) && **d <= Duration::from_secs(6))
        .count();
    assert_eq!(at_once, 300 - 32, "closed at accept: {closed:?}");
    assert_eq!(by_deadline, 32, "closed by the header deadline: {closed:?}");
    let server = gw.metrics_server().unwrap();
    assert!(server.refused_connections() >= 300 - 32);
    assert!(wait_until(Duration::from_secs(2), || server
        .open_connections()
        == 0));
    // The attacker's address is served again once its connections are gone.
    assert_eq!(get(None, addr, "/metrics").status, 200);
}

/// An idle keep-alive connection is closed by the header deadline; a client that stops
/// reading a large response is cut off by the request deadline.
#[test]
fn idle_and_slow_reader_connections_are_closed() {
    let _g = serial();
    let dir = private_scratch("slowread");
    std::fs::create_dir(dir.join("ch")).unwrap();
    let big = vec![0x47u8; 32 << 20];
    std::fs::write(dir.join("ch/segment00001.ts"), &big).unwrap();
    let mut cfg = test_config();
    cfg.hls = true;
    cfg.hls_dir = dir.clone();
    cfg.http_header_timeout_s = 2;
    cfg.http_request_timeout_s = 2;
    let gw = Gateway::start(cfg).unwrap();
    let hls = gw.hls_addr().unwrap();

    // Keep-alive, then silence.
    let mut idle = TcpStream::connect(hls).unwrap();
    idle.write_all(b"GET /ch/none.ts HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    idle.set_nonblocking(true).unwrap();
    let t = Instant::now();
    assert!(wait_until(Duration::from_secs(6), || closed(&mut idle)));
    assert!(
        t.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );

    // Asks for 32 MiB and reads nothing for a while.
    let mut reader = TcpStream::connect(hls).unwrap();
    reader
        .write_all(b"GET /ch/segment00001.ts HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let server = gw.hls_server().unwrap();
    assert!(wait_until(Duration::from_secs(2), || server
        .open_connections()
        == 1));
    let t = Instant::now();
    assert!(
        wait_until(Duration::from_secs(8), || server.open_connections() == 0),
        "stalled response still open after {:?}",
        t.elapsed()
    );
    assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());
    reader
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut got = 0usize;
    let mut b = vec![0u8; 1 << 16];
    loop {
        match reader.read(&mut b) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    eprintln!("stalled reader got {got} of {} bytes", big.len());
    assert!(
        got < big.len(),
        "the stalled response was cut off ({got} of {} bytes)",
        big.len()
    );
    assert_eq!(get(Some(OTHER), hls, "/ch/none.ts").status, 404);
    drop(gw);
    std::fs::remove_dir_all(&dir).ok();
}

fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).to_string()
}

fn status_of(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Oversized heads and bodies are refused, not buffered.
#[test]
fn oversized_requests_are_refused() {
    let _g = serial();
    let gw = Gateway::start(test_config()).unwrap();
    let addr = gw.metrics_addr().unwrap();
    let huge_header = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 << 10)
    );
    let r = raw(addr, huge_header.as_bytes());
    eprintln!("64 KiB header: {:?}", r.lines().next());
    assert!(r.is_empty() || status_of(&r) == 431, "{r:?}");
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = raw(
        addr,
        format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(),
    );
    assert!(r.is_empty() || status_of(&r) == 431, "{r:?}");
    let r = raw(
        addr,
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000000\r\n\r\nxxxx",
    );
    assert_eq!(status_of(&r), 413, "{r:?}");
    let r = raw(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nxxxx",
    );
    assert_eq!(status_of(&r), 413, "{r:?}");
    let r = raw(addr, b"DELETE /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status_of(&r), 405, "{r:?}");
    assert_eq!(get(None, addr, "/metrics").status, 200);
}

/// Only `/<channel>/<name>.{m3u8,ts,m4s,mp4}` inside the HLS directory is served: no
/// traversal (plain or percent-encoded), no dotfiles, no symlink out of the directory.
#[test]
fn hls_serves_nothing_outside_its_directory() {
    let _g = serial();
    let dir = private_scratch("hls");
    let ch = dir.join("34020000001320000001");
    std::fs::create_dir(&ch).unwrap();
    std::fs::write(ch.join("index.m3u8"), b"#EXTM3U\n").unwrap();
    std::fs::write(ch.join(".secret.ts"), b"secret").unwrap();
    std::fs::write(ch.join("notes.txt"), b"notes").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", ch.join("passwd.ts")).unwrap();
    std::os::unix::fs::symlink("/etc", dir.join("etc")).unwrap();
    let mut cfg = test_config();
    cfg.hls = true;
    cfg.hls_dir = dir.clone();
    let gw = Gateway::start(cfg).unwrap();
    let hls = gw.hls_addr().unwrap();

    let r = get(None, hls, "/34020000001320000001/index.m3u8");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"#EXTM3U\n"[..]));
    assert_eq!(
        r.header("content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    let head = raw(
        hls,
        format!(
            "HEAD /34020000001320000001/index.m3u8 HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
            admin()
        )
        .as_bytes(),
    );
    assert_eq!(status_of(&head), 200, "{head:?}");
    assert!(head.ends_with("\r\n\r\n"), "HEAD without a body: {head:?}");
    for path in [
        "/34020000001320000001/passwd.ts",
        "/etc/passwd",
        "/etc/hostname.ts",
        "/../../../../etc/passwd",
        "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/34020000001320000001/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/34020000001320000001/..%2f..%2fetc%2fpasswd.ts",
        "/34020000001320000001/.secret.ts",
        "/34020000001320000001/notes.txt",
        "/34020000001320000001/",
        "/",
    ] {
        let r = get(None, hls, path);
        assert_eq!(
            r.status,
            404,
            "{path}: {:?}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(
            !String::from_utf8_lossy(&r.body).contains("root:"),
            "{path}"
        );
    }
    drop(gw);
    std::fs::remove_dir_all(&dir).ok();
}

/// By default the HLS directory is private (0700, not a world-known name) and goes away at
/// stop; a configured directory that is a symlink or writable by others is refused.
#[test]
fn hls_directory_is_private() {
    let _g = serial();
    let mut cfg = test_config();
    cfg.hls = true;
    let gw = Gateway::start(cfg.clone()).unwrap();
    let dir = gw.hls_dir().unwrap().to_path_buf();
    let name = dir.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        name.starts_with("gst-ipcam-hls-") && name.len() > 20,
        "{dir:?}"
    );
    assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
    std::fs::create_dir(dir.join(CH)).unwrap();
    std::fs::write(dir.join(CH).join("index.m3u8"), b"#EXTM3U\n").unwrap();
    let hls = gw.hls_addr().unwrap();
    assert_eq!(get(None, hls, &format!("/{CH}/index.m3u8")).status, 200);
    drop(gw);
    assert!(!dir.exists(), "{dir:?} removed at stop");
    let (d, temp) = http::files::private_dir(Path::new("")).unwrap();
    assert!(temp);
    assert_ne!(d, dir);
    std::fs::remove_dir_all(&d).unwrap();

    let base = private_scratch("hlsdir");
    let target = base.join("real");
    std::fs::create_dir(&target).unwrap();
    std::os::unix::fs::symlink(&target, base.join("link")).unwrap();
    cfg.hls_dir = base.join("link");
    let e = Gateway::start(cfg.clone()).err().expect("symlink refused");
    assert!(e.contains("symlink"), "{e}");
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o777)).unwrap();
    cfg.hls_dir = target.clone();
    assert!(Gateway::start(cfg.clone()).is_err());
    cfg.hls_dir = base.join("new/hls");
    let gw = Gateway::start(cfg.clone()).unwrap();
    assert_eq!(
        std::fs::metadata(base.join("new/hls")).unwrap().mode() & 0o777,
        0o700
    );
    drop(gw);
    std::fs::remove_dir_all(&base).ok();
}

/// HLS and metrics need credentials: none or wrong ones get 401 with a Basic challenge, a
/// user without the permission 403; Bearer tokens work; metrics listens on 127.0.0.1 whatever
/// `listen-address` says; without users nobody is let in.
#[test]
fn http_requires_credentials() {
    let _g = serial();
    let dir = private_scratch("auth");
    for ch in [CH, "34020000001320000002"] {
        std::fs::create_dir(dir.join(ch)).unwrap();
        std::fs::write(dir.join(ch).join("index.m3u8"), b"#EXTM3U\n").unwrap();
    }
    let mut cfg = test_config();
    cfg.hls = true;
    cfg.hls_dir = dir.clone();
    cfg.listen_address = "127.0.0.3".into();
    let gw = Gateway::start(cfg.clone()).unwrap();
    let (m, hls) = (gw.metrics_addr().unwrap(), gw.hls_addr().unwrap());
    assert_eq!(m.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_eq!(hls.ip(), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)));
    let a = format!("/{CH}/index.m3u8");
    let b = "/34020000001320000002/index.m3u8";
    let viewer = basic_value("viewer", "viewer-pw");
    let wrong = basic_value("viewer", "nope");

    // Failed attempts come from their own address: 6 of them block it for a while.
    let failer = Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 5)));
    for (addr, path) in [(m, "/metrics"), (hls, a.as_str())] {
        let r = get_as(None, addr, path, None);
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Basic realm=\"gst-ipcam\"")
        );
        assert_eq!(get_as(failer, addr, path, Some(&wrong)).status, 401);
        assert_eq!(get_as(failer, addr, path, Some("Bearer nope")).status, 401);
        assert_eq!(get_as(failer, addr, path, Some("Basic !!!")).status, 401);
    }
    assert_eq!(get_as(None, hls, &a, Some(&viewer)).status, 200);
    assert_eq!(get_as(None, hls, b, Some(&viewer)).status, 403);
    assert_eq!(get_as(None, m, "/metrics", Some(&viewer)).status, 403);
    assert_eq!(get_as(None, hls, b, Some(&admin())).status, 200);
    let r = get_as(None, m, "/metrics", Some("Bearer tok-123"));
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("# TYPE"));
    assert_eq!(get_as(None, hls, &a, Some("Bearer tok-123")).status, 403);
    drop(gw);

    // No users configured: nobody, whatever the credentials.
    cfg.users.clear();
    let gw = Gateway::start(cfg).unwrap();
    assert_eq!(
        get(None, gw.metrics_addr().unwrap(), "/metrics").status,
        401
    );
    assert_eq!(get(None, gw.hls_addr().unwrap(), &a).status, 401);
    drop(gw);
    std::fs::remove_dir_all(&dir).ok();
}

/// Password guessing over HTTP: after a few failures the source is blocked (even the right
/// password is refused from there for a while), other sources are served.
#[test]
fn password_guessing_is_blocked_per_source() {
    let _g = serial();
    let gw = Gateway::start(test_config()).unwrap();
    let m = gw.metrics_addr().unwrap();
    let guesser = Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4)));
    for i in 0..8 {
        let guess = basic_value("admin", &format!("guess-{i}"));
        assert_eq!(get_as(guesser, m, "/metrics", Some(&guess)).status, 401);
    }
    assert_eq!(get(guesser, m, "/metrics").status, 401, "blocked source");
    assert_eq!(get(Some(OTHER), m, "/metrics").status, 200);
}

/// The server type's own limits, with a router of its own: a handler slower than the request
/// deadline is answered 408, and the total connection cap closes connections from any source
/// once reached.
#[test]
fn request_deadline_and_total_cap() {
    use axum::routing::get as route_get;
    use gst_ipcam_gateway::http::{HttpRuntime, HttpServer, Limits};
    let _g = serial();
    let rt = HttpRuntime::new(1).unwrap();
    let router = axum::Router::new()
        .route(
            "/slow",
            route_get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        )
        .route("/fast", route_get(|| async { "ok" }));
    let limits = Limits {
        request_timeout: Duration::from_secs(1),
        max_connections: 4,
        ..Limits::default()
    };
    let mut srv = HttpServer::start(&rt, "127.0.0.1", 0, router, limits).unwrap();
    let addr = srv.local_addr();
    let t = Instant::now();
    assert_eq!(get_as(None, addr, "/slow", None).status, 408);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());

    let held: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
    assert!(wait_until(Duration::from_secs(2), || srv
        .open_connections()
        == 4));
    let mut extra = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    extra.set_nonblocking(true).unwrap();
    assert!(wait_until(Duration::from_secs(2), || closed(&mut extra)));
    assert_eq!(srv.refused_connections(), 1);
    drop(held);
    assert!(wait_until(Duration::from_secs(2), || srv
        .open_connections()
        == 0));
    assert_eq!(get_as(Some(OTHER), addr, "/fast", None).status, 200);
    // Stopping with idle connections and a request in progress is bounded.
    let mut idle: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let slow = std::thread::spawn(move || http::request(None, addr, "/slow", &[]));
    assert!(wait_until(Duration::from_secs(2), || srv
        .open_connections()
        == 4));
    let t = Instant::now();
    srv.stop();
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "stop took {:?}",
        t.elapsed()
    );
    for s in &mut idle {
        s.set_nonblocking(true).unwrap();
        assert!(wait_until(Duration::from_secs(1), || closed(s)));
    }
    let _ = slow.join().unwrap();
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
}

//! Attacks on the gateway's RTSP server, performed over loopback against the real gateway
//! (gst-rtsp-server, simulated GB28181 camera): requests without or with wrong credentials, a
//! user reading a path it has no right to, a source address outside the user's ranges, taking
//! over another connection's session, huge request bodies, connection floods. Each checks the
//! attack is refused or bounded and that the gateway keeps serving. Raw requests go over
//! `TcpStream` (responses and `$` frames framed by rtsp-types); ffprobe is the real reader.

mod common;
use common::rtsp::{Conn, Resp, basic};
use common::*;

use gst_ipcam_gateway::auth::{Action, UserConfig, digest_ha1, hash_password};
use gst_ipcam_gateway::config::Config;
use gst_ipcam_gateway::gateway::Gateway;
use gst_ipcam_gateway::metrics;
use gst_ipcam_gateway::sim::wait_until;
use gstgb28181::core::digest;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

const OTHER: (&str, &str) = ("other", "other-pw");
const REMOTE_ONLY: (&str, &str) = ("remote", "remote-pw");
const DIGEST: (&str, &str) = ("digester", "digest-pw");
const GUARDED: (&str, &str) = ("guarded", "argon2-pw");

fn users() -> Vec<UserConfig> {
    let mut remote =
        UserConfig::with_password(REMOTE_ONLY.0, REMOTE_ONLY.1, &[(Action::Read, "")]).unwrap();
    remote.ips = vec!["::1/128".into(), "10.0.0.0/8".into()];
    let digester =
        UserConfig::with_password(DIGEST.0, DIGEST.1, &[(Action::Read, "~^3402")]).unwrap();
    // What htdigest would store, made independently of the helper.
    assert_eq!(
        digester.digest_ha1,
        digest_ha1(DIGEST.0, gst_ipcam_gateway::auth::REALM, DIGEST.1)
    );
    // As an operator stores it: argon2 (tens of ms per verification).
    let guarded = UserConfig {
        pass: hash_password(GUARDED.1).unwrap(),
        digest_ha1: digest_ha1(GUARDED.0, gst_ipcam_gateway::auth::REALM, GUARDED.1),
        ..UserConfig::with_password(GUARDED.0, "-", &[(Action::Read, "")]).unwrap()
    };
    vec![
        guarded,
        UserConfig::with_password(READER.0, READER.1, &[(Action::Read, "")]).unwrap(),
        UserConfig::with_password(OTHER.0, OTHER.1, &[(Action::Read, "some-other-path")]).unwrap(),
        remote,
        digester,
    ]
}

fn start(max_clients: u32) -> (Gateway, String) {
    start_with(max_clients, 30)
}

fn start_with(max_clients: u32, idle_timeout_s: u64) -> (Gateway, String) {
    start_users(max_clients, idle_timeout_s, users())
}

fn start_users(max_clients: u32, idle_timeout_s: u64, users: Vec<UserConfig>) -> (Gateway, String) {
    let cfg = Config {
        rtsp_idle_timeout_s: idle_timeout_s,
        sip_address: "127.0.0.1".into(),
        sip_port: 0,
        listen_address: "127.0.0.1".into(),
        rtsp_port: 0,
        metrics_port: 0,
        simulate: 1,
        sim_width: 320,
        sim_height: 240,
        sim_bitrate_kbps: 300,
        summary_interval_s: 0,
        max_rtsp_clients: max_clients,
        users,
        ..Config::default()
    };
    let gw = Gateway::start(cfg.clone()).expect("gateway starts");
    let cfg = gw.config().clone();
    let ch = cfg.sim_device_id(0);
    assert!(
        wait_until(Duration::from_secs(10), || gw.channels().contains(&ch)),
        "camera registered and mounted"
    );
    (gw, ch)
}

fn describe(port: u16, ch: &str, auth: Option<(&str, &str)>) -> Resp {
    let url = format!("rtsp://127.0.0.1:{port}/{ch}");
    let mut h = vec![("Accept", "application/sdp".to_string())];
    if let Some(a) = auth {
        h.push(basic(a));
    }
    Conn::open(port).request("DESCRIBE", &url, &h)
}

/// Raises the soft limit on open files towards `want` (never above the hard limit).
fn raise_fd_limit(want: u64) {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < want as libc::rlim_t {
            l.rlim_cur = (want as libc::rlim_t).min(l.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        * 1024
}

/// 401 without credentials (with a Basic and a Digest challenge), 401 for a wrong password
/// or an unknown user, 403 for a user without the path, 200 for the right user; ffprobe
/// decodes with the credentials in the URL.
#[test]
fn unauthenticated_and_unauthorized_readers_are_refused() {
    let _s = serial();
    let (gw, ch) = start(64);
    let port = gw.rtsp_port();
    let r = describe(port, &ch, None);
    assert_eq!(r.status, 401, "{r:?}");
    let ch_hdrs = r.headers("WWW-Authenticate");
    assert!(
        ch_hdrs.iter().any(|h| h.starts_with("Basic realm=")),
        "{r:?}"
    );
    assert!(ch_hdrs.iter().any(|h| h.starts_with("Digest ")), "{r:?}");
    assert_eq!(describe(port, &ch, Some((READER.0, "wrong"))).status, 401);
    assert_eq!(describe(port, &ch, Some(("nobody", "x"))).status, 401);
    assert_eq!(describe(port, &ch, Some(OTHER)).status, 403);
    assert_eq!(describe(port, &ch, Some(READER)).status, 200);
    // The failures are counted for metrics.
    let text = metrics::render(&gw.snapshot());
    assert_eq!(
        metrics::find_samples(&text, "auth_failures_total", "protocol=\"rtsp\""),
        vec![2.0],
        "{text}"
    );
    // A real client, credentials in the URL.
    let v = ffprobe_frames(
        &["-rtsp_transport", "tcp", "-read_intervals", "%+3"],
        &gw.url_with_credentials(&ch, READER.0, READER.1),
    );
    let h264 = v.iter().find(|(c, _)| c == "h264").map(|(_, n)| *n);
    assert!(h264.unwrap_or(0) >= 10, "{v:?}");
    // Without: nothing.
    assert!(
        ffprobe_frames(
            &["-rtsp_transport", "tcp", "-read_intervals", "%+3"],
            &gw.url(&ch)
        )
        .is_empty()
    );
}

/// Anonymous reading exists only through an explicit user `any`, and only for its paths.
#[test]
fn anonymous_reads_only_when_configured() {
    let _s = serial();
    let any = |path: &str| UserConfig {
        user: "any".into(),
        permissions: vec![gst_ipcam_gateway::auth::PermissionConfig {
            action: Action::Read,
            path: path.into(),
        }],
        ..Default::default()
    };
    let mut u = users();
    u.push(any("~^3402"));
    let (gw, ch) = start_users(64, 30, u);
    assert_eq!(describe(gw.rtsp_port(), &ch, None).status, 200);
    drop(gw);
    let mut u = users();
    u.push(any("public-only"));
    let (gw, ch) = start_users(64, 30, u);
    let r = describe(gw.rtsp_port(), &ch, None);
    assert_eq!(
        r.status, 401,
        "anonymous without the path is asked for credentials"
    );
    assert_eq!(describe(gw.rtsp_port(), &ch, Some(READER)).status, 200);
}

/// RTSP Digest (RFC 2617, qop=auth) for a user with a `digest_ha1`: right response 200, wrong
/// 401; ffprobe (which picks Digest when offered) decodes.
#[test]
fn digest_authentication_works() {
    let _s = serial();
    let (gw, ch) = start(64);
    let port = gw.rtsp_port();
    let url = format!("rtsp://127.0.0.1:{port}/{ch}");
    let mut c = Conn::open(port);
    let r = c.request("DESCRIBE", &url, &[]);
    assert_eq!(r.status, 401);
    let challenge = r
        .headers("WWW-Authenticate")
        .iter()
        .find_map(|h| digest::Challenge::parse(h))
        .expect("a Digest challenge");
    for (pw, want) in [("wrong", 401), (DIGEST.1, 200)] {
        let answer =
            digest::answer_challenge(&challenge, DIGEST.0, pw, "DESCRIBE", &url, "0a1b2c", 1);
        let r = c.request(
            "DESCRIBE",
            &url,
            &[("Authorization", answer.to_header_value())],
        );
        assert_eq!(r.status, want, "{r:?}");
    }
    let v = ffprobe_frames(
        &["-rtsp_transport", "tcp", "-read_intervals", "%+3"],
        &gw.url_with_credentials(&ch, DIGEST.0, DIGEST.1),
    );
    assert!(v.iter().any(|(c, n)| c == "h264" && *n >= 10), "{v:?}");
}

/// A user allowed only from ::1 and 10.0.0.0/8 is refused from 127.0.0.1, right password or not.
#[test]
fn source_address_outside_the_users_ranges_is_refused() {
    let _s = serial();
    let (gw, ch) = start(64);
    let port = gw.rtsp_port();
    assert_eq!(describe(port, &ch, Some(REMOTE_ONLY)).status, 401);
    assert_eq!(describe(port, &ch, Some(READER)).status, 200);
}

/// SETUP + PLAY on connection A; connection B (even as the same user, or with no credentials)
/// names A's session in TEARDOWN, PAUSE, PLAY, GET_PARAMETER and OPTIONS: 454 each time, and
/// A keeps its session and keeps receiving, also after B has gone. Metrics never show the
/// session ID.
#[test]
fn session_takeover_from_another_connection_is_refused() {
    let _s = serial();
    let (gw, ch) = start(64);
    let port = gw.rtsp_port();
    let url = format!("rtsp://127.0.0.1:{port}/{ch}");
    let mut a = Conn::open(port);
    let r = a.request("DESCRIBE", &url, &[basic(READER)]);
    assert_eq!(r.status, 200, "{r:?}");
    let r = a.request(
        "SETUP",
        &format!("{url}/stream=0"),
        &[
            basic(READER),
            ("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1".into()),
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let sid = r.headers("Session")[0]
        .split(';')
        .next()
        .unwrap()
        .trim()
        .to_string();
    let session = ("Session", sid.clone());
    let r = a.request(
        "PLAY",
        &format!("{url}/"),
        &[basic(READER), session.clone()],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert!(a.receive_frames(20, Duration::from_secs(10)), "A plays");

    // The metrics label is an opaque number, never the ID.
    assert!(wait_until(Duration::from_secs(5), || !gw
        .snapshot()
        .sessions
        .is_empty()));
    let text = metrics::render(&gw.snapshot());
    assert!(
        !text.contains(&sid),
        "session ID leaked in metrics:\n{text}"
    );

    let mut b = Conn::open(port);
    for method in ["TEARDOWN", "PAUSE", "PLAY", "GET_PARAMETER", "OPTIONS"] {
        let r = b.request(
            method,
            &format!("{url}/"),
            &[basic(READER), session.clone()],
        );
        assert_eq!(r.status, 454, "{method} from B: {r:?}");
    }
    // No credentials at all: the same.
    let mut c = Conn::open(port);
    let r = c.request(
        "TEARDOWN",
        &format!("{url}/"),
        std::slice::from_ref(&session),
    );
    assert_eq!(r.status, 454, "{r:?}");
    assert_eq!(gw.rtsp_guard().refused_takeovers(), 6);
    drop(b);
    drop(c);
    // B's and C's connections are gone; A's session is not.
    std::thread::sleep(Duration::from_millis(300));
    let r = a.request(
        "GET_PARAMETER",
        &format!("{url}/"),
        &[basic(READER), session.clone()],
    );
    assert_eq!(r.status, 200, "A's session survives: {r:?}");
    assert!(
        a.receive_frames(30, Duration::from_secs(10)),
        "A keeps receiving"
    );
    assert_eq!(gw.snapshot().sessions.len(), 1);
    // The owner may end it.
    let r = a.request("TEARDOWN", &format!("{url}/"), &[basic(READER), session]);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(wait_until(Duration::from_secs(5), || gw
        .rtsp_guard()
        .tracked_sessions()
        == 0));
}

/// `Content-Length: 2000000000` and a body streamed after it, on 4 connections at once: each
/// connection is closed after at most a few socket buffers, the gateway's memory stays
/// within +50 MB, and it keeps answering.
#[test]
fn huge_request_bodies_are_refused() {
    let _s = serial();
    let (gw, ch) = start(64);
    let port = gw.rtsp_port();
    assert_eq!(describe(port, &ch, Some(READER)).status, 200);
    let before = rss_bytes();
    const PER_CONN_MAX: usize = 128 << 20;
    let attackers: Vec<std::thread::JoinHandle<(usize, bool)>> = (0..4)
        .map(|_| {
            let ch = ch.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
                let head = format!(
                    "SET_PARAMETER rtsp://127.0.0.1:{port}/{ch} RTSP/1.0\r\nCSeq: 1\r\n\
                     Content-Type: text/parameters\r\nContent-Length: 2000000000\r\n\r\n"
                );
                s.write_all(head.as_bytes()).unwrap();
                let chunk = vec![b'a'; 1 << 20];
                let mut sent = 0;
                while sent < PER_CONN_MAX {
                    match s.write(&chunk) {
                        Ok(n) => sent += n,
                        Err(_) => return (sent, true),
                    }
                }
                (sent, false)
            })
        })
        .collect();
    let mut peak = before;
    while !attackers.iter().all(|t| t.is_finished()) {
        peak = peak.max(rss_bytes());
        std::thread::sleep(Duration::from_millis(20));
    }
    for t in attackers {
        let (sent, closed) = t.join().unwrap();
        assert!(closed, "connection still open after {sent} body bytes");
        assert!(sent < 32 << 20, "{sent} body bytes taken before closing");
    }
    peak = peak.max(rss_bytes());
    let grown = peak.saturating_sub(before);
    eprintln!("RSS grew by {} MB under the attack", grown >> 20);
    assert!(grown < 50 << 20, "RSS grew by {} MB", grown >> 20);
    // (A DESCRIBE right after another connection's DESCRIBE-and-close can get 503 while the
    // shared media unprepares: gst-rtsp-server "can not reuse media". Hence the retries.)
    let mut last = None;
    assert!(
        wait_until(Duration::from_secs(15), || {
            let s = describe(port, &ch, Some(READER)).status;
            last = Some(s);
            s == 200
        }),
        "still serving: {last:?}"
    );
}

/// Password guessing against an argon2 user: after the free failures the source is blocked
/// and further guesses are refused without being verified (no CPU burnt), each counted; the
/// user's own cached login keeps working.
#[test]
fn password_guessing_is_rate_limited() {
    let _s = serial();
    let (gw, ch) = start(64);
    let port = gw.rtsp_port();
    assert_eq!(describe(port, &ch, Some(GUARDED)).status, 200);
    let t = Instant::now();
    for i in 0..30 {
        let r = describe(port, &ch, Some((GUARDED.0, &format!("guess-{i}"))));
        assert_eq!(r.status, 401, "{r:?}");
    }
    let took = t.elapsed();
    let blocked = gw.users().blocked();
    assert!(
        blocked >= 20,
        "only {blocked} of 30 guesses refused unverified"
    );
    eprintln!("30 guesses in {took:?}, {blocked} refused unverified");
    let text = metrics::render(&gw.snapshot());
    assert_eq!(
        metrics::find_samples(&text, "auth_failures_total", "protocol=\"rtsp\""),
        vec![30.0]
    );
    assert_eq!(
        describe(port, &ch, Some(GUARDED)).status,
        200,
        "cached login"
    );
}

/// With max-rtsp-clients 4: 4 connections are served, the 5th to 8th are closed at once, the
/// first 4 keep working, and a freed slot is usable again.
#[test]
fn connections_beyond_max_rtsp_clients_are_closed() {
    let _s = serial();
    let (gw, ch) = start(4);
    let port = gw.rtsp_port();
    let url = format!("rtsp://127.0.0.1:{port}/{ch}");
    let mut kept: Vec<Conn> = (0..4).map(|_| Conn::open(port)).collect();
    for c in &mut kept {
        assert_eq!(c.request("OPTIONS", &url, &[]).status, 200);
    }
    for _ in 0..4 {
        let mut extra = Conn::open(port);
        assert!(
            extra.closed_by_server(Duration::from_secs(5)),
            "a connection beyond the limit stays open"
        );
    }
    assert_eq!(gw.rtsp_guard().refused_connections(), 4);
    for c in &mut kept {
        assert_eq!(c.request("OPTIONS", &url, &[]).status, 200);
    }
    assert_eq!(
        kept[0].request("DESCRIBE", &url, &[basic(READER)]).status,
        200
    );
    drop(kept.pop());
    assert!(
        wait_until(Duration::from_secs(5), || gw.snapshot().rtsp_conns == 3),
        "the closed one is forgotten"
    );
    let mut again = Conn::open(port);
    assert_eq!(again.request("OPTIONS", &url, &[]).status, 200);
}

/// Connections that never get a session (here: 2 idle ones filling max-rtsp-clients 2) are
/// closed after the idle timeout, so they cannot keep readers out; a playing connection stays.
#[test]
fn idle_connections_do_not_hold_the_slots() {
    let _s = serial();
    // A playing connection once stopped getting RTP here, in `make test` only: what
    // gst-rtsp-server and the ingest did is shown if it happens again.
    let log = GstLogTail::start(
        &[
            ("rtspmedia", gst::DebugLevel::Debug),
            ("rtspstream", gst::DebugLevel::Debug),
            ("rtspclient", gst::DebugLevel::Debug),
            ("rtspstreamtransport", gst::DebugLevel::Debug),
            ("gateway", gst::DebugLevel::Debug),
        ],
        4000,
    );
    let (gw, ch) = start_with(2, 2);
    let port = gw.rtsp_port();
    let url = format!("rtsp://127.0.0.1:{port}/{ch}");
    let mut idle: Vec<Conn> = (0..2).map(|_| Conn::open(port)).collect();
    for c in &mut idle {
        assert_eq!(c.request("OPTIONS", &url, &[]).status, 200);
    }
    assert!(
        Conn::open(port).closed_by_server(Duration::from_secs(5)),
        "slots full"
    );
    for c in &mut idle {
        assert!(
            c.closed_by_server(Duration::from_secs(10)),
            "idle connection kept"
        );
    }
    assert_eq!(gw.rtsp_guard().closed_idle(), 2);
    let mut a = Conn::open(port);
    assert_eq!(a.request("DESCRIBE", &url, &[basic(READER)]).status, 200);
    let r = a.request(
        "SETUP",
        &format!("{url}/stream=0"),
        &[
            basic(READER),
            ("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1".into()),
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let session = (
        "Session",
        r.headers("Session")[0]
            .split(';')
            .next()
            .unwrap()
            .trim()
            .to_string(),
    );
    let r = a.request(
        "PLAY",
        &format!("{url}/"),
        &[basic(READER), session.clone()],
    );
    assert_eq!(r.status, 200, "{r:?}");
    // Well past the idle timeout, the playing connection is still served.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let before = a.frames;
        let t = Instant::now();
        if !a.receive_frames(10, Duration::from_secs(5)) {
            let snap = gw.snapshot();
            let got = a.frames - before;
            let closed = a.closed_by_server(Duration::from_millis(1));
            eprintln!("GStreamer log (last lines):\n{}", log.dump());
            panic!(
                "A keeps receiving: {} frames in {:?} (of {} in all), connection {}; \
                 connections closed as idle {}, RTSP connections {}, sessions {:?}",
                got,
                t.elapsed(),
                a.frames,
                if closed {
                    "closed by the gateway"
                } else {
                    "open"
                },
                gw.rtsp_guard().closed_idle(),
                snap.rtsp_conns,
                snap.sessions
                    .iter()
                    .map(|s| s.transport.clone())
                    .collect::<Vec<_>>()
            );
        }
    }
    let r = a.request(
        "GET_PARAMETER",
        &format!("{url}/"),
        &[basic(READER), session],
    );
    assert_eq!(r.status, 200, "{r:?}");
}

/// 500 connections opened at once (10 threads) all complete their handshake without a SYN
/// retry (each within 900 ms: a dropped SYN costs 1 s) and all get served.
#[test]
fn connection_burst_is_accepted_without_syn_retries() {
    let _s = serial();
    // Both ends live in this process: about 1000 descriptors (CI default soft limit: 1024).
    raise_fd_limit(4096);
    let (gw, ch) = start(1000);
    let port = gw.rtsp_port();
    let threads: Vec<std::thread::JoinHandle<Vec<(TcpStream, Duration)>>> = (0..10)
        .map(|_| {
            std::thread::spawn(move || {
                (0..50)
                    .map(|_| {
                        let t = Instant::now();
                        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                        (s, t.elapsed())
                    })
                    .collect()
            })
        })
        .collect();
    let conns: Vec<(TcpStream, Duration)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let slowest = conns.iter().map(|(_, d)| *d).max().unwrap();
    assert_eq!(conns.len(), 500);
    eprintln!("slowest of 500 connects: {slowest:?}");
    assert!(
        slowest < Duration::from_millis(900),
        "a connect took {slowest:?}"
    );
    assert!(
        wait_until(Duration::from_secs(30), || gw.snapshot().rtsp_conns >= 500),
        "all accepted by the server: {}",
        gw.snapshot().rtsp_conns
    );
    assert_eq!(
        describe(port, &ch, Some(READER)).status,
        200,
        "still serving"
    );
    drop(conns);
}

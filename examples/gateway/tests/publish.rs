//! RTSP publishing into the gateway, over loopback with the real peers: ffmpeg publishes a
//! generated H.264 + AAC file (ANNOUNCE/RECORD over TCP and UDP), ffprobe reads the path
//! over RTSP and HLS; when the publisher leaves, readers get end-of-stream and the path goes
//! (DESCRIBE 404). Attacks: publishing without the `publish` permission, a second publisher
//! on a path, hostile path names, more publishers than `max_publishers`, hostile SDPs; each
//! is refused with a reason while the gateway keeps serving the publishers it has.

mod common;
use common::*;

use gst_ipcam_gateway::auth::{Action, UserConfig, basic_value};
use gst_ipcam_gateway::config::Config;
use gst_ipcam_gateway::gateway::{Gateway, SourceKind};
use gst_ipcam_gateway::sim::wait_until;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

const PUBLISHER: (&str, &str) = ("publisher", "publisher-pw");
const ADMIN: (&str, &str) = ("admin", "admin-pw");

fn start(cfg: Config) -> Gateway {
    let mut users = loopback_config("127.0.0.1").users;
    users.push(
        UserConfig::with_password(
            ADMIN.0,
            ADMIN.1,
            &[(Action::Api, ""), (Action::Metrics, "")],
        )
        .unwrap(),
    );
    users.push(
        UserConfig::with_password(
            PUBLISHER.0,
            PUBLISHER.1,
            &[(Action::Publish, ""), (Action::Read, "")],
        )
        .unwrap(),
    );
    Gateway::start(Config { users, ..cfg }).expect("gateway starts")
}

/// A 320x240 25 fps H.264 + AAC MP4 of `seconds`, made once per length by ffmpeg (lavfi).
fn clip(seconds: u32) -> PathBuf {
    make_clip(
        &format!("clip-{seconds}.mp4"),
        seconds,
        &["-c:v", "libx264", "-preset", "ultrafast", "-g", "25"],
        &["-c:a", "aac"],
        44100,
    )
}

/// The same picture in H.265 with G.711 A-law (8 kHz), in Matroska.
fn clip_h265_alaw(seconds: u32) -> PathBuf {
    make_clip(
        &format!("clip-h265-{seconds}.mkv"),
        seconds,
        &[
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-x265-params",
            "keyint=25:log-level=error",
        ],
        &["-c:a", "pcm_alaw", "-ac", "1"],
        8000,
    )
}

fn make_clip(name: &str, seconds: u32, video: &[&str], audio: &[&str], rate: u32) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| scratch("publish-clips"));
    let out = dir.join(name);
    if !out.exists() {
        let ok = Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
            .arg(format!("testsrc=size=320x240:rate=25:duration={seconds}"))
            .args(["-f", "lavfi", "-i"])
            .arg(format!(
                "sine=frequency=440:sample_rate={rate}:duration={seconds}"
            ))
            .args(video)
            .args(audio)
            .arg("-shortest")
            .arg(&out)
            .status()
            .expect("ffmpeg runs")
            .success();
        assert!(ok, "clip {name} made");
    }
    out
}

fn url(gw: &Gateway, path: &str, user: (&str, &str)) -> String {
    gw.url_with_credentials(path, user.0, user.1)
}

/// ffmpeg publishing `file` once (in real time) to `url` over `transport`.
fn ffmpeg_publish(file: &Path, url: &str, transport: &str) -> ChildGuard {
    ChildGuard(
        Command::new("ffmpeg")
            .args(["-v", "error", "-re", "-i"])
            .arg(file)
            .args([
                "-c",
                "copy",
                "-f",
                "rtsp",
                "-rtsp_transport",
                transport,
                url,
            ])
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ffmpeg runs"),
    )
}

/// The exit status and stderr of a publisher that is expected to end by itself.
fn publisher_result(mut p: ChildGuard, timeout: Duration) -> (Option<i32>, String) {
    let mut status = None;
    wait_until(timeout, || {
        status = p.0.try_wait().ok().flatten();
        status.is_some()
    });
    let mut err = String::new();
    if let Some(mut e) = p.0.stderr.take() {
        if status.is_none() {
            let _ = p.0.kill();
        }
        let _ = e.read_to_string(&mut err);
    }
    (status.and_then(|s| s.code()), err)
}

fn published(gw: &Gateway, path: &str) -> bool {
    gw.published()
        .iter()
        .any(|p| p.name == path && p.bytes_received > 0)
}

/// One RTSP request on a new connection: the response's status line and head.
fn request(
    port: u16,
    method: &str,
    path: &str,
    user: Option<(&str, &str)>,
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("{method} rtsp://127.0.0.1:{port}/{path} RTSP/1.0\r\nCSeq: 1\r\n");
    if let Some(u) = user {
        req.push_str(&format!("Authorization: {}\r\n", basic_value(u.0, u.1)));
    }
    if !body.is_empty() {
        req.push_str(&format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => break,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head)
}

/// The body of an HTTP GET of `path` on the gateway's API/metrics port, as [`ADMIN`].
fn http_get(gw: &Gateway, path: &str) -> String {
    let addr = gw.metrics_addr().expect("metrics on");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
        basic_value(ADMIN.0, ADMIN.1)
    )
    .unwrap();
    let mut r = String::new();
    let _ = s.read_to_string(&mut r);
    assert!(r.starts_with("HTTP/1.1 200"), "{path}: {r}");
    r.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// An SDP as ffmpeg announces H.264 (what the hostile ones are variations of).
const H264_SDP: &str = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=No Name\r\nc=IN IP4 127.0.0.1\r\n\
    t=0 0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n\
    a=fmtp:96 packetization-mode=1\r\na=control:streamid=0\r\n";

/// ffprobe's frames of `url` read until the stream ends (bounded by 25 s).
fn read_rtsp(url: &str) -> Vec<(String, u64)> {
    ffprobe_frames(&["-rtsp_transport", "tcp"], url)
}

/// The first segment of `path`'s HLS playlist in `hls_dir`, once there is one.
fn first_segment(hls_dir: &Path, path: &str) -> Option<String> {
    let playlist = std::fs::read_to_string(hls_dir.join(path).join("index.m3u8")).ok()?;
    playlist
        .lines()
        .find(|l| l.ends_with(".ts"))
        .map(String::from)
}

/// ffmpeg publishes `file` (8 s, `codecs` video and audio) over `transport`; a reader plays it over RTSP until the
/// publisher leaves, and (with `hls`) a segment over HLS; then the path is gone.
fn publish_and_read(transport: &str, hls: bool, file: &Path, codecs: [&str; 2]) {
    let _g = serial();
    let hls_dir = scratch("publish-hls");
    let mut gw = start(Config {
        hls,
        hls_dir: hls_dir.clone(),
        ..loopback_config("127.0.0.1")
    });
    let publisher = ffmpeg_publish(file, &url(&gw, "mystream", PUBLISHER), transport);
    assert!(
        wait_until(Duration::from_secs(15), || published(&gw, "mystream")),
        "path published over {transport}"
    );
    let p = gw
        .published()
        .into_iter()
        .find(|p| p.name == "mystream")
        .unwrap();
    assert_eq!(p.source, SourceKind::RtspPublisher);
    let hls_reader = hls.then(|| {
        let hls_port = gw.hls_addr().expect("HLS on").port();
        std::thread::spawn(move || {
            let mut segment = None;
            wait_until(Duration::from_secs(15), || {
                segment = first_segment(&hls_dir, "mystream");
                segment.is_some()
            });
            let segment = segment.expect("a HLS segment");
            let (u, p) = READER;
            ffprobe_frames(
                &[],
                &format!("http://{u}:{p}@127.0.0.1:{hls_port}/mystream/{segment}"),
            )
        })
    });
    // Listed in the API and the metrics, with its source and what it received.
    let paths: serde_json::Value = serde_json::from_str(&http_get(&gw, "/v1/paths")).unwrap();
    let p = &paths.as_array().unwrap()[0];
    assert_eq!(p["name"], "mystream", "{paths}");
    assert_eq!(p["source"]["type"], "rtspPublisher", "{paths}");
    assert!(p["bytes_received"].as_u64().unwrap() > 0, "{paths}");
    let metrics = http_get(&gw, "/metrics");
    assert!(
        metrics.contains("gateway_paths{source=\"rtspPublisher\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("paths_bytes_received{name=\"mystream\""),
        "{metrics}"
    );
    // The publisher's RTP health, from the record media's RTP sessions (loopback: no loss).
    assert!(
        wait_until(Duration::from_secs(10), || gw
            .published()
            .iter()
            .any(|p| p.rtp.is_some_and(|h| h.packets > 50))),
        "RTP packets counted: {:?}",
        gw.published()
    );
    let health = gw.published()[0].rtp.expect("RTP health");
    assert_eq!(health.lost, 0, "{health:?}");
    let paths: serde_json::Value = serde_json::from_str(&http_get(&gw, "/v1/paths")).unwrap();
    assert!(
        paths[0]["rtp_packets_received"].as_u64().unwrap() > 50,
        "{paths}"
    );
    assert!(paths[0]["rtp_jitter_ms"].as_f64().is_some(), "{paths}");
    // Read until the publisher leaves: the reader's stream ends with it.
    let frames = read_rtsp(&url(&gw, "mystream", READER));
    assert!(frames_of(&frames, codecs[0]) >= 25, "{frames:?}");
    assert!(frames_of(&frames, codecs[1]) >= 1, "{frames:?}");
    if let Some(r) = hls_reader {
        let frames = r.join().unwrap();
        assert!(frames_of(&frames, codecs[0]) >= 25, "HLS: {frames:?}");
        assert!(frames_of(&frames, codecs[1]) >= 1, "HLS: {frames:?}");
    }
    let (code, err) = publisher_result(publisher, Duration::from_secs(20));
    assert_eq!(code, Some(0), "publisher: {err}");
    assert!(
        wait_until(Duration::from_secs(10), || gw.published().is_empty()),
        "path gone"
    );
    let (status, _) = request(gw.rtsp_port(), "DESCRIBE", "mystream", Some(READER), b"");
    assert_eq!(status, 404);
    if hls {
        assert!(
            wait_until(Duration::from_secs(10), || !gw
                .hls_dir()
                .unwrap()
                .join("mystream")
                .exists()),
            "its HLS directory goes with it"
        );
    }
    gw.stop();
}

#[test]
fn ffmpeg_publishes_over_tcp_and_readers_play_rtsp_and_hls() {
    publish_and_read("tcp", true, &clip(8), ["h264", "aac"]);
}

#[test]
fn ffmpeg_publishes_over_udp_and_readers_play() {
    publish_and_read("udp", false, &clip(8), ["h264", "aac"]);
}

#[test]
fn ffmpeg_publishes_h265_and_g711() {
    publish_and_read("tcp", false, &clip_h265_alaw(8), ["hevc", "pcm_alaw"]);
}

/// A raw ANNOUNCE of [`H264_SDP`] by [`PUBLISHER`] to `path`: its status and head.
fn announce(gw: &Gateway, path: &str, sdp: &[u8]) -> (u16, String) {
    request(gw.rtsp_port(), "ANNOUNCE", path, Some(PUBLISHER), sdp)
}

/// A publisher that announced and left (connection closed) leaves nothing behind.
fn announce_accepted_then_gone(gw: &Gateway, path: &str) {
    let (status, head) = announce(gw, path, H264_SDP.as_bytes());
    assert_eq!(status, 200, "{head}");
    assert!(
        wait_until(Duration::from_secs(10), || gw.published().is_empty()),
        "a publisher that left is forgotten: {:?}",
        gw.published()
    );
}

#[test]
fn publishing_needs_the_publish_permission() {
    let _g = serial();
    let mut gw = start(loopback_config("127.0.0.1"));
    let port = gw.rtsp_port();
    let sdp = H264_SDP.as_bytes();
    assert_eq!(request(port, "ANNOUNCE", "mystream", None, sdp).0, 401);
    assert_eq!(
        request(port, "ANNOUNCE", "mystream", Some(READER), sdp).0,
        403
    );
    assert_eq!(
        request(
            port,
            "ANNOUNCE",
            "mystream",
            Some(("publisher", "wrong")),
            sdp
        )
        .0,
        401
    );
    // ffmpeg as a reader-only user: refused, nothing published.
    let p = ffmpeg_publish(&clip(8), &url(&gw, "mystream", READER), "tcp");
    let (code, err) = publisher_result(p, Duration::from_secs(15));
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("403"), "{err}");
    assert!(gw.published().is_empty());
    announce_accepted_then_gone(&gw, "mystream");
    gw.stop();
}

#[test]
fn second_publisher_is_refused_and_the_first_keeps_publishing() {
    let _g = serial();
    let mut gw = start(loopback_config("127.0.0.1"));
    let first = ffmpeg_publish(&clip(12), &url(&gw, "mystream", PUBLISHER), "tcp");
    assert!(wait_until(Duration::from_secs(15), || published(
        &gw, "mystream"
    )));
    let (status, head) = announce(&gw, "mystream", H264_SDP.as_bytes());
    assert_eq!(status, 455, "{head}");
    assert!(head.contains("already has a publisher"), "{head}");
    let second = ffmpeg_publish(&clip(8), &url(&gw, "mystream", PUBLISHER), "udp");
    let (code, err) = publisher_result(second, Duration::from_secs(15));
    assert_ne!(code, Some(0), "{err}");
    // The first one still publishes, and readers get it.
    let before = gw.published()[0].bytes_received;
    let frames = ffprobe_frames(
        &["-rtsp_transport", "tcp", "-read_intervals", "%+3"],
        &url(&gw, "mystream", READER),
    );
    assert!(frames_of(&frames, "h264") >= 25, "{frames:?}");
    let p = gw.published();
    assert_eq!(p.len(), 1);
    assert!(p[0].bytes_received > before, "{p:?}");
    drop(first);
    assert!(wait_until(Duration::from_secs(10), || gw
        .published()
        .is_empty()));
    gw.stop();
}

#[test]
fn hostile_path_names_are_refused() {
    let _g = serial();
    let mut gw = start(loopback_config("127.0.0.1"));
    let sdp = H264_SDP.as_bytes();
    let long = "x".repeat(200);
    for (path, want) in [
        ("../x", 400),
        ("a/../../x", 400),
        ("%2e%2e/x", 400),
        (long.as_str(), 400),
        ("a/b/c/d/e", 400),
        // A GB28181 channel ID, a playback, the gateway's own routes.
        ("34020000001320000001", 403),
        ("playback-1", 403),
        ("v1", 403),
    ] {
        let (status, head) = announce(&gw, path, sdp);
        assert_eq!(status, want, "{path}: {head}");
        assert!(gw.published().is_empty(), "{path}");
    }
    // Still serving publishers with good names.
    announce_accepted_then_gone(&gw, "live/x");
    gw.stop();
}

#[test]
fn publishers_beyond_max_publishers_are_refused() {
    let _g = serial();
    let mut gw = start(Config {
        max_publishers: 2,
        ..loopback_config("127.0.0.1")
    });
    let file = clip(12);
    let a = ffmpeg_publish(&file, &url(&gw, "a", PUBLISHER), "tcp");
    let b = ffmpeg_publish(&file, &url(&gw, "b", PUBLISHER), "tcp");
    assert!(wait_until(Duration::from_secs(15), || published(&gw, "a")
        && published(&gw, "b")));
    let (status, head) = announce(&gw, "c", H264_SDP.as_bytes());
    assert_eq!(status, 503, "{head}");
    assert!(head.contains("max_publishers"), "{head}");
    let before: u64 = gw.published().iter().map(|p| p.bytes_received).sum();
    assert!(wait_until(Duration::from_secs(5), || {
        let p = gw.published();
        p.len() == 2 && p.iter().map(|p| p.bytes_received).sum::<u64>() > before
    }));
    drop((a, b));
    assert!(wait_until(Duration::from_secs(10), || gw
        .published()
        .is_empty()));
    announce_accepted_then_gone(&gw, "c");
    gw.stop();
}

#[test]
fn hostile_sdps_are_refused() {
    let _g = serial();
    let mut gw = start(loopback_config("127.0.0.1"));
    let head = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";
    let mut hundred = head.to_string();
    for n in 0..100 {
        hundred.push_str(&format!(
            "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:streamid={n}\r\n"
        ));
    }
    let mut huge = H264_SDP.to_string();
    while huge.len() < 20_000 {
        huge.push_str("a=x-filler:0123456789abcdef0123456789abcdef\r\n");
    }
    let vp8 = format!("{head}m=video 0 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n");
    let garbage: Vec<u8> = (0..4000u32).map(|i| (i * 7919 % 251) as u8).collect();
    for (what, sdp, want) in [
        ("100 media sections", hundred.as_bytes(), 400),
        ("20 kB", huge.as_bytes(), 413),
        ("VP8 only", vp8.as_bytes(), 415),
        ("garbage", &garbage[..], 400),
        ("no body", b"", 400),
    ] {
        let (status, resp) = announce(&gw, "mystream", sdp);
        assert_eq!(status, want, "{what}: {resp}");
        assert!(gw.published().is_empty(), "{what}");
    }
    announce_accepted_then_gone(&gw, "mystream");
    gw.stop();
}

/// A publisher that announces and then holds its connection without a session (never
/// SETUP/RECORD) keeps the path only until the idle timeout closes its connection.
#[test]
fn announcer_that_never_records_frees_the_path() {
    let _g = serial();
    let mut gw = start(Config {
        rtsp_idle_timeout_s: 2,
        ..loopback_config("127.0.0.1")
    });
    let port = gw.rtsp_port();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = H264_SDP.as_bytes();
    write!(
        s,
        "ANNOUNCE rtsp://127.0.0.1:{port}/held RTSP/1.0\r\nCSeq: 1\r\nAuthorization: {}\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n",
        basic_value(PUBLISHER.0, PUBLISHER.1),
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"RTSP/1.0 200");
    assert_eq!(gw.published().len(), 1);
    // Held: another publisher is refused meanwhile.
    assert_eq!(announce(&gw, "held", body).0, 455);
    assert!(
        wait_until(Duration::from_secs(15), || gw.published().is_empty()),
        "the idle announcer's connection is closed and the path freed"
    );
    announce_accepted_then_gone(&gw, "held");
    drop(s);
    gw.stop();
}

/// A publisher whose connection stays open but sends nothing (here ffmpeg stopped with
/// SIGSTOP) loses the path after `stream_timeout_s`, not after the RTSP session timeout.
#[test]
fn stalled_publisher_is_ended() {
    let _g = serial();
    let mut gw = start(Config {
        stream_timeout_s: 2,
        ..loopback_config("127.0.0.1")
    });
    let publisher = ffmpeg_publish(&clip(12), &url(&gw, "mystream", PUBLISHER), "tcp");
    assert!(wait_until(Duration::from_secs(15), || published(
        &gw, "mystream"
    )));
    let pid = publisher.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(
        wait_until(Duration::from_secs(10), || gw.published().is_empty()),
        "the stalled publisher's path is gone"
    );
    let (status, _) = request(gw.rtsp_port(), "DESCRIBE", "mystream", Some(READER), b"");
    assert_eq!(status, 404);
    let _ = Command::new("kill").args(["-CONT", &pid]).status();
    drop(publisher);
    announce_accepted_then_gone(&gw, "mystream");
    gw.stop();
}

//! The direct RTSP path (`rtsp_direct_tcp`), against the real gateway and a simulated
//! GB28181 camera over loopback: raw RTSP requests (framed by rtsp-types) check what the
//! gateway answers and sends itself; ffprobe is the real reader; a UDP reader shows the
//! connections the direct path does not serve reach gst-rtsp-server. A reader that stops
//! reading loses frames up to a key frame while the others go on.

mod common;
use common::rtsp::{Conn, basic};
use common::*;

use gst_ipcam_gateway::config::Config;
use gst_ipcam_gateway::gateway::Gateway;
use gst_ipcam_gateway::sim::wait_until;
use std::net::TcpStream;
use std::time::Duration;

fn start(direct: bool, queue_kib: u32, kbps: u32) -> (Gateway, String) {
    let cfg = Config {
        simulate: 1,
        sim_width: 320,
        sim_height: 240,
        sim_bitrate_kbps: kbps,
        rtsp_direct_tcp: direct,
        rtsp_write_queue_kib: queue_kib,
        ..loopback_config("127.0.0.1")
    };
    let gw = Gateway::start(cfg).expect("gateway starts");
    let ch = gw.config().sim_device_id(0);
    assert!(
        wait_until(Duration::from_secs(10), || gw.channels().contains(&ch)),
        "camera registered and mounted"
    );
    (gw, ch)
}

/// A video RTP packet: sequence number, RTP time, NAL unit type of the packet's first NAL
/// unit, FU start bit or single NAL.
#[derive(Debug, Clone, Copy)]
struct VideoPacket {
    seq: u16,
    ts: u32,
    nal: u8,
    starts: bool,
}

impl VideoPacket {
    /// The H.264 RTP packet `pkt` (None when too short).
    fn parse(pkt: &[u8]) -> Option<VideoPacket> {
        let nal = pkt.get(12)? & 0x1f;
        let fu = *pkt.get(13)?;
        let (nal, starts) = if nal == 28 {
            (fu & 0x1f, fu & 0x80 != 0)
        } else {
            (nal, true)
        };
        Some(VideoPacket {
            seq: u16::from_be_bytes([pkt[2], pkt[3]]),
            ts: u32::from_be_bytes([pkt[4], pkt[5], pkt[6], pkt[7]]),
            nal,
            starts,
        })
    }
}

/// A raw connection that DESCRIBEs, SETs UP both streams over TCP and PLAYs; returns it and
/// the PLAY response.
fn play(port: u16, ch: &str, conn: Conn) -> (Conn, common::rtsp::Resp) {
    let mut c = conn;
    let url = format!("rtsp://127.0.0.1:{port}/{ch}");
    let r = c.request("DESCRIBE", &url, &[basic(READER)]);
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(
        r.headers("Server"),
        vec!["gst-ipcam-gateway"],
        "answered by the direct path"
    );
    assert!(
        r.head.contains("H264/90000") && r.head.contains("PCMA/8000"),
        "{}",
        r.head
    );
    let r = c.request(
        "SETUP",
        &format!("{url}/stream=0"),
        &[
            basic(READER),
            ("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1".into()),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.head);
    let t = r.headers("Transport").join("");
    assert!(t.contains("interleaved=0-1") && t.contains("ssrc="), "{t}");
    let session = r.headers("Session")[0]
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let r = c.request(
        "SETUP",
        &format!("{url}/stream=1"),
        &[
            basic(READER),
            ("Transport", "RTP/AVP/TCP;unicast;interleaved=2-3".into()),
            ("Session", session.clone()),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.head);
    let r = c.request("PLAY", &url, &[basic(READER), ("Session", session)]);
    assert_eq!(r.status, 200, "{}", r.head);
    (c, r)
}

/// Reads `$` frames until `n` video packets came; (video packets, audio packets).
fn read_packets(c: &mut Conn, n: usize) -> (Vec<VideoPacket>, usize) {
    let mut video = Vec::new();
    let mut audio = 0;
    while video.len() < n {
        let (ch, pkt) = next_frame(c).expect("frames keep coming");
        match ch {
            0 => video.extend(VideoPacket::parse(&pkt)),
            2 => audio += 1,
            _ => {}
        }
    }
    (video, audio)
}

/// The next `$` frame: (channel, payload).
fn next_frame(c: &mut Conn) -> Option<(u8, Vec<u8>)> {
    use std::io::Read;
    loop {
        if c.buf.len() >= 4 && c.buf[0] == b'$' {
            let len = u16::from_be_bytes([c.buf[2], c.buf[3]]) as usize;
            if c.buf.len() >= 4 + len {
                let ch = c.buf[1];
                let pkt = c.buf[4..4 + len].to_vec();
                c.buf.drain(..4 + len);
                return Some((ch, pkt));
            }
        } else if c.buf.first().is_some_and(|b| *b != b'$') {
            // A response or request: skip it whole.
            match c.next_message(Duration::from_secs(20)) {
                Some(_) => continue,
                None => return None,
            }
        }
        c.s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut chunk = [0u8; 65536];
        match c.s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => c.buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[test]
fn tcp_readers_are_served_directly_and_start_at_a_key_frame() {
    let _s = serial();
    let (gw, ch) = start(true, 4096, 300);
    let port = gw.rtsp_port();
    let (mut c, r) = play(port, &ch, Conn::open(port));
    let info = r.headers("RTP-Info").join(",");
    assert!(
        info.contains("stream=0;seq=") && info.contains("stream=1;seq="),
        "{info}"
    );
    let first_seq: u16 = info
        .split("stream=0;seq=")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    let (video, audio) = read_packets(&mut c, 60);
    // The first picture is a clean one: SPS first (inline before the cached key frame).
    assert_eq!(
        video[0].nal,
        7,
        "first video NAL unit is an SPS: {:?}",
        &video[..4]
    );
    assert_eq!(video[0].seq, first_seq, "RTP-Info names the first packet");
    for w in video.windows(2) {
        assert_eq!(w[1].seq, w[0].seq.wrapping_add(1), "no gap: {w:?}");
    }
    assert!(audio > 0, "audio comes with the video");
    // The session is the gateway's own: in the snapshot, over TCP.
    let snap = gw.snapshot();
    let s: Vec<_> = snap.sessions.iter().filter(|s| s.path == ch).collect();
    assert_eq!(s.len(), 1, "{:?}", snap.sessions);
    assert_eq!(s[0].transport, "tcp");
    assert!(s[0].bytes_sent > 0);
    let p = snap.paths.iter().find(|p| p.name == ch).unwrap();
    assert_eq!(p.readers, 1);
    // A real client decodes both streams; a UDP reader is gst-rtsp-server's and plays too.
    let url = gw.url_with_credentials(&ch, READER.0, READER.1);
    for transport in ["tcp", "udp"] {
        let frames = ffprobe_frames(
            &["-rtsp_transport", transport, "-read_intervals", "%+3"],
            &url,
        );
        for codec in ["h264", "pcm_alaw"] {
            assert!(
                frames.iter().any(|(c, n)| c == codec && *n > 10),
                "{transport}: {codec} decoded: {frames:?}"
            );
        }
    }
    let r = c.request(
        "TEARDOWN",
        &format!("rtsp://127.0.0.1:{port}/{ch}"),
        &[basic(READER)],
    );
    assert_eq!(r.status, 454, "TEARDOWN without its session is refused");
}

#[test]
fn a_reader_that_stops_reading_loses_frames_to_a_key_frame_and_others_go_on() {
    let _s = serial();
    // A small queue and a busy camera (noise: the encoder spends its whole bitrate; the clip
    // is encoded as the gateway starts): the stalled reader's queue fills within seconds.
    // SAFETY: no other thread of this binary reads the environment now (serial()).
    unsafe { std::env::set_var("GW_SIM_PATTERN", "snow") };
    let started = start(true, 64, 2000);
    unsafe { std::env::remove_var("GW_SIM_PATTERN") };
    let (gw, ch) = started;
    let port = gw.rtsp_port();
    // Reader A with a small receive window, so that the kernel holds little for it.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())
        .unwrap();
    let a = Conn::from_stream(TcpStream::from(sock));
    let (mut a, _) = play(port, &ch, a);
    // A stops reading; B reads on, live, until the gateway dropped frames for A.
    let (mut b, _) = play(port, &ch, Conn::open(port));
    let mut video = Vec::new();
    let mut discarded = 0;
    for _ in 0..100 {
        video.extend(read_packets(&mut b, 100).0);
        discarded = gw
            .snapshot()
            .sessions
            .iter()
            .map(|s| s.frames_discarded)
            .sum::<u64>();
        if discarded > 0 {
            break;
        }
    }
    assert!(discarded > 0, "A's queue filled up");
    // B, meanwhile, lost nothing.
    for w in video.windows(2) {
        assert_eq!(w[1].seq, w[0].seq.wrapping_add(1), "B loses nothing: {w:?}");
    }
    // The metric says so too.
    assert!(
        gst_ipcam_gateway::metrics::render(&gw.snapshot())
            .contains("rtsp_sessions_outbound_frames_discarded{")
    );
    // A reads again: somewhere in its stream is a gap (frames dropped at the gateway), and
    // the first packet after it starts a key frame's access unit (SPS or IDR).
    // Whatever the kernel and the queue held for A, then the gap.
    let mut prev: Option<VideoPacket> = None;
    let mut after = None;
    for _ in 0..100_000 {
        let p = read_packets(&mut a, 1).0[0];
        if let Some(q) = prev
            && p.seq != q.seq.wrapping_add(1)
        {
            after = Some(p);
            break;
        }
        prev = Some(p);
    }
    let after = after.expect("the stalled reader lost frames");
    assert!(
        after.starts && matches!(after.nal, 5 | 7),
        "after the gap comes a key frame: {after:?}"
    );
    drop(gw);
}

/// Whether RTP time `a` comes after `b` (modulo 2^32).
fn rtp_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

#[test]
fn play_after_pause_goes_on_at_the_next_key_frame_with_times_going_forward() {
    let _s = serial();
    let (gw, ch) = start(true, 4096, 300);
    let port = gw.rtsp_port();
    let (mut c, r) = play(port, &ch, Conn::open(port));
    let session = r.headers("Session")[0]
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let url = format!("rtsp://127.0.0.1:{port}/{ch}");
    let mut before = read_packets(&mut c, 40).0;
    // PAUSE; the frames that come before its answer are kept, so `before` ends with the
    // last video packet sent.
    c.kept = Some(Vec::new());
    let r = c.request(
        "PAUSE",
        &url,
        &[basic(READER), ("Session", session.clone())],
    );
    assert_eq!(r.status, 200, "{}", r.head);
    before.extend(
        c.kept
            .take()
            .unwrap()
            .iter()
            .filter(|(ch, _)| *ch == 0)
            .filter_map(|(_, p)| VideoPacket::parse(p)),
    );
    let last = *before.last().unwrap();
    let r = c.request("PLAY", &url, &[basic(READER), ("Session", session)]);
    assert_eq!(r.status, 200, "{}", r.head);
    let info = r.headers("RTP-Info").join(",");
    let seq: u16 = info
        .split("stream=0;seq=")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("RTP-Info with seq: {info}"));
    assert_eq!(seq, last.seq.wrapping_add(1), "{info}");
    // Frames that were on their way before the answer to PLAY are none: PAUSE stopped them.
    let after = read_packets(&mut c, 20).0;
    let first = after[0];
    assert_eq!(first.seq, seq, "RTP-Info names the first packet after PLAY");
    assert!(
        first.starts && first.nal == 7,
        "the stream goes on with a key frame (SPS first): {first:?}"
    );
    assert!(
        rtp_after(first.ts, last.ts),
        "RTP times go forward across the pause: {last:?} then {first:?}"
    );
    for w in after.windows(2) {
        assert_eq!(w[1].seq, w[0].seq.wrapping_add(1), "no gap: {w:?}");
        assert!(
            !rtp_after(w[0].ts, w[1].ts),
            "times do not step back: {w:?}"
        );
    }
}

#[test]
fn a_required_option_gets_551_and_rtsp_2_goes_to_gst_rtsp_server() {
    use std::io::Write;
    let _s = serial();
    let (gw, ch) = start(true, 4096, 300);
    let port = gw.rtsp_port();
    let url = format!("rtsp://127.0.0.1:{port}/{ch}");
    let mut c = Conn::open(port);
    let r = c.request(
        "DESCRIBE",
        &url,
        &[basic(READER), ("Require", "com.example.funky".into())],
    );
    assert_eq!(r.status, 551, "{}", r.head);
    assert_eq!(r.headers("Unsupported"), vec!["com.example.funky"]);
    assert_eq!(r.headers("Server"), vec!["gst-ipcam-gateway"]);
    // The connection goes on.
    let r = c.request("DESCRIBE", &url, &[basic(READER)]);
    assert_eq!(r.status, 200, "{}", r.head);
    // RTSP 2.0 is handed over; gst-rtsp-server refuses the same option the same way.
    let mut c = Conn::open(port);
    let auth = basic(READER).1;
    write!(
        c.s,
        "DESCRIBE {url} RTSP/2.0\r\nCSeq: 1\r\nAuthorization: {auth}\r\n\
         Require: com.example.funky\r\nAccept-Ranges: npt\r\n\r\n"
    )
    .unwrap();
    let r = c.response("an RTSP 2.0 DESCRIBE");
    assert_ne!(r.headers("Server"), vec!["gst-ipcam-gateway"], "{}", r.head);
    assert!(r.head.starts_with("RTSP/2.0 551"), "{}", r.head);
    assert_eq!(r.headers("Unsupported"), vec!["com.example.funky"]);
}

#[test]
fn with_the_direct_path_off_gst_rtsp_server_serves_tcp_readers() {
    let _s = serial();
    let (gw, ch) = start(false, 4096, 300);
    let port = gw.rtsp_port();
    let url = format!("rtsp://127.0.0.1:{port}/{ch}");
    let r = Conn::open(port).request("DESCRIBE", &url, &[basic(READER)]);
    assert_eq!(r.status, 200);
    assert_ne!(r.headers("Server"), vec!["gst-ipcam-gateway"]);
    let url = gw.url_with_credentials(&ch, READER.0, READER.1);
    let frames = ffprobe_frames(&["-rtsp_transport", "tcp", "-read_intervals", "%+3"], &url);
    assert!(
        frames.iter().any(|(c, n)| c == "h264" && *n > 10),
        "{frames:?}"
    );
}

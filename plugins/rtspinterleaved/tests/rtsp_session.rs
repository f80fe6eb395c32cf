//! Records a real RTSP-over-TCP session (gst-rtsp-server ↔ ffmpeg through a relay in the
//! test) and checks that `rtspinterleavedparse` recovers exactly the RTP/RTCP packets the
//! server sent, and that the video remuxes to an MP4 with every frame (ffprobe as oracle),
//! also after garbage, truncated frames and extra RTSP text were spliced into the dump.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::glib;
use gst::prelude::*;
use gst_ipcam_testutil::wait_until;
use gst_rtsp_server::prelude::*;

const FRAMES: u32 = 45;

fn init() {
    gst_ipcam_testutil::init_with(|| {
        gstrtspinterleaved::plugin_register_static().expect("register rtspinterleaved");
    });
}

fn scratch(name: &str) -> PathBuf {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("rtspi-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

struct Server {
    _server: gst_rtsp_server::RTSPServer,
    main_loop: glib::MainLoop,
    thread: Option<std::thread::JoinHandle<()>>,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.main_loop.quit();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start_server() -> Server {
    let ctx = glib::MainContext::new();
    let server = gst_rtsp_server::RTSPServer::new();
    server.set_address("127.0.0.1");
    server.set_service("0");
    let factory = gst_rtsp_server::RTSPMediaFactory::new();
    factory.set_launch(&format!(
        "( videotestsrc is-live=true num-buffers={FRAMES} ! video/x-raw,width=320,height=240,framerate=30/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 ! rtph264pay name=pay0 pt=96 \
         audiotestsrc is-live=true samplesperbuffer=160 num-buffers={} ! audio/x-raw,rate=8000,channels=1 \
         ! alawenc ! rtppcmapay name=pay1 pt=8 )",
        FRAMES * 50 / 30
    ));
    factory.set_protocols(gst_rtsp_server::gst_rtsp::RTSPLowerTrans::TCP);
    server.mount_points().unwrap().add_factory("/test", factory);
    let _id = server.attach(Some(&ctx)).unwrap();
    let port = server.bound_port() as u16;
    let main_loop = glib::MainLoop::new(Some(&ctx), false);
    let ml = main_loop.clone();
    let thread = std::thread::spawn(move || {
        ctx.with_thread_default(|| ml.run()).unwrap();
    });
    Server {
        _server: server,
        main_loop,
        thread: Some(thread),
        port,
    }
}

/// One complete item of the session, as the relay saw it.
#[derive(Clone, Debug)]
enum Unit {
    /// Server → client `$` frame.
    Frame { channel: u8, bytes: Vec<u8> },
    /// RTSP request or response (either direction).
    Text(Vec<u8>),
}

impl Unit {
    fn wire(&self) -> Vec<u8> {
        match self {
            Unit::Frame { channel, bytes } => {
                let mut f = vec![b'$', *channel];
                f.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
                f.extend_from_slice(bytes);
                f
            }
            Unit::Text(t) => t.clone(),
        }
    }
}

/// Length of the complete item at the start of `buf` (the relay's own framing).
fn unit_len(buf: &[u8]) -> Option<usize> {
    if buf.first()? == &b'$' {
        let len = u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize;
        return (buf.len() >= 4 + len).then_some(4 + len);
    }
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]);
    let body: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    (buf.len() >= end + body).then_some(end + body)
}

/// Copies `from` → `to`, recording complete items into `units` (client `$` frames, i.e.
/// its RTCP receiver reports, are forwarded but not recorded).
fn pump(mut from: TcpStream, mut to: TcpStream, units: Arc<Mutex<Vec<Unit>>>, server_side: bool) {
    let mut pending = Vec::new();
    let mut buf = vec![0u8; 16384];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        pending.extend_from_slice(&buf[..n]);
        while let Some(len) = unit_len(&pending) {
            let item: Vec<u8> = pending.drain(..len).collect();
            let unit = if item[0] == b'$' {
                if !server_side {
                    continue;
                }
                Unit::Frame {
                    channel: item[1],
                    bytes: item[4..].to_vec(),
                }
            } else {
                Unit::Text(item)
            };
            units.lock().unwrap().push(unit);
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Runs ffmpeg (forced to TCP) against the server through a recording relay.
fn record_session(server_port: u16) -> Vec<Unit> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let relay_port = listener.local_addr().unwrap().port();
    let url = format!("rtsp://127.0.0.1:{relay_port}/test");
    let mut ffmpeg = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-rtsp_transport", "tcp"])
        .args([
            "-timeout", "5000000", "-i", &url, "-c", "copy", "-f", "null", "-",
        ])
        .spawn()
        .expect("ffmpeg");
    listener.set_nonblocking(true).unwrap();
    let mut client = None;
    if !wait_until(Duration::from_secs(10), || {
        client = listener.accept().ok().map(|(s, _)| s);
        client.is_some()
    }) {
        let _ = ffmpeg.kill();
        panic!("ffmpeg did not connect");
    }
    let client = client.expect("accepted");
    client.set_nonblocking(false).unwrap();
    let server = TcpStream::connect(("127.0.0.1", server_port)).unwrap();
    let units = Arc::new(Mutex::new(Vec::new()));
    let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let u1 = units.clone();
    let up = std::thread::spawn(move || pump(client, server, u1, false));
    let u2 = units.clone();
    let down = std::thread::spawn(move || pump(s2, c2, u2, true));

    // ffmpeg ends on the server's RTCP BYE; bound it anyway.
    if !wait_until(Duration::from_secs(30), || {
        ffmpeg.try_wait().unwrap().is_some()
    }) {
        let _ = ffmpeg.kill();
        let _ = ffmpeg.wait();
    }
    up.join().unwrap();
    down.join().unwrap();
    Arc::try_unwrap(units).unwrap().into_inner().unwrap()
}

fn session() -> &'static Vec<Unit> {
    static SESSION: std::sync::OnceLock<Vec<Unit>> = std::sync::OnceLock::new();
    SESSION.get_or_init(|| {
        init();
        let server = start_server();
        let units = record_session(server.port);
        drop(server);
        units
    })
}

/// Access units the server sent on channel 0: distinct RTP timestamps (the relay's view;
/// a live server may drop a frame around PLAY, so this is the oracle, not FRAMES).
fn sent_video_frames(units: &[Unit]) -> u64 {
    let mut stamps = std::collections::BTreeSet::new();
    for u in units {
        if let Unit::Frame { channel: 0, bytes } = u
            && bytes.len() >= 12
            && !(200..=204).contains(&bytes[1])
        {
            stamps.insert(u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]));
        }
    }
    let n = stamps.len() as u64;
    assert!(
        (FRAMES as u64 - 2..=FRAMES as u64).contains(&n),
        "server sent {n} video frames, expected about {FRAMES}"
    );
    n
}

fn expected_frames(units: &[Unit]) -> BTreeMap<u8, Vec<Vec<u8>>> {
    let mut m: BTreeMap<u8, Vec<Vec<u8>>> = BTreeMap::new();
    for u in units {
        if let Unit::Frame { channel, bytes } = u {
            m.entry(*channel).or_default().push(bytes.clone());
        }
    }
    m
}

struct Parsed {
    /// Pad name → buffers.
    pads: BTreeMap<String, Vec<Vec<u8>>>,
    caps: BTreeMap<String, gst::Caps>,
    pts: BTreeMap<String, Vec<Option<gst::ClockTime>>>,
    messages: Vec<gst::Structure>,
    stats: gst::Structure,
}

fn run_to_eos(pipeline: &gst::Pipeline, messages: &mut Vec<gst::Structure>) {
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "pipeline timed out");
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(left.as_millis() as u64))
        else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("pipeline error: {} ({:?})", e.error(), e.debug()),
            gst::MessageView::Element(e) => {
                if let Some(s) = e.structure()
                    && s.name() == "rtsp-message"
                {
                    messages.push(s.to_owned());
                }
            }
            _ => {}
        }
    }
}

fn parse_dump(path: &Path, blocksize: u32) -> Parsed {
    init();
    let pipeline = gst::Pipeline::new();
    let src = gst::ElementFactory::make("filesrc")
        .property("location", path.to_str().unwrap())
        .property("blocksize", blocksize)
        .build()
        .unwrap();
    let parse = gst::ElementFactory::make("rtspinterleavedparse")
        .build()
        .unwrap();
    pipeline.add_many([&src, &parse]).unwrap();
    src.link(&parse).unwrap();
    type Shared<T> = Arc<Mutex<BTreeMap<String, T>>>;
    let pads: Shared<Vec<Vec<u8>>> = Default::default();
    let pts: Shared<Vec<Option<gst::ClockTime>>> = Default::default();
    let caps: Shared<gst::Caps> = Default::default();
    let pipeline_weak = pipeline.downgrade();
    let (p2, t2, c2) = (pads.clone(), pts.clone(), caps.clone());
    parse.connect_pad_added(move |_, pad| {
        let Some(pipeline) = pipeline_weak.upgrade() else {
            return;
        };
        let name = pad.name().to_string();
        let sink = gst_app::AppSink::builder().sync(false).build();
        // Pads appear one after the other in one streaming thread: no preroll wait per sink.
        sink.set_property("async", false);
        let (p3, t3, c3, n3) = (p2.clone(), t2.clone(), c2.clone(), name.clone());
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    if let Some(c) = sample.caps() {
                        c3.lock().unwrap().insert(n3.clone(), c.to_owned());
                    }
                    let buf = sample.buffer().unwrap();
                    let map = buf.map_readable().unwrap();
                    p3.lock()
                        .unwrap()
                        .entry(n3.clone())
                        .or_default()
                        .push(map.to_vec());
                    t3.lock()
                        .unwrap()
                        .entry(n3.clone())
                        .or_default()
                        .push(buf.pts());
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        pipeline.add(&sink).unwrap();
        sink.sync_state_with_parent().unwrap();
        pad.link(&sink.static_pad("sink").unwrap()).unwrap();
    });
    let mut messages = Vec::new();
    run_to_eos(&pipeline, &mut messages);
    let stats = parse.property::<gst::Structure>("stats");
    pipeline.set_state(gst::State::Null).unwrap();
    let pads = pads.lock().unwrap().clone();
    let caps = caps.lock().unwrap().clone();
    let pts = pts.lock().unwrap().clone();
    Parsed {
        pads,
        caps,
        pts,
        messages,
        stats,
    }
}

fn write_dump(name: &str, units: &[Unit]) -> PathBuf {
    let path = scratch(name);
    let mut bytes = Vec::new();
    for u in units {
        bytes.extend(u.wire());
    }
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Packets per channel as the parser output them (RTP pad and RTCP pad of that channel).
fn by_channel(parsed: &Parsed) -> BTreeMap<u8, Vec<Vec<u8>>> {
    let mut m = BTreeMap::new();
    for (name, bufs) in &parsed.pads {
        let ch: u8 = name.rsplit('_').next().unwrap().parse().unwrap();
        m.entry(ch)
            .or_insert_with(Vec::new)
            .extend(bufs.iter().cloned());
    }
    m
}

/// Remuxes rtp_0 of the dump to MP4; returns the MP4's video packet sizes (ffprobe).
fn remux_and_count(dump: &Path, name: &str, frames: u64) -> Vec<u64> {
    let out = scratch(name);
    let pipeline = gst::parse::launch(&format!(
        "filesrc location={} ! rtspinterleavedparse name=p p.rtp_0 ! rtph264depay ! h264parse ! mp4mux ! filesink location={}",
        dump.display(),
        out.display()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    run_to_eos(&pipeline, &mut Vec::new());
    pipeline.set_state(gst::State::Null).unwrap();
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-count_packets"])
        .args([
            "-show_entries",
            "stream=nb_read_packets,duration",
            "-of",
            "csv=p=0",
        ])
        .arg(&out)
        .output()
        .expect("ffprobe");
    let text = String::from_utf8_lossy(&probe.stdout).to_string();
    let mut fields = text.trim().split(',');
    let duration: f64 = fields.next().and_then(|d| d.parse().ok()).unwrap_or(0.0);
    let packets: u64 = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    // Remuxed at the stream's own speed: 30 fps.
    let want = frames as f64 / 30.0;
    assert!(
        (duration - want).abs() < 0.2,
        "MP4 duration {duration} s, expected about {want} s ({text})"
    );
    let sizes = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=size",
        ])
        .args(["-of", "csv=p=0"])
        .arg(&out)
        .output()
        .expect("ffprobe");
    let sizes: Vec<u64> = String::from_utf8_lossy(&sizes.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert_eq!(sizes.len() as u64, packets);
    sizes
}

#[test]
fn recorded_session_gives_the_servers_packets() {
    let units = session();
    let expected = expected_frames(units);
    assert!(
        expected.get(&0).map_or(0, |v| v.len()) >= FRAMES as usize,
        "relay saw too few video packets: {:?}",
        expected
            .iter()
            .map(|(c, v)| (c, v.len()))
            .collect::<Vec<_>>()
    );
    assert!(expected.contains_key(&2), "no audio channel in the session");
    let dump = write_dump("session.bin", units);
    for blocksize in [4096, 1000, 65536] {
        let parsed = parse_dump(&dump, blocksize);
        let got = by_channel(&parsed);
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>()
        );
        for (ch, want) in &expected {
            assert_eq!(
                got[ch].len(),
                want.len(),
                "channel {ch}, blocksize {blocksize}"
            );
            assert!(got[ch] == *want, "channel {ch} payloads differ");
        }
        // Caps from the DESCRIBE SDP.
        let v = parsed.caps["rtp_0"].structure(0).unwrap();
        assert_eq!(v.get::<&str>("encoding-name").unwrap(), "H264");
        assert_eq!(v.get::<i32>("clock-rate").unwrap(), 90000);
        assert!(v.has_field("sprop-parameter-sets"), "{v}");
        let a = parsed.caps["rtp_2"].structure(0).unwrap();
        assert_eq!(a.get::<&str>("encoding-name").unwrap(), "PCMA");
        assert_eq!(a.get::<i32>("clock-rate").unwrap(), 8000);
        assert_eq!(
            parsed.caps["rtcp_1"].structure(0).unwrap().name(),
            "application/x-rtcp"
        );
        // RTSP messages posted, in order, with the SETUP exchanges.
        let texts = units.iter().filter(|u| matches!(u, Unit::Text(_))).count();
        assert_eq!(parsed.messages.len(), texts);
        assert!(parsed.messages.iter().any(|m| {
            m.get::<&str>("method").ok() == Some("SETUP")
                && m.get::<gst::Structure>("headers").is_ok_and(|h| {
                    h.get::<&str>("transport")
                        .is_ok_and(|t| t.contains("interleaved=0-1"))
                })
        }));
        let st = &parsed.stats;
        let total: usize = expected.values().map(|v| v.len()).sum();
        assert_eq!(st.get::<u64>("frames").unwrap() as usize, total);
        assert_eq!(st.get::<u64>("rtsp-messages").unwrap() as usize, texts);
        assert_eq!(st.get::<u64>("resyncs").unwrap(), 0);
        // RTP-time mode: video times advance at 90 kHz from 0.
        let pts = &parsed.pts["rtp_0"];
        let last = pts.iter().flatten().max().unwrap();
        assert_eq!(pts[0], Some(gst::ClockTime::ZERO));
        let want = gst::ClockTime::from_mseconds((sent_video_frames(units) - 1) * 1000 / 30);
        assert!(
            last.nseconds().abs_diff(want.nseconds()) < 40_000_000,
            "{last} vs {want}"
        );
    }
    let n = sent_video_frames(units);
    assert_eq!(remux_and_count(&dump, "clean.mp4", n).len() as u64, n);
}

/// Deterministic junk with look-alikes of frame headers and RTSP text.
fn garbage(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    let mut g: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            // No '$': a random well-formed frame header in garbage is indistinguishable.
            match (x >> 8) as u8 {
                b'$' => b'#',
                b => b,
            }
        })
        .collect();
    // A '$' with a bad version, and a text start that is not RTSP.
    g.extend_from_slice(b"$\x00\x00\x20\x11\x22PLAYBACK junk\r\n");
    g
}

#[test]
fn spliced_session_still_gives_every_packet() {
    let units = session();
    let expected = expected_frames(units);
    let mut spliced = Vec::new();
    let mut inserted_garbage = 0;
    let mut frames = 0;
    for (i, u) in units.iter().enumerate() {
        if let Unit::Frame { bytes, .. } = u {
            frames += 1;
            // A truncated copy of the frame before it (capture loss mid-frame).
            if frames % 11 == 5 {
                let wire = u.wire();
                let cut = (bytes.len() / 2).clamp(5, 60);
                spliced.push(Unit::Text(wire[..cut].to_vec()));
            }
        }
        spliced.push(u.clone());
        if i % 9 == 4 {
            let g = garbage(i as u32, 20 + i % 50);
            inserted_garbage += g.len();
            spliced.push(Unit::Text(g));
        }
        if i % 17 == 8 {
            spliced.push(Unit::Text(
                b"GET_PARAMETER rtsp://127.0.0.1/test RTSP/1.0\r\nCSeq: 999\r\nContent-Length: 4\r\n\r\nping"
                    .to_vec(),
            ));
        }
    }
    // Truncated trailing frame at the end of the dump.
    spliced.push(Unit::Text(b"$\x00\x05\x00\x80\x60".to_vec()));
    let dump = write_dump("spliced.bin", &spliced);
    for blocksize in [4096, 777] {
        let parsed = parse_dump(&dump, blocksize);
        let got = by_channel(&parsed);
        for (ch, want) in &expected {
            assert_eq!(
                got[ch].len(),
                want.len(),
                "channel {ch}, blocksize {blocksize}"
            );
            assert!(got[ch] == *want, "channel {ch} payloads differ");
        }
        let st = &parsed.stats;
        assert!(st.get::<u64>("resyncs").unwrap() > 0);
        assert!(st.get::<u64>("skipped-bytes").unwrap() as usize >= inserted_garbage);
    }
    let n = sent_video_frames(units);
    let spliced_sizes = remux_and_count(&dump, "spliced.mp4", n);
    assert_eq!(spliced_sizes.len() as u64, n);
    // Every frame whole: the same access units as the clean session's.
    let clean = write_dump("clean-for-spliced.bin", units);
    assert_eq!(
        spliced_sizes,
        remux_and_count(&clean, "clean-for-spliced.mp4", n)
    );
}

//! RTMP end to end over loopback: ffmpeg publishing (`-f flv rtmp://...`) into the gateway's
//! listener, ffprobe reading, and the attacks the listener bounds (huge chunk size, 16 MiB
//! message, 10k chunk streams, a handshake that never ends, random bytes), each followed by
//! a normal publish to show the service keeps serving.

mod common;
use common::*;

use gst::prelude::*;
use gst_ipcam_gateway::auth::{Action, REALM, UserConfig, Users};
use gst_ipcam_gateway::config::Config;
use gst_ipcam_gateway::gateway::Gateway;
use gst_ipcam_gateway::rtmp::amf0::{self, Value};
use gst_ipcam_gateway::rtmp::chunk::{ChunkWriter, Message};
use gst_ipcam_gateway::rtmp::media::FlvSource;
use gst_ipcam_gateway::rtmp::{Outbox, Paths, Publisher, Refusal, Server, Settings};
use gst_ipcam_gateway::sim::wait_until;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PUBLISHER: (&str, &str) = ("pub", "pub-pw");

/// A 2 s H.264 (25 fps, a key frame a second) + AAC clip made by ffmpeg.
fn clip(dir: &Path) -> PathBuf {
    let f = dir.join("clip.mp4");
    let ok = Command::new("timeout")
        .args([
            "60",
            "ffmpeg",
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "error",
        ])
        .args(["-f", "lavfi", "-i", "testsrc=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
        .args([
            "-t", "2", "-c:v", "libx264", "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac", "-y",
        ])
        .arg(&f)
        .status()
        .expect("ffmpeg runs")
        .success();
    assert!(ok, "ffmpeg made no clip");
    f
}

/// ffmpeg sending `file` in real time with `-c copy` and the `output` options and URL: once,
/// bounded by `timeout 30`, or (`looped`) for ever.
fn ffmpeg_send(file: &Path, looped: bool, output: &[&str]) -> Command {
    let mut cmd = if looped {
        Command::new("ffmpeg")
    } else {
        let mut c = Command::new("timeout");
        c.args(["30", "ffmpeg"]);
        c
    };
    cmd.args(["-nostdin", "-hide_banner", "-loglevel", "error", "-re"]);
    if looped {
        cmd.args(["-stream_loop", "-1"]);
    }
    cmd.arg("-i").arg(file).args(["-c", "copy"]).args(output);
    cmd
}

/// ffmpeg publishing `file` (real time) to `url`; its exit status.
fn publish(file: &Path, url: &str) -> std::process::ExitStatus {
    ffmpeg_send(file, false, &["-f", "flv", url])
        .status()
        .expect("ffmpeg runs")
}

fn users() -> Arc<Users> {
    let users = [
        UserConfig::with_password(PUBLISHER.0, PUBLISHER.1, &[(Action::Publish, "~^live/")])
            .unwrap(),
        UserConfig::with_password(READER.0, READER.1, &[(Action::Read, "")]).unwrap(),
    ];
    Arc::new(Users::from_config(&users, REALM).unwrap())
}

/// Publishers into `appsrc ! flvdemux`, each stream counted by an appsink.
#[derive(Default)]
struct Demuxed {
    video: Arc<AtomicUsize>,
    audio: Arc<AtomicUsize>,
    caps: Arc<Mutex<Vec<String>>>,
    pipelines: Mutex<Vec<gst::Pipeline>>,
}

impl Paths for Demuxed {
    fn publish(&self, path: &str) -> Result<Box<dyn Publisher>, Refusal> {
        let source = FlvSource::new(path).map_err(|e| Refusal {
            code: "NetStream.Publish.BadName",
            description: e,
        })?;
        let pipeline = gst::Pipeline::new();
        let bin = source.element();
        pipeline.add(&bin).unwrap();
        let (video, audio, caps) = (self.video.clone(), self.audio.clone(), self.caps.clone());
        let weak = pipeline.downgrade();
        bin.connect_pad_added(move |_, pad| {
            let Some(pipeline) = weak.upgrade() else {
                return;
            };
            let count = if pad.name().starts_with("video") {
                video.clone()
            } else {
                audio.clone()
            };
            let caps = caps.clone();
            let sink = gst_app::AppSink::builder()
                .sync(false)
                .callbacks(
                    gst_app::AppSinkCallbacks::builder()
                        .new_sample(move |s| {
                            let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                            if count.fetch_add(1, Ordering::SeqCst) == 0
                                && let Some(c) = sample.caps().and_then(|c| c.structure(0))
                            {
                                caps.lock().unwrap().push(c.name().to_string());
                            }
                            Ok(gst::FlowSuccess::Ok)
                        })
                        .build(),
                )
                .build();
            pipeline.add(&sink).unwrap();
            sink.sync_state_with_parent().unwrap();
            pad.link(&sink.static_pad("sink").unwrap()).unwrap();
        });
        pipeline.set_state(gst::State::Playing).unwrap();
        self.pipelines.lock().unwrap().push(pipeline);
        Ok(Box::new(source))
    }

    fn play(&self, path: &str, _: Outbox) -> Result<Box<dyn Send>, Refusal> {
        Err(Refusal {
            code: "NetStream.Play.StreamNotFound",
            description: format!("{path}: not here"),
        })
    }
}

impl Drop for Demuxed {
    fn drop(&mut self) {
        for p in self.pipelines.lock().unwrap().iter() {
            let _ = p.set_state(gst::State::Null);
        }
    }
}

fn start(paths: Arc<dyn Paths>, settings: Settings) -> Server {
    gst_ipcam_gateway::gateway::init().unwrap();
    Server::start("127.0.0.1", 0, users(), paths, settings, Default::default()).unwrap()
}

fn url(addr: SocketAddr, path: &str, creds: (&str, &str)) -> String {
    format!("rtmp://{addr}/{path}?user={}&pass={}", creds.0, creds.1)
}

#[test]
fn ffmpeg_publish_is_received_and_demuxed() {
    let _s = serial();
    let dir = scratch("rtmp-publish");
    let file = clip(&dir);
    let paths = Arc::new(Demuxed::default());
    let server = start(paths.clone(), Settings::default());
    let t = Instant::now();
    let status = publish(&file, &url(server.local_addr(), "live/x", PUBLISHER));
    assert!(status.success(), "ffmpeg publish: {status}");
    assert!(wait_until(Duration::from_secs(5), || paths
        .video
        .load(Ordering::SeqCst)
        >= 50));
    assert!(
        paths.audio.load(Ordering::SeqCst) >= 50,
        "audio frames: {}",
        paths.audio.load(Ordering::SeqCst)
    );
    let mut caps = paths.caps.lock().unwrap().clone();
    caps.sort();
    assert_eq!(caps, vec!["audio/mpeg", "video/x-h264"]);
    assert!(server.stats().bytes_received.load(Ordering::Relaxed) > 10_000);
    eprintln!("published in {:?}", t.elapsed());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_credentials_are_refused() {
    let _s = serial();
    let dir = scratch("rtmp-creds");
    let file = clip(&dir);
    let paths = Arc::new(Demuxed::default());
    let server = start(paths.clone(), Settings::default());
    let addr = server.local_addr();
    for u in [
        url(addr, "live/x", (PUBLISHER.0, "wrong")),
        format!("rtmp://{addr}/live/x"),
        // The reader may not publish, the publisher not outside live/.
        url(addr, "live/x", READER),
        url(addr, "other/x", PUBLISHER),
        url(addr, "live/..", PUBLISHER),
    ] {
        assert!(!publish(&file, &u).success(), "{u} was let in");
    }
    assert_eq!(paths.video.load(Ordering::SeqCst), 0);
    assert!(publish(&file, &url(addr, "live/x", PUBLISHER)).success());
    std::fs::remove_dir_all(&dir).ok();
}

/// A raw client: the handshake, then whatever a test writes.
fn handshake(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut c0c1 = vec![3u8];
    c0c1.extend(std::iter::repeat_n(7u8, 1536));
    s.write_all(&c0c1).unwrap();
    let mut s0s1s2 = vec![0u8; 1 + 2 * 1536];
    s.read_exact(&mut s0s1s2).unwrap();
    assert_eq!(&s0s1s2[1 + 1536..], &c0c1[1..]);
    s.write_all(&s0s1s2[1..1 + 1536]).unwrap();
    s
}

fn chunks(msg: Message) -> Vec<u8> {
    let mut out = Vec::new();
    ChunkWriter::default().write(&mut out, &msg);
    out
}

fn connect_command() -> Vec<u8> {
    let payload = amf0::encode_all(&[
        Value::String("connect".into()),
        Value::Number(1.0),
        Value::object(&[("app", Value::String("live".into()))]),
    ]);
    chunks(Message {
        csid: 3,
        timestamp: 0,
        type_id: 20,
        stream_id: 0,
        payload,
    })
}

/// Whether the server closed the connection (reads end) within `timeout`.
fn closed_within(s: &mut TcpStream, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 65536];
    while Instant::now() < end {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

/// The server answers connect on a fresh connection.
fn still_serving(addr: SocketAddr) -> bool {
    let mut s = handshake(addr);
    s.write_all(&connect_command()).unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
        if got
            .windows(29)
            .any(|w| w == b"NetConnection.Connect.Success")
        {
            return true;
        }
    }
    false
}

#[test]
fn hostile_clients_are_cut_off_and_others_served() {
    let _s = serial();
    let settings = Settings {
        handshake_timeout: Duration::from_secs(2),
        ..Settings::default()
    };
    let paths = Arc::new(Demuxed::default());
    let server = start(paths, settings);
    let addr = server.local_addr();
    let refused = || server.stats().refused.load(Ordering::SeqCst);

    // Set Chunk Size 2^31 - 1 (and 2^31, whose top bit the spec says is 0).
    for size in [0x7FFF_FFFFu32, 0x8000_0000] {
        let mut s = handshake(addr);
        let before = refused();
        s.write_all(&chunks(Message {
            csid: 2,
            timestamp: 0,
            type_id: 1,
            stream_id: 0,
            payload: size.to_be_bytes().to_vec(),
        }))
        .unwrap();
        assert!(
            closed_within(&mut s, Duration::from_secs(5)),
            "chunk size {size:#x}"
        );
        assert!(wait_until(Duration::from_secs(2), || refused() > before));
    }
    assert!(still_serving(addr));

    // A message header announcing 16 MiB: closed before its payload is sent.
    let mut s = handshake(addr);
    s.write_all(&[0x04, 0, 0, 0, 0xFF, 0xFF, 0xFF, 9, 1, 0, 0, 0])
        .unwrap();
    assert!(
        closed_within(&mut s, Duration::from_secs(5)),
        "16 MiB message"
    );
    assert!(still_serving(addr));

    // 10k chunk stream IDs, each opening a message that never finishes.
    let mut s = handshake(addr);
    let mut b = Vec::new();
    for c in 0..10_000u32 {
        b.extend_from_slice(&[
            1,
            (c & 0xFF) as u8,
            (c >> 8) as u8,
            0,
            0,
            0,
            0,
            0x10,
            0,
            9,
            1,
            0,
            0,
            0,
        ]);
        b.extend_from_slice(&[0; 128]);
    }
    let _ = s.write_all(&b);
    assert!(
        closed_within(&mut s, Duration::from_secs(5)),
        "10k chunk streams"
    );
    assert!(still_serving(addr));

    // A handshake that never finishes (C0 and half of C1), and one that never starts.
    let t = Instant::now();
    let mut stalled = TcpStream::connect(addr).unwrap();
    stalled.write_all(&[3; 700]).unwrap();
    let mut silent = TcpStream::connect(addr).unwrap();
    assert!(still_serving(addr), "served while two handshakes hang");
    assert!(closed_within(&mut stalled, Duration::from_secs(5)));
    assert!(closed_within(&mut silent, Duration::from_secs(5)));
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(5),
        "{took:?}"
    );

    // Random bytes after a handshake, and instead of one.
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    for round in 0..20 {
        let mut s = if round % 2 == 0 {
            handshake(addr)
        } else {
            TcpStream::connect(addr).unwrap()
        };
        let junk: Vec<u8> = (0..4096)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let _ = s.write_all(&junk);
        drop(s);
    }
    assert!(still_serving(addr));
    assert!(wait_until(Duration::from_secs(5), || server
        .stats()
        .conns
        .load(Ordering::SeqCst)
        == 0));
}

/// A gateway on loopback with its RTMP server on a free port and `simulate` cameras.
fn gateway(simulate: u32) -> Gateway {
    let cfg = Config {
        simulate,
        sim_width: 320,
        sim_height: 240,
        sim_bitrate_kbps: 500,
        rtmp_address: "127.0.0.1".into(),
        rtmp_port: free_port(),
        ..loopback_config("127.0.0.1")
    };
    let gw = Gateway::start(cfg).expect("gateway starts");
    let want: Vec<String> = (0..simulate)
        .map(|i| gw.config().sim_device_id(i))
        .collect();
    assert!(wait_until(Duration::from_secs(10), || {
        let chans = gw.channels();
        want.iter().all(|w| chans.contains(w))
    }));
    gw
}

#[test]
fn gb28181_channel_read_over_rtmp() {
    let _s = serial();
    let gw = gateway(1);
    let addr = gw.rtmp_addr().expect("RTMP server");
    let ch = gw.config().sim_device_id(0);
    let t = Instant::now();
    let v = ffprobe_frames(&["-read_intervals", "%+3"], &url(addr, &ch, READER));
    eprintln!("ffprobe over RTMP: {v:?} in {:?}", t.elapsed());
    assert!(frames_of(&v, "h264") >= 25, "{v:?}");
    assert!(frames_of(&v, "pcm_alaw") >= 10, "{v:?}");
    // Wrong password: nothing.
    let v = ffprobe_frames(&[], &url(addr, &ch, (READER.0, "nope")));
    assert!(v.is_empty(), "{v:?}");
    let snap = gw.snapshot();
    assert!(snap.rtmp_bytes_received > 0);
    // The reader left: the camera session ends (BYE) as after an RTSP reader.
    assert!(wait_until(Duration::from_secs(10), || gw
        .snapshot()
        .rtmp_conns
        == 0));
}

/// ffmpeg publishing `file` in a loop (real time) to `url` until dropped.
fn publish_loop(file: &Path, url: &str) -> ChildGuard {
    ChildGuard(
        ffmpeg_send(file, true, &["-f", "flv", url])
            .spawn()
            .expect("ffmpeg runs"),
    )
}

/// ffmpeg publishing `file` once over RTSP (TCP) to `url`: whether it succeeded, and what it
/// said.
fn publish_rtsp(file: &Path, url: &str) -> (bool, String) {
    let out = ffmpeg_send(file, false, &["-f", "rtsp", "-rtsp_transport", "tcp", url])
        .output()
        .expect("ffmpeg runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// An RTMP-published path is a path like any other: one registry with the RTSP publishers
/// (listed with its source, refused to a second publisher of either protocol), RTSP, RTMP and
/// HLS readers, and its readers cut when the publisher leaves.
#[test]
fn ffmpeg_publishes_a_path_read_over_rtsp_and_rtmp() {
    let _s = serial();
    let dir = scratch("rtmp-gw-publish");
    let file = clip(&dir);
    let hls_dir = dir.join("hls");
    let mut cfg = Config {
        rtmp_address: "127.0.0.1".into(),
        rtmp_port: free_port(),
        hls: true,
        hls_dir: hls_dir.clone(),
        ..loopback_config("127.0.0.1")
    };
    cfg.users.push(
        UserConfig::with_password(PUBLISHER.0, PUBLISHER.1, &[(Action::Publish, "~^live/")])
            .unwrap(),
    );
    // May read what is under live/ only: the RTSP permission sees the whole path.
    const LIVE_READER: (&str, &str) = ("live-reader", "live-pw");
    cfg.users.push(
        UserConfig::with_password(LIVE_READER.0, LIVE_READER.1, &[(Action::Read, "~^live/")])
            .unwrap(),
    );
    let gw = Gateway::start(cfg).expect("gateway starts");
    let addr = gw.rtmp_addr().expect("RTMP server");
    let publisher = publish_loop(&file, &url(addr, "live/x", PUBLISHER));
    assert!(wait_until(Duration::from_secs(10), || {
        gw.snapshot().rtmp_bytes_received > 50_000
    }));
    let listed = gw.published();
    assert!(
        listed.iter().any(|p| p.name == "live/x"
            && p.source == gst_ipcam_gateway::gateway::SourceKind::RtmpPublisher
            && p.bytes_received > 0),
        "{listed:?}"
    );
    let rtsp = gw.url_with_credentials("live/x", READER.0, READER.1);
    let t = Instant::now();
    let v = ffprobe_frames(&["-rtsp_transport", "tcp", "-read_intervals", "%+2"], &rtsp);
    eprintln!("RTSP: {v:?} in {:?}", t.elapsed());
    assert!(frames_of(&v, "h264") >= 25, "{v:?}");
    assert!(frames_of(&v, "aac") >= 25, "{v:?}");
    let v = ffprobe_frames(
        &["-rtsp_transport", "tcp", "-read_intervals", "%+1"],
        &gw.url_with_credentials("live/x", LIVE_READER.0, LIVE_READER.1),
    );
    assert!(frames_of(&v, "h264") >= 10, "a reader of live/ only: {v:?}");
    let t = Instant::now();
    let v = ffprobe_frames(&["-read_intervals", "%+2"], &url(addr, "live/x", READER));
    eprintln!("RTMP: {v:?} in {:?}", t.elapsed());
    assert!(frames_of(&v, "h264") >= 25, "{v:?}");
    assert!(frames_of(&v, "aac") >= 25, "{v:?}");
    // WebRTC (WHEP) of the published path, as of any path: an answer with its H.264.
    let api = gw.metrics_addr().expect("API listener");
    let answer = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "-u",
            &format!("{}:{}", READER.0, READER.1),
        ])
        .args([
            "-H",
            "Content-Type: application/sdp",
            "-w",
            "\n%{http_code}",
        ])
        .args(["--data-binary", &whep_offer(1)])
        .arg(format!("http://{api}/live/x/whep"))
        .output()
        .expect("curl runs");
    let answer = String::from_utf8_lossy(&answer.stdout).to_string();
    assert!(answer.trim_end().ends_with("201"), "{answer}");
    assert!(answer.contains("H264/90000"), "{answer}");
    // HLS of the published path, as of any path.
    let playlist = hls_dir.join("live/x/index.m3u8");
    assert!(
        wait_until(Duration::from_secs(20), || {
            std::fs::read_to_string(&playlist).is_ok_and(|t| t.contains(".ts"))
        }),
        "HLS playlist {}",
        playlist.display()
    );
    // A second publisher of the same path is refused while the first one runs, over RTMP
    // and over RTSP (one registry).
    assert!(!publish(&file, &url(addr, "live/x", PUBLISHER)).success());
    let rtsp_pub = gw.url_with_credentials("live/x", PUBLISHER.0, PUBLISHER.1);
    let (ok, said) = publish_rtsp(&file, &rtsp_pub);
    // 455: the path has a publisher (not 403: the publisher may publish under live/).
    assert!(!ok && said.contains("455"), "{said}");
    assert!(
        gw.published().iter().any(|p| p.name == "live/x"
            && p.source == gst_ipcam_gateway::gateway::SourceKind::RtmpPublisher)
    );
    // An RTMP reader that would read for a minute.
    let mut reader = ChildGuard(
        Command::new("ffmpeg")
            .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-i"])
            .arg(url(addr, "live/x", READER))
            .args(["-t", "60", "-c", "copy", "-f", "null", "-"])
            .spawn()
            .expect("ffmpeg runs"),
    );
    assert!(wait_until(Duration::from_secs(10), || {
        gw.snapshot().rtmp_conns == 2
    }));
    // The publisher leaves: the path goes with it, and its reader is cut.
    drop(publisher);
    assert!(
        wait_until(Duration::from_secs(15), || {
            matches!(reader.0.try_wait(), Ok(Some(_)))
        }),
        "the RTMP reader was not cut"
    );
    assert!(wait_until(Duration::from_secs(10), || {
        gw.snapshot().rtmp_conns == 0 && gw.published().is_empty()
    }));
    let v = ffprobe_frames(&["-rtsp_transport", "tcp"], &rtsp);
    assert!(v.is_empty(), "{v:?}");
    std::fs::remove_dir_all(&dir).ok();
}

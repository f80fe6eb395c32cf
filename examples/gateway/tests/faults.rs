//! The gateway's fault matrix through the seeded impairment proxies (testutil::impair): what
//! a viewer (a GStreamer RTSP client decoding H.264, corrupt pictures dropped) and /metrics see
//! when the camera's media is lost in bursts or reordered, and when it comes back clean.
//!
//! The camera's media goes through one `UdpProxy` per port: the gateway receives on
//! 127.0.0.1 ports P..P+1 (`media_address`, `media_port_range`) and announces 127.0.0.2
//! (`sdp_address`), where the proxies listen and forward to 127.0.0.1 on the same port.

mod common;
use common::*;

use gst::prelude::*;
use gst_ipcam_gateway::auth::{Action, UserConfig, basic_value};
use gst_ipcam_gateway::config::Config;
use gst_ipcam_gateway::gateway::Gateway;
use gst_ipcam_gateway::http;
use gst_ipcam_gateway::metrics::find_samples;
use gst_ipcam_gateway::outputs;
use gst_ipcam_gateway::sim::{Clip, SimCamera, SimSettings, SipOptions, wait_until};
use gst_ipcam_testutil::impair::{Direction, Impairment, TcpProxy, UdpProxy};
use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The address the gateway announces to cameras; the media proxies listen there.
const ANNOUNCED: &str = "127.0.0.2";
/// Ports in the gateway's media port range (a session at a time, one spare).
const RANGE: u16 = 2;
/// Packets sent through the impairment in each case.
const PACKETS: usize = 500;

/// One proxy per port of a free range: 127.0.0.2:P -> 127.0.0.1:P. Retries on a taken port.
fn media_proxies() -> (u16, Vec<UdpProxy>) {
    for _ in 0..50 {
        let base = free_port();
        if base > u16::MAX - RANGE {
            continue;
        }
        let free = (base..base + RANGE).all(|p| UdpSocket::bind(("127.0.0.1", p)).is_ok());
        if !free {
            continue;
        }
        let proxies: Result<Vec<UdpProxy>, _> = (base..base + RANGE)
            .map(|p| {
                UdpProxy::start(
                    SocketAddr::new(ANNOUNCED.parse().unwrap(), p),
                    SocketAddr::new("127.0.0.1".parse().unwrap(), p),
                    Impairment::none(),
                    Impairment::none(),
                )
            })
            .collect();
        if let Ok(p) = proxies {
            return (base, p);
        }
    }
    panic!("no free media port range");
}

fn config(media_base: u16) -> Config {
    Config {
        users: vec![
            UserConfig::with_password(
                READER.0,
                READER.1,
                &[(Action::Read, ""), (Action::Metrics, ""), (Action::Api, "")],
            )
            .unwrap(),
        ],
        sip_address: "127.0.0.1".into(),
        sip_port: free_port(),
        listen_address: "127.0.0.1".into(),
        rtsp_port: free_port(),
        metrics_port: free_port(),
        hls_port: free_port(),
        media_address: "127.0.0.1".into(),
        media_port_range: format!("{media_base}-{}", media_base + RANGE - 1),
        sdp_address: ANNOUNCED.into(),
        simulate: 1,
        sim_width: 320,
        sim_height: 240,
        sim_bitrate_kbps: 800,
        summary_interval_s: 0,
        ..Config::default()
    }
}

fn start(cfg: &Config) -> Gateway {
    let gw = Gateway::start(cfg.clone()).expect("gateway starts");
    let ch = cfg.sim_device_id(0);
    assert!(
        wait_until(Duration::from_secs(10), || gw.channels().contains(&ch)),
        "camera registered and mounted: {:?}",
        gw.channels()
    );
    gw
}

fn metric(gw: &Gateway, name: &str, labels: &str) -> f64 {
    metric_at(gw.metrics_addr().unwrap(), name, labels)
}

/// The sum of `name`'s samples with `labels` in the `/metrics` of the gateway at `addr`.
fn metric_at(addr: SocketAddr, name: &str, labels: &str) -> f64 {
    let auth = basic_value(READER.0, READER.1);
    let r =
        http::request(None, addr, "/metrics", &[("Authorization", &auth)]).expect("metrics answer");
    assert_eq!(r.status, 200);
    find_samples(&String::from_utf8_lossy(&r.body), name, labels)
        .iter()
        .sum()
}

/// Device `id` as `/v1/devices` lists it (None: not listed).
fn api_device(gw: &Gateway, id: &str) -> Option<serde_json::Value> {
    let auth = basic_value(READER.0, READER.1);
    let r = http::request(
        None,
        gw.metrics_addr().unwrap(),
        "/v1/devices",
        &[("Authorization", &auth)],
    )
    .expect("API answers");
    assert_eq!(r.status, 200);
    let list: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
    list.as_array()?.iter().find(|d| d["id"] == id).cloned()
}

/// Whether `/v1/devices` says device `id` is online (None: not listed).
fn api_online(gw: &Gateway, id: &str) -> Option<bool> {
    api_device(gw, id).and_then(|d| d["online"].as_bool())
}

/// An RTSP viewer (TCP) decoding the video; pictures the decoder finds corrupt are dropped,
/// so the count is of pictures a person would see intact.
struct Viewer {
    pipeline: gst::Pipeline,
    frames: Arc<AtomicU64>,
}

impl Viewer {
    fn start(url: &str) -> Viewer {
        let pipeline = gst::Pipeline::new();
        let src = gst::ElementFactory::make("rtspsrc")
            .property("location", url)
            .property("latency", 200u32)
            .build()
            .unwrap();
        src.set_property_from_str("protocols", "tcp");
        pipeline.add(&src).unwrap();
        let frames = Arc::new(AtomicU64::new(0));
        let (weak, count) = (pipeline.downgrade(), frames.clone());
        src.connect_pad_added(move |_, pad| {
            let Some(p) = weak.upgrade() else { return };
            let video = pad.current_caps().is_some_and(|c| {
                c.structure(0)
                    .and_then(|s| s.get::<&str>("encoding-name").ok())
                    .is_some_and(|e| e == "H264")
            });
            let desc = if video {
                "rtph264depay ! h264parse ! avdec_h264 output-corrupt=false ! fakesink name=v sync=false async=false"
            } else {
                "fakesink sync=false async=false"
            };
            let bin = gst::parse::bin_from_description(desc, true).unwrap();
            p.add(&bin).unwrap();
            bin.sync_state_with_parent().unwrap();
            if video {
                let count = count.clone();
                bin.by_name("v")
                    .unwrap()
                    .static_pad("sink")
                    .unwrap()
                    .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                        count.fetch_add(1, Ordering::Relaxed);
                        gst::PadProbeReturn::Ok
                    });
            }
            pad.link(&bin.static_pad("sink").unwrap()).unwrap();
        });
        pipeline.set_state(gst::State::Playing).unwrap();
        Viewer { pipeline, frames }
    }

    /// Whether the stream ended for this viewer (EOS or error) within `timeout`, and how.
    fn ended(&self, timeout: Duration) -> Option<String> {
        let bus = self.pipeline.bus()?;
        bus.timed_pop_filtered(
            gst::ClockTime::from_mseconds(timeout.as_millis() as u64),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .map(|m| format!("{:?}", m.view()))
    }

    fn frames(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }

    /// Pictures decoded during the next `d` (a measuring window, not a synchronisation).
    fn frames_during(&self, d: Duration) -> u64 {
        let before = self.frames();
        let end = Instant::now() + d;
        wait_until(d + Duration::from_secs(1), || Instant::now() >= end);
        self.frames() - before
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Clean, then `impairment` on the camera's next PACKETS packets, then clean again: the viewer keeps
/// playing through it and is back at full rate after the next key frame (1 s GOP); the loss
/// shows in `paths_rtp_packets_lost` at once (the counters are read per request). Returns
/// (% of the pictures shown while impaired, pictures in the 3 s after, packets the proxy
/// dropped, lost counted at the end of the lossy window, lost counted once clean packets
/// followed).
fn run_impaired(impairment: Impairment) -> (u64, u64, usize, f64, f64) {
    let (base, proxies) = media_proxies();
    let cfg = config(base);
    let gw = start(&cfg);
    let ch = cfg.sim_device_id(0);
    let viewer = Viewer::start(&gw.url_with_credentials(&ch, READER.0, READER.1));
    assert!(
        wait_until(Duration::from_secs(20), || viewer.frames() >= 25),
        "the viewer plays before the fault: {} pictures",
        viewer.frames()
    );
    let relayed: usize = proxies.iter().map(|p| p.stats().0.forwarded).sum();
    // Every picture shown came in at least one packet, all through the proxies (a camera
    // bypassing them would leave 0 here). A fixed larger threshold raced the camera's pace:
    // 50 packets had carried the 25 pictures once.
    assert!(
        relayed >= 25,
        "the media goes through the proxies: {relayed}"
    );
    let lbl = format!("name=\"{ch}\"");
    let lost_before = metric(&gw, "paths_rtp_packets_lost", &lbl);
    assert_eq!(lost_before, 0.0, "no loss on a clean link");

    // Impaired for the next PACKETS packets (counted, so the seeded losses are the same on
    // every run; about 6 s of media).
    let received = || -> usize { proxies.iter().map(|p| p.stats().0.received).sum() };
    let (start_packets, start_frames, t0) = (received(), viewer.frames(), Instant::now());
    for p in &proxies {
        p.set(Direction::Forward, impairment);
    }
    assert!(
        wait_until(Duration::from_secs(30), || received()
            >= start_packets + PACKETS),
        "media keeps coming through the proxy"
    );
    let during = viewer.frames() - start_frames;
    let shown = (t0.elapsed().as_secs_f64() * 25.0) as u64;
    for p in &proxies {
        p.set(Direction::Forward, Impairment::none());
    }
    let dropped: usize = proxies.iter().map(|p| p.stats().0.dropped).sum();
    let lost = metric(&gw, "paths_rtp_packets_lost", &lbl);
    // Back to full rate within the next key frame (1 s) and a jitter buffer.
    let recovered = wait_until(Duration::from_secs(3), || {
        viewer.frames_during(Duration::from_secs(1)) >= 22
    });
    let after = viewer.frames_during(Duration::from_secs(3));
    // A gap shows only when the packet after it arrives: the packets dropped at the very end
    // of the lossy window are counted with the first clean ones.
    let settled = wait_until(Duration::from_secs(2), || {
        metric(&gw, "paths_rtp_packets_lost", &lbl) >= dropped as f64
    });
    let lost_later = metric(&gw, "paths_rtp_packets_lost", &lbl);
    eprintln!(
        "{impairment:?}: pictures during {during}/{shown}, after {after}/75, dropped {dropped}, \
         lost counted {lost} at once, {lost_later} once clean packets followed (settled \
         {settled}), recovered {recovered}"
    );
    assert!(recovered, "full rate again within 3 s of the fault's end");
    assert!(
        after >= 66,
        "full rate after the fault: {after} of 75 pictures in 3 s"
    );
    assert!(
        metric(&gw, "paths_readers", &lbl) >= 1.0,
        "the viewer is still a reader"
    );
    drop(viewer);
    drop(gw);
    (
        during * 100 / shown.max(1),
        after,
        dropped,
        lost,
        lost_later,
    )
}

fn burst_loss_case(share: f64, seed: u64) {
    let _g = serial();
    let (during, _after, dropped, lost, lost_later) =
        run_impaired(Impairment::burst_loss(share, 3.0, seed));
    assert!(dropped > 0, "the seeded loss dropped packets");
    // Dropped packets are sequence gaps the receiver counts: most at once (those at the end
    // of the window show with the next packet), every one once clean packets followed.
    assert!(
        lost >= dropped as f64 * 0.5 && lost <= dropped as f64,
        "loss in metrics {lost} vs dropped {dropped}"
    );
    assert_eq!(lost_later, dropped as f64, "every dropped packet counted");
    // The viewer keeps playing through the loss: intact pictures between the bursts.
    assert!(during >= 10, "pictures while lossy: {during} %");
}

#[test]
fn media_burst_loss_1_percent() {
    burst_loss_case(0.01, 11);
}

#[test]
fn media_burst_loss_5_percent() {
    burst_loss_case(0.05, 12);
}

#[test]
fn media_burst_loss_10_percent() {
    burst_loss_case(0.10, 13);
}

#[test]
fn media_reordering() {
    let _g = serial();
    let imp = Impairment {
        reorder: 0.05,
        seed: 14,
        ..Impairment::default()
    };
    let (during, _after, dropped, lost, lost_later) = run_impaired(imp);
    assert_eq!(dropped, 0);
    assert_eq!(lost, 0.0, "reordered packets are not counted lost");
    assert_eq!(lost_later, 0.0);
    assert!(
        during >= 90,
        "reordering alone costs no picture: {during} %"
    );
}

/// Media files (HLS segments, MP4 recordings) under `dir`, by path.
fn media_files(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p
                .extension()
                .is_some_and(|x| x == "ts" || x == "mp4" || x == "m4s")
            {
                out.insert(p.display().to_string());
            }
        }
    }
    out
}

/// The camera disappears (SIP and media cut both ways: no BYE, no keepalive), then reboots:
/// a new camera process with the same IDs, a new SIP port, new media port and SSRC. HLS and
/// recording keep an always-on session. The stream ends after `stream_timeout_s`; the viewer
/// gets EOS; the gateway asks again by itself when the camera is back; HLS segments and
/// recordings resume; a new viewer plays.
#[test]
fn camera_disappears_and_reboots() {
    let _g = serial();
    let (base, media) = media_proxies();
    let (hls_dir, rec_dir) = (scratch("faults-hls"), scratch("faults-rec"));
    let mut cfg = config(base);
    cfg.simulate = 0;
    cfg.hls = true;
    cfg.hls_dir = hls_dir.clone();
    cfg.record_dir = Some(rec_dir.clone());
    cfg.record_segment_s = 1;
    cfg.stream_timeout_s = 2;
    let gw = Gateway::start(cfg.clone()).expect("gateway starts");
    let sip = UdpProxy::start(
        "127.0.0.1:0".parse().unwrap(),
        SocketAddr::new("127.0.0.1".parse().unwrap(), cfg.sip_port),
        Impairment::none(),
        Impairment::none(),
    )
    .unwrap();
    let id = cfg.sim_first_id.clone();
    let settings = SimSettings {
        server_ip: "127.0.0.1".into(),
        server_port: sip.port(),
        server_id: cfg.server_id.clone(),
        device_id: id.clone(),
        password: cfg.password.clone(),
        audio: false,
    };
    let clip = Clip::encode_with(Some("h264"), None, 160, 120, 200, 2).expect("clip");
    let cam = SimCamera::start(&clip, &settings).expect("camera");
    assert!(
        wait_until(Duration::from_secs(10), || gw.channels().contains(&id)),
        "mounted through the SIP proxy"
    );
    let ready = |gw: &Gateway| gw.snapshot().paths.iter().any(|p| p.name == id && p.ready);
    let url = gw.url_with_credentials(&id, READER.0, READER.1);
    let viewer = Viewer::start(&url);
    assert!(
        wait_until(Duration::from_secs(20), || viewer.frames() >= 25
            && media_files(&rec_dir).len() >= 2
            && media_files(&hls_dir).len() >= 2),
        "plays, records, HLS: {} pictures, {:?} {:?}",
        viewer.frames(),
        media_files(&rec_dir),
        media_files(&hls_dir)
    );
    let lbl = format!("name=\"{id}\"");
    let invites = metric(&gw, "gb28181_invites", &lbl);

    // Gone: nothing passes either way, not even the BYE of its stop.
    sip.cut();
    for m in &media {
        m.cut();
    }
    let t_cut = Instant::now();
    let ended = viewer.ended(Duration::from_secs(15));
    eprintln!(
        "viewer after the cut ({:.1} s): {ended:?}",
        t_cut.elapsed().as_secs_f64()
    );
    assert!(ended.is_some(), "the viewer is told the stream ended");
    assert!(
        wait_until(Duration::from_secs(10), || !ready(&gw)),
        "the path is not ready while the camera is gone"
    );
    cam.stop();
    drop(cam);
    drop(viewer);
    let files_gone = media_files(&rec_dir)
        .union(&media_files(&hls_dir))
        .cloned()
        .collect::<BTreeSet<_>>();

    // Back: a rebooted camera (new sockets, so new ports; the gateway's new INVITE a new SSRC).
    sip.restore();
    for m in &media {
        m.restore();
    }
    let cam = SimCamera::start(&clip, &settings).expect("camera again");
    assert!(
        wait_until(Duration::from_secs(30), || ready(&gw)),
        "the gateway takes the camera back by itself"
    );
    assert!(
        wait_until(Duration::from_secs(20), || {
            let now = media_files(&rec_dir)
                .union(&media_files(&hls_dir))
                .cloned()
                .collect::<BTreeSet<_>>();
            let new: Vec<_> = now.difference(&files_gone).collect();
            new.iter().any(|f| f.ends_with(".mp4")) && new.iter().any(|f| !f.ends_with(".mp4"))
        }),
        "new recording and HLS files after the return"
    );
    let viewer = Viewer::start(&url);
    assert!(
        wait_until(Duration::from_secs(20), || viewer.frames() >= 25),
        "a viewer plays the rebooted camera: {}",
        viewer.frames()
    );
    assert!(
        metric(&gw, "gb28181_invites", &lbl) > invites,
        "a new INVITE"
    );
    eprintln!("back {:.1} s after the cut", t_cut.elapsed().as_secs_f64());
    drop(viewer);
    cam.stop();
}

/// How an RTSP reader vanishes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Vanish {
    /// Over UDP, the process killed (SIGKILL): its control connection closes.
    UdpKilled,
    /// Over UDP, the process frozen (SIGSTOP, a hung machine): no RTCP, no keep-alive, the
    /// control connection open but silent.
    UdpFrozen,
    /// Over TCP, the connection half-open (TcpProxy frozen in front of the RTSP port).
    TcpHalfOpen,
}

/// An RTSP reader (ffmpeg decoding to nothing) that vanishes without TEARDOWN; the camera
/// gets BYE as it was the last reader. Returns the seconds from the vanishing to the BYE.
fn reader_vanishes(how: Vanish, timeout: Duration) -> f64 {
    let _g = serial();
    let (base, _media) = media_proxies();
    let mut cfg = config(base);
    cfg.rtsp_session_timeout_s = 3;
    let gw = start(&cfg);
    let ch = cfg.sim_device_id(0);
    let proxy = TcpProxy::start(
        "127.0.0.1:0".parse().unwrap(),
        SocketAddr::new("127.0.0.1".parse().unwrap(), gw.rtsp_port()),
        Impairment::none(),
        Impairment::none(),
    )
    .unwrap();
    let url = gw.url_with_credentials(&ch, READER.0, READER.1).replace(
        &format!(":{}/", gw.rtsp_port()),
        &format!(":{}/", proxy.port()),
    );
    let tcp = how == Vanish::TcpHalfOpen;
    let reader = ChildGuard(
        std::process::Command::new("ffmpeg")
            .args([
                "-v",
                "error",
                "-rtsp_transport",
                if tcp { "tcp" } else { "udp" },
            ])
            .args(["-i", &url, "-f", "null", "-"])
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("ffmpeg runs"),
    );
    let lbl = format!("name=\"{ch}\"");
    let cam = &gw.cameras()[0];
    assert!(
        wait_until(Duration::from_secs(20), || cam.is_streaming()
            && metric(&gw, "paths_readers", &lbl) == 1.0),
        "the reader plays"
    );
    let sessions = |gw: &Gateway| metric(gw, "rtsp_sessions", "");
    assert_eq!(sessions(&gw), 1.0);
    let t = Instant::now();
    let signal = |sig: &str| {
        let pid = reader.0.id().to_string();
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid}");
    };
    match how {
        Vanish::UdpKilled => signal("-KILL"),
        Vanish::UdpFrozen => signal("-STOP"),
        Vanish::TcpHalfOpen => proxy.freeze(),
    }
    let ended = wait_until(timeout, || !cam.is_streaming());
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "reader {how:?}: camera streaming {} after {secs:.1} s",
        !ended
    );
    assert!(ended, "the camera gets BYE ({how:?})");
    assert_eq!(metric(&gw, "paths_readers", &lbl), 0.0);
    assert_eq!(sessions(&gw), 0.0);
    if how == Vanish::UdpFrozen {
        signal("-CONT");
    }
    secs
}

#[test]
fn rtsp_reader_killed_udp() {
    let secs = reader_vanishes(Vanish::UdpKilled, Duration::from_secs(5));
    assert!(
        secs < 2.0,
        "the closed connection ends the session at once: {secs:.1} s"
    );
}

#[test]
fn rtsp_reader_frozen_udp() {
    let secs = reader_vanishes(Vanish::UdpFrozen, Duration::from_secs(15));
    assert!(secs >= 3.0, "not before the session timeout: {secs:.1} s");
}

/// A TCP reader whose connection goes half-open (the proxy stops reading: the gateway's
/// writes stall as with a dead peer). The direct RTSP path ends the session after
/// `rtsp_session_timeout_s` without a request or RTCP, and the camera gets BYE.
/// (gst-rtsp-server, with the path off, never expires a TCP-interleaved session while its
/// connection is open; there TCP_USER_TIMEOUT closes the connection.)
#[test]
fn rtsp_reader_half_open_tcp() {
    let secs = reader_vanishes(Vanish::TcpHalfOpen, Duration::from_secs(40));
    assert!(secs >= 3.0, "not before the session timeout: {secs:.1} s");
}

/// A small tmpfs mounted for the test (we run as root here), unmounted on drop.
struct SmallDisk(std::path::PathBuf);

/// `program` as root: directly when the tests run as root (CI, this machine), else through
/// `sudo -n` (as the Makefile installs packages).
fn as_root(program: &str) -> std::process::Command {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    if root {
        std::process::Command::new(program)
    } else {
        let mut c = std::process::Command::new("sudo");
        c.args(["-n", program]);
        c
    }
}

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> SmallDisk {
        let ok = as_root("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "mount a {size} tmpfs on {} (needs root or password-less sudo)",
            dir.display()
        );
        SmallDisk(dir.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = as_root("umount").arg("-l").arg(&self.0).status();
    }
}

fn used_bytes(dir: &Path) -> u64 {
    media_files(dir)
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum()
}

/// The recording disk fills up (a 256 KiB tmpfs mounted here: the tests run as root): the
/// live view goes on, `recorders` drops to 0 (the gateway prints the write error), and
/// recording resumes (new files) when space is freed.
#[test]
fn recording_disk_full() {
    let _g = serial();
    let (base, _media) = media_proxies();
    let rec = scratch("faults-disk");
    let disk = SmallDisk::mount(&rec, "256k");
    let mut cfg = config(base);
    cfg.record_dir = Some(rec.clone());
    cfg.record_segment_s = 1;
    let gw = start(&cfg);
    let ch = cfg.sim_device_id(0);
    let lbl = format!("name=\"{ch}\"");
    let viewer = Viewer::start(&gw.url_with_credentials(&ch, READER.0, READER.1));
    assert!(
        wait_until(Duration::from_secs(20), || viewer.frames() >= 25
            && metric(&gw, "recorders", &lbl) == 1.0),
        "plays and records"
    );
    // The recording (about 21 KB/s here) fills 256 KiB in about 12 s.
    let full = wait_until(Duration::from_secs(40), || {
        metric(&gw, "recorders", &lbl) == 0.0
    });
    eprintln!(
        "disk full: recorder stopped {full}, {} bytes in {} files",
        used_bytes(&rec),
        media_files(&rec).len()
    );
    assert!(full, "the recorder reports it is not writing");
    let playing = viewer.frames_during(Duration::from_secs(2));
    assert!(
        playing >= 40,
        "the live view goes on: {playing} pictures in 2 s"
    );
    // Space again: the old files go, recording resumes.
    let old = media_files(&rec);
    for f in &old {
        let _ = std::fs::remove_file(f);
    }
    assert!(
        wait_until(Duration::from_secs(40), || metric(&gw, "recorders", &lbl)
            == 1.0
            && media_files(&rec).iter().any(|f| !old.contains(f))),
        "recording resumes: {:?}",
        media_files(&rec)
    );
    drop(viewer);
    drop(gw);
    drop(disk);
}

/// The camera's SIP is cut both ways (no BYE, no keepalive; its media still flows): with
/// `keepalive_interval_s = 1` and `max_missed_keepalives = 3` it is offline in `/v1/devices`
/// and `gb28181_devices_online` about 3 s after its last keepalive, not earlier than 2
/// intervals after the cut; its channel stays mounted and the viewer plays on (the media is
/// not cut). When SIP is restored its next keepalive brings it back online by itself, without
/// registering again, and a new viewer plays.
#[test]
fn camera_offline_after_missed_keepalives() {
    let _g = serial();
    let (base, _media) = media_proxies();
    let mut cfg = config(base);
    cfg.simulate = 0;
    cfg.keepalive_interval_s = 1;
    cfg.max_missed_keepalives = 3;
    let gw = Gateway::start(cfg.clone()).expect("gateway starts");
    let sip = UdpProxy::start(
        "127.0.0.1:0".parse().unwrap(),
        SocketAddr::new("127.0.0.1".parse().unwrap(), cfg.sip_port),
        Impairment::none(),
        Impairment::none(),
    )
    .unwrap();
    let id = cfg.sim_first_id.clone();
    let settings = SimSettings {
        server_ip: "127.0.0.1".into(),
        server_port: sip.port(),
        server_id: cfg.server_id.clone(),
        device_id: id.clone(),
        password: cfg.password.clone(),
        audio: false,
    };
    let clip = Clip::encode_with(Some("h264"), None, 160, 120, 200, 2).expect("clip");
    let keepalive = SipOptions {
        keepalive_ms: 1000,
        ..SipOptions::default()
    };
    let cam = SimCamera::start_with_sip(&clip, &settings, &keepalive).expect("camera");
    assert!(
        wait_until(Duration::from_secs(10), || gw.channels().contains(&id)
            && api_online(&gw, &id) == Some(true)),
        "registered and online"
    );
    let online = |gw: &Gateway| metric(gw, "gb28181_devices_online", "");
    let device_gauge = format!("id=\"{id}\"");
    assert_eq!(online(&gw), 1.0);
    assert_eq!(metric(&gw, "gb28181_device_online", &device_gauge), 1.0);
    let registered_at = api_device(&gw, &id).unwrap()["registered_at_ms"].clone();
    let url = gw.url_with_credentials(&id, READER.0, READER.1);
    let viewer = Viewer::start(&url);
    assert!(
        wait_until(Duration::from_secs(20), || viewer.frames() >= 25),
        "plays before the cut"
    );
    // Some keepalive periods on a clean link: no false offline.
    let t_clean = Instant::now();
    assert!(!wait_until(Duration::from_secs(4), || api_online(&gw, &id)
        != Some(true)));
    assert!(t_clean.elapsed() >= Duration::from_secs(4));

    sip.cut();
    let t_cut = Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || api_online(&gw, &id)
            == Some(false)),
        "offline after the missed keepalives"
    );
    let offline_after = t_cut.elapsed().as_secs_f64();
    assert_eq!(online(&gw), 0.0, "the gauge agrees with the API");
    assert_eq!(metric(&gw, "gb28181_device_online", &device_gauge), 0.0);
    eprintln!("offline {offline_after:.2} s after the SIP cut (3 × 1 s keepalives)");
    assert!(
        (1.8..=5.0).contains(&offline_after),
        "offline after 3 missed 1 s keepalives: {offline_after:.2} s"
    );
    assert!(gw.channels().contains(&id), "the channel stays mounted");
    let playing = viewer.frames_during(Duration::from_secs(2));
    assert!(
        playing >= 40,
        "the viewer plays on (media not cut): {playing} pictures in 2 s"
    );

    sip.restore();
    let t_back = Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || api_online(&gw, &id)
            == Some(true)),
        "back online by itself"
    );
    let back_after = t_back.elapsed().as_secs_f64();
    eprintln!("online again {back_after:.2} s after SIP is restored");
    assert!(
        back_after < 3.0,
        "with its next keepalive: {back_after:.2} s"
    );
    assert_eq!(online(&gw), 1.0);
    assert_eq!(metric(&gw, "gb28181_device_online", &device_gauge), 1.0);
    assert_eq!(
        api_device(&gw, &id).unwrap()["registered_at_ms"],
        registered_at,
        "back by a keepalive, not a new REGISTER"
    );
    drop(viewer);
    let viewer = Viewer::start(&url);
    assert!(
        wait_until(Duration::from_secs(20), || viewer.frames() >= 25),
        "a new viewer plays"
    );
    drop(viewer);
    cam.stop();
}

/// A config file for a gateway process: the [`READER`] (read, metrics and API everywhere).
fn process_config(dir: &Path) -> std::path::PathBuf {
    let reader = UserConfig::with_password(READER.0, READER.1, &[]).unwrap();
    let conf = dir.join("gateway.toml");
    std::fs::write(
        &conf,
        format!(
            "[[users]]\nuser = \"{}\"\npass = \"{}\"\n\
             permissions = [{{action = \"read\"}}, {{action = \"metrics\"}}, {{action = \"api\"}}]\n",
            READER.0, reader.pass
        ),
    )
    .unwrap();
    conf
}

/// libfaketime, from the `faketime` package (the Makefile's APT_PACKAGES).
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// The wall clock steps (NTP) under a running gateway with a built-in camera (keepalives every
/// second, offline after 3 missed, a 1 s MP4 segment recording and a viewer): the gateway
/// runs under libfaketime whose offset file the test rewrites (+1 h, back 10 s, -1 h; the
/// monotonic clock is left alone, as NTP leaves it). No false offline, no new REGISTER, no
/// burst of keepalives, recordings go on in new files named by the stepped wall clock, none
/// overwritten (the 10 s step back names segments in seconds already used), and the live
/// view goes on. Before, the SIP timers ran on the wall clock: +1 h expired the camera's
/// registration (unregistered and unmounted) and took it offline.
#[test]
fn wall_clock_steps() {
    let _g = serial();
    gst_ipcam_gateway::gateway::init().expect("GStreamer");
    assert!(
        Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} (apt-get install faketime)"
    );
    let dir = scratch("faults-clock");
    let rec = dir.join("rec");
    let offset = dir.join("faketime");
    std::fs::write(&offset, "+0\n").unwrap();
    let conf = process_config(&dir);
    let (sip, rtsp, m) = (free_port(), free_port(), free_port());
    let mut cmd = gateway_command(&conf, sip, rtsp, m);
    cmd.args(["--simulate", "1", "--summary-interval-s", "0"])
        .args(["--sim-width", "320", "--sim-height", "240"])
        .args([
            "--keepalive-interval-s",
            "1",
            "--max-missed-keepalives",
            "3",
        ])
        .args(["--record-segment-s", "1", "--record-dir"])
        .arg(&rec)
        .env("LD_PRELOAD", LIBFAKETIME)
        .env("FAKETIME_TIMESTAMP_FILE", &offset)
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .env("FAKETIME_CACHE_DURATION", "1");
    let mut gw = GatewayProcess::spawn(cmd);
    let maddr: SocketAddr = format!("127.0.0.1:{m}").parse().unwrap();
    let id = Config::default().sim_device_id(0);
    let device = format!("id=\"{id}\"");
    let online = || {
        std::net::TcpStream::connect(maddr).is_ok()
            && metric_at(maddr, "gb28181_device_online", &device) == 1.0
    };
    assert!(
        wait_until(Duration::from_secs(30), || online()
            && media_files(&rec).len() >= 2),
        "online and recording: {:?}",
        gw.lines()
    );
    let url = format!("rtsp://{}:{}@127.0.0.1:{rtsp}/{id}", READER.0, READER.1);
    let viewer = Viewer::start(&url);
    assert!(
        wait_until(Duration::from_secs(20), || viewer.frames() >= 25),
        "the viewer plays"
    );
    let count = |name: &str| metric_at(maddr, name, "");
    let (keepalives, registers, t0) = (
        count("gb28181_keepalives_total"),
        count("gb28181_registers_total"),
        Instant::now(),
    );
    let real_s = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let stamp_of = |f: &String| {
        Path::new(f)
            .file_stem()
            .and_then(|s| s.to_string_lossy().get(..15).map(str::to_string))
            .unwrap_or_default()
    };
    // (offset, the segment names it gives: from this many seconds after the real time)
    let steps: [(&str, i64); 3] = [("+1h", 3590), ("+3597s", 3590), ("-1h", -3610)];
    let mut files: std::collections::BTreeMap<String, u64> = Default::default();
    let mut offline_seen = false;
    for (step, from_s) in steps {
        let before = media_files(&rec);
        for f in &before {
            let len = std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
            files.insert(f.clone(), len);
        }
        let frames = viewer.frames();
        std::fs::write(&offset, format!("{step}\n")).unwrap();
        let from = outputs::utc_stamp(real_s().saturating_add_signed(from_s));
        let t = Instant::now();
        // Two new segments named by the stepped clock: the step took effect and recording
        // goes on. Meanwhile the device must stay online.
        let stepped = wait_until(Duration::from_secs(20), || {
            offline_seen |= !online();
            media_files(&rec)
                .iter()
                .filter(|f| !before.contains(*f) && stamp_of(f) >= from)
                .count()
                >= 2
        });
        eprintln!(
            "step {step}: 2 segments named from {from} after {:.1} s; files {:?}",
            t.elapsed().as_secs_f64(),
            media_files(&rec)
                .difference(&before)
                .map(|f| Path::new(f)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .to_string())
                .collect::<Vec<_>>()
        );
        assert!(stepped, "recording goes on after the {step} step");
        // Held for 5 keepalive intervals: a false offline (or a keepalive silence) shows.
        wait_until(Duration::from_secs(6), || {
            offline_seen |= !online();
            t.elapsed() >= Duration::from_secs(5)
        });
        assert!(
            viewer.frames() > frames + 25,
            "the live view goes on through the {step} step"
        );
        // Every earlier segment is still there, none shorter (none overwritten).
        for (f, len) in &files {
            let now = std::fs::metadata(f).map(|m| m.len());
            assert!(
                now.as_ref().is_ok_and(|n| n >= len),
                "{f}: {len} bytes before the {step} step, {now:?} after"
            );
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let (k, r) = (
        count("gb28181_keepalives_total") - keepalives,
        count("gb28181_registers_total") - registers,
    );
    eprintln!("{secs:.1} s of steps: {k} keepalives, {r} REGISTERs; offline seen {offline_seen}");
    let printed: Vec<String> = gw
        .lines()
        .iter()
        .filter(|l| l.contains("offline") || l.contains("unregistered"))
        .cloned()
        .collect();
    assert!(printed.is_empty(), "{printed:?}");
    assert!(!offline_seen, "no false offline");
    assert_eq!(r, 0.0, "no new REGISTER");
    assert!(
        files.keys().any(|f| f.ends_with("-1.mp4")),
        "the 3 s step back named segments in seconds already used: {:?}",
        files.keys()
    );
    assert!(
        k >= secs - 4.0 && k <= secs + 4.0,
        "a keepalive a second, no storm, no silence: {k} in {secs:.1} s"
    );
    drop(viewer);
    drop(gw);
    std::fs::remove_dir_all(&dir).ok();
}

/// How the camera's SIP-over-TCP connection to the gateway fails.
#[derive(Debug, Clone, Copy, PartialEq)]
enum SipTcpFault {
    /// Closed (both peers see it) and new connections refused until restored.
    Cut,
    /// Half-open: nothing passes and nobody is told; new connections pass again after the
    /// thaw (the open one stays dead).
    Freeze,
}

/// A camera with SIP over TCP (keepalives every second) through a TcpProxy to a gateway with
/// SIP over TCP (offline after 3 missed keepalives); `fault` on the SIP connection, lifted
/// once the gateway has the camera offline. The camera connects again and registers by
/// itself, the device is online again, a viewer plays. Returns (seconds from the fault to
/// offline, seconds from lifting it to online again).
fn sip_tcp_fault(
    fault: SipTcpFault,
    offline_within: Duration,
    back_within: Duration,
) -> (f64, f64) {
    let _g = serial();
    let (base, _media) = media_proxies();
    let mut cfg = config(base);
    cfg.simulate = 0;
    cfg.sip_transport = "tcp".into();
    cfg.keepalive_interval_s = 1;
    cfg.max_missed_keepalives = 3;
    let gw = Gateway::start(cfg.clone()).expect("gateway starts");
    let sip = TcpProxy::start(
        "127.0.0.1:0".parse().unwrap(),
        SocketAddr::new("127.0.0.1".parse().unwrap(), gw.config().sip_port),
        Impairment::none(),
        Impairment::none(),
    )
    .unwrap();
    let id = cfg.sim_first_id.clone();
    let settings = SimSettings {
        server_ip: "127.0.0.1".into(),
        server_port: sip.port(),
        server_id: cfg.server_id.clone(),
        device_id: id.clone(),
        password: cfg.password.clone(),
        audio: false,
    };
    let clip = Clip::encode_with(Some("h264"), None, 160, 120, 200, 2).expect("clip");
    let opts = SipOptions {
        keepalive_ms: 1000,
        tcp: true,
    };
    let cam = SimCamera::start_with_sip(&clip, &settings, &opts).expect("camera");
    assert!(
        wait_until(Duration::from_secs(15), || gw.channels().contains(&id)
            && api_online(&gw, &id) == Some(true)),
        "registered over TCP and online"
    );
    let url = gw.url_with_credentials(&id, READER.0, READER.1);
    let viewer = Viewer::start(&url);
    assert!(
        wait_until(Duration::from_secs(20), || viewer.frames() >= 25),
        "plays before the fault"
    );
    drop(viewer);
    let accepted = sip.stats().accepted;

    let t = Instant::now();
    match fault {
        SipTcpFault::Cut => sip.cut(),
        SipTcpFault::Freeze => sip.freeze(),
    }
    assert!(
        wait_until(offline_within, || api_online(&gw, &id) == Some(false)),
        "offline after the {fault:?}"
    );
    let offline = t.elapsed().as_secs_f64();
    let t = Instant::now();
    match fault {
        SipTcpFault::Cut => sip.restore(),
        SipTcpFault::Freeze => sip.thaw(),
    }
    assert!(
        wait_until(back_within, || api_online(&gw, &id) == Some(true)),
        "the camera is back by itself after the {fault:?}: {:?}",
        cam.stats()
    );
    let back = t.elapsed().as_secs_f64();
    assert!(
        sip.stats().accepted > accepted,
        "on a new connection: {:?}",
        sip.stats()
    );
    eprintln!(
        "SIP over TCP {fault:?}: offline after {offline:.1} s, online again {back:.1} s after \
         the fault ended; proxy {:?}",
        sip.stats()
    );
    let viewer = Viewer::start(&url);
    assert!(
        wait_until(Duration::from_secs(20), || viewer.frames() >= 25),
        "a viewer plays again: {}",
        viewer.frames()
    );
    drop(viewer);
    cam.stop();
    (offline, back)
}

#[test]
fn sip_tcp_cut_and_restored() {
    sip_tcp_fault(
        SipTcpFault::Cut,
        Duration::from_secs(10),
        Duration::from_secs(30),
    );
}

#[test]
fn sip_tcp_half_open() {
    sip_tcp_fault(
        SipTcpFault::Freeze,
        Duration::from_secs(10),
        Duration::from_secs(90),
    );
}

/// The platform dies under a streaming `gb28181sink`: the gateway process (with a data dir)
/// is SIGKILLed while a viewer plays, and started again on the same ports and data dir. Over
/// UDP the camera (in this process, keepalives every second) is not told anything and keeps
/// its registration: the restored binding is confirmed by its next keepalive. Over TCP it
/// sees the connection close, connects again (after its 10 s `retry-interval`) and registers.
/// A new viewer's INVITE replaces the session the dead gateway had, and the viewer plays.
/// Returns the seconds from the restart to online and to 25 pictures decoded.
fn platform_restart(tcp: bool) -> (f64, f64) {
    let _g = serial();
    gst_ipcam_gateway::gateway::init().expect("GStreamer");
    let dir = scratch("faults-restart");
    let data = dir.join("data");
    let conf = process_config(&dir);
    let (sip, rtsp, m) = (free_port(), free_port(), free_port());
    let start = || {
        let mut cmd = gateway_command(&conf, sip, rtsp, m);
        cmd.args(["--simulate", "0", "--summary-interval-s", "0"])
            .args(["--sip-transport", if tcp { "tcp" } else { "udp" }])
            .arg("--data-dir")
            .arg(&data);
        GatewayProcess::spawn(cmd)
    };
    let mut gw = start();
    let cfg = Config::default();
    let id = cfg.sim_first_id.clone();
    let settings = SimSettings {
        server_ip: "127.0.0.1".into(),
        server_port: sip,
        server_id: cfg.server_id.clone(),
        device_id: id.clone(),
        password: cfg.password.clone(),
        audio: false,
    };
    let clip = Clip::encode_with(Some("h264"), None, 160, 120, 200, 2).expect("clip");
    let keepalive = SipOptions {
        keepalive_ms: 1000,
        tcp,
    };
    assert!(
        gw.wait_for("[gateway] SIP", Duration::from_secs(20)),
        "{:?}",
        gw.lines()
    );
    let cam = SimCamera::start_with_sip(&clip, &settings, &keepalive).expect("camera");
    let mounted = format!("channel {id} of device {id}");
    assert!(
        gw.wait_for(&mounted, Duration::from_secs(20)),
        "{:?}",
        gw.lines()
    );
    let stored = || {
        let limits = gst_ipcam_gateway::store::Limits {
            max_devices: 10,
            max_channels_per_device: 10,
        };
        gst_ipcam_gateway::store::Store::open(&data, limits)
            .ok()
            .and_then(|s| s.devices().ok())
            .is_some_and(|d| d.iter().any(|d| d.id == id))
    };
    assert!(
        wait_until(Duration::from_secs(10), stored),
        "registration stored"
    );
    let url = format!("rtsp://{}:{}@127.0.0.1:{rtsp}/{id}", READER.0, READER.1);
    let viewer = Viewer::start(&url);
    assert!(
        wait_until(Duration::from_secs(20), || viewer.frames() >= 25
            && cam.is_streaming()),
        "plays before the kill"
    );

    gw.kill9();
    let ended = viewer.ended(Duration::from_secs(10));
    assert!(ended.is_some(), "the viewer is told its stream ended");
    drop(viewer);
    assert!(cam.is_streaming(), "the camera was not told (no BYE)");
    drop(gw);

    let restart = Instant::now();
    let mut gw = start();
    let back = if tcp { "registered" } else { "online" };
    assert!(
        gw.wait_for(&format!("device {id} {back}"), Duration::from_secs(30)),
        "{back} again: {:?}",
        gw.lines()
    );
    let online = restart.elapsed().as_secs_f64();
    let viewer = Viewer::start(&url);
    assert!(
        wait_until(Duration::from_secs(20), || viewer.frames() >= 25),
        "a viewer plays again: {} pictures; {:?}",
        viewer.frames(),
        gw.lines()
    );
    let playing = restart.elapsed().as_secs_f64();
    eprintln!(
        "SIP over {}: restart -> {back} {online:.1} s, -> 25 pictures decoded {playing:.1} s",
        if tcp { "TCP" } else { "UDP" }
    );
    let registered = format!("device {id} registered");
    assert!(
        tcp || !gw.lines().iter().any(|l| l.contains(&registered)),
        "served on its stored registration, no new REGISTER: {:?}",
        gw.lines()
    );
    drop(viewer);
    cam.stop();
    drop(gw);
    std::fs::remove_dir_all(&dir).ok();
    (online, playing)
}

#[test]
fn platform_killed_and_restarted_udp() {
    let (_, playing) = platform_restart(false);
    assert!(
        playing < 10.0,
        "playing again {playing:.1} s after the restart"
    );
}

#[test]
fn platform_killed_and_restarted_tcp() {
    let (_, playing) = platform_restart(true);
    assert!(
        playing < 25.0,
        "playing again {playing:.1} s after the restart"
    );
}

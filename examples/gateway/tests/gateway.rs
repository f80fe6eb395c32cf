//! The gateway end to end on loopback, with real clients as oracles: ffprobe (RTSP over TCP
//! and UDP, HLS over HTTP, the MP4 recordings) and GStreamer's rtspsrc (several clients at
//! once, counting what they receive). Ports are picked free; every wait is bounded.

mod common;
use common::*;

use gst::prelude::*;
use gst_ipcam_gateway::auth::basic_value;
use gst_ipcam_gateway::config::Config;
use gst_ipcam_gateway::gateway::Gateway;
use gst_ipcam_gateway::http;
use gst_ipcam_gateway::metrics::find_samples;
use gst_ipcam_gateway::sim::wait_until;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

fn url(gw: &Gateway, channel: &str) -> String {
    gw.url_with_credentials(channel, READER.0, READER.1)
}

/// An authenticated GET: status and body.
fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let auth = basic_value(READER.0, READER.1);
    http::request(None, addr, path, &[("Authorization", &auth)]).map(|r| (r.status, r.body))
}

fn test_config(simulate: u32) -> Config {
    Config {
        simulate,
        sim_width: 320,
        sim_height: 240,
        sim_bitrate_kbps: 500,
        ..loopback_config("127.0.0.1")
    }
}

fn start(cfg: Config) -> Gateway {
    let gw = Gateway::start(cfg.clone()).expect("gateway starts");
    let cfg = gw.config().clone();
    let want: Vec<String> = (0..cfg.simulate).map(|i| cfg.sim_device_id(i)).collect();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let chans = gw.channels();
            want.iter().all(|w| chans.contains(w))
        }),
        "cameras registered and mounted: {:?}",
        gw.channels()
    );
    gw
}

fn metrics(gw: &Gateway) -> String {
    let (status, body) = get(gw.metrics_addr().unwrap(), "/metrics").unwrap();
    assert_eq!(status, 200);
    String::from_utf8(body).unwrap()
}

fn metric(gw: &Gateway, name: &str, labels: &str) -> f64 {
    find_samples(&metrics(gw), name, labels).iter().sum()
}

/// A GStreamer RTSP client counting RTP payload bytes.
struct Client {
    pipeline: gst::Pipeline,
    payload_bytes: Arc<AtomicU64>,
}

impl Client {
    fn start(url: &str, tcp: bool) -> Client {
        let pipeline = gst::Pipeline::new();
        let src = gst::ElementFactory::make("rtspsrc")
            .property("location", url)
            .property("latency", 0u32)
            .build()
            .unwrap();
        src.set_property_from_str("protocols", if tcp { "tcp" } else { "udp" });
        pipeline.add(&src).unwrap();
        let payload_bytes = Arc::new(AtomicU64::new(0));
        let pb = payload_bytes.clone();
        let weak = pipeline.downgrade();
        src.connect_pad_added(move |_, pad| {
            let Some(p) = weak.upgrade() else { return };
            let sink = gst::ElementFactory::make("fakesink")
                .property("sync", false)
                .property("async", false)
                .build()
                .unwrap();
            p.add(&sink).unwrap();
            sink.sync_state_with_parent().unwrap();
            let pb = pb.clone();
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                if let Some(b) = info.buffer()
                    && let Ok(m) = b.map_readable()
                    && m.len() >= 12
                {
                    let cc = usize::from(m[0] & 0x0f);
                    let ext = if m[0] & 0x10 != 0 && m.len() >= 16 + cc * 4 {
                        4 + 4 * usize::from(u16::from_be_bytes([m[14 + cc * 4], m[15 + cc * 4]]))
                    } else {
                        0
                    };
                    let hdr = 12 + cc * 4 + ext;
                    pb.fetch_add(m.len().saturating_sub(hdr) as u64, Ordering::Relaxed);
                }
                gst::PadProbeReturn::Ok
            });
            pad.link(&sink.static_pad("sink").unwrap()).unwrap();
        });
        pipeline.set_state(gst::State::Playing).unwrap();
        Client {
            pipeline,
            payload_bytes,
        }
    }

    fn bytes(&self) -> u64 {
        self.payload_bytes.load(Ordering::Relaxed)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

#[test]
fn two_cameras_shared_media_invite_bye_and_metrics() {
    let _g = serial();
    let cfg = test_config(2);
    let gw = start(cfg.clone());
    let ch0 = cfg.sim_device_id(0);
    let ch1 = cfg.sim_device_id(1);

    // Every channel decodes with ffprobe (TCP for one, UDP for the other).
    for (ch, transport) in [(&ch0, "tcp"), (&ch1, "udp")] {
        let v = ffprobe_frames(
            &["-rtsp_transport", transport, "-read_intervals", "%+3"],
            &url(&gw, ch),
        );
        assert!(frames_of(&v, "h264") >= 15, "{ch} over {transport}: {v:?}");
        assert!(
            frames_of(&v, "pcm_alaw") >= 10,
            "{ch} over {transport}: {v:?}"
        );
    }
    let m = metrics(&gw);
    assert_eq!(find_samples(&m, "gb28181_devices", ""), vec![2.0]);
    assert_eq!(find_samples(&m, "gb28181_devices_online", ""), vec![2.0]);

    // Wait for the ffprobe sessions to be over (BYE) before counting INVITEs.
    let cam0 = &gw.cameras()[0];
    assert!(wait_until(Duration::from_secs(10), || !cam0.is_streaming()));
    let invites_before = metric(&gw, "gb28181_invites", &format!("name=\"{ch0}\""));
    assert!(invites_before >= 1.0);

    // Four clients on one channel: one camera session.
    let url = url(&gw, &ch0);
    let clients: Vec<Client> = (0..4).map(|i| Client::start(&url, i % 2 == 0)).collect();
    assert!(
        wait_until(Duration::from_secs(15), || clients
            .iter()
            .all(|c| c.bytes() > 20_000)),
        "all four clients receive: {:?}",
        clients.iter().map(Client::bytes).collect::<Vec<_>>()
    );
    std::thread::sleep(Duration::from_secs(2));
    let m = metrics(&gw);
    let got: Vec<u64> = clients.iter().map(Client::bytes).collect();
    let invites = find_samples(&m, "gb28181_invites", &format!("name=\"{ch0}\""));
    assert_eq!(
        invites,
        vec![invites_before + 1.0],
        "one INVITE for 4 clients"
    );
    assert!(cam0.is_streaming());
    assert_eq!(
        find_samples(&m, "paths_readers", &format!("name=\"{ch0}\"")),
        vec![4.0]
    );
    let sent = find_samples(&m, "rtsp_sessions_bytes_sent", &format!("path=\"{ch0}\""));
    assert_eq!(sent.len(), 4, "{m}");
    let total_sent: f64 = sent.iter().sum();
    let total_got = got.iter().sum::<u64>() as f64;
    assert!(
        (total_sent - total_got).abs() <= total_got * 0.25,
        "metrics say {total_sent} bytes sent, clients got {total_got} ({sent:?} vs {got:?})"
    );
    for s in &sent {
        assert!(*s > 10_000.0, "{sent:?}");
    }
    assert!(find_samples(&m, "paths_bytes_received", &format!("name=\"{ch0}\""))[0] > 50_000.0);
    assert_eq!(
        find_samples(&m, "paths", &format!("name=\"{ch0}\",state=\"ready\"")),
        vec![1.0]
    );

    // The last client leaves: BYE.
    drop(clients);
    assert!(
        wait_until(Duration::from_secs(10), || !cam0.is_streaming()),
        "camera got BYE after the last client left"
    );
    assert!(wait_until(Duration::from_secs(5), || {
        metric(&gw, "paths", &format!("name=\"{ch0}\",state=\"notReady\"")) == 1.0
    }));
    drop(gw);
}

fn ffprobe_file_frames(path: &str) -> Vec<(String, u64)> {
    ffprobe_frames(&[], path)
}

#[test]
fn hls_and_recording() {
    let _g = serial();
    let hls_dir = scratch("hls");
    let rec_dir = scratch("rec");
    let mut cfg = test_config(1);
    cfg.hls = true;
    cfg.hls_dir = hls_dir.clone();
    cfg.record_dir = Some(rec_dir.clone());
    cfg.record_segment_s = 2;
    let mut gw = start(cfg.clone());
    let ch = cfg.sim_device_id(0);
    let hls: SocketAddr = gw.hls_addr().unwrap();
    let playlist = format!("/{ch}/index.m3u8");
    let mut text = String::new();
    assert!(
        wait_until(Duration::from_secs(20), || {
            text = get(hls, &playlist)
                .ok()
                .filter(|(s, _)| *s == 200)
                .map(|(_, b)| String::from_utf8_lossy(&b).to_string())
                .unwrap_or_default();
            text.lines().filter(|l| l.ends_with(".ts")).count() >= 2
        }),
        "playlist with 2 segments: {text}"
    );
    assert!(text.starts_with("#EXTM3U"));
    let seg = text
        .lines()
        .find(|l| l.ends_with(".ts"))
        .unwrap()
        .to_string();
    let v = ffprobe_file_frames(&format!(
        "http://{}:{}@{hls}/{ch}/{seg}",
        READER.0, READER.1
    ));
    assert!(frames_of(&v, "h264") >= 10, "HLS segment: {v:?}");
    assert!(frames_of(&v, "aac") >= 5, "HLS segment audio is AAC: {v:?}");
    let m = metrics(&gw);
    assert_eq!(
        find_samples(&m, "hls_muxers", &format!("name=\"{ch}\"")),
        vec![1.0]
    );
    assert_eq!(
        find_samples(&m, "recorders", &format!("name=\"{ch}\"")),
        vec![1.0]
    );
    // A further RTSP client shares the session with HLS/recording.
    let invites = metric(&gw, "gb28181_invites", &format!("name=\"{ch}\""));
    let v = ffprobe_frames(
        &["-rtsp_transport", "tcp", "-read_intervals", "%+3"],
        &url(&gw, &ch),
    );
    assert!(frames_of(&v, "h264") >= 10, "{v:?}");
    assert_eq!(
        metric(&gw, "gb28181_invites", &format!("name=\"{ch}\"")),
        invites
    );

    gw.stop();
    let files = mp4_files(&rec_dir.join(&ch));
    assert!(
        !files.is_empty(),
        "recorded segments in {}",
        rec_dir.display()
    );
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            name.len() >= 19 && name[..8].bytes().all(|b| b.is_ascii_digit()),
            "dated name: {name}"
        );
    }
    // Every segment plays, the last one too (EOS finalized it; it may have begun just
    // before the stop, so it holds at least one frame); together they hold what was recorded.
    let (mut video, mut audio) = (0, 0);
    for f in &files {
        let v = ffprobe_file_frames(&f.to_string_lossy());
        assert!(frames_of(&v, "h264") >= 1, "{}: {v:?}", f.display());
        video += frames_of(&v, "h264");
        audio += frames_of(&v, "aac");
    }
    assert!(
        video >= 25 && audio >= 10,
        "{video} video, {audio} audio frames"
    );
    std::fs::remove_dir_all(&hls_dir).ok();
    std::fs::remove_dir_all(&rec_dir).ok();
}

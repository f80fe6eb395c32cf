//! Helpers shared by the gateway's integration tests (each test file says `mod common;`).
#![allow(dead_code, unused_imports)]

pub mod rtsp;

use gst::prelude::*;
use std::path::PathBuf;

pub use gst_ipcam_testutil::programs::{
    ChildGuard, ffprobe_frames, frames_of, free_port, mp4_files, profile_dir, scratch, serial,
};

/// The reader most tests play as (also reads HLS and the metrics).
pub const READER: (&str, &str) = ("reader", "reader-pw");

/// The gateway binary this package builds for its tests.
pub fn gateway_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gst-ipcam-gateway"))
}

/// The gateway binary run with the config file `conf` on loopback, SIP on UDP `sip`, RTSP on
/// `rtsp` and metrics/API on `metrics`; callers add their own flags.
pub fn gateway_command(
    conf: &std::path::Path,
    sip: u16,
    rtsp: u16,
    metrics: u16,
) -> std::process::Command {
    let mut cmd = std::process::Command::new(gateway_bin());
    cmd.arg("--config")
        .arg(conf)
        .args([
            "--sip-address",
            "127.0.0.1",
            "--listen-address",
            "127.0.0.1",
        ])
        .args([
            "--sip-port",
            &sip.to_string(),
            "--rtsp-port",
            &rtsp.to_string(),
        ])
        .args(["--metrics-port", &metrics.to_string()])
        .args(["--rtmp-port", "0"]);
    cmd
}

/// A gateway configuration on `host` (`127.0.0.1` or `::1`): the [`READER`] user (read and
/// metrics everywhere), SIP, RTSP, metrics and HLS on port 0 (read them back from the running
/// gateway: `gw.config()`, `gw.metrics_addr()`, `gw.hls_addr()`), no simulated camera, no
/// console summary. Tests change what they need with `Config { .., ..loopback_config(..) }`.
pub fn loopback_config(host: &str) -> gst_ipcam_gateway::config::Config {
    use gst_ipcam_gateway::auth::{Action, UserConfig};
    gst_ipcam_gateway::config::Config {
        users: vec![
            UserConfig::with_password(
                READER.0,
                READER.1,
                &[(Action::Read, ""), (Action::Metrics, "")],
            )
            .unwrap(),
        ],
        sip_address: host.into(),
        sip_port: 0,
        listen_address: host.into(),
        rtsp_port: 0,
        rtmp_port: 0,
        metrics_port: 0,
        hls_port: 0,
        simulate: 0,
        summary_interval_s: 0,
        ..Default::default()
    }
}

/// The lines `child` writes to its (piped) stdout, read on a thread of their own until it
/// closes.
pub fn stdout_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let stdout = child.stdout.take().expect("stdout piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

/// The gateway as a process of its own (started from a command such as [`gateway_command`]
/// with a piped stdout), its lines kept; SIGKILLed on drop.
pub struct GatewayProcess {
    pub child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl GatewayProcess {
    pub fn spawn(mut cmd: std::process::Command) -> GatewayProcess {
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("the gateway starts");
        let lines = stdout_lines(&mut child);
        GatewayProcess {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (at most `timeout`) for a line containing `what`; every line read is kept.
    pub fn wait_for(&mut self, what: &str, timeout: std::time::Duration) -> bool {
        let end = std::time::Instant::now() + timeout;
        loop {
            if self.lines().iter().any(|l| l.contains(what)) {
                return true;
            }
            let left = end.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            if let Ok(l) = self
                .lines
                .recv_timeout(left.min(std::time::Duration::from_millis(100)))
            {
                self.seen.push(l);
            }
        }
    }

    /// The lines printed so far.
    pub fn lines(&mut self) -> &[String] {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
        &self.seen
    }

    /// SIGKILL, and reaped.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// (arrival, timestamp ns, DISCONT) of the buffers seen at a pad.
pub type Samples = std::sync::Arc<std::sync::Mutex<Vec<(std::time::Instant, u64, bool)>>>;

/// Records the buffers that pass `pad` from now on.
pub fn record(pad: &gst::Pad) -> Samples {
    let samples = Samples::default();
    let s = samples.clone();
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(gst::PadProbeData::Buffer(b)) = &info.data
            && let Some(pts) = b.pts()
        {
            let discont = b.flags().contains(gst::BufferFlags::DISCONT);
            s.lock()
                .unwrap()
                .push((std::time::Instant::now(), pts.nseconds(), discont));
        }
        gst::PadProbeReturn::Ok
    });
    samples
}

pub fn snapshot(s: &Samples) -> Vec<(std::time::Instant, u64, bool)> {
    s.lock().unwrap().clone()
}

/// Timestamp progress over wall-clock progress of the samples that arrived within
/// [from, to] (first to last of them), and how many there were.
pub fn rate(s: &Samples, from: std::time::Instant, to: std::time::Instant) -> (f64, usize) {
    let v: Vec<_> = snapshot(s)
        .into_iter()
        .filter(|(at, ..)| *at >= from && *at <= to)
        .collect();
    let (Some(a), Some(b)) = (v.first(), v.last()) else {
        return (0.0, 0);
    };
    let wall = b.0.duration_since(a.0).as_secs_f64();
    ((b.1 as f64 - a.1 as f64) / 1e9 / wall.max(1e-3), v.len())
}

/// Over the 3 s from `from` (waited for): the camera's content time (`content`, buffers at
/// its sink) advanced at twice the wall clock, the output's timestamps (`played`) with the
/// wall clock, so 50 of the camera's 25 fps frames per second of output time.
pub fn assert_plays_at_2x(content: &Samples, played: &Samples, from: std::time::Instant) {
    let end = from + std::time::Duration::from_secs(3);
    assert!(gst_ipcam_gateway::sim::wait_until(
        std::time::Duration::from_secs(15),
        || std::time::Instant::now() > end
    ));
    let (cam_rate, cam_n) = rate(content, from, end);
    let (out_rate, out_n) = rate(played, from, end);
    assert!(
        (1.6..=2.5).contains(&cam_rate),
        "the camera sends its content at 2x: {cam_rate} ({cam_n} frames)"
    );
    assert!(
        (0.8..=1.25).contains(&out_rate),
        "the output timestamps follow the clock: {out_rate} ({out_n} frames)"
    );
    let per_s = out_n as f64 / (out_rate * end.duration_since(from).as_secs_f64());
    assert!(
        (40.0..=62.0).contains(&per_s),
        "{per_s} frames per second of output time"
    );
}

/// A browser-like offer (recvonly H.264 + PCMA/PCMU) from a peer that will never connect.
pub fn whep_offer(video_pm: u8) -> String {
    format!(
        "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
         a=msid-semantic: WMS\r\n\
         m=video 9 UDP/TLS/RTP/SAVPF 96 102\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
         a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
         a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
         a=setup:actpass\r\na=mid:0\r\na=recvonly\r\na=rtcp-mux\r\na=rtpmap:96 VP8/90000\r\n\
         a=rtpmap:102 H264/90000\r\n\
         a=fmtp:102 level-asymmetry-allowed=1;packetization-mode={video_pm};profile-level-id=42e01f\r\n\
         a=candidate:1 1 udp 2122260223 127.0.0.1 9 typ host\r\n\
         m=audio 9 UDP/TLS/RTP/SAVPF 0 8\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
         a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
         a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
         a=setup:actpass\r\na=mid:1\r\na=recvonly\r\na=rtcp-mux\r\n\
         a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    )
}

/// `curl` on the gateway's API as `user`, with a JSON `body`: (status, body text).
pub fn api_as(
    gw: &gst_ipcam_gateway::gateway::Gateway,
    user: (&str, &str),
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, String) {
    let addr = gw.metrics_addr().expect("API listener");
    let mut cmd = std::process::Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "20",
        "-X",
        method,
        "-w",
        "\n%{http_code}",
    ])
    .args(["-u", &format!("{}:{}", user.0, user.1)]);
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    let out = cmd
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.trim_end().rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// A small simulated camera (H.264, no audio) registering at `sip_port` (a gateway's
/// endpoint, the default server ID and password) as `device_id`, listing `records`
/// (`start/end;...`) in its RecordInfo answers and playing them back.
pub fn camera_with_records(
    sip_port: u16,
    device_id: &str,
    records: &str,
) -> gst_ipcam_gateway::sim::SimCamera {
    use gst_ipcam_gateway::config::Config;
    let clip = gst_ipcam_gateway::sim::Clip::encode(&Config::default().sim_codec, 160, 120, 100, 1)
        .unwrap();
    gst_ipcam_gateway::sim::SimCamera::start_with_records(
        &[&clip],
        &gst_ipcam_gateway::sim::SimSettings {
            server_ip: "127.0.0.1".into(),
            server_port: sip_port,
            server_id: Config::default().server_id,
            device_id: device_id.into(),
            password: Config::default().password,
            audio: false,
        },
        records,
    )
    .unwrap()
}

/// The last GStreamer debug lines of some categories, kept in memory (not printed) for a
/// test to show when it fails: `GstLogTail::start(&[("rtspmedia", Debug), ...], 3000)`.
/// It removes GStreamer's default log function (the test binary's own stderr stays quiet).
pub struct GstLogTail {
    lines: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
}

impl GstLogTail {
    pub fn start(categories: &[(&str, gst::DebugLevel)], keep: usize) -> GstLogTail {
        gst::log::remove_default_log_function();
        gst::log::set_active(true);
        for (name, level) in categories {
            gst::log::set_threshold_for_name(name, *level);
        }
        let lines = std::sync::Arc::new(std::sync::Mutex::new(
            std::collections::VecDeque::with_capacity(keep),
        ));
        let sink = lines.clone();
        let start = std::time::Instant::now();
        gst::log::add_log_function(move |cat, level, _file, func, line, obj, msg| {
            let text = format!(
                "{:>8.3} {:?} {:<10} {:?} {func}:{line} {}: {}",
                start.elapsed().as_secs_f64(),
                std::thread::current().id(),
                cat.name(),
                level,
                obj.map(|o| o.to_string()).unwrap_or_default(),
                msg.get().map(|m| m.to_string()).unwrap_or_default()
            );
            let mut l = sink.lock().unwrap_or_else(|e| e.into_inner());
            if l.len() == keep {
                l.pop_front();
            }
            l.push_back(text);
        });
        GstLogTail { lines }
    }

    /// The kept lines, oldest first.
    pub fn dump(&self) -> String {
        let l = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        l.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

//! The camera RTSP servers built on stock gst-rtsp-server (the Rust example and the Python
//! one), end to end: a simulated camera registers before anyone watches, ffprobe plays its
//! mount (one INVITE on demand), the camera gets BYE after the last viewer, Ctrl-C stops the
//! server with exit 0. Before psdemux stopped sending GAP events ahead of a stream's first
//! data, every DESCRIBE got 503 (the media prerolled on the GAP, before the payloader had caps).

mod common;
use common::*;

use gst_ipcam_gateway::gateway::init;
use gst_ipcam_gateway::sim::{Clip, SimCamera, SimSettings, wait_until};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const DEVICE: &str = "34020000001320000001";

/// A server child process whose stdout lines arrive on a channel.
struct Server {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Server {
    fn spawn(mut cmd: Command) -> Server {
        let mut child = cmd
            .args(["--sip-port", "0", "--rtsp-port", "0"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        Server { child, lines }
    }

    /// The next stdout line containing `what`.
    fn wait_line(&self, what: &str) -> String {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(20)) {
                Ok(l) if l.contains(what) => return l,
                Ok(_) => {}
                Err(e) => panic!("no line with {what:?}: {e}"),
            }
        }
    }

    /// SIGINT, then the exit status (bounded wait).
    fn interrupt(mut self) -> Option<i32> {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        for _ in 0..200 {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn field(line: &str, after: &str) -> u16 {
    line.split(after)
        .nth(1)
        .and_then(|r| {
            r.split(|c: char| !c.is_ascii_digit())
                .find(|s| !s.is_empty())
        })
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no {after:?} in {line:?}"))
}

fn ffprobe_frames(url: &str) -> usize {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-rtsp_transport",
            "tcp",
            "-read_intervals",
            "%+2",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=codec_name,nb_read_frames",
            "-of",
            "csv=p=0",
            url,
        ])
        .output()
        .expect("ffprobe");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("h264,"),
        "ffprobe {url}: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.trim()
        .trim_end_matches(',')
        .rsplit(',')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn camera_then_viewer(server: Server) {
    init().unwrap();
    let banner = server.wait_line("RTSP port");
    let sip_port = field(&banner, "SIP 127.0.0.1:");
    let rtsp_port = field(&banner, "RTSP port ");
    let clip = Clip::encode("h264", 320, 240, 300, 2).expect("clip");
    let cam = SimCamera::start(
        &clip,
        &SimSettings {
            server_ip: "127.0.0.1".into(),
            server_port: sip_port,
            server_id: "34020000002000000001".into(),
            device_id: DEVICE.into(),
            password: "12345678".into(),
            audio: true,
        },
    )
    .expect("camera");
    // Registered and mounted before anyone watches; no session yet.
    let mounted = server.wait_line(&format!("device {DEVICE} registered"));
    let url = format!("rtsp://127.0.0.1:{rtsp_port}/{DEVICE}");
    assert!(mounted.ends_with(&url), "{mounted}");
    assert!(!cam.is_streaming(), "INVITE only on demand");
    // A viewer: one INVITE, frames decode.
    let frames = ffprobe_frames(&url);
    assert!(frames >= 10, "{frames} frames decoded");
    // The last viewer left: BYE.
    assert!(
        wait_until(Duration::from_secs(15), || !cam.is_streaming()),
        "camera session ended after the last viewer"
    );
    // A second viewer gets a new session.
    assert!(ffprobe_frames(&url) >= 10);
    cam.stop();
    assert_eq!(server.interrupt(), Some(0), "clean exit on Ctrl-C");
}

#[test]
fn rust_camera_rtsp_server() {
    let bin = profile_dir().join("examples/camera-rtsp-server");
    assert!(
        bin.exists(),
        "{} not built (cargo build --examples; make test builds every target)",
        bin.display()
    );
    camera_then_viewer(Server::spawn(Command::new(bin)));
}

#[test]
fn python_camera_rtsp_server() {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/camera-rtsp-server.py");
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg(script).env("GST_PLUGIN_PATH", profile_dir());
    camera_then_viewer(Server::spawn(cmd));
}

//! The example programs as processes: the gateway stops cleanly on SIGINT (exit 0, recording
//! finalized), and rtsp-to-gb28181 republishes the gateway's own RTSP output as a new GB28181
//! device that decodes again. Loopback only, free ports, bounded waits.

mod common;
use common::*;

use gst_ipcam_examples::auth::{Action, UserConfig};
use gst_ipcam_examples::config::Config;
use gst_ipcam_examples::gateway::Gateway;
use gst_ipcam_examples::sim::wait_until;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn frames(url_or_file: &str, extra: &[&str]) -> Vec<(String, u64)> {
    let out = Command::new("timeout")
        .arg("25")
        .arg("ffprobe")
        .args(["-v", "error"])
        .args(extra)
        .args([
            "-count_frames",
            "-show_entries",
            "stream=codec_name,nb_read_frames",
            "-of",
            "csv=p=0",
            url_or_file,
        ])
        .output()
        .unwrap();
    if !out.status.success() {
        eprintln!(
            "ffprobe {url_or_file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (c, n) = l.split_once(',')?;
            Some((c.to_string(), n.trim().parse().ok()?))
        })
        .collect()
}

fn count(v: &[(String, u64)], codec: &str) -> u64 {
    v.iter().filter(|(c, _)| c == codec).map(|(_, n)| *n).sum()
}

/// Kills the child on drop (a failing test must not leave it running).
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn gateway_stops_cleanly_on_sigint() {
    let _g = serial();
    let rec = std::env::temp_dir().join(format!("gw-sigint-{}", std::process::id()));
    let (sip, rtsp, metrics) = (free_port(), free_port(), free_port());
    // The reader, as an operator writes it: a [[users]] table with a hashed password.
    let reader = UserConfig::with_password("reader", "reader-pw", &[]).unwrap();
    let conf = std::env::temp_dir().join(format!("gw-sigint-{}.toml", std::process::id()));
    std::fs::write(
        &conf,
        format!(
            "[[users]]\nuser = \"reader\"\npass = \"{}\"\npermissions = [{{action = \"read\"}}]\n",
            reader.pass
        ),
    )
    .unwrap();
    let child = Command::new(example("gateway"))
        .args(["--config", conf.to_str().unwrap()])
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
        .args(["--metrics-port", &metrics.to_string(), "--simulate", "1"])
        .args([
            "--sim-width",
            "320",
            "--sim-height",
            "240",
            "--summary-interval-s",
            "1",
        ])
        .args(["--record-dir", rec.to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = Guard(child);
    let stdout = guard.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let mut wait_for = |what: &str, secs: u64| {
        let end = std::time::Instant::now() + Duration::from_secs(secs);
        while std::time::Instant::now() < end {
            if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
                let hit = l.contains(what);
                lines.push(l);
                if hit {
                    return true;
                }
            }
        }
        false
    };
    assert!(
        wait_for("streams 1/1", 20),
        "the recording keeps a session up"
    );
    // A client while we stop.
    let url = format!("rtsp://reader:reader-pw@127.0.0.1:{rtsp}/34020000001320000001");
    let v = frames(&url, &["-rtsp_transport", "tcp", "-read_intervals", "%+2"]);
    assert!(count(&v, "h264") >= 10, "{v:?}");
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: plain kill(2) on our own child.
    unsafe {
        libc::kill(guard.0.id() as i32, libc::SIGINT);
    }
    let mut status = None;
    assert!(
        wait_until(Duration::from_secs(15), || {
            status = guard.0.try_wait().unwrap();
            status.is_some()
        }),
        "exits after SIGINT"
    );
    assert!(status.unwrap().success(), "exit status {status:?}");
    assert!(wait_for("[gateway] stopped", 2), "{lines:?}");
    // The recording was finalized: it plays.
    let dir = rec.join("34020000001320000001");
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let v = frames(files[0].to_str().unwrap(), &[]);
    assert!(count(&v, "h264") >= 25, "{v:?}");
    assert!(count(&v, "aac") >= 5, "{v:?}");
    std::fs::remove_dir_all(&rec).ok();
    std::fs::remove_file(&conf).ok();
}

#[test]
fn rtsp_to_gb28181_republishes_the_gateway_output() {
    let _g = serial();
    let cfg = Config {
        sip_address: "127.0.0.1".into(),
        sip_port: free_port(),
        listen_address: "127.0.0.1".into(),
        rtsp_port: free_port(),
        metrics_port: free_port(),
        hls_port: free_port(),
        simulate: 1,
        sim_width: 320,
        sim_height: 240,
        sim_bitrate_kbps: 500,
        summary_interval_s: 0,
        users: vec![
            UserConfig::with_password("reader", "reader-pw", &[(Action::Read, "")]).unwrap(),
        ],
        ..Config::default()
    };
    let gw = Gateway::start(cfg.clone()).unwrap();
    let cam = cfg.sim_device_id(0);
    assert!(wait_until(Duration::from_secs(10), || gw
        .channels()
        .contains(&cam)));
    let bridge_id = "34020000001320000099";
    let child = Command::new(example("rtsp-to-gb28181"))
        .arg(gw.url_with_credentials(&cam, "reader", "reader-pw"))
        .args(["--server", &format!("127.0.0.1:{}", cfg.sip_port)])
        .args(["--device-id", bridge_id, "--seconds", "60"])
        .stdout(
            std::fs::File::create(std::env::temp_dir().join("gw-bridge-test.log"))
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null()),
        )
        .spawn()
        .unwrap();
    let _guard = Guard(child);
    assert!(
        wait_until(Duration::from_secs(15), || gw
            .channels()
            .iter()
            .any(|c| c == bridge_id)),
        "the bridge registered: {:?}",
        gw.channels()
    );
    // The republished stream: gateway → RTSP → bridge → GB28181 → gateway → RTSP → ffprobe.
    let v = frames(
        &gw.url_with_credentials(bridge_id, "reader", "reader-pw"),
        &["-rtsp_transport", "tcp", "-read_intervals", "%+3"],
    );
    assert!(count(&v, "h264") >= 10, "{v:?}");
    assert!(count(&v, "pcm_alaw") >= 10, "{v:?}");
}

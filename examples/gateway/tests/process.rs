//! The gateway as a process: it stops cleanly on SIGINT (exit 0, recording finalized).
//! Loopback only, bounded waits.

mod common;
use common::*;

use gst_ipcam_gateway::auth::UserConfig;
use gst_ipcam_gateway::sim::wait_until;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

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
    let child = gateway_command(&conf, sip, rtsp, metrics)
        .args(["--simulate", "1"])
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
    let mut guard = ChildGuard(child);
    let rx = stdout_lines(&mut guard.0);
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
    let v = ffprobe_frames(&["-rtsp_transport", "tcp", "-read_intervals", "%+2"], &url);
    assert!(frames_of(&v, "h264") >= 10, "{v:?}");
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
    let v = ffprobe_frames(&[], files[0].to_str().unwrap());
    assert!(frames_of(&v, "h264") >= 25, "{v:?}");
    assert!(frames_of(&v, "aac") >= 5, "{v:?}");
    std::fs::remove_dir_all(&rec).ok();
    std::fs::remove_file(&conf).ok();
}

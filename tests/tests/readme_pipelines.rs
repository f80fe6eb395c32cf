//! Every `gst-launch-1.0` line in README.md that needs no display, sound card, network peer
//! or user-provided capture runs here, in order (later lines read the files earlier ones
//! wrote), and must reach EOS without an error. Files are written to a scratch directory.

use gst::prelude::*;
use gst_ipcam_tests::{init, project_root, scratch_dir, start_pipeline, wait_for_eos};
use std::time::Duration;

/// Lines that need something a test machine doesn't have (a window, speakers, a second
/// process on the other end of a socket) or a file the user brings.
const NEEDS_OUTSIDE: &[&str] = &[
    "autovideosink",
    "autoaudiosink",
    "udpsrc",
    "udpsink",
    "tcpserversink",
    "tcpclientsrc",
    "is-live=true",
    "session.bin",
    "gb28181",
    "rtsp://",
];

fn readme_launch_lines() -> Vec<String> {
    let readme = std::fs::read_to_string(project_root().join("README.md")).expect("README.md");
    let mut lines = Vec::new();
    let mut in_block = false;
    let mut current = String::new();
    for line in readme.lines() {
        if line.starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if !in_block {
            continue;
        }
        let trimmed = line.trim();
        if current.is_empty() && !trimmed.starts_with("gst-launch-1.0") {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                lines.push(std::mem::take(&mut current));
            }
        }
    }
    lines
}

/// The launch description of a gst-launch-1.0 command line: options dropped, file names
/// moved into `dir`.
fn description(line: &str, dir: &std::path::Path) -> String {
    line.split_whitespace()
        .skip(1)
        .filter(|w| !matches!(*w, "-e" | "-m" | "-q" | "-v"))
        .map(|w| match w.strip_prefix("location=") {
            Some(file) => format!("location={}", dir.join(file).display()),
            None => w.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn readme_pipelines_run() {
    init();
    let dir = scratch_dir("readme");
    let lines = readme_launch_lines();
    assert!(
        lines.len() >= 10,
        "README launch lines found: {}",
        lines.len()
    );
    let mut ran = 0;
    for line in &lines {
        if NEEDS_OUTSIDE.iter().any(|n| line.contains(n)) {
            continue;
        }
        let desc = description(line, &dir);
        let pipeline = start_pipeline(&desc);
        let log = wait_for_eos(&pipeline, Duration::from_secs(120));
        pipeline.set_state(gst::State::Null).unwrap();
        assert!(log.errors.is_empty(), "{line}\n{:?}", log.errors);
        assert!(log.eos, "{line}: no EOS");
        ran += 1;
    }
    // The files the lines promise exist and are not empty.
    for f in ["camera.ps", "camera-h265.ps", "camera.mp4"] {
        let len = std::fs::metadata(dir.join(f)).map(|m| m.len()).unwrap_or(0);
        assert!(len > 1000, "{f}: {len} bytes");
    }
    assert!(ran >= 6, "ran {ran} README lines");
}

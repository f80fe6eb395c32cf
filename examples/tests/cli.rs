//! The command-line tools behave like command-line tools: `--help` prints usage and starts
//! nothing, an unknown flag or a bad value is an error with exit status 2. No network.

mod common;
use common::*;

use std::process::{Command, Output};

/// Runs `camera-sim` with `args`, killed after 20 s should it start cameras instead.
fn camera_sim(args: &[&str]) -> Output {
    Command::new("timeout")
        .arg("20")
        .arg(example("camera-sim"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn camera_sim_help_prints_usage_and_starts_nothing() {
    let out = camera_sim(&["--help"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("Usage: camera-sim"), "{stdout}");
    assert!(stdout.contains("[default: 127.0.0.1:5060]"), "{stdout}");
    assert!(
        !stdout.contains("camera-sim: "),
        "started cameras: {stdout}"
    );
    let out = camera_sim(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("camera-sim "));
}

#[test]
fn camera_sim_refuses_bad_values_and_unknown_flags() {
    for args in [
        &["--count", "abc"][..],
        &["--count", "0"],
        &["--bogus"],
        &["--server", "::1:5060"],
        &["--server-id", "3402"],
        &["--size", "640"],
        &["--bitrate-kbps", "-5"],
    ] {
        let out = camera_sim(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} started something");
    }
}

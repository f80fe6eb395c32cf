//! The gateway's command line and config file, through the binary: help, exit codes, errors
//! that name the file's line, precedence, `--check-config` on the sample. Nothing is started
//! (no network).

mod common;
use common::*;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn run(args: &[&str]) -> Output {
    Command::new(gateway_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the gateway runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.toml");

#[test]
fn help_lists_every_flag_with_its_default() {
    let out = run(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    for (flag, default) in [
        ("--sip-port <PORT>", "[default: 5060]"),
        ("--rtsp-port <PORT>", "[default: 8554]"),
        ("--server-id <ID>", "[default: 34020000002000000001]"),
        ("--hls [<BOOL>]", "[default: false]"),
        ("--record-dir <DIR>", "[default: none]"),
        ("--data-dir <DIR>", "[default: none]"),
        ("--max-devices <N>", "[default: 10000]"),
    ] {
        let at = help.find(flag).unwrap_or_else(|| panic!("{flag}: {help}"));
        let line_after = help[at..].lines().nth(1).unwrap_or("");
        assert!(line_after.contains(default), "{flag}: {line_after}");
    }
    for flag in [
        "--config <FILE>",
        "--check-config",
        "--hash-password",
        "--user <NAME>",
    ] {
        assert!(help.contains(flag), "{flag}: {help}");
    }
    assert_eq!(run(&["--version"]).status.code(), Some(0));
}

#[test]
fn bad_flags_exit_2() {
    for args in [
        &["--bogus"][..],
        &["--sip-port", "abc"],
        &["--sip-port", "70000"],
        &["--simulate"],
        &["--max-devices", "0"],
        &["--sip-transport", "sctp"],
        &["--server-id", "123"],
        &["stray"],
    ] {
        let out = run(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
    }
    let err = text(&run(&["--max-devices", "0"]).stderr);
    assert!(
        err.contains("--max-devices: 0 is not within 1 to 1000000"),
        "{err}"
    );
}

#[test]
fn file_errors_name_the_line_and_exit_2() {
    let dir = scratch("config-errors");
    let f = dir.join("gw.toml");
    let path = f.to_str().unwrap();
    for (body, expect) in [
        (
            "sip_port = 5070\n\nfoo = 1\n",
            ":3:1: unknown field `foo`, expected one of",
        ),
        (
            "sip_port = 5070\nmax_devices = 0\n",
            ":2:15: 0 is not within 1 to 1000000",
        ),
        ("rtsp_port = \"8554\"\n", ":1:13: "),
        (
            "[[users]]\nuser = \"a\"\npassword = \"x\"\n",
            ":3:1: unknown field `password`",
        ),
        ("sip_port = \n", ":1:"),
    ] {
        std::fs::write(&f, body).unwrap();
        let out = run(&["--config", path, "--check-config"]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{body}: {err}");
        assert!(
            err.starts_with(&format!("gst-ipcam-gateway: {path}{expect}")),
            "{body}: {err}"
        );
        // Without --check-config too: the gateway does not start.
        assert_eq!(run(&["--config", path]).status.code(), Some(2), "{body}");
    }
    // Read but refused by the user table (a plain-text password).
    std::fs::write(&f, "[[users]]\nuser = \"a\"\npass = \"plain\"\n").unwrap();
    let out = run(&["--config", path, "--check-config"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("users:"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["--config", dir.join("missing.toml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn flags_override_the_file() {
    let dir = scratch("config-precedence");
    let f = dir.join("gw.toml");
    std::fs::write(
        &f,
        "sip_port = 5070\nrtsp_port = 9554\nhls = true\npassword = \"s3cret\"\n",
    )
    .unwrap();
    let out = run(&[
        "--config",
        f.to_str().unwrap(),
        "--rtsp-port=8555",
        "--hls",
        "false",
        "--data-dir",
        "/var/lib/x",
        "--check-config",
    ]);
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for line in [
        "sip_port = 5070",           // file
        "rtsp_port = 8555",          // flag over file
        "hls = false",               // flag over file
        "data_dir = \"/var/lib/x\"", // flag
        "metrics_port = 9998",       // default
        "password = \"<hidden>\"",
    ] {
        assert!(shown.lines().any(|l| l == line), "{line}: {shown}");
    }
    assert!(!shown.contains("s3cret"), "{shown}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_sample_config_checks() {
    let out = run(&["--config", SAMPLE, "--check-config"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains("configuration OK"), "{shown}");
    assert!(shown.lines().any(|l| l == "simulate = 0"), "{shown}");
    assert!(Path::new(SAMPLE).exists());
}

#[test]
fn hash_password_prints_a_user_table() {
    let mut child = Command::new(gateway_bin())
        .args(["--hash-password", "--user", "alice"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"alice-pw\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let table = format!("[[users]]\n{}", text(&out.stdout));
    assert!(table.contains("pass = \"argon2:"), "{table}");
    assert!(table.contains("digest_ha1 = \""), "{table}");
    // What it prints is a valid [[users]] table.
    let dir = scratch("config-hash");
    let f = dir.join("gw.toml");
    std::fs::write(&f, &table).unwrap();
    let out = run(&["--config", f.to_str().unwrap(), "--check-config"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("# 1 user(s)"));
    // An empty password and a stray --user are refused.
    assert_eq!(run(&["--hash-password"]).status.code(), Some(2));
    assert_eq!(run(&["--user", "bob"]).status.code(), Some(2));
    std::fs::remove_dir_all(&dir).ok();
}

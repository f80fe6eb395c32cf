//! The example tools behave like command-line tools: `--help` prints usage and runs nothing,
//! an unknown flag or a bad value is an error with exit status 2. No network.

use std::path::PathBuf;
use std::process::{Command, Output};

/// target/<profile>/examples/<name>, built by `cargo test` with the examples.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let p = dir.join("examples").join(name);
    assert!(p.exists(), "{} (built by cargo test)", p.display());
    p
}

/// Runs `name` with `args`, killed after 20 s should it start working instead.
fn run(name: &str, args: &[&str]) -> Output {
    Command::new("timeout")
        .arg("20")
        .arg(example(name))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn tools_print_help_and_version() {
    for name in ["gb28181-load", "gb28181-streams", "digest_bench"] {
        let out = run(name, &["--help"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{name}: {stdout}");
        assert!(stdout.contains(&format!("Usage: {name}")), "{stdout}");
        assert!(stdout.contains("[default: "), "{name}: {stdout}");
        let out = run(name, &["--version"]);
        assert_eq!(out.status.code(), Some(0), "{name}");
        assert!(String::from_utf8_lossy(&out.stdout).starts_with(&format!("{name} ")));
    }
}

#[test]
fn tools_refuse_bad_values_and_unknown_flags() {
    for (name, args) in [
        ("gb28181-load", &["--devices", "abc"][..]),
        ("gb28181-load", &["--devices", "0"]),
        ("gb28181-load", &["--server", "localhost"]),
        ("gb28181-load", &["--bogus"]),
        ("gb28181-streams", &["--role", "send", "--streams", "abc"]),
        ("gb28181-streams", &["--role", "both"]),
        ("gb28181-streams", &["--streams", "2"]),
        (
            "gb28181-streams",
            &["--role", "recv", "--sip-port", "70000"],
        ),
        ("gb28181-streams", &["--role", "recv", "--bogus", "1"]),
        ("digest_bench", &["abc"]),
        ("digest_bench", &["--bogus"]),
    ] {
        let out = run(name, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name} {args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{name} {args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{name} {args:?} started something");
    }
}

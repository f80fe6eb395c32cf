//! Helpers for tests that run whole programs (the gateway, the examples, ffprobe): one program
//! at a time per test binary, scratch directories, paths of built binaries, frame counts read
//! back by ffprobe, recordings listed.

use crate::lock;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Mutex, MutexGuard};

static SERIAL: Mutex<()> = Mutex::new(());

/// The tests of a file share 2 cores: one program under test at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    lock(&SERIAL)
}

/// A port free for both TCP and UDP (for settings that need a fixed port before start).
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let t = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = t.local_addr().unwrap().port();
        drop(t);
        if UdpSocket::bind(("0.0.0.0", p)).is_ok() && TcpListener::bind(("0.0.0.0", p)).is_ok() {
            return p;
        }
    }
    panic!("no free port");
}

/// A fresh directory under the temp dir, unique per process and call.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "gw-test-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// target/<profile>, the directory this test binary runs from (…/deps/..).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps")
        .to_path_buf()
}

/// target/<profile>/examples/<name>, built with the examples (`make test` builds every target).
pub fn example(name: &str) -> PathBuf {
    let p = profile_dir().join("examples").join(name);
    assert!(p.exists(), "{} (build the examples first)", p.display());
    p
}

/// The ffprobe arguments (after the program name) that count the decoded frames per codec of
/// `url`, with `args` (transport, read intervals...) first; [`parse_frames`] reads its output.
pub fn ffprobe_frames_args<'a>(args: &[&'a str], url: &'a str) -> Vec<&'a str> {
    let mut v = vec!["-v", "error"];
    v.extend_from_slice(args);
    v.extend_from_slice(&[
        "-count_frames",
        "-show_entries",
        "stream=codec_name,nb_read_frames",
        "-of",
        "csv=p=0",
        url,
    ]);
    v
}

/// `(codec, frames)` per stream from the output of [`ffprobe_frames_args`].
pub fn parse_frames(stdout: &[u8]) -> Vec<(String, u64)> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| {
            let (c, n) = l.split_once(',')?;
            Some((c.to_string(), n.trim().parse().ok()?))
        })
        .collect()
}

/// Decoded frames per codec, by ffprobe (bounded by `timeout 25`).
pub fn ffprobe_frames(args: &[&str], url: &str) -> Vec<(String, u64)> {
    let out = Command::new("timeout")
        .args(["25", "ffprobe"])
        .args(ffprobe_frames_args(args, url))
        .output()
        .expect("ffprobe runs");
    if !out.status.success() {
        eprintln!("ffprobe {url}: {}", String::from_utf8_lossy(&out.stderr));
    }
    parse_frames(&out.stdout)
}

pub fn frames_of(v: &[(String, u64)], codec: &str) -> u64 {
    v.iter().filter(|(c, _)| c == codec).map(|(_, n)| *n).sum()
}

/// The MP4 files in `dir`, sorted by name (recordings are named by date and time).
pub fn mp4_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|e| e == "mp4"));
    v.sort();
    v
}

/// A child process killed and reaped on drop (a failing test must not leave it running).
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

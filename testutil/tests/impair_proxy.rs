//! The `impair-proxy` command as a user runs it: it prints where it listens, drops the seeded
//! share of datagrams, stops on SIGINT and prints what it did; bad flags exit 2.

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::Duration;

use gst_ipcam_testutil::wait_until;

const BIN: &str = env!("CARGO_BIN_EXE_impair-proxy");

#[test]
fn udp_proxy_command_loses_the_seeded_share_and_stops_on_sigint() {
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Done when nothing came for 2 s (everything is sent at once over loopback).
    rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let to = rx.local_addr().unwrap();
    let run = || {
        let mut child = Command::new(BIN)
            .args([
                "--udp",
                "--to",
                &to.to_string(),
                "--loss",
                "0.3",
                "--burst",
                "3",
            ])
            .args(["--seed", "11", "--stats-interval-s", "0"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = out.next().unwrap().unwrap();
        let addr = first.split_whitespace().nth(2).unwrap().to_string();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        for n in 0..200u8 {
            tx.send_to(&[n], &addr).unwrap();
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 8];
        while let Ok(n) = rx.recv(&mut buf) {
            got.push(buf[..n].to_vec());
        }
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let mut status = None;
        assert!(wait_until(Duration::from_secs(10), || {
            status = child.try_wait().unwrap();
            status.is_some()
        }));
        assert!(status.unwrap().success(), "{status:?}");
        let last: Vec<String> = out.map_while(Result::ok).collect();
        assert!(
            last.iter()
                .any(|l| l.contains("200 in") && l.contains("lost")),
            "{last:?}"
        );
        got
    };
    let a = run();
    assert!(
        a.len() > 100 && a.len() < 180,
        "about 30 % lost: {}",
        a.len()
    );
    assert_eq!(a, run(), "the same seed, the same losses");
}

#[test]
fn bad_flags_exit_2() {
    for args in [
        &["--to", "nowhere"][..],
        &["--to", "127.0.0.1:9", "--loss", "2"],
        &["--bogus"],
    ] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

//! N simulated GB28181 cameras against any platform: H.264/H.265 + G.711 A-law encoded once,
//! looped through `appsrc ! psmux ! gb28181sink` per camera (digest REGISTER, keepalives,
//! Catalog answers, live view on INVITE over UDP/TCP).
//!
//! `cargo run --release --example camera-sim -- --server 127.0.0.1:5060 --count 10
//!  (IPv6: `--server [::1]:5060`)
//!  [--server-id 34020000002000000001] [--password 12345678] [--first-id 34020000001320000001]
//!  [--codec h264|h265] [--size 640x360] [--bitrate-kbps 1000] [--seconds N]`

use gst_ipcam_examples::config::sim_device_id;
use gst_ipcam_examples::gateway::init;
use gst_ipcam_examples::signals;
use gst_ipcam_examples::sim::{Clip, SimCamera, SimSettings, stop_all};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut opt = std::collections::HashMap::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let Some(k) = a.strip_prefix("--") else {
            eprintln!("camera-sim: unexpected {a}");
            std::process::exit(2);
        };
        let (k, v) = match k.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (k.to_string(), it.next().cloned().unwrap_or_default()),
        };
        opt.insert(k, v);
    }
    let get = |k: &str, d: &str| opt.get(k).cloned().unwrap_or_else(|| d.to_string());
    let server = get("server", "127.0.0.1:5060");
    // `host:port`, IPv6 as `[addr]:port` (an unbracketed v6 literal is ambiguous).
    let (ip, port) = server
        .rsplit_once(':')
        .and_then(|(h, p)| {
            let h = match h.strip_prefix('[') {
                Some(v6) => v6.strip_suffix(']')?,
                None if h.contains(':') => return None,
                None => h,
            };
            Some((h.to_string(), p.parse::<u16>().ok()?))
        })
        .unwrap_or_else(|| {
            eprintln!("camera-sim: --server ip:port or [ipv6]:port");
            std::process::exit(2)
        });
    let count: u32 = get("count", "1").parse().unwrap_or(1);
    let (w, h) = get("size", "640x360")
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
        .unwrap_or((640, 360));
    let seconds: u64 = get("seconds", "0").parse().unwrap_or(0);
    init().expect("GStreamer");
    let clip = match Clip::encode(
        &get("codec", "h264"),
        w,
        h,
        get("bitrate-kbps", "1000").parse().unwrap_or(1000),
        4,
    ) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("camera-sim: {e}");
            std::process::exit(1);
        }
    };
    signals::install();
    let first = get("first-id", "34020000001320000001");
    let mut cams = Vec::new();
    for i in 0..count {
        let s = SimSettings {
            server_ip: ip.clone(),
            server_port: port,
            server_id: get("server-id", "34020000002000000001"),
            device_id: sim_device_id(&first, i),
            password: get("password", "12345678"),
            audio: get("audio", "true") != "false",
        };
        match SimCamera::start(&clip, &s) {
            Ok(c) => cams.push(c),
            Err(e) => eprintln!("camera-sim: {}: {e}", s.device_id),
        }
    }
    println!(
        "camera-sim: {} cameras ({} kbit/s each) registering with {server}",
        cams.len(),
        clip.bitrate_bps() / 1000
    );
    let start = Instant::now();
    let mut next = start + Duration::from_secs(5);
    signals::wait(|| {
        if Instant::now() >= next {
            next += Duration::from_secs(5);
            let reg = cams.iter().filter(|c| c.is_registered()).count();
            let streaming = cams.iter().filter(|c| c.is_streaming()).count();
            println!(
                "camera-sim: registered {reg}/{} streaming {streaming}",
                cams.len()
            );
        }
        seconds > 0 && start.elapsed() >= Duration::from_secs(seconds)
    });
    stop_all(&cams);
    println!("camera-sim: stopped");
}

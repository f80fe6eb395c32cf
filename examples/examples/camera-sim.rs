//! N simulated GB28181 cameras against any platform: H.264/H.265 + G.711 A-law encoded once,
//! looped through `appsrc ! psmux ! gb28181sink` per camera (digest REGISTER, keepalives,
//! Catalog answers, live view on INVITE over UDP/TCP).
//!
//! `cargo run --release --example camera-sim -- --server 127.0.0.1:5060 --count 10
//!  (IPv6: `--server [::1]:5060`)
//!  [--server-id 34020000002000000001] [--password 12345678] [--first-id 34020000001320000001]
//!  [--codec h264|h265] [--size 640x360] [--bitrate-kbps 1000] [--audio true|false] [--seconds N]`

use gst_ipcam_gateway::cli::{gb_id, server_addr};
use gst_ipcam_gateway::config::sim_device_id;
use gst_ipcam_gateway::gateway::init;
use gst_ipcam_gateway::signals;
use gst_ipcam_gateway::sim::{Clip, RtpPsSender, SimCamera, SimSettings, stop_all};
use std::time::{Duration, Instant};

/// Simulated GB28181 cameras.
#[derive(clap::Parser, Debug)]
#[command(
    name = "camera-sim",
    version,
    about = "N simulated GB28181 cameras registering with a platform and streaming on INVITE"
)]
struct Args {
    /// The GB28181 platform, IP:PORT (IPv6 as [ADDR]:PORT).
    #[arg(long, default_value = "127.0.0.1:5060", value_parser = server_addr)]
    server: (String, u16),
    /// Number of cameras.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    count: u32,
    /// The platform's 20-digit ID.
    #[arg(long, default_value = "34020000002000000001", value_parser = gb_id)]
    server_id: String,
    /// Password the cameras register with.
    #[arg(long, default_value = "12345678")]
    password: String,
    /// 20-digit ID of the first camera; the next ones advance its last 6 digits.
    #[arg(long, default_value = "34020000001320000001", value_parser = gb_id)]
    first_id: String,
    /// Video codec.
    #[arg(long, value_parser = ["h264", "h265"], default_value = "h264")]
    codec: String,
    /// Picture size, WIDTHxHEIGHT.
    #[arg(long, default_value = "640x360", value_parser = picture_size)]
    size: (u32, u32),
    /// Video bitrate of each camera.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(16..=100_000))]
    bitrate_kbps: u32,
    /// Send G.711 A-law audio with the video.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    audio: bool,
    /// Stop after this many seconds (0: until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    seconds: u64,
    /// No SIP: send each camera's PS over RTP straight to this UDP IP:PORT (repeat the flag,
    /// one camera each; `--count` is then ignored), as cameras do once a media server opened
    /// a port for them (e.g. ZLMediaKit's `openRtpServer`). For side-by-side benchmarks.
    #[arg(long, value_parser = server_addr)]
    rtp_to: Vec<(String, u16)>,
}

/// `WIDTHxHEIGHT`, each 16..=7680.
fn picture_size(s: &str) -> Result<(u32, u32), String> {
    let dim = |v: &str| v.parse::<u32>().ok().filter(|d| (16..=7680).contains(d));
    s.split_once('x')
        .and_then(|(w, h)| Some((dim(w)?, dim(h)?)))
        .ok_or_else(|| "WIDTHxHEIGHT, each 16 to 7680".into())
}

fn main() {
    let Args {
        server: (ip, port),
        count,
        server_id,
        password,
        first_id,
        codec,
        size: (w, h),
        bitrate_kbps,
        audio,
        seconds,
        rtp_to,
    } = <Args as clap::Parser>::parse();
    let server = if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    };
    init().expect("GStreamer");
    let clip = match Clip::encode(&codec, w, h, bitrate_kbps, 4) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("camera-sim: {e}");
            std::process::exit(1);
        }
    };
    signals::install();
    if !rtp_to.is_empty() {
        send_rtp_only(&clip, &rtp_to, audio, seconds);
        return;
    }
    let mut cams = Vec::new();
    for i in 0..count {
        let s = SimSettings {
            server_ip: ip.clone(),
            server_port: port,
            server_id: server_id.clone(),
            device_id: sim_device_id(&first_id, i),
            password: password.clone(),
            audio,
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

/// `--rtp-to`: one paced PS/RTP sender per address (SSRC 1, 2, ...) until Ctrl-C or `seconds`.
fn send_rtp_only(clip: &Clip, dests: &[(String, u16)], audio: bool, seconds: u64) {
    let mut senders = Vec::new();
    for (i, (ip, port)) in dests.iter().enumerate() {
        let dest = match ip.parse::<std::net::IpAddr>() {
            Ok(a) => std::net::SocketAddr::new(a, *port),
            Err(e) => {
                eprintln!("camera-sim: --rtp-to {ip}: {e}");
                std::process::exit(2);
            }
        };
        match RtpPsSender::start(clip, dest, i as u32 + 1, audio) {
            Ok(s) => senders.push(s),
            Err(e) => eprintln!("camera-sim: {dest}: {e}"),
        }
    }
    println!(
        "camera-sim: {} PS/RTP senders ({} kbit/s each), no SIP",
        senders.len(),
        clip.bitrate_bps() / 1000
    );
    let start = Instant::now();
    signals::wait(|| seconds > 0 && start.elapsed() >= Duration::from_secs(seconds));
    drop(senders);
    println!("camera-sim: stopped");
}

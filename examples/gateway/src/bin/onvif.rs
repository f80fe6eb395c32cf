//! `gst-ipcam-onvif`: finds ONVIF cameras on the local network (WS-Discovery) and prints
//! their RTSP stream URIs as JSON, one device per line, ready for a `[[paths]]` `source`.
//! The device password is read from the `ONVIF_PASSWORD` environment variable (never a
//! flag: command lines are visible to every user of the machine).
//!
//!   ONVIF_PASSWORD=pw gst-ipcam-onvif --user admin [--target 192.168.1.64:3702] [--wait-ms 2000]

use clap::Parser;
use gst_ipcam_gateway::onvif::{DISCOVERY_ADDR, client};
use std::time::Duration;

/// Find ONVIF cameras and their RTSP stream URIs.
#[derive(Parser, Debug)]
#[command(name = "gst-ipcam-onvif", version)]
struct Args {
    /// Where the probe goes: the WS-Discovery multicast group, or one device's ip:port
    #[arg(long, default_value = DISCOVERY_ADDR)]
    target: std::net::SocketAddr,
    /// Milliseconds answers are waited for (100-10000)
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(100..=10_000))]
    wait_ms: u64,
    /// Device user for GetProfiles/GetStreamUri (password in ONVIF_PASSWORD)
    #[arg(long, default_value = "")]
    user: String,
}

fn main() {
    let a = Args::parse();
    let opts = client::Options {
        target: a.target,
        wait: Duration::from_millis(a.wait_ms),
        user: a.user,
        password: std::env::var("ONVIF_PASSWORD").unwrap_or_default(),
    };
    match client::discover(&opts) {
        Ok(devices) => {
            for d in devices {
                println!("{}", serde_json::to_string(&d).unwrap_or_default());
            }
        }
        Err(e) => {
            eprintln!("gst-ipcam-onvif: probe to {}: {e}", opts.target);
            std::process::exit(1);
        }
    }
}

//! The GB28181 → RTSP/HLS gateway.
//!
//! `cargo run --release --example gateway -- [--simulate N] [--hls true] [--record-dir DIR]
//! [--config gateway.toml] ...` (`--help` lists every option). Ctrl-C stops it cleanly (BYE to
//! every camera, files finalized, exit 0).

use gst_ipcam_examples::config::{Config, USAGE};
use gst_ipcam_examples::gateway::Gateway;
use gst_ipcam_examples::signals;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "gateway: GB28181 cameras to RTSP (and HLS, MP4 recording)\n{USAGE}\n  --config FILE          TOML file with the same keys"
        );
        return;
    }
    let cfg = match Config::from_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gateway: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let mut gw = match Gateway::start(cfg.clone()) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("gateway: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "[gateway] SIP {}:{} ({}), server id {}, RTSP port {}, metrics http://{}:{}/metrics",
        cfg.sip_address,
        gw.endpoint().local_addr().port(),
        cfg.sip_transport,
        cfg.server_id,
        gw.rtsp_port(),
        cfg.public_host,
        gw.metrics_addr().map(|a| a.port()).unwrap_or(0)
    );
    for i in 0..cfg.simulate {
        println!(
            "[gateway] simulated camera: open {}",
            gw.url(&cfg.sim_device_id(i))
        );
    }
    signals::install();
    signals::wait(|| false);
    println!("[gateway] stopping");
    gw.stop();
    println!("[gateway] stopped");
}

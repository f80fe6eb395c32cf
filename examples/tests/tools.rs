//! rtsp-to-gb28181 as a process: it republishes the gateway's own RTSP output as a new GB28181
//! device that decodes again. Loopback only, bounded waits.

mod common;
use common::*;

use gst_ipcam_gateway::auth::{Action, UserConfig};
use gst_ipcam_gateway::config::Config;
use gst_ipcam_gateway::gateway::Gateway;
use gst_ipcam_gateway::sim::wait_until;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn rtsp_to_gb28181_republishes_the_gateway_output() {
    let _g = serial();
    let cfg = Config {
        sip_address: "127.0.0.1".into(),
        sip_port: free_port(),
        listen_address: "127.0.0.1".into(),
        rtsp_port: free_port(),
        metrics_port: free_port(),
        hls_port: free_port(),
        simulate: 1,
        sim_width: 320,
        sim_height: 240,
        sim_bitrate_kbps: 500,
        summary_interval_s: 0,
        users: vec![
            UserConfig::with_password("reader", "reader-pw", &[(Action::Read, "")]).unwrap(),
        ],
        ..Config::default()
    };
    let gw = Gateway::start(cfg.clone()).unwrap();
    let cam = cfg.sim_device_id(0);
    assert!(wait_until(Duration::from_secs(10), || gw
        .channels()
        .contains(&cam)));
    let bridge_id = "34020000001320000099";
    let child = Command::new(example("rtsp-to-gb28181"))
        .arg(gw.url_with_credentials(&cam, "reader", "reader-pw"))
        .args(["--server", &format!("127.0.0.1:{}", cfg.sip_port)])
        .args(["--device-id", bridge_id, "--seconds", "60"])
        .stdout(
            std::fs::File::create(std::env::temp_dir().join("gw-bridge-test.log"))
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null()),
        )
        .spawn()
        .unwrap();
    let _guard = ChildGuard(child);
    assert!(
        wait_until(Duration::from_secs(15), || gw
            .channels()
            .iter()
            .any(|c| c == bridge_id)),
        "the bridge registered: {:?}",
        gw.channels()
    );
    // The republished stream: gateway → RTSP → bridge → GB28181 → gateway → RTSP → ffprobe.
    let v = ffprobe_frames(
        &["-rtsp_transport", "tcp", "-read_intervals", "%+3"],
        &gw.url_with_credentials(bridge_id, "reader", "reader-pw"),
    );
    assert!(frames_of(&v, "h264") >= 10, "{v:?}");
    assert!(frames_of(&v, "pcm_alaw") >= 10, "{v:?}");
}

//! The gateway over IPv6 loopback: SIP on `::1` (a simulated camera registers and streams
//! to `[::1]`), RTSP and HLS listening on `::1`; ffprobe decodes `rtsp://[::1]:port/<id>`
//! and an HLS segment from `http://[::1]:port/...`.

mod common;
use common::*;

use gst_ipcam_gateway::auth::basic_value;
use gst_ipcam_gateway::config::Config;
use gst_ipcam_gateway::gateway::Gateway;
use gst_ipcam_gateway::http;
use gst_ipcam_gateway::sim::{Clip, SimCamera, SimSettings, wait_until};
use std::time::Duration;

#[test]
fn gateway_over_ipv6_loopback() {
    let _serial = serial();
    gst_ipcam_gateway::gateway::init().unwrap();
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback on this machine: skipped");
        return;
    }
    let hls_dir = scratch("hls-v6");
    let cfg = Config {
        public_host: "::1".into(),
        hls: true,
        hls_dir: hls_dir.clone(),
        ..loopback_config("::1")
    };
    let mut gw = Gateway::start(cfg.clone()).expect("gateway starts on ::1");
    let cfg = gw.config().clone();
    let id = "34020000001320000601";
    let clip = Clip::encode_with(Some("h264"), Some("alaw"), 160, 120, 200, 2).expect("clip");
    let cam = SimCamera::start(
        &clip,
        &SimSettings {
            server_ip: "::1".into(),
            server_port: cfg.sip_port,
            server_id: cfg.server_id.clone(),
            device_id: id.into(),
            password: cfg.password.clone(),
            audio: true,
        },
    )
    .expect("camera");
    assert!(
        wait_until(Duration::from_secs(10), || gw
            .channels()
            .contains(&id.to_string())),
        "the camera registered over ::1 and its channel is mounted"
    );
    let url = gw.url_with_credentials(id, READER.0, READER.1);
    assert!(url.contains("@[::1]:"), "{url}");
    let rtsp = ffprobe_frames(&["-rtsp_transport", "tcp", "-read_intervals", "%+3"], &url);
    let rtsp_udp = ffprobe_frames(&["-rtsp_transport", "udp", "-read_intervals", "%+3"], &url);

    let hls = gw.hls_addr().expect("HLS address");
    assert!(hls.is_ipv6(), "{hls}");
    let auth = basic_value(READER.0, READER.1);
    let mut segment = None;
    wait_until(Duration::from_secs(20), || {
        segment = http::request(
            None,
            hls,
            &format!("/{id}/index.m3u8"),
            &[("Authorization", &auth)],
        )
        .ok()
        .filter(|r| r.status == 200)
        .and_then(|r| {
            String::from_utf8_lossy(&r.body)
                .lines()
                .rfind(|l| l.ends_with(".ts"))
                .map(String::from)
        });
        segment.is_some()
    });
    let hls_frames = segment
        .map(|seg| {
            ffprobe_frames(
                &[],
                &format!(
                    "http://{}:{}@[::1]:{}/{id}/{seg}",
                    READER.0,
                    READER.1,
                    hls.port()
                ),
            )
        })
        .unwrap_or_default();
    cam.stop();
    gw.stop();
    std::fs::remove_dir_all(&hls_dir).ok();
    assert!(
        frames_of(&rtsp, "h264") >= 25,
        "RTSP/TCP over [::1]: {rtsp:?}"
    );
    assert!(
        frames_of(&rtsp, "pcm_alaw") >= 25,
        "RTSP/TCP over [::1]: {rtsp:?}"
    );
    assert!(
        frames_of(&rtsp_udp, "h264") >= 25,
        "RTSP/UDP over [::1]: {rtsp_udp:?}"
    );
    assert!(
        frames_of(&hls_frames, "h264") >= 1,
        "HLS over [::1]: {hls_frames:?}"
    );
    assert!(
        frames_of(&hls_frames, "aac") >= 1,
        "HLS over [::1]: {hls_frames:?}"
    );
}

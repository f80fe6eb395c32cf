//! Pushing paths to an RTMP server with `rtmp2sink`, from the config (`[[push]]`) and the API
//! (`POST`/`GET`/`DELETE /v1/push`). The RTMP server pushed to is the gateway's own listener
//! (loopback only): what it receives becomes a published path that ffprobe reads back over
//! RTSP.

mod common;
use common::*;

use gst_ipcam_gateway::auth::{Action, UserConfig};
use gst_ipcam_gateway::config::Config;
use gst_ipcam_gateway::gateway::{Gateway, SourceKind};
use gst_ipcam_gateway::push::PushConfig;
use gst_ipcam_gateway::sim::wait_until;
use std::time::Duration;

const PUBLISHER: (&str, &str) = ("pub", "pub-secret-pw");
const ADMIN: (&str, &str) = ("admin", "admin-pw");

fn api(gw: &Gateway, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    api_as(gw, ADMIN, method, path, body)
}

fn published(gw: &Gateway, path: &str) -> bool {
    gw.published()
        .iter()
        .any(|p| p.name == path && p.source == SourceKind::RtmpPublisher && p.bytes_received > 0)
}

#[test]
fn paths_are_pushed_over_rtmp_from_config_and_api() {
    let _s = serial();
    let rtmp_port = free_port();
    let url = |stream: &str| {
        format!(
            "rtmp://127.0.0.1:{rtmp_port}/live/{stream}?user={}&pass={}",
            PUBLISHER.0, PUBLISHER.1
        )
    };
    let mut cfg = Config {
        simulate: 1,
        sim_width: 320,
        sim_height: 240,
        sim_bitrate_kbps: 400,
        rtmp_address: "127.0.0.1".into(),
        rtmp_port,
        ..loopback_config("127.0.0.1")
    };
    let camera = cfg.sim_device_id(0);
    cfg.users.push(
        UserConfig::with_password(PUBLISHER.0, PUBLISHER.1, &[(Action::Publish, "~^live/")])
            .unwrap(),
    );
    cfg.users
        .push(UserConfig::with_password(ADMIN.0, ADMIN.1, &[(Action::Api, "")]).unwrap());
    cfg.push = vec![PushConfig {
        path: camera.clone(),
        url: url("from-config"),
    }];
    let gw = Gateway::start(cfg).expect("gateway starts");

    // The configured push: the camera's channel arrives as live/from-config and plays.
    assert!(
        wait_until(Duration::from_secs(30), || published(
            &gw,
            "live/from-config"
        )),
        "pushed path published: {:?}",
        gw.published()
    );
    let read = |path: &str| {
        ffprobe_frames(
            &["-rtsp_transport", "tcp", "-read_intervals", "%+2"],
            &gw.url_with_credentials(path, READER.0, READER.1),
        )
    };
    let v = read("live/from-config");
    assert!(frames_of(&v, "h264") >= 25, "{v:?}");
    assert!(
        frames_of(&v, "pcm_alaw") >= 10,
        "G.711 goes through FLV as is: {v:?}"
    );

    // Listed without the secret, with what it sent.
    let (code, body) = api(&gw, "GET", "/v1/push", None);
    assert_eq!(code, 200, "{body}");
    assert!(
        !body.contains(PUBLISHER.1) && !body.contains("from-config"),
        "{body}"
    );
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list[0]["path"], camera.as_str());
    assert_eq!(list[0]["state"], "pushing");
    assert_eq!(list[0]["origin"], "config");
    assert!(list[0]["bytes_sent"].as_u64().unwrap() > 10_000, "{body}");

    // Through the API: the pushed path pushed on (a path of any source).
    let req = serde_json::json!({ "path": "live/from-config", "url": url("from-api") }).to_string();
    let (code, body) = api(&gw, "POST", "/v1/push", Some(&req));
    assert_eq!(code, 201, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
        .as_u64()
        .unwrap();
    assert!(wait_until(Duration::from_secs(30), || published(
        &gw,
        "live/from-api"
    )));
    let v = read("live/from-api");
    assert!(frames_of(&v, "h264") >= 25, "{v:?}");
    // Refusals: the same push again 409, bad URL or path 400, unknown id 404.
    assert_eq!(api(&gw, "POST", "/v1/push", Some(&req)).0, 409);
    for bad in [
        serde_json::json!({ "path": "live/x", "url": "http://127.0.0.1/live/x" }),
        serde_json::json!({ "path": "../etc", "url": url("x") }),
        serde_json::json!({ "path": "live/x" }),
    ] {
        let (code, body) = api(&gw, "POST", "/v1/push", Some(&bad.to_string()));
        assert_eq!(code, 400, "{bad}: {body}");
    }
    assert_eq!(api(&gw, "DELETE", "/v1/push/999", None).0, 404);
    // Deleted: the push stops, and the path it made goes with its publisher.
    assert_eq!(api(&gw, "DELETE", &format!("/v1/push/{id}"), None).0, 204);
    assert!(wait_until(Duration::from_secs(15), || !gw
        .published()
        .iter()
        .any(|p| p.name == "live/from-api")));

    // A push to a server that refuses it (wrong password) retries and says why.
    let bad = serde_json::json!({
        "path": camera,
        "url": format!("rtmp://127.0.0.1:{rtmp_port}/live/refused?user=pub&pass=wrong"),
    })
    .to_string();
    let (code, body) = api(&gw, "POST", "/v1/push", Some(&bad));
    assert_eq!(code, 201, "{body}");
    assert!(wait_until(Duration::from_secs(20), || {
        let (_, body) = api(&gw, "GET", "/v1/push", None);
        body.contains("\"retrying\"")
    }));
    assert!(!gw.published().iter().any(|p| p.name == "live/refused"));
    drop(gw);
}

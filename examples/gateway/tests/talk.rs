//! Voice broadcast through the API (`/v1/talk`): a camera (`gb28181sink`, its `talk` pad
//! decoded into a counted appsink) registered at the gateway hears the audio of a path: first
//! the simulated camera's G.711 (passed as is), then ffmpeg publishing AAC over RTSP
//! (decoded and encoded to the law the camera asked for). Each end is checked: DELETE (BYE to
//! the camera), the path ending, the camera hanging up; and the refusals.

mod common;
use common::*;

use gst::prelude::*;
use gst_ipcam_gateway::auth::{Action, UserConfig};
use gst_ipcam_gateway::config::Config;
use gst_ipcam_gateway::gateway::Gateway;
use gst_ipcam_gateway::sim::wait_until;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ADMIN: (&str, &str) = ("admin", "admin-pw");
const PUBLISHER: (&str, &str) = ("mic", "mic-secret-pw");
const DEVICE: &str = "34020000001320000077";

fn api(gw: &Gateway, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
    let (code, body) = api_as(gw, ADMIN, method, path, body);
    (
        code,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// The talk `id` as listed.
fn talk(gw: &Gateway, id: u64) -> serde_json::Value {
    let (_, list) = api(gw, "GET", "/v1/talk", None);
    list.as_array()
        .and_then(|l| l.iter().find(|t| t["id"] == id).cloned())
        .unwrap_or(serde_json::Value::Null)
}

fn start_talk(gw: &Gateway, source: &str) -> u64 {
    let req = serde_json::json!({ "device_id": DEVICE, "source": source }).to_string();
    let (code, body) = api(gw, "POST", "/v1/talk", Some(&req));
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["state"], "calling", "{body}");
    body["id"].as_u64().unwrap()
}

/// A camera registering at the gateway whose `talk` pad is decoded and counted; the names of
/// the element messages it posted.
struct Camera {
    pipeline: gst::Pipeline,
    heard: Arc<AtomicUsize>,
    messages: Arc<Mutex<Vec<String>>>,
}

impl Camera {
    fn start(sip_port: u16, password: &str) -> Camera {
        let pipeline = gst::parse::launch(&format!(
            "videotestsrc is-live=true ! video/x-raw,width=160,height=120,framerate=25/1 \
             ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 ! h264parse \
             ! psmux ! gb28181sink name=dev server-ip=127.0.0.1 server-port={sip_port} \
             device-id={DEVICE} password={password} retry-interval=300 \
             dev.talk ! alawdec ! appsink name=heard sync=false"
        ))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let heard = Arc::new(AtomicUsize::new(0));
        let h = heard.clone();
        gst_ipcam_testutil::by_name(&pipeline, "heard")
            .downcast::<gst_app::AppSink>()
            .unwrap()
            .set_callbacks(
                gst_app::AppSinkCallbacks::builder()
                    .new_sample(move |s| {
                        let _ = s.pull_sample();
                        h.fetch_add(1, Ordering::SeqCst);
                        Ok(gst::FlowSuccess::Ok)
                    })
                    .build(),
            );
        let messages = Arc::new(Mutex::new(Vec::new()));
        let m = messages.clone();
        pipeline.bus().unwrap().set_sync_handler(move |_, msg| {
            if let Some(s) = msg
                .structure()
                .filter(|_| msg.type_() == gst::MessageType::Element)
            {
                m.lock().unwrap().push(s.name().to_string());
            }
            gst::BusSyncReply::Drop
        });
        pipeline.set_state(gst::State::Playing).unwrap();
        Camera {
            pipeline,
            heard,
            messages,
        }
    }

    fn heard(&self) -> usize {
        self.heard.load(Ordering::SeqCst)
    }

    fn posted(&self, name: &str) -> usize {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .filter(|n| *n == name)
            .count()
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

#[test]
fn paths_audio_is_broadcast_to_a_device() {
    let _s = serial();
    let mut cfg = Config {
        simulate: 1,
        sim_width: 320,
        sim_height: 240,
        sim_bitrate_kbps: 300,
        ..loopback_config("127.0.0.1")
    };
    let sim = cfg.sim_device_id(0);
    cfg.users
        .push(UserConfig::with_password(ADMIN.0, ADMIN.1, &[(Action::Api, "")]).unwrap());
    cfg.users.push(
        UserConfig::with_password(PUBLISHER.0, PUBLISHER.1, &[(Action::Publish, "~^talk/")])
            .unwrap(),
    );
    let gw = Gateway::start(cfg).expect("gateway starts");
    let cam = Camera::start(gw.config().sip_port, &gw.config().password);
    assert!(
        wait_until(Duration::from_secs(20), || api(
            &gw,
            "GET",
            &format!("/v1/devices/{DEVICE}"),
            None
        )
        .1["online"]
            == true),
        "the camera registered"
    );

    // Refusals: bad IDs or path 400, unknown device or path 404.
    for (req, want) in [
        (
            serde_json::json!({ "device_id": "abc", "source": sim }),
            400,
        ),
        (
            serde_json::json!({ "device_id": DEVICE, "source": "../etc" }),
            400,
        ),
        (serde_json::json!({ "device_id": DEVICE }), 400),
        (
            serde_json::json!({ "device_id": DEVICE, "source": sim, "x": 1 }),
            400,
        ),
        (
            serde_json::json!({ "device_id": "34020000001320000078", "source": sim }),
            404,
        ),
        (
            serde_json::json!({ "device_id": DEVICE, "source": "talk/nobody" }),
            404,
        ),
    ] {
        let (code, body) = api(&gw, "POST", "/v1/talk", Some(&req.to_string()));
        assert_eq!(code, want, "{req}: {body}");
    }
    assert_eq!(api(&gw, "DELETE", "/v1/talk/999", None).0, 404);

    // The simulated camera's A-law, as is.
    let id = start_talk(&gw, &sim);
    assert!(
        wait_until(Duration::from_secs(20), || cam.heard() >= 50),
        "the camera hears the path: {} buffers; {}",
        cam.heard(),
        talk(&gw, id)
    );
    assert_eq!(cam.posted("gb28181-talk-started"), 1);
    let t = talk(&gw, id);
    assert_eq!(t["state"], "talking", "{t}");
    assert_eq!(t["codec"], "PCMA", "{t}");
    assert!(t["packets"].as_u64().unwrap() >= 25, "{t}");
    // One talk per device at a time.
    let again = serde_json::json!({ "device_id": DEVICE, "source": sim }).to_string();
    assert_eq!(api(&gw, "POST", "/v1/talk", Some(&again)).0, 409);
    // DELETE: BYE to the camera, gone from the list.
    assert_eq!(api(&gw, "DELETE", &format!("/v1/talk/{id}"), None).0, 204);
    assert!(
        wait_until(Duration::from_secs(10), || cam
            .posted("gb28181-talk-stopped")
            == 1),
        "the camera was told"
    );
    assert_eq!(talk(&gw, id), serde_json::Value::Null);

    // ffmpeg publishing AAC at 48 kHz: decoded and sent as A-law at 8 kHz.
    let url = gw.url_with_credentials("talk/mic", PUBLISHER.0, PUBLISHER.1);
    let mut ffmpeg = gst_ipcam_testutil::programs::ChildGuard(
        Command::new("ffmpeg")
            .args(["-v", "error", "-re", "-f", "lavfi", "-i"])
            .arg("sine=frequency=440:sample_rate=48000")
            .args(["-c:a", "aac", "-f", "rtsp", "-rtsp_transport", "tcp"])
            .arg(&url)
            .stdin(Stdio::null())
            .spawn()
            .expect("ffmpeg runs"),
    );
    assert!(
        wait_until(Duration::from_secs(20), || gw
            .published()
            .iter()
            .any(|p| p.name == "talk/mic" && p.bytes_received > 0)),
        "ffmpeg published"
    );
    let before = cam.heard();
    let id = start_talk(&gw, "talk/mic");
    assert!(
        wait_until(Duration::from_secs(20), || cam.heard() >= before + 50),
        "the camera hears the microphone: {} buffers; {}",
        cam.heard() - before,
        talk(&gw, id)
    );
    let t = talk(&gw, id);
    assert_eq!(t["state"], "talking", "{t}");
    let (packets, bytes) = (t["packets"].as_u64().unwrap(), t["bytes"].as_u64().unwrap());
    assert!(packets >= 25, "{t}");
    // 20 ms packets of 160 samples, though AAC frames resampled to 8 kHz are 170.67.
    assert_eq!(bytes, packets * 160, "{t}");
    // The path ends: the talk ends with it (BYE to the camera).
    let _ = ffmpeg.0.kill();
    let _ = ffmpeg.0.wait();
    assert!(
        wait_until(Duration::from_secs(20), || talk(&gw, id)["state"]
            == "ended"),
        "{}",
        talk(&gw, id)
    );
    assert!(
        wait_until(Duration::from_secs(10), || cam
            .posted("gb28181-talk-stopped")
            == 2),
        "the camera was told"
    );

    // The camera hangs up (its pipeline stops: BYE): the talk ends so.
    let id = start_talk(&gw, &sim);
    assert!(wait_until(
        Duration::from_secs(20),
        || talk(&gw, id)["state"] == "talking"
    ));
    drop(cam);
    assert!(
        wait_until(Duration::from_secs(10), || talk(&gw, id)["state"]
            == "ended"),
        "{}",
        talk(&gw, id)
    );
    assert_eq!(talk(&gw, id)["reason"], "the device hung up");
    drop(gw);
}

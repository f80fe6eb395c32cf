//! The gateway subscribes to a camera's events when it registers (GB28181 SUBSCRIBE: Catalog,
//! Alarm, MobilePosition) and shows them in `GET /v1/devices/{id}/events`: the simulated
//! camera (gb28181sink) answers, reports its position every second and sends an alarm.

mod common;
use common::*;

use gst::prelude::*;
use gst_ipcam_gateway::auth::{Action, UserConfig, basic_value};
use gst_ipcam_gateway::config::Config;
use gst_ipcam_gateway::gateway::Gateway;
use gst_ipcam_gateway::http;
use gst_ipcam_gateway::sim::wait_until;
use serde_json::Value;
use std::time::Duration;

const ADMIN: (&str, &str) = ("admin", "admin-pw");

fn events(gw: &Gateway, device: &str) -> Value {
    let auth = basic_value(ADMIN.0, ADMIN.1);
    let r = http::request(
        None,
        gw.metrics_addr().unwrap(),
        &format!("/v1/devices/{device}/events"),
        &[("Authorization", &auth)],
    )
    .expect("the API answers");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    serde_json::from_slice(&r.body).unwrap()
}

#[test]
fn camera_events_reach_the_api() {
    let _serial = gst_ipcam_testutil::programs::serial();
    gst_ipcam_gateway::gateway::init().unwrap();
    let mut users = loopback_config("127.0.0.1").users;
    users.push(UserConfig::with_password(ADMIN.0, ADMIN.1, &[(Action::Api, "")]).unwrap());
    let cfg = Config {
        users,
        simulate: 1,
        sim_width: 160,
        sim_height: 120,
        sim_bitrate_kbps: 200,
        subscribe_mobile_position: true,
        mobile_position_interval_s: 1,
        ..loopback_config("127.0.0.1")
    };
    let mut gw = Gateway::start(cfg).expect("gateway starts");
    assert!(
        wait_until(Duration::from_secs(10), || !gw.cameras().is_empty()
            && !gw.channels().is_empty()),
        "the simulated camera is mounted"
    );
    let device = gw.cameras()[0].device_id.clone();
    let sink = gw.cameras()[0]
        .pipeline()
        .iterate_recurse()
        .into_iter()
        .flatten()
        .find(|e| e.factory().is_some_and(|f| f.name() == "gb28181sink"))
        .expect("the camera's gb28181sink");
    sink.set_property("position", "121.47,31.23");
    // Three subscriptions, accepted; positions come in.
    let mut ev = Value::Null;
    assert!(
        wait_until(Duration::from_secs(10), || {
            ev = events(&gw, &device);
            let subs = ev["subscriptions"].as_array().cloned().unwrap_or_default();
            subs.len() == 3
                && subs.iter().all(|s| s["active"] == true)
                && ev["position"]["longitude"] == 121.47
        }),
        "subscriptions and a position: {ev}"
    );
    let names: Vec<&str> = ev["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["event"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Alarm", "Catalog", "MobilePosition"]);
    // The initial Catalog NOTIFY lists the camera's channel.
    assert_eq!(ev["catalog_changes"][0]["event"], "ADD", "{ev}");
    // An alarm from the camera shows up, with what it said.
    assert!(sink.emit_by_name::<bool>("send-alarm", &[&2u32, &5u32, &"motion at the gate"]));
    assert!(
        wait_until(Duration::from_secs(5), || {
            ev = events(&gw, &device);
            ev["alarms"]
                .as_array()
                .is_some_and(|a| a.iter().any(|a| a["description"] == "motion at the gate"))
        }),
        "the alarm: {ev}"
    );
    let alarm = &ev["alarms"].as_array().unwrap()[0];
    assert_eq!(
        (alarm["priority"].as_u64(), alarm["method"].as_u64()),
        (Some(2), Some(5))
    );
    // A device nobody knows: 404; a bad ID: 400.
    let auth = basic_value(ADMIN.0, ADMIN.1);
    let get = |path: &str| {
        http::request(
            None,
            gw.metrics_addr().unwrap(),
            path,
            &[("Authorization", &auth)],
        )
        .unwrap()
        .status
    };
    assert_eq!(get("/v1/devices/34020000001320009999/events"), 404);
    assert_eq!(get("/v1/devices/..%2F..%2Fetc/events"), 400);
    gw.stop();
}

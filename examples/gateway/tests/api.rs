//! The control API (`/v1`) against a running gateway over loopback, with real HTTP requests
//! and a simulated camera (our gb28181sink) as the oracle of what reached the device: the
//! OpenAPI document against the routes, each permission outcome, devices and channels,
//! PTZ/presets/key frames, reader sessions, and malformed or hostile requests. Every wait is
//! bounded.

mod common;
use common::*;

use gst::prelude::*;
use gst_ipcam_gateway::auth::{Action, UserConfig, basic_value};
use gst_ipcam_gateway::config::Config;
use gst_ipcam_gateway::gateway::Gateway;
use gst_ipcam_gateway::sim::wait_until;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const CAM: &str = "34020000001320000001";
const ADMIN: (&str, &str) = ("admin", "admin-pw");
const VIEWER: (&str, &str) = ("viewer", "viewer-pw");
const OPS: (&str, &str) = ("ops", "ops-pw");

fn config(simulate: u32) -> Config {
    Config {
        users: vec![
            UserConfig::with_password(ADMIN.0, ADMIN.1, &[(Action::Api, ""), (Action::Read, "")])
                .unwrap(),
            UserConfig::with_password(VIEWER.0, VIEWER.1, &[(Action::Read, "")]).unwrap(),
            UserConfig::with_password(OPS.0, OPS.1, &[(Action::Metrics, "")]).unwrap(),
        ],
        sip_address: "127.0.0.1".into(),
        sip_port: free_port(),
        listen_address: "127.0.0.1".into(),
        rtsp_port: free_port(),
        metrics_port: 0,
        hls_port: 0,
        simulate,
        sim_width: 320,
        sim_height: 240,
        sim_bitrate_kbps: 300,
        summary_interval_s: 0,
        ..Config::default()
    }
}

fn start(simulate: u32) -> Gateway {
    let gw = Gateway::start(config(simulate)).expect("gateway starts");
    if simulate > 0 {
        assert!(
            wait_until(Duration::from_secs(10), || gw
                .channels()
                .contains(&CAM.into())),
            "camera registered and mounted"
        );
    }
    gw
}

#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    fn is_json_error(&self) -> bool {
        self.head
            .to_ascii_lowercase()
            .contains("content-type: application/json")
            && self.json()["message"].is_string()
    }
}

/// One HTTP/1.1 request with `Connection: close`.
fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    user: Option<(&str, &str)>,
    body: Option<&str>,
) -> Reply {
    call_with(addr, method, path, user, "", body)
}

/// [`call`] with more header lines (`Name: value\r\n` each).
fn call_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    user: Option<(&str, &str)>,
    headers: &str,
    body: Option<&str>,
) -> Reply {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some((u, p)) = user {
        req.push_str(&format!("Authorization: {}\r\n", basic_value(u, p)));
    }
    req.push_str(headers);
    let body = body.unwrap_or("");
    if !body.is_empty() || method != "GET" {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut body = buf[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Reply { status, head, body }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..i]).trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + n]);
        b = &b[i + 4 + n..];
    }
    out
}

fn admin(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Reply {
    call(addr, method, path, Some(ADMIN), body)
}

fn concrete_path(path: &str) -> String {
    path.replace("{id}", CAM)
        .replace("{channel}", CAM)
        .replace("{n}", "1")
        .replace("{file}", "20200101-000000.mp4")
}

/// The document's operations, each with its parameters filled in.
fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = concrete_path(path);
        for method in item.as_object().unwrap().keys() {
            ops.push((method.to_ascii_uppercase(), concrete.clone()));
        }
    }
    ops
}

/// The document served at /v1/openapi.json is the one generated from the handlers; every
/// operation in it is routed (401 without credentials, 403 without `api`: never 404/405),
/// methods it does not list on its paths are 405, paths it does not list are 404, and every
/// refusal is a JSON error.
#[test]
fn openapi_document_matches_routes_and_permissions() {
    let _g = serial();
    let gw = start(0);
    let addr = gw.metrics_addr().unwrap();
    let r = admin(addr, "GET", "/v1/openapi.json", None);
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert_eq!(
        doc,
        serde_json::to_value(gst_ipcam_gateway::api::document()).unwrap(),
        "the served document is the generated one"
    );
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let ops = operations(&doc);
    assert!(ops.len() >= 14, "{ops:?}");
    for (method, path) in &ops {
        let anon = call(addr, method, path, None, Some("{}"));
        assert_eq!(anon.status, 401, "{method} {path} without credentials");
        assert!(anon.is_json_error(), "{method} {path}: {anon:?}");
        assert!(anon.head.contains("WWW-Authenticate") || anon.head.contains("www-authenticate"));
        let wrong = call(addr, method, path, Some((ADMIN.0, "nope")), Some("{}"));
        assert_eq!(wrong.status, 401, "{method} {path} with a wrong password");
        let viewer = call(addr, method, path, Some(VIEWER), Some("{}"));
        assert_eq!(viewer.status, 403, "{method} {path} as a user without api");
        assert!(viewer.is_json_error());
    }
    // Vice versa: what the document does not list is not served.
    for path in doc["paths"].as_object().unwrap().keys() {
        let listed: Vec<String> = doc["paths"][path]
            .as_object()
            .unwrap()
            .keys()
            .map(|m| m.to_ascii_uppercase())
            .collect();
        let concrete = concrete_path(path);
        for m in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            if !listed.contains(&m.to_string()) {
                let r = admin(addr, m, &concrete, Some("{}"));
                assert_eq!(r.status, 405, "{m} {concrete} is not in the document");
                assert!(r.is_json_error(), "{r:?}");
            }
        }
    }
    for path in [
        "/v1",
        "/v1/",
        "/v1/nope",
        "/v1/devices/x/y/z",
        "/v1/openapi.yaml",
    ] {
        let r = admin(addr, "GET", path, None);
        assert_eq!(r.status, 404, "{path}");
        assert!(r.is_json_error());
    }
    // The metrics next to it are unchanged (admin has no metrics right: 403 as before).
    assert_eq!(admin(addr, "GET", "/metrics", None).status, 403);
}

/// A bus watcher on the simulated camera: the element messages its gb28181sink posts.
fn camera_messages(gw: &Gateway) -> gst::Bus {
    gw.cameras()[0].pipeline().bus().unwrap()
}

/// Waits (bounded) for an element message named `name` on the camera's bus.
fn wait_message(bus: &gst::Bus, name: &str, timeout: Duration) -> Option<gst::Structure> {
    let end = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < end {
        let left = end.saturating_duration_since(std::time::Instant::now());
        let m = bus.timed_pop_filtered(
            gst::ClockTime::from_nseconds(left.as_nanos() as u64),
            &[gst::MessageType::Element],
        )?;
        if let Some(s) = m.structure()
            && s.name() == name
        {
            return Some(s.to_owned());
        }
    }
    None
}

/// Devices and channels: list (online, address, transport, manufacturer/model from
/// DeviceInfo), one, DeviceInfo/DeviceStatus/Catalog queries answered by the camera, bad
/// and unknown IDs, and delete (gone from the list, its RTSP mount gone).
#[test]
fn devices_channels_queries_and_delete() {
    let _g = serial();
    let gw = start(1);
    let addr = gw.metrics_addr().unwrap();
    // DeviceInfo is asked for at registration: manufacturer and model appear in the list.
    let mut list = Value::Null;
    assert!(
        wait_until(Duration::from_secs(10), || {
            list = admin(addr, "GET", "/v1/devices", None).json();
            list[0]["model"].is_string()
        }),
        "{list}"
    );
    let d = &list[0];
    assert_eq!(d["id"], CAM);
    assert_eq!(d["online"], true);
    assert_eq!(d["transport"], "udp");
    assert!(d["address"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(d["last_keepalive_ms"].as_u64().unwrap() > 1_600_000_000_000);
    assert!(d["manufacturer"].is_string());
    let one = admin(addr, "GET", &format!("/v1/devices/{CAM}"), None);
    assert_eq!(one.status, 200);
    let one = one.json();
    assert_eq!(one["channel_list"][0]["id"], CAM);
    assert_eq!(
        one["channel_list"][0]["rtsp_url"],
        format!("rtsp://127.0.0.1:{}/{CAM}", gw.rtsp_port())
    );
    let info = admin(addr, "POST", &format!("/v1/devices/{CAM}/info"), None);
    assert_eq!(info.status, 200, "{info:?}");
    assert_eq!(info.json()["device_id"], CAM);
    assert_eq!(
        info.json()["device_name"],
        format!("Simulated camera {CAM}")
    );
    let status = admin(addr, "POST", &format!("/v1/devices/{CAM}/status"), None);
    assert_eq!(status.status, 200, "{status:?}");
    assert_eq!(status.json()["device_id"], CAM);
    let cat = admin(addr, "POST", &format!("/v1/devices/{CAM}/catalog"), None);
    assert_eq!(cat.status, 200, "{cat:?}");
    assert_eq!(cat.json()[0]["id"], CAM);
    assert!(cat.json()[0]["name"].is_string());
    let ch = admin(addr, "GET", "/v1/channels", None).json();
    assert_eq!(ch[0]["id"], CAM);
    assert_eq!(ch[0]["mounted"], true);
    // Bad IDs are refused by the ID policy (400), unknown ones are 404.
    for bad in [
        "abc",
        "3402000000132000000%0D%0A1",
        "..%2F..%2Fetc",
        "1234567890123456789012",
    ] {
        let r = admin(addr, "GET", &format!("/v1/devices/{bad}"), None);
        assert_eq!(r.status, 400, "{bad}");
        assert!(r.is_json_error());
        let r = admin(addr, "POST", &format!("/v1/channels/{bad}/keyframe"), None);
        assert_eq!(r.status, 400, "{bad}");
    }
    let other = "34020000001320009999";
    assert_eq!(
        admin(addr, "GET", &format!("/v1/devices/{other}"), None).status,
        404
    );
    assert_eq!(
        admin(addr, "DELETE", &format!("/v1/devices/{other}"), None).status,
        404
    );
    assert_eq!(
        admin(addr, "GET", &format!("/v1/channels/{other}"), None).status,
        404
    );
    // Delete: gone from the lists, and its RTSP mount is gone.
    assert_eq!(rtsp_describe(&gw), 200);
    let del = admin(addr, "DELETE", &format!("/v1/devices/{CAM}"), None);
    assert_eq!(del.status, 204, "{del:?}");
    let after = admin(addr, "GET", "/v1/devices", None).json();
    assert!(
        after.as_array().unwrap().iter().all(|d| d["id"] != CAM),
        "{after}"
    );
    assert_eq!(
        admin(addr, "GET", &format!("/v1/channels/{CAM}"), None).status,
        404
    );
    assert!(!gw.channels().contains(&CAM.to_string()));
    assert_eq!(rtsp_describe(&gw), 404);
}

/// DESCRIBE of the camera's channel as `admin`: the RTSP status.
fn rtsp_describe(gw: &Gateway) -> u16 {
    rtsp_describe_as(gw, ADMIN)
}

/// The status of an RTSP DESCRIBE of the camera's channel with Basic credentials.
fn rtsp_describe_as(gw: &Gateway, user: (&str, &str)) -> u16 {
    describe_at(gw.rtsp_port(), user)
}

/// The status of an RTSP DESCRIBE of the camera's channel on `port`.
fn describe_at(port: u16, user: (&str, &str)) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let url = format!("rtsp://127.0.0.1:{port}/{CAM}");
    let req = format!(
        "DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\nAuthorization: {}\r\n\r\n",
        basic_value(user.0, user.1)
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n])
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// PTZ, presets and key frames reach the camera as GB/T 28181 DeviceControl MESSAGEs (its
/// gb28181sink posts what it received); malformed, out-of-range, oversized and unauthorized
/// requests are refused with JSON errors and nothing reaches the camera.
#[test]
fn ptz_presets_and_key_frames_reach_the_camera() {
    let _g = serial();
    let gw = start(1);
    let addr = gw.metrics_addr().unwrap();
    let bus = camera_messages(&gw);
    let ptz = format!("/v1/channels/{CAM}/ptz");
    let r = admin(
        addr,
        "POST",
        &ptz,
        Some(r#"{"pan":"left","tilt":"up","speed":64}"#),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let m = wait_message(&bus, "gb28181-ptz", Duration::from_secs(5)).expect("PTZ received");
    assert_eq!(m.get::<String>("command").unwrap(), "A50F010A4040003F");
    let r = admin(addr, "POST", &ptz, Some("{}"));
    assert_eq!(r.status, 200);
    let m = wait_message(&bus, "gb28181-ptz", Duration::from_secs(5)).expect("stop received");
    assert_eq!(m.get::<String>("command").unwrap(), "A50F0100000000B5");
    let r = admin(
        addr,
        "POST",
        &format!("/v1/channels/{CAM}/presets/3/call"),
        None,
    );
    assert_eq!(r.status, 200, "{r:?}");
    let m = wait_message(&bus, "gb28181-ptz", Duration::from_secs(5)).expect("preset call");
    assert_eq!(&m.get::<String>("command").unwrap()[6..12], "820003");
    let r = admin(addr, "PUT", &format!("/v1/channels/{CAM}/presets/7"), None);
    assert_eq!(r.status, 200);
    let m = wait_message(&bus, "gb28181-ptz", Duration::from_secs(5)).expect("preset set");
    assert_eq!(&m.get::<String>("command").unwrap()[6..12], "810007");
    let r = admin(addr, "POST", &format!("/v1/channels/{CAM}/keyframe"), None);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(wait_message(&bus, "gb28181-key-frame-requested", Duration::from_secs(5)).is_some());

    // Refused: nothing reaches the camera.
    // Beyond the API's 16 KiB (under the server's 64 KiB): a JSON 413.
    let big = format!(r#"{{"pan":"left","x":"{}"}}"#, "a".repeat(40 << 10));
    for (method, path, body, status) in [
        ("POST", ptz.as_str(), r#"{"pan":"sideways"}"#, 400),
        ("POST", ptz.as_str(), r#"{"pan":"left","speed":999}"#, 400),
        (
            "POST",
            ptz.as_str(),
            r#"{"zoom":"in","zoom_speed":16}"#,
            400,
        ),
        ("POST", ptz.as_str(), r#"{"pan":"left","rm":"-rf"}"#, 400),
        ("POST", ptz.as_str(), "not json", 400),
        ("POST", ptz.as_str(), big.as_str(), 413),
    ] {
        let r = admin(addr, method, path, Some(body));
        assert_eq!(r.status, status, "{}", &body[..body.len().min(40)]);
        assert!(r.is_json_error(), "{r:?}");
    }
    let huge = format!(r#"{{"pan":"left","x":"{}"}}"#, "a".repeat(100 << 10));
    assert_eq!(admin(addr, "POST", &ptz, Some(&huge)).status, 413);
    for n in ["0", "256", "-1", "x"] {
        let r = admin(
            addr,
            "POST",
            &format!("/v1/channels/{CAM}/presets/{n}/call"),
            None,
        );
        assert_eq!(r.status, 400, "preset {n}");
    }
    let r = call(addr, "POST", &ptz, Some(VIEWER), Some(r#"{"pan":"left"}"#));
    assert_eq!(r.status, 403);
    let r = call(addr, "POST", &ptz, None, Some(r#"{"pan":"left"}"#));
    assert_eq!(r.status, 401);
    assert!(
        wait_message(&bus, "gb28181-ptz", Duration::from_secs(2)).is_none(),
        "a refused request reached the camera"
    );
    // Still serving.
    let r = admin(addr, "POST", &ptz, Some(r#"{"zoom":"out"}"#));
    assert_eq!(r.status, 200);
    assert!(wait_message(&bus, "gb28181-ptz", Duration::from_secs(5)).is_some());
}

/// A reader shows in the session list (path, transport, remote, bytes) and is kicked: it
/// leaves the list and its client sees the end of the stream.
#[test]
fn sessions_list_and_kick() {
    let _g = serial();
    gst::init().unwrap();
    let gw = start(1);
    let addr = gw.metrics_addr().unwrap();
    let url = gw.url_with_credentials(CAM, ADMIN.0, ADMIN.1);
    let client = gst::parse::launch(&format!(
        "rtspsrc location={url} protocols=tcp latency=0 ! fakesink sync=false"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    client.set_state(gst::State::Playing).unwrap();
    let mut list = Value::Null;
    assert!(
        wait_until(Duration::from_secs(20), || {
            list = admin(addr, "GET", "/v1/sessions", None).json();
            list[0]["bytes_sent"].as_u64().unwrap_or(0) > 0
        }),
        "{list}"
    );
    let s = &list[0];
    assert_eq!(s["path"], CAM);
    assert_eq!(s["protocol"], "rtsp");
    assert_eq!(s["transport"], "tcp");
    assert!(s["remote"].as_str().unwrap().starts_with("127.0.0.1"));
    assert_eq!(s["user"], ADMIN.0, "the reader's user");
    let id = s["id"].as_u64().unwrap();
    let filtered = admin(addr, "GET", &format!("/v1/sessions?path={CAM}"), None).json();
    assert_eq!(filtered.as_array().unwrap().len(), 1);
    let none = admin(addr, "GET", "/v1/sessions?path=34020000001320009999", None).json();
    assert!(none.as_array().unwrap().is_empty());
    assert_eq!(
        admin(addr, "GET", "/v1/sessions?path=a%0Db", None).status,
        400
    );
    assert_eq!(admin(addr, "GET", "/v1/sessions?bogus=1", None).status, 400);
    assert_eq!(admin(addr, "DELETE", "/v1/sessions/x", None).status, 400);
    assert_eq!(
        admin(addr, "DELETE", &format!("/v1/sessions/{}", id + 1000), None).status,
        404
    );
    assert_eq!(
        call(
            addr,
            "DELETE",
            &format!("/v1/sessions/{id}"),
            Some(VIEWER),
            None
        )
        .status,
        403
    );
    let r = admin(addr, "DELETE", &format!("/v1/sessions/{id}"), None);
    assert_eq!(r.status, 204, "{r:?}");
    assert!(
        wait_until(Duration::from_secs(5), || {
            admin(addr, "GET", "/v1/sessions", None)
                .json()
                .as_array()
                .unwrap()
                .is_empty()
        }),
        "the kicked session left the list"
    );
    let bus = client.bus().unwrap();
    let end = bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(10),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    assert!(end.is_some(), "the kicked client saw its stream end");
    client.set_state(gst::State::Null).unwrap();
}

/// The gateway's recordings: listed per channel and time range, fetched byte for byte;
/// path escapes (encoded `..`, a symlink out of the record dir, other extensions) and
/// unbounded or inverted ranges are refused, and the API keeps serving.
#[test]
fn recordings_list_fetch_and_escapes() {
    let _g = serial();
    let rec = scratch("api-rec");
    let mut cfg = config(1);
    cfg.record_dir = Some(rec.clone());
    cfg.record_segment_s = 1;
    let gw = Gateway::start(cfg).expect("gateway starts");
    let addr = gw.metrics_addr().unwrap();
    let list_path = format!("/v1/recordings?channel={CAM}");
    let mut list = Value::Null;
    assert!(
        wait_until(Duration::from_secs(30), || {
            list = admin(addr, "GET", &list_path, None).json();
            list.as_array().is_some_and(|a| a.len() >= 2)
        }),
        "two segments recorded: {list}"
    );
    // The first segment is complete (the recorder moved on to the next).
    let seg = &list[0];
    assert_eq!(seg["channel"], CAM);
    let file = seg["file"].as_str().unwrap();
    assert!(seg["start"].as_u64().unwrap() <= seg["end"].as_u64().unwrap());
    let r = admin(addr, "GET", seg["url"].as_str().unwrap(), None);
    assert_eq!(r.status, 200);
    assert!(
        r.head
            .to_ascii_lowercase()
            .contains("content-type: video/mp4")
    );
    let on_disk = std::fs::read(rec.join(CAM).join(file)).unwrap();
    assert!(r.body.len() > 1000);
    assert_eq!(r.body[..], on_disk[..r.body.len()], "the file's bytes");
    // Byte ranges: a part (206 with Content-Range), beyond the end (416).
    let url = seg["url"].as_str().unwrap();
    let part = call_with(
        addr,
        "GET",
        url,
        Some(ADMIN),
        "Range: bytes=100-199\r\n",
        None,
    );
    assert_eq!(part.status, 206, "{part:?}");
    assert!(
        part.head
            .to_ascii_lowercase()
            .contains("content-range: bytes 100-199/"),
        "{}",
        part.head
    );
    assert_eq!(part.body[..], on_disk[100..200]);
    let past = call_with(
        addr,
        "GET",
        url,
        Some(ADMIN),
        "Range: bytes=999999999-\r\n",
        None,
    );
    assert_eq!(past.status, 416, "{past:?}");
    assert!(past.is_json_error());
    // A time range before any recording: empty.
    let old = admin(addr, "GET", &format!("{list_path}&from=0&to=1000"), None).json();
    assert!(old.as_array().unwrap().is_empty());

    // Escapes: a symlink inside the channel dir pointing out, encoded `..`, other names.
    let secret = scratch("api-secret").join("20200101-000000.mp4");
    std::fs::write(&secret, b"secret").unwrap();
    std::os::unix::fs::symlink(&secret, rec.join(CAM).join("20200101-000000.mp4")).unwrap();
    for path in [
        format!("/v1/recordings/{CAM}/20200101-000000.mp4"),
        format!("/v1/recordings/{CAM}/..%2F..%2F20200101-000000.mp4"),
        format!("/v1/recordings/{CAM}/%2E%2E"),
        format!("/v1/recordings/{CAM}/index.m3u8"),
        format!("/v1/recordings/{CAM}/20200101-000000.mp4%00.txt"),
    ] {
        let r = admin(addr, "GET", &path, None);
        assert_eq!(r.status, 404, "{path}");
        assert!(r.is_json_error());
        assert!(!String::from_utf8_lossy(&r.body).contains("secret"));
    }
    let listed = admin(addr, "GET", &list_path, None).json();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["file"] != "20200101-000000.mp4"),
        "symlinks are not listed"
    );
    for bad in [
        "/v1/recordings?channel=..%2F..".to_string(),
        "/v1/recordings".to_string(),
        format!("/v1/recordings?channel={CAM}&from=10&to=5"),
        format!("/v1/recordings?channel={CAM}&from=0&to=99999999999"),
        format!("/v1/recordings?channel={CAM}&from=-1"),
        format!("/v1/recordings?channel={CAM}&limit=5"),
    ] {
        let r = admin(addr, "GET", &bad, None);
        assert_eq!(r.status, 400, "{bad}");
        assert!(r.is_json_error());
    }
    let r = admin(addr, "GET", "/v1/recordings/..%2F..%2Fetc/passwd.mp4", None);
    assert_eq!(r.status, 400);
    assert_eq!(admin(addr, "GET", &list_path, None).status, 200);
    drop(gw);
    std::fs::remove_dir_all(&rec).ok();
}

/// The configuration as the API shows it: settings and users, never a password, hash,
/// Digest HA1 or device password.
#[test]
fn config_read_without_secrets() {
    let _g = serial();
    let mut cfg = config(0);
    cfg.password = "dev-pw-default".into();
    cfg.device_passwords = format!("{CAM}=dev-pw-own");
    let secrets: Vec<String> = cfg
        .users
        .iter()
        .flat_map(|u| [u.pass.clone(), u.digest_ha1.clone()])
        .chain(["dev-pw".into(), ADMIN.1.into(), VIEWER.1.into()])
        .collect();
    let gw = Gateway::start(cfg).expect("gateway starts");
    let addr = gw.metrics_addr().unwrap();
    let r = admin(addr, "GET", "/v1/config", None);
    assert_eq!(r.status, 200);
    let text = String::from_utf8_lossy(&r.body).to_string();
    for s in &secrets {
        assert!(!text.contains(s.as_str()), "a secret in {text}");
    }
    let c = r.json();
    assert_eq!(c["users"][0]["user"], ADMIN.0);
    assert_eq!(c["users"][0]["has_password"], true);
    assert_eq!(c["device_passwords"][0], CAM);
    assert_eq!(c["default_device_password"], true);
    assert_eq!(
        call(addr, "GET", "/v1/config", Some(VIEWER), None).status,
        403
    );
    // Started from a Config in code, not a file: nothing to reload.
    let r = admin(addr, "POST", "/v1/config/reload", None);
    assert_eq!(r.status, 409, "{r:?}");
    assert!(r.is_json_error());
    assert_eq!(admin(addr, "GET", "/v1/nope", None).status, 404);
    // API answers are counted by status (the /metrics request itself is not an API one).
    let metrics = call(addr, "GET", "/metrics", Some(OPS), None);
    assert_eq!(metrics.status, 200);
    let text = String::from_utf8_lossy(&metrics.body).to_string();
    let count = |status: u16| -> u64 {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "gateway_api_requests_total{{status=\"{status}\"}} "
                ))
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(
        (count(200), count(403), count(404), count(409)),
        (1, 1, 1, 1),
        "{text}"
    );
}

/// A `[[users]]` entry of a config file.
fn toml_user(user: (&str, &str), permissions: &str) -> String {
    format!(
        "[[users]]\nuser = \"{}\"\npass = \"{}\"\npermissions = [{permissions}]\n",
        user.0,
        gst_ipcam_gateway::auth::hash_sha256(user.1).unwrap()
    )
}

/// A simulated camera `id` registering with `password` to the gateway.
fn sim_camera(gw: &Gateway, id: &str, password: &str) -> gst_ipcam_gateway::sim::SimCamera {
    let clip = gst_ipcam_gateway::sim::Clip::encode(&Config::default().sim_codec, 160, 120, 100, 1)
        .unwrap();
    gst_ipcam_gateway::sim::SimCamera::start(
        &clip,
        &gst_ipcam_gateway::sim::SimSettings {
            server_ip: "127.0.0.1".into(),
            server_port: gw.endpoint().local_addr().port(),
            server_id: Config::default().server_id,
            device_id: id.into(),
            password: password.into(),
            audio: false,
        },
    )
    .unwrap()
}

/// `POST /v1/config/reload` re-reads the file the gateway started from: a user added can
/// read RTSP and HLS at once, a removed one gets 401 at once, a device whose password
/// changed registers only with the new one, a changed port is reported as needing a
/// restart, and a broken file changes nothing (400, the old users stay).
#[test]
fn config_reload_swaps_users_and_device_passwords() {
    let _g = serial();
    const NEWBIE: (&str, &str) = ("newbie", "newbie-pw");
    let dir = scratch("api-reload");
    let file = dir.join("gateway.toml");
    let (sip, rtsp, metrics, hls) = (free_port(), free_port(), free_port(), free_port());
    let head = |rtsp: u16, password: &str| {
        format!(
            "sip_address = \"127.0.0.1\"\nsip_port = {sip}\nlisten_address = \"127.0.0.1\"\n\
             rtsp_port = {rtsp}\nmetrics_port = {metrics}\nhls = true\nhls_port = {hls}\n\
             simulate = 1\nsim_width = 320\nsim_height = 240\nsim_bitrate_kbps = 300\n\
             summary_interval_s = 0\npassword = \"{password}\"\n"
        )
    };
    let admin_entry = toml_user(ADMIN, r#"{action = "api"}, {action = "read"}"#);
    let read = r#"{action = "read"}"#;
    std::fs::write(
        &file,
        head(rtsp, "12345678") + &admin_entry + &toml_user(VIEWER, read),
    )
    .unwrap();
    let load = {
        let file = file.clone();
        move || Config::load(Some(&file), &Default::default()).map_err(|e| e.to_string())
    };
    let gw = Gateway::start(load().unwrap()).expect("gateway starts");
    gw.set_config_loader(Box::new(load));
    assert!(
        wait_until(Duration::from_secs(10), || gw
            .channels()
            .contains(&CAM.into())),
        "camera registered and mounted"
    );
    let addr = gw.metrics_addr().unwrap();
    let hls_addr = gw.hls_addr().unwrap();
    let playlist = format!("/{CAM}/index.m3u8");
    assert!(
        wait_until(Duration::from_secs(20), || call(
            hls_addr,
            "GET",
            &playlist,
            Some(VIEWER),
            None
        )
        .status
            == 200),
        "HLS playlist served"
    );
    assert_eq!(rtsp_describe_as(&gw, NEWBIE), 401);
    assert_eq!(
        call(hls_addr, "GET", &playlist, Some(NEWBIE), None).status,
        401
    );
    assert_eq!(rtsp_describe_as(&gw, VIEWER), 200);

    // newbie in, viewer out, another device password, another RTSP port.
    std::fs::write(
        &file,
        head(free_port(), "new-dev-pw") + &admin_entry + &toml_user(NEWBIE, read),
    )
    .unwrap();
    let r = admin(addr, "POST", "/v1/config/reload", None);
    assert_eq!(r.status, 200, "{r:?}");
    let report = r.json();
    assert_eq!(report["users_added"], serde_json::json!(["newbie"]));
    assert_eq!(report["users_removed"], serde_json::json!(["viewer"]));
    assert_eq!(report["device_passwords_changed"], true);
    assert_eq!(report["restart_needed"], serde_json::json!(["rtsp_port"]));
    // At once, no wait.
    assert_eq!(rtsp_describe_as(&gw, NEWBIE), 200);
    assert_eq!(
        call(hls_addr, "GET", &playlist, Some(NEWBIE), None).status,
        200
    );
    assert_eq!(rtsp_describe_as(&gw, VIEWER), 401);
    assert_eq!(
        call(hls_addr, "GET", &playlist, Some(VIEWER), None).status,
        401
    );
    let users = admin(addr, "GET", "/v1/config", None).json()["users"].clone();
    assert_eq!(users[1]["user"], NEWBIE.0, "{users}");

    // Devices registering now need the new password.
    let (old_id, new_id) = ("34020000001320000102", "34020000001320000103");
    let old_pw = sim_camera(&gw, old_id, "12345678");
    let new_pw = sim_camera(&gw, new_id, "new-dev-pw");
    assert!(
        wait_until(Duration::from_secs(10), || gw
            .endpoint()
            .device(new_id)
            .is_some()),
        "a camera with the new password registers"
    );
    assert!(
        !wait_until(Duration::from_secs(2), || gw
            .endpoint()
            .device(old_id)
            .is_some()),
        "a camera with the old password is refused"
    );

    // A broken file (a user listed twice): 400, nothing changes.
    std::fs::write(
        &file,
        head(rtsp, "x") + &admin_entry + &toml_user(NEWBIE, read) + &toml_user(NEWBIE, read),
    )
    .unwrap();
    let r = admin(addr, "POST", "/v1/config/reload", None);
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.is_json_error());
    assert!(
        r.json()["message"].as_str().unwrap().contains("twice"),
        "{r:?}"
    );
    assert_eq!(rtsp_describe_as(&gw, NEWBIE), 200);
    assert_eq!(rtsp_describe_as(&gw, VIEWER), 401);
    // Not even valid TOML: the same.
    std::fs::write(&file, "users = [[[").unwrap();
    assert_eq!(admin(addr, "POST", "/v1/config/reload", None).status, 400);
    assert_eq!(rtsp_describe_as(&gw, NEWBIE), 200);
    drop((old_pw, new_pw));
    drop(gw);
    std::fs::remove_dir_all(&dir).ok();
}

/// Recordings on the camera: a RecordInfo query for a time range, answered by a simulated
/// camera that lists recordings; malformed ranges and IDs are refused before anything is sent.
#[test]
fn camera_records_for_a_time_range() {
    let _g = serial();
    let gw = start(0);
    let addr = gw.metrics_addr().unwrap();
    let id = "34020000001320000201";
    let cam = camera_with_records(
        gw.endpoint().local_addr().port(),
        id,
        "2024-03-01T08:00:00/2024-03-01T09:00:00;2024-03-01T10:00:00/2024-03-01T10:30:00;\
         2024-03-02T00:00:00/2024-03-02T01:00:00",
    );
    assert!(registered(&gw, id), "camera registered");
    let base = format!("/v1/devices/{id}/channels/{id}/records");
    let r = admin(
        addr,
        "GET",
        &format!("{base}?start=2024-03-01T00:00:00&end=2024-03-01T23:59:59"),
        None,
    );
    assert_eq!(r.status, 200, "{r:?}");
    let list = r.json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list[0]["start"], "2024-03-01T08:00:00");
    assert_eq!(list[1]["end"], "2024-03-01T10:30:00");
    assert_eq!(list[0]["channel_id"], id);
    // Both time forms in the answer (wvp's taken as UTC)...
    assert_eq!(list[0]["start_unix"], 1_709_280_000);
    assert_eq!(list[1]["end_unix"], 1_709_289_000);
    // ...and in the query: Unix seconds, or one of each, ask the camera the same range.
    for q in [
        "start=1709251200&end=1709337599",
        "start=2024-03-01T00:00:00&end=1709337599",
    ] {
        let r = admin(addr, "GET", &format!("{base}?{q}"), None);
        assert_eq!(r.status, 200, "{q}: {r:?}");
        assert_eq!(r.json(), Value::Array(list.clone()), "{q}");
    }
    let none = admin(
        addr,
        "GET",
        &format!("{base}?start=2023-01-01T00:00:00&end=2023-01-02T00:00:00"),
        None,
    );
    assert_eq!(none.status, 200);
    assert!(none.json().as_array().unwrap().is_empty());
    for bad in [
        format!("{base}?start=1700003600&end=1700000000"),
        format!("{base}?start=2024-02-30T00:00:00&end=2024-03-01T00:00:00"),
        format!("{base}?start=-5&end=1700000000"),
        format!("{base}?start=2024-03-02T00:00:00&end=2024-03-01T00:00:00"),
        format!("{base}?start=2024-03-01T00:00:00"),
        format!("{base}?start=2024-03-01T00:00:00&end=2024-03-01T23:59:59&x=1"),
        format!("{base}?start=2024-03-01T00:00:00%0D&end=2024-03-01T23:59:59"),
        format!(
            "/v1/devices/{id}/channels/3402%2E/records?start=2024-03-01T00:00:00&end=2024-03-01T23:59:59"
        ),
        "/v1/devices/x/channels/y/records?start=2024-03-01T00:00:00&end=2024-03-01T23:59:59".into(),
    ] {
        let r = admin(addr, "GET", &bad, None);
        assert_eq!(r.status, 400, "{bad}: {r:?}");
        assert!(r.is_json_error());
    }
    let unknown = admin(
        addr,
        "GET",
        "/v1/devices/34020000001320000299/channels/34020000001320000299/records?start=2024-03-01T00:00:00&end=2024-03-01T23:59:59",
        None,
    );
    assert_eq!(unknown.status, 404);
    drop(cam);
}

/// SIGHUP makes the gateway process re-read its config file (the flags stay on top): a user
/// added to the file can read at once, the removed one cannot, the process keeps running.
#[test]
fn sighup_reloads_the_config_file() {
    let _g = serial();
    const LATE: (&str, &str) = ("late", "late-pw");
    let dir = scratch("api-sighup");
    let conf = dir.join("gateway.toml");
    let read = r#"{action = "read"}"#;
    std::fs::write(&conf, toml_user(VIEWER, read)).unwrap();
    let (sip, rtsp, metrics) = (free_port(), free_port(), free_port());
    let child = gateway_command(&conf, sip, rtsp, metrics)
        .args(["--simulate", "1"])
        .args(["--sim-width", "320", "--sim-height", "240"])
        .args(["--summary-interval-s", "0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = ChildGuard(child);
    let reachable = |port: u16| TcpStream::connect(("127.0.0.1", port)).is_ok();
    assert!(
        wait_until(Duration::from_secs(20), || reachable(rtsp)
            && describe_at(rtsp, VIEWER) == 200),
        "the simulated camera's channel is served"
    );
    assert_eq!(describe_at(rtsp, LATE), 401);
    std::fs::write(&conf, toml_user(LATE, read)).unwrap();
    // SAFETY: plain kill(2) on our own child.
    unsafe {
        libc::kill(guard.0.id() as i32, libc::SIGHUP);
    }
    assert!(
        wait_until(Duration::from_secs(10), || describe_at(rtsp, LATE) == 200),
        "the user added to the file reads after SIGHUP"
    );
    assert_eq!(describe_at(rtsp, VIEWER), 401);
    assert!(guard.0.try_wait().unwrap().is_none(), "still running");
    drop(guard);
    std::fs::remove_dir_all(&dir).ok();
}

/// Playback of a camera's recording: the API mounts a temporary RTSP path served by a
/// gb28181src in playback kind; ffprobe decodes it; a reader keeps it playing, pause/play
/// reach the camera, and DELETE ends the session (BYE: the camera stops sending, the reader
/// sees its stream end). Bad bodies and unknown sessions are refused.
#[test]
fn playback_session_served_controlled_and_stopped() {
    let _g = serial();
    gst::init().unwrap();
    let gw = Gateway::start(Config {
        max_playbacks: 1,
        ..config(0)
    })
    .expect("gateway starts");
    let addr = gw.metrics_addr().unwrap();
    let id = "34020000001320000301";
    let cam = sim_camera(&gw, id, &Config::default().password);
    assert!(registered(&gw, id), "camera registered");
    let path = format!("/v1/devices/{id}/channels/{id}/playback");
    for bad in [
        r#"{"start": 1709283600, "end": 1709280000}"#,
        r#"{"start": 1709280000}"#,
        r#"{"start": 1709280000, "end": 1709283600, "speed": 4}"#,
        r#"{"start": 1709280000, "end": 1709283600, "x": 1}"#,
        r#"{"start": "2024-03-01 08:00:00", "end": 1709283600}"#,
        r#"{"start": -1, "end": 1709283600}"#,
        "not json",
    ] {
        let r = admin(addr, "POST", &path, Some(bad));
        assert_eq!(r.status, 400, "{bad}: {r:?}");
        assert!(r.is_json_error());
    }
    let r = admin(
        addr,
        "POST",
        &path,
        Some(r#"{"start": 1709280000, "end": 1709283600}"#),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let pb = r.json();
    let n = pb["id"].as_u64().unwrap();
    let url = pb["rtsp_url"].as_str().unwrap().to_string();
    assert!(url.contains("/playback-"), "{url}");
    // Bounded: a second session is refused while one is mounted.
    let second = admin(
        addr,
        "POST",
        &path,
        Some(r#"{"start": 1709280000, "end": 1709283600}"#),
    );
    assert_eq!(second.status, 409, "{second:?}");
    let metrics =
        String::from_utf8_lossy(&call(addr, "GET", "/metrics", Some(OPS), None).body).to_string();
    assert!(
        metrics.contains("gateway_playback_sessions 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("gateway_playback_path{{path=\"playback-{n}\"}} 1")),
        "{metrics}"
    );
    let c = format!("/v1/playback/{n}/control");
    let with_creds = url.replacen("rtsp://", &format!("rtsp://{}:{}@", ADMIN.0, ADMIN.1), 1);
    let v = ffprobe_frames(
        &["-rtsp_transport", "tcp", "-read_intervals", "%+2"],
        &with_creds,
    );
    assert!(frames_of(&v, "h264") >= 10, "{v:?}");
    // A reader that stays.
    let client = gst::parse::launch(&format!(
        "rtspsrc location={with_creds} protocols=tcp latency=0 ! fakesink sync=false"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    client.set_state(gst::State::Playing).unwrap();
    // Prerolled: the reader's session is set up and media reached it.
    let (_, now, _) = client.state(gst::ClockTime::from_seconds(15));
    if now != gst::State::Playing {
        client.set_state(gst::State::Null).unwrap();
        panic!("the reader did not start playing: {now:?}");
    }
    assert!(
        wait_until(Duration::from_secs(15), || cam.is_streaming()),
        "the camera streams the playback"
    );
    let bus = cam.pipeline().bus().unwrap();
    let r = admin(addr, "POST", &c, Some(r#"{"pause": true}"#));
    assert_eq!(r.status, 200, "{r:?}");
    let s = wait_message(&bus, "gb28181-playback-control", Duration::from_secs(5))
        .expect("PAUSE reached the camera");
    assert_eq!(s.get::<String>("method").unwrap(), "PAUSE");
    let r = admin(addr, "POST", &c, Some(r#"{"scale": 2.0}"#));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        admin(addr, "POST", &c, Some(r#"{"scale": 100}"#)).status,
        400
    );
    assert_eq!(
        admin(addr, "DELETE", &format!("/v1/playback/{}", n + 100), None).status,
        404
    );
    let r = admin(addr, "DELETE", &format!("/v1/playback/{n}"), None);
    assert_eq!(r.status, 204, "{r:?}");
    assert!(
        wait_until(Duration::from_secs(10), || !cam.is_streaming()),
        "BYE: the camera stopped sending"
    );
    let end = client.bus().unwrap().timed_pop_filtered(
        gst::ClockTime::from_seconds(10),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    client.set_state(gst::State::Null).unwrap();
    assert!(end.is_some(), "the reader saw its stream end");
    assert_eq!(
        admin(addr, "DELETE", &format!("/v1/playback/{n}"), None).status,
        404
    );
    drop(cam);
}

/// Whether camera `id` registers within 10 s.
fn registered(gw: &Gateway, id: &str) -> bool {
    wait_until(Duration::from_secs(10), || {
        gw.endpoint().device(id).is_some()
    })
}

/// Waits (bounded) until camera `id` is registered, then asks for a playback of it.
fn playback_of(gw: &Gateway, id: &str, body: Option<&str>) -> Reply {
    assert!(registered(gw, id), "camera registered");
    let addr = gw.metrics_addr().unwrap();
    admin(
        addr,
        "POST",
        &format!("/v1/devices/{id}/channels/{id}/playback"),
        body,
    )
}

/// `POST /v1/playback/{n}/control {"scale": 2.0}`: the camera gets the INFO with Scale 2 and
/// sends its recording twice as fast, while an RTSP reader's frame timestamps (RTP, taken as
/// they are) advance with the wall clock: two of the camera's 40 ms frames per 40 ms. Scale
/// 1e308, NaN, negative, 0 or 3 and seeks out of range are refused (400) with nothing sent,
/// an unknown session is 404, and the session keeps serving.
#[test]
fn playback_scale_reaches_the_camera_and_the_rtsp_reader() {
    let _g = serial();
    gst::init().unwrap();
    let gw = Gateway::start(config(0)).expect("gateway starts");
    let addr = gw.metrics_addr().unwrap();
    let id = "34020000001320000302";
    let cam = sim_camera(&gw, id, &Config::default().password);
    let r = playback_of(&gw, id, Some(r#"{"start": 1709280000, "end": 1709283600}"#));
    assert_eq!(r.status, 200, "{r:?}");
    let n = r.json()["id"].as_u64().unwrap();
    let url = r.json()["rtsp_url"].as_str().unwrap().to_string();
    let with_creds = url.replacen("rtsp://", &format!("rtsp://{}:{}@", ADMIN.0, ADMIN.1), 1);
    let reader = gst::parse::launch(&format!(
        "rtspsrc location={with_creds} protocols=tcp latency=0 buffer-mode=none \
         ! rtph264depay ! fakesink name=out sync=false"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let played = record(&reader.by_name("out").unwrap().static_pad("sink").unwrap());
    let content = record(&cam.sink().static_pad("sink").unwrap());
    reader.set_state(gst::State::Playing).unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || snapshot(&played).len() >= 25),
        "the reader plays"
    );
    let c = format!("/v1/playback/{n}/control");
    for bad in [
        r#"{"scale": 1e308}"#,
        r#"{"scale": NaN}"#,
        r#"{"scale": -2}"#,
        r#"{"scale": 0}"#,
        r#"{"scale": 3}"#,
        r#"{"seek": -1}"#,
        r#"{"seek": 1e300}"#,
        r#"{"scale": "2"}"#,
    ] {
        let r = admin(addr, "POST", &c, Some(bad));
        assert_eq!(r.status, 400, "{bad}: {r:?}");
        assert!(r.is_json_error(), "{bad}");
    }
    let unknown = format!("/v1/playback/{}/control", n + 100);
    assert_eq!(
        admin(addr, "POST", &unknown, Some(r#"{"scale": 2.0}"#)).status,
        404
    );
    let bus = cam.pipeline().bus().unwrap();
    let r = admin(addr, "POST", &c, Some(r#"{"scale": 2.0}"#));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["sent"], true, "{r:?}");
    let t0 = std::time::Instant::now();
    let s = wait_message(&bus, "gb28181-playback-control", Duration::from_secs(5))
        .expect("the INFO reached the camera");
    assert_eq!(s.get::<String>("method").unwrap(), "PLAY");
    assert_eq!(s.get::<f64>("scale").unwrap(), 2.0, "{s}");
    assert!(
        wait_message(&bus, "gb28181-playback-control", Duration::from_millis(200)).is_none(),
        "only the valid request reached the camera"
    );
    assert_plays_at_2x(&content, &played, t0 + Duration::from_millis(1500));
    reader.set_state(gst::State::Null).unwrap();
    assert_eq!(admin(addr, "GET", "/v1/playback", None).json()[0]["id"], n);
    assert_eq!(
        admin(addr, "DELETE", &format!("/v1/playback/{n}"), None).status,
        204
    );
    drop(cam);
}

/// A playback of an H.265 + G.711 recording, served like a live channel: the answer gives
/// both time forms and an RTSP and an HLS URL that decode (ffprobe: HEVC and A-law over RTSP,
/// HEVC and AAC over HLS) with the admin's credentials. The camera's "file" is the requested
/// 15 s: at its end the camera sends MediaStatus 121 and the session ends by itself (the
/// reader gets end-of-stream, the camera BYE, the mount and the HLS directory go, the
/// session is no longer listed).
#[test]
fn playback_h265_over_rtsp_and_hls_ends_with_the_file() {
    let _g = serial();
    gst::init().unwrap();
    let hls_dir = scratch("api-playback-hls");
    let gw = Gateway::start(Config {
        hls: true,
        hls_dir: hls_dir.clone(),
        ..config(0)
    })
    .expect("gateway starts");
    let (addr, hls) = (gw.metrics_addr().unwrap(), gw.hls_addr().unwrap());
    let id = "34020000001320000302";
    let clip =
        gst_ipcam_gateway::sim::Clip::encode_with(Some("h265"), Some("alaw"), 160, 120, 200, 2)
            .unwrap();
    let cam = gst_ipcam_gateway::sim::SimCamera::start(
        &clip,
        &gst_ipcam_gateway::sim::SimSettings {
            server_ip: "127.0.0.1".into(),
            server_port: gw.endpoint().local_addr().port(),
            server_id: Config::default().server_id,
            device_id: id.into(),
            password: Config::default().password,
            audio: true,
        },
    )
    .unwrap();
    let r = playback_of(
        &gw,
        id,
        Some(r#"{"start": "2024-03-01T08:00:00", "end": 1709280015}"#),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let pb = r.json();
    assert_eq!(pb["start"], "2024-03-01T08:00:00");
    assert_eq!(pb["end"], "2024-03-01T08:00:15");
    assert_eq!(pb["start_unix"], 1_709_280_000);
    assert_eq!(pb["end_unix"], 1_709_280_015);
    let n = pb["id"].as_u64().unwrap();
    let listed = admin(addr, "GET", "/v1/playback", None).json();
    assert_eq!(listed, Value::Array(vec![pb.clone()]), "listed as answered");
    assert_eq!(pb["channel_id"], id);
    let bus = cam.pipeline().bus().unwrap();
    let mut call_id = None;
    for _ in 0..20 {
        let Some(s) = wait_message(&bus, "gb28181-session-started", Duration::from_secs(10)) else {
            break;
        };
        if s.get::<String>("kind").is_ok_and(|k| k == "Playback") {
            call_id = s.get::<String>("call-id").ok();
            break;
        }
    }
    let call_id = call_id.expect("the camera got the playback INVITE");
    let creds = format!("{}:{}@", ADMIN.0, ADMIN.1);
    let rtsp = pb["rtsp_url"]
        .as_str()
        .unwrap()
        .replacen("rtsp://", &format!("rtsp://{creds}"), 1);
    let hls_url = pb["hls_url"].as_str().expect("an HLS URL");
    assert!(
        hls_url.ends_with(&format!("/playback-{n}/index.m3u8")),
        "{hls_url}"
    );
    let hls_url = hls_url.replacen("http://", &format!("http://{creds}"), 1);
    // A reader that stays to the end.
    let client = gst::parse::launch(&format!(
        "rtspsrc location={rtsp} protocols=tcp latency=0 ! fakesink sync=false"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    client.set_state(gst::State::Playing).unwrap();
    let v = ffprobe_frames(&["-rtsp_transport", "tcp", "-read_intervals", "%+2"], &rtsp);
    assert!(frames_of(&v, "hevc") >= 10, "RTSP: {v:?}");
    assert!(frames_of(&v, "pcm_alaw") >= 1, "RTSP: {v:?}");
    let playlist = format!("/playback-{n}/index.m3u8");
    let mut segment = None;
    assert!(
        wait_until(Duration::from_secs(10), || {
            let r = call(hls, "GET", &playlist, Some(ADMIN), None);
            segment = (r.status == 200)
                .then(|| {
                    String::from_utf8_lossy(&r.body)
                        .lines()
                        .find(|l| l.ends_with(".ts"))
                        .map(String::from)
                })
                .flatten();
            segment.is_some()
        }),
        "the session's HLS playlist has a segment"
    );
    // The playlist's first segment, by the URL the answer gave.
    let segment_url = hls_url.replace("index.m3u8", &segment.unwrap());
    let v = ffprobe_frames(&[], &segment_url);
    assert!(frames_of(&v, "hevc") >= 10, "HLS: {v:?}");
    assert!(frames_of(&v, "aac") >= 1, "HLS: {v:?}");
    assert!(hls_dir.join(format!("playback-{n}")).exists());

    // The end of the file: MediaStatus 121, then everything goes by itself.
    let end = client.bus().unwrap().timed_pop_filtered(
        gst::ClockTime::from_seconds(30),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    client.set_state(gst::State::Null).unwrap();
    let end = end.expect("the reader's stream ended");
    assert_eq!(end.type_(), gst::MessageType::Eos, "{end:?}");
    assert!(
        wait_until(Duration::from_secs(10), || {
            let m = call(addr, "GET", "/metrics", Some(OPS), None);
            String::from_utf8_lossy(&m.body).contains("gateway_playback_sessions 0\n")
        }),
        "the session is no longer counted"
    );
    assert_eq!(
        admin(addr, "GET", "/v1/playback", None).json(),
        Value::Array(vec![]),
        "the session is no longer listed"
    );
    let mut hung_up = false;
    for _ in 0..20 {
        let Some(s) = wait_message(&bus, "gb28181-session-stopped", Duration::from_secs(10)) else {
            break;
        };
        if s.get::<String>("call-id").is_ok_and(|c| c == call_id) {
            assert_eq!(s.get::<String>("reason").unwrap(), "bye");
            hung_up = true;
            break;
        }
    }
    assert!(hung_up, "BYE: the gateway hung up the playback");
    assert!(
        wait_until(Duration::from_secs(10), || !hls_dir
            .join(format!("playback-{n}"))
            .exists()),
        "HLS directory removed"
    );
    assert_eq!(call(hls, "GET", &playlist, Some(ADMIN), None).status, 404);
    assert!(
        ffprobe_frames(&["-rtsp_transport", "tcp"], &rtsp).is_empty(),
        "unmounted"
    );
    assert_eq!(
        admin(addr, "DELETE", &format!("/v1/playback/{n}"), None).status,
        404
    );
    // The gateway keeps serving: another session starts.
    let r = admin(
        addr,
        "POST",
        &format!("/v1/devices/{id}/channels/{id}/playback"),
        Some(r#"{"start": 1709280000, "end": 1709280060}"#),
    );
    assert_eq!(r.status, 200, "{r:?}");
    drop(cam);
    drop(gw);
    std::fs::remove_dir_all(&hls_dir).ok();
}

/// A download of an H.264 + AAC recording: RTSP carries the camera's codecs (H.264 and AAC
/// over RTP, no transcoding), and the session ends by itself at the end of the camera's file
/// (8 s): the reader gets end-of-stream and the session is no longer listed.
#[test]
fn download_h264_aac_served_until_the_file_ends() {
    let _g = serial();
    gst::init().unwrap();
    let gw = Gateway::start(config(0)).expect("gateway starts");
    let addr = gw.metrics_addr().unwrap();
    let id = "34020000001320000303";
    let clip =
        gst_ipcam_gateway::sim::Clip::encode_with(Some("h264"), Some("aac"), 160, 120, 200, 2)
            .unwrap();
    let cam = gst_ipcam_gateway::sim::SimCamera::start(
        &clip,
        &gst_ipcam_gateway::sim::SimSettings {
            server_ip: "127.0.0.1".into(),
            server_port: gw.endpoint().local_addr().port(),
            server_id: Config::default().server_id,
            device_id: id.into(),
            password: Config::default().password,
            audio: true,
        },
    )
    .unwrap();
    let r = playback_of(
        &gw,
        id,
        Some(
            r#"{"start": "1709280000", "end": "2024-03-01T08:00:08", "download": true, "speed": 4}"#,
        ),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let pb = r.json();
    assert_eq!(pb["download"], true);
    assert_eq!(pb["hls_url"], Value::Null, "HLS is off in this gateway");
    let rtsp = pb["rtsp_url"].as_str().unwrap().replacen(
        "rtsp://",
        &format!("rtsp://{}:{}@", ADMIN.0, ADMIN.1),
        1,
    );
    let client = gst::parse::launch(&format!(
        "rtspsrc location={rtsp} protocols=tcp latency=0 ! fakesink sync=false"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    client.set_state(gst::State::Playing).unwrap();
    let v = ffprobe_frames(&["-rtsp_transport", "tcp", "-read_intervals", "%+2"], &rtsp);
    assert!(frames_of(&v, "h264") >= 10, "{v:?}");
    assert!(frames_of(&v, "aac") >= 1, "{v:?}");
    let end = client.bus().unwrap().timed_pop_filtered(
        gst::ClockTime::from_seconds(30),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    client.set_state(gst::State::Null).unwrap();
    let end = end.expect("the reader's stream ended");
    assert_eq!(end.type_(), gst::MessageType::Eos, "{end:?}");
    assert!(
        wait_until(Duration::from_secs(10), || admin(
            addr,
            "GET",
            "/v1/playback",
            None
        )
        .json()
            == Value::Array(vec![])),
        "the session is no longer listed"
    );
    drop(cam);
}

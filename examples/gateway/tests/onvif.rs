//! ONVIF discovery against simulated devices on loopback: a WS-Discovery responder (UDP) and
//! a media service (HTTP) that checks the WS-UsernameToken digest itself (SHA-1, computed
//! here, not with the gateway's code). Through the API (`POST /v1/onvif/discover`) and the
//! command (`gst-ipcam-onvif`). Attacks: a device pointing the gateway at another host, a
//! huge answer, deeply nested XML, a wrong password: each refused or bounded, the device
//! password never in the answer, the gateway serving on.

mod common;
use common::*;

use base64::Engine as _;
use gst_ipcam_gateway::auth::{Action, UserConfig};
use gst_ipcam_gateway::gateway::Gateway;
use sha1::Digest as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

const USER: &str = "onvif-admin";
const PASS: &str = "Onvif-Pw-4417z";
const ADMIN: (&str, &str) = ("admin", "admin-pw");

/// How the simulated device's media service answers.
#[derive(Clone, Copy, PartialEq)]
enum Service {
    Good,
    /// 1 MiB of XML.
    Huge,
    /// 3000 nested elements.
    Deep,
}

/// A simulated ONVIF device: answers probes with `xaddrs` (`{http}` is its service port) and
/// serves GetProfiles/GetStreamUri; counts the HTTP connections it got.
struct Device {
    udp_port: u16,
    http_connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Drop for Device {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn field<'a>(xml: &'a str, name: &str) -> &'a str {
    // The opening tag (`<p:Name>` or `<p:Name attr=..>`), whichever comes first.
    let Some(at) = [format!(":{name}>"), format!(":{name} ")]
        .iter()
        .filter_map(|p| xml.find(p.as_str()))
        .min()
    else {
        return "";
    };
    let rest = &xml[at..];
    let start = rest.find('>').map_or(0, |i| i + 1);
    let end = rest[start..].find('<').map_or(0, |i| start + i);
    &rest[start..end]
}

/// Whether the request's UsernameToken is `USER` with `PASS`.
fn token_ok(req: &str) -> bool {
    let nonce = base64::engine::general_purpose::STANDARD
        .decode(field(req, "Nonce"))
        .unwrap_or_default();
    let mut h = sha1::Sha1::new();
    h.update(&nonce);
    h.update(field(req, "Created").as_bytes());
    h.update(PASS.as_bytes());
    let digest = base64::engine::general_purpose::STANDARD.encode(h.finalize());
    field(req, "Username") == USER && field(req, "Password") == digest && !nonce.is_empty()
}

fn soap(body: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:trt="http://www.onvif.org/ver10/media/wsdl" xmlns:tt="http://www.onvif.org/ver10/schema"><s:Body>{body}</s:Body></s:Envelope>"#
    )
}

fn serve(mut s: TcpStream, service: Service) {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut req = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let Ok(n) = s.read(&mut buf) else { return };
        if n == 0 {
            return;
        }
        req.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&req);
        if let Some(h) = text.find("\r\n\r\n") {
            let len: usize = text[..h]
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if req.len() >= h + 4 + len {
                break;
            }
        }
    }
    let req = String::from_utf8_lossy(&req).into_owned();
    let (status, body) = match service {
        Service::Huge => (200, soap(&"<tt:Name>x</tt:Name>".repeat(60_000))),
        Service::Deep => (
            200,
            format!("{}{}", "<a>".repeat(3_000), "</a>".repeat(3_000)),
        ),
        Service::Good if !token_ok(&req) => (
            400,
            soap(
                "<s:Fault><s:Code><s:Value>s:Sender</s:Value></s:Code><s:Reason>\
                 <s:Text xml:lang=\"en\">Sender not Authorized</s:Text></s:Reason></s:Fault>",
            ),
        ),
        Service::Good if req.contains("GetProfiles") => (
            200,
            soap(
                "<trt:GetProfilesResponse><trt:Profiles token=\"main\" fixed=\"true\">\
                 <tt:Name>main</tt:Name></trt:Profiles><trt:Profiles token=\"sub\">\
                 <tt:Name>sub</tt:Name></trt:Profiles></trt:GetProfilesResponse>",
            ),
        ),
        Service::Good => {
            let token = field(&req, "ProfileToken").to_string();
            (
                200,
                soap(&format!(
                    "<trt:GetStreamUriResponse><trt:MediaUri><tt:Uri>rtsp://127.0.0.1:554/{token}\
                     </tt:Uri></trt:MediaUri></trt:GetStreamUriResponse>"
                )),
            )
        }
    };
    let _ = write!(
        s,
        "HTTP/1.0 {status} X\r\nContent-Type: application/soap+xml\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
}

impl Device {
    /// `xaddrs`: the service addresses it announces (`{http}` replaced by its HTTP port).
    fn start(xaddrs: &str, service: Service) -> Device {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let http = TcpListener::bind("127.0.0.1:0").unwrap();
        let http_port = http.local_addr().unwrap().port();
        let xaddrs = xaddrs.replace("{http}", &http_port.to_string());
        let stop = Arc::new(AtomicBool::new(false));
        let http_connections = Arc::new(AtomicUsize::new(0));
        udp.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let udp_port = udp.local_addr().unwrap().port();
        let st = stop.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !st.load(Ordering::SeqCst) {
                let Ok((n, from)) = udp.recv_from(&mut buf) else {
                    continue;
                };
                let probe = String::from_utf8_lossy(&buf[..n]).into_owned();
                if !probe.contains("Probe") {
                    continue;
                }
                let id = field(&probe, "MessageID").to_string();
                let answer = format!(
                    r#"<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery"><s:Header><a:RelatesTo>{id}</a:RelatesTo></s:Header><s:Body><d:ProbeMatches><d:ProbeMatch><d:Types>dn:NetworkVideoTransmitter</d:Types><d:Scopes>onvif://www.onvif.org/name/SimCam</d:Scopes><d:XAddrs>{xaddrs}</d:XAddrs></d:ProbeMatch></d:ProbeMatches></s:Body></s:Envelope>"#
                );
                let _ = udp.send_to(answer.as_bytes(), from);
            }
        });
        let (st, count) = (stop.clone(), http_connections.clone());
        http.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                match http.accept() {
                    Ok((s, _)) => {
                        count.fetch_add(1, Ordering::SeqCst);
                        s.set_nonblocking(false).unwrap();
                        std::thread::spawn(move || serve(s, service));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Device {
            udp_port,
            http_connections,
            stop,
        }
    }
}

/// `POST /v1/onvif/discover` as the admin: (status, body).
fn discover(gw: &Gateway, body: &str) -> (u16, String) {
    let addr = gw.metrics_addr().unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", ADMIN.0, ADMIN.1));
    write!(
        s,
        "POST /v1/onvif/discover HTTP/1.0\r\nHost: x\r\nAuthorization: Basic {basic}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (
        status,
        out.split("\r\n\r\n").nth(1).unwrap_or("").to_string(),
    )
}

fn request(port: u16, password: &str) -> String {
    format!(
        r#"{{"target":"127.0.0.1:{port}","wait_ms":500,"user":"{USER}","password":"{password}"}}"#
    )
}

#[test]
fn onvif_discovery_finds_stream_uris_and_refuses_hostile_devices() {
    gst_ipcam_gateway::gateway::init().unwrap();
    let mut cfg = loopback_config("127.0.0.1");
    cfg.users
        .push(UserConfig::with_password(ADMIN.0, ADMIN.1, &[(Action::Api, "")]).unwrap());
    let gw = Gateway::start(cfg).unwrap();

    // A good device: both profiles' URIs, with the right password.
    let good = Device::start(
        "http://127.0.0.1:{http}/onvif/device_service",
        Service::Good,
    );
    let (status, body) = discover(&gw, &request(good.udp_port, PASS));
    assert_eq!(status, 200, "{body}");
    let found: serde_json::Value = serde_json::from_str(&body).unwrap();
    let d = &found[0];
    assert_eq!(d["address"], "127.0.0.1", "{body}");
    assert_eq!(d["scopes"][0], "onvif://www.onvif.org/name/SimCam");
    assert_eq!(d["profiles"][0]["token"], "main", "{body}");
    assert_eq!(d["profiles"][0]["stream_uri"], "rtsp://127.0.0.1:554/main");
    assert_eq!(d["profiles"][1]["stream_uri"], "rtsp://127.0.0.1:554/sub");
    assert!(!body.contains(PASS));

    // A wrong password: the device's refusal, said.
    let (status, body) = discover(&gw, &request(good.udp_port, "wrong"));
    assert_eq!(status, 200);
    assert!(
        body.contains("GetProfiles: SOAP fault: Sender not Authorized"),
        "{body}"
    );

    // A device sending the gateway to another host: not followed (no connection at all).
    let elsewhere = Device::start("http://camera.invalid/onvif/device_service", Service::Good);
    let (_, body) = discover(&gw, &request(elsewhere.udp_port, PASS));
    assert!(body.contains("not followed"), "{body}");
    assert_eq!(elsewhere.http_connections.load(Ordering::SeqCst), 0);

    // Huge and deeply nested answers: refused, bounded.
    for (service, why) in [(Service::Huge, "larger than"), (Service::Deep, "bad XML")] {
        let hostile = Device::start("http://127.0.0.1:{http}/onvif/device_service", service);
        let (status, body) = discover(&gw, &request(hostile.udp_port, PASS));
        assert_eq!(status, 200);
        assert!(body.contains(why), "{body}");
    }

    // Bad requests: 400; the gateway serves on.
    for bad in [
        r#"{"target":"nowhere"}"#,
        r#"{"wait_ms":999999}"#,
        r#"{"bogus":1}"#,
    ] {
        assert_eq!(discover(&gw, bad).0, 400, "{bad}");
    }
    let (status, _) = discover(&gw, &request(good.udp_port, PASS));
    assert_eq!(status, 200);

    // The command: one JSON line per device, password from the environment.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gst-ipcam-onvif"))
        .args([
            "--target",
            &format!("127.0.0.1:{}", good.udp_port),
            "--wait-ms",
            "500",
            "--user",
            USER,
        ])
        .env("ONVIF_PASSWORD", PASS)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("rtsp://127.0.0.1:554/main"), "{text}");
    assert!(!text.contains(PASS));
}

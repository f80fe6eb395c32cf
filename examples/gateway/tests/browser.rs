//! The web page and WHEP in a real headless Chromium (Debian's `chromium`), driven over the
//! Chrome DevTools Protocol: the page lists the simulated camera, "play" gives a <video>
//! whose RTCPeerConnection decodes frames, the time from the click to the first decoded
//! frame is printed, and glass-to-glass latency is measured from the capture time the
//! simulated camera draws into its pictures. Everything runs on 127.0.0.1.

mod common;
use common::*;

use gst::prelude::*;
use gst_ipcam_gateway::auth::{Action, UserConfig};
use gst_ipcam_gateway::config::Config;
use gst_ipcam_gateway::gateway::Gateway;
use gst_ipcam_gateway::sim::wait_until;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tungstenite::{Message, WebSocket};

const ADMIN: (&str, &str) = ("admin", "admin-pw");

/// Chromium on its own profile, its DevTools address read back from stderr.
struct Chromium {
    _child: ChildGuard,
    /// `ws://127.0.0.1:<port>/devtools/browser/<id>`
    ws_url: String,
    _profile: std::path::PathBuf,
}

fn chromium() -> Chromium {
    let bin = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .unwrap_or_else(|| panic!("no chromium: run `make deps` (apt package chromium)"));
    let profile = scratch("chromium-profile");
    let mut child = Command::new(bin)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--remote-debugging-port=0",
            "--remote-debugging-address=127.0.0.1",
            "--no-first-run",
            "--disable-background-networking",
            "--autoplay-policy=no-user-gesture-required",
            "--use-fake-ui-for-media-stream",
            // ICE on 127.0.0.1 (Chromium leaves loopback out otherwise), host addresses not
            // hidden behind mDNS names.
            "--allow-loopback-in-peer-connection",
            "--disable-features=WebRtcHideLocalIpsWithMdns",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium starts");
    let stderr = child.stderr.take().expect("stderr");
    let child = ChildGuard(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("DevTools listening on ").nth(1) {
                let _ = tx.send(rest.trim().to_string());
            }
        }
    });
    let ws_url = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("chromium prints its DevTools address");
    Chromium {
        _child: child,
        ws_url,
        _profile: profile,
    }
}

/// A DevTools session with a new page (flat session over the browser's websocket).
struct Page {
    ws: WebSocket<TcpStream>,
    next_id: u64,
    session: Option<String>,
}

impl Page {
    fn open(c: &Chromium) -> Page {
        let host = c
            .ws_url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        assert!(host.starts_with("127.0.0.1:"), "{}", c.ws_url);
        let stream = TcpStream::connect(&host).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let (ws, _) = tungstenite::client(c.ws_url.as_str(), stream).expect("DevTools websocket");
        let mut page = Page {
            ws,
            next_id: 1,
            session: None,
        };
        let target = page.call("Target.createTarget", json!({ "url": "about:blank" }));
        let attached = page.call(
            "Target.attachToTarget",
            json!({ "targetId": target["targetId"], "flatten": true }),
        );
        page.session = attached["sessionId"].as_str().map(str::to_string);
        page
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = &self.session {
            msg["sessionId"] = json!(s);
        }
        self.ws.send(Message::text(msg.to_string())).unwrap();
        loop {
            let m = self.ws.read().expect("DevTools answer");
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["id"] == id {
                if let Some(e) = v.get("error") {
                    panic!("{method}: {e}");
                }
                return v["result"].clone();
            }
        }
    }

    /// Evaluates `expr` in the page (awaiting a promise), its value as JSON.
    fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": expr, "awaitPromise": true, "returnByValue": true }),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expr}: {e}");
        }
        r["result"]["value"].clone()
    }
}

fn config() -> Config {
    Config {
        users: vec![
            UserConfig::with_password(
                ADMIN.0,
                ADMIN.1,
                &[(Action::Api, ""), (Action::Read, ""), (Action::Metrics, "")],
            )
            .unwrap(),
        ],
        sip_address: "127.0.0.1".into(),
        sip_port: free_port(),
        listen_address: "127.0.0.1".into(),
        metrics_address: "127.0.0.1".into(),
        public_host: "127.0.0.1".into(),
        rtsp_port: free_port(),
        metrics_port: 0,
        hls_port: 0,
        simulate: 1,
        sim_width: 320,
        sim_height: 240,
        sim_bitrate_kbps: 500,
        summary_interval_s: 0,
        ..Config::default()
    }
}

/// Logs in on the page and waits until it lists `channel`.
fn log_in(page: &mut Page, base: &str, channel: &str) {
    page.call("Page.enable", json!({}));
    page.call("Page.navigate", json!({ "url": format!("{base}/") }));
    assert!(
        wait_until(Duration::from_secs(10), || page.eval(
            "document.readyState === 'complete' && !!document.getElementById('login')"
        ) == json!(true)),
        "the page loads"
    );
    page.eval(&format!(
        "document.getElementById('user').value = '{}'; document.getElementById('pass').value = '{}'; \
         document.getElementById('login').requestSubmit(); true",
        ADMIN.0, ADMIN.1
    ));
    let sel = format!("li.channel[data-id='{channel}']");
    assert!(
        wait_until(Duration::from_secs(15), || page
            .eval(&format!("!!document.querySelector(\"{sel}\")"))
            == json!(true)),
        "the page lists the channel: {}",
        page.eval("document.body.innerText")
    );
}

/// Clicks the channel and play; resolves with the ms from the click to the first decoded
/// frame (getStats framesDecoded > 0), or an error text.
const PLAY_AND_TIME: &str = r#"
(async (channel) => {
  document.querySelector(`li.channel[data-id='${channel}']`).click();
  const t0 = performance.now();
  document.getElementById('play').click();
  while (performance.now() - t0 < 20000) {
    await new Promise((r) => setTimeout(r, 10));
    if (!window.gw.pc) continue;
    const stats = await window.gw.pc.getStats();
    for (const s of stats.values()) {
      if (s.type === 'inbound-rtp' && s.kind === 'video' && s.framesDecoded > 0) {
        return { ms: performance.now() - t0, frames: s.framesDecoded };
      }
    }
  }
  const seen = [];
  if (window.gw.pc) for (const s of (await window.gw.pc.getStats()).values()) {
    if (s.type === 'inbound-rtp' || s.type === 'transport') seen.push(s);
  }
  return { error: document.getElementById('error').textContent, state: window.gw.pc ? window.gw.pc.connectionState : 'none', stats: seen, answer: window.gw.pc && window.gw.pc.remoteDescription && window.gw.pc.remoteDescription.sdp };
})"#;

#[test]
fn chromium_plays_the_simulated_camera_over_whep() {
    let _g = serial();
    gst_ipcam_gateway::gateway::init().unwrap();
    let cfg = Config {
        webrtc_connect_timeout_s: 2,
        ..config()
    };
    let gw = Gateway::start(cfg).expect("gateway starts");
    assert!(
        wait_until(Duration::from_secs(10), || !gw.channels().is_empty()),
        "the simulated camera is mounted"
    );
    let channel = gw.channels()[0].clone();
    let device = gw.cameras()[0].device_id.clone();
    let base = format!("http://{}", gw.metrics_addr().unwrap());
    let browser = chromium();
    let mut page = Page::open(&browser);
    log_in(&mut page, &base, &channel);
    assert_eq!(
        page.eval(&format!(
            "!!document.querySelector(\"li.device[data-id='{device}'] .online\")"
        )),
        json!(true),
        "the device is listed online"
    );

    let t = Instant::now();
    let r = page.eval(&format!("{PLAY_AND_TIME}('{channel}')"));
    let ms = r["ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("no frame decoded: {r}"));
    println!(
        "browser: click to first decoded frame {ms:.0} ms ({} frames)",
        r["frames"]
    );
    assert!(ms < 10_000.0, "first frame after {ms} ms");
    assert!(t.elapsed() < Duration::from_secs(30));

    // The reader is listed as a WebRTC session; "stop" ends it (DELETE).
    assert!(
        wait_until(Duration::from_secs(5), || gw
            .snapshot()
            .webrtc_sessions
            .len()
            == 1),
        "a WebRTC reader in the snapshot"
    );
    // The page lists the reader (the sessions API) with its protocol.
    assert!(
        wait_until(Duration::from_secs(10), || page
            .eval("document.getElementById('sessions').innerText")
            .as_str()
            .is_some_and(|t| t.contains("webrtc") && t.contains(ADMIN.0))),
        "the page lists the WebRTC reader: {}",
        page.eval("document.getElementById('sessions').innerText")
    );
    // A PTZ button reaches the camera as a DeviceControl MESSAGE (its sink posts it).
    let bus = gw.cameras()[0].pipeline().bus().unwrap();
    page.eval("document.querySelector(\"#ptz button[data-ptz='{\\\"tilt\\\":\\\"up\\\"}']\").click(); true");
    let end = Instant::now() + Duration::from_secs(5);
    let mut ptz = None;
    while ptz.is_none() && Instant::now() < end {
        let Some(m) = bus.timed_pop_filtered(
            gst::ClockTime::from_mseconds(200),
            &[gst::MessageType::Element],
        ) else {
            continue;
        };
        ptz = m
            .structure()
            .filter(|s| s.name() == "gb28181-ptz")
            .and_then(|s| s.get::<String>("command").ok());
    }
    let cmd = ptz.expect("the camera received the PTZ command");
    assert_eq!(&cmd[6..8], "08", "tilt up: {cmd}");
    page.eval("document.getElementById('stop').click(); true");
    assert!(
        wait_until(Duration::from_secs(5), || gw
            .snapshot()
            .webrtc_sessions
            .is_empty()),
        "the WebRTC reader ended"
    );

    // A peer that stays is kept past webrtc_connect_timeout_s (its RTCP says it is there);
    // one that goes away without DELETE (tab closed) is ended after it.
    let r = page.eval(&format!("{PLAY_AND_TIME}('{channel}')"));
    assert!(r["ms"].is_number(), "{r}");
    // Past the 2 s timeout and the 3 s silence margin.
    page.eval("new Promise((r) => setTimeout(() => r(true), 7000))");
    assert_eq!(
        gw.snapshot().webrtc_sessions.len(),
        1,
        "a live peer is kept"
    );
    page.eval("window.gw.pc.close(); window.gw.location = null; true");
    let t = Instant::now();
    assert!(
        wait_until(Duration::from_secs(15), || gw
            .snapshot()
            .webrtc_sessions
            .is_empty()),
        "a vanished peer is ended"
    );
    println!("vanished WebRTC peer ended after {:?}", t.elapsed());
}

/// Once frames are decoding: reads the capture time the camera drew into each presented
/// frame (requestVideoFrameCallback → canvas) and compares it with Date.now(); resolves with
/// the latencies in ms of `n` frames.
const MEASURE_LATENCY: &str = r#"
(async (n, block, columns, bits) => {
  const v = document.getElementById('video');
  const c = document.createElement('canvas');
  c.width = v.videoWidth; c.height = v.videoHeight;
  const g = c.getContext('2d', { willReadFrequently: true });
  const out = [];
  const t0 = performance.now();
  while (out.length < n && performance.now() - t0 < 30000) {
    await new Promise((resolve) => v.requestVideoFrameCallback(() => resolve()));
    const now = Date.now();
    g.drawImage(v, 0, 0);
    const px = g.getImageData(0, 0, columns * block, (bits / columns) * block).data;
    let code = 0;
    for (let bit = 0; bit < bits; bit++) {
      const x = (bit % columns) * block + block / 2, y = Math.floor(bit / columns) * block + block / 2;
      code = code * 2 + (px[(y * columns * block + x) * 4] > 128 ? 1 : 0);
    }
    const lat = ((now % 4294967296) - code + 4294967296) % 4294967296;
    out.push(lat);
  }
  return out;
})"#;

#[test]
fn glass_to_glass_latency_in_chromium_is_under_500_ms() {
    use gst_ipcam_gateway::sim::{
        SimCamera, SimSettings, TIME_CODE_BITS, TIME_CODE_BLOCK, TIME_CODE_COLUMNS,
    };
    let _g = serial();
    gst_ipcam_gateway::gateway::init().unwrap();
    let cfg = Config {
        simulate: 0,
        ..config()
    };
    let gw = Gateway::start(cfg.clone()).expect("gateway starts");
    let device = cfg.sim_device_id(0);
    let cam = SimCamera::start_time_coded(
        &SimSettings {
            server_ip: "127.0.0.1".into(),
            server_port: gw.endpoint().local_addr().port(),
            server_id: cfg.server_id.clone(),
            device_id: device.clone(),
            password: cfg.password.clone(),
            audio: true,
        },
        320,
        240,
        500,
    )
    .expect("time-coded camera");
    assert!(
        wait_until(Duration::from_secs(10), || !gw.channels().is_empty()),
        "the camera is mounted"
    );
    let channel = gw.channels()[0].clone();
    let browser = chromium();
    let mut page = Page::open(&browser);
    log_in(
        &mut page,
        &format!("http://{}", gw.metrics_addr().unwrap()),
        &channel,
    );
    let r = page.eval(&format!("{PLAY_AND_TIME}('{channel}')"));
    let ms = r["ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("no frame decoded: {r}"));
    println!("browser (live encoder): click to first decoded frame {ms:.0} ms");
    // The first second plays the cached GOP out: measure after it.
    page.eval("new Promise((r) => setTimeout(() => r(true), 2000))");
    let n = 75;
    let v = page.eval(&format!(
        "{MEASURE_LATENCY}({n}, {TIME_CODE_BLOCK}, {TIME_CODE_COLUMNS}, {TIME_CODE_BITS})"
    ));
    let mut lat: Vec<f64> = v
        .as_array()
        .expect("latencies")
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    assert_eq!(lat.len(), n, "{v}");
    lat.sort_by(f64::total_cmp);
    let (median, max) = (lat[lat.len() / 2], lat[lat.len() - 1]);
    println!(
        "browser: glass-to-glass latency over {n} frames: median {median:.0} ms, max {max:.0} ms, min {:.0} ms",
        lat[0]
    );
    assert!(median < 500.0, "median latency {median} ms: {lat:?}");
    // Every code read back is a time near now (a misread picture would be far off).
    assert!(max < 1000.0, "max latency {max} ms: {lat:?}");
    // The camera goes away: its WebRTC reader ends with it.
    assert_eq!(gw.snapshot().webrtc_sessions.len(), 1);
    cam.stop();
    let t = Instant::now();
    assert!(
        wait_until(Duration::from_secs(15), || gw
            .snapshot()
            .webrtc_sessions
            .is_empty()),
        "the WebRTC reader ends when the channel's camera leaves"
    );
    println!(
        "WebRTC reader ended {:?} after the camera left",
        t.elapsed()
    );
}

struct Reply {
    status: u16,
    head: String,
    body: String,
}

/// One HTTP/1.1 request over loopback (`Connection: close`).
fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    // A refused body may not be read at all: the answer still comes.
    let _ = s.write_all(body);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Reply {
        status: head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// Hostile and careless WHEP clients over loopback: no or wrong credentials, bad IDs, huge,
/// garbage or codec-less offers, more sessions than allowed, peers that never connect, wrong
/// session tokens. Each is refused or bounded, and the gateway keeps answering.
#[test]
fn whep_refuses_hostile_offers_and_bounds_sessions() {
    let _g = serial();
    gst_ipcam_gateway::gateway::init().unwrap();
    let mut cfg = config();
    cfg.webrtc_max_sessions = 2;
    cfg.webrtc_connect_timeout_s = 2;
    cfg.users.push(
        UserConfig::with_password(
            "other",
            "other-pw",
            &[(Action::Read, "3402000000132999999")],
        )
        .unwrap(),
    );
    let gw = Gateway::start(cfg).expect("gateway starts");
    assert!(wait_until(Duration::from_secs(10), || !gw
        .channels()
        .is_empty()));
    let channel = gw.channels()[0].clone();
    let addr = gw.metrics_addr().unwrap();
    let admin = gst_ipcam_gateway::auth::basic_value(ADMIN.0, ADMIN.1);
    let other = gst_ipcam_gateway::auth::basic_value("other", "other-pw");
    let sdp = ("Content-Type", "application/sdp");
    let whep = format!("/{channel}/whep");
    let good = whep_offer(1);
    let post = |auth: &str, path: &str, body: &[u8]| {
        http(addr, "POST", path, &[sdp, ("Authorization", auth)], body)
    };
    let is_json = |r: &Reply| {
        r.head.to_ascii_lowercase().contains("application/json")
            && serde_json::from_str::<Value>(&r.body).is_ok_and(|v| v["message"].is_string())
    };

    // Who may: nobody without credentials (401 + challenge), not a user without `read` here.
    let r = http(addr, "POST", &whep, &[sdp], good.as_bytes());
    assert_eq!(r.status, 401, "{}", r.head);
    assert!(
        r.head
            .to_ascii_lowercase()
            .contains("www-authenticate: basic")
    );
    assert!(is_json(&r));
    assert_eq!(post(&other, &whep, good.as_bytes()).status, 403);
    // Path names are checked before anything: traversal or junk is 400; a good name that
    // is no path is 404 (to a user allowed to read it).
    for bad in ["/..%2F..%2Fetc/whep", "/a%20b/whep"] {
        assert_eq!(post(&admin, bad, good.as_bytes()).status, 400, "{bad}");
    }
    for missing in [
        "/abc/whep",
        "/live/nothing/whep",
        "/340200000013200000011/whep",
    ] {
        let r = post(&admin, missing, good.as_bytes());
        assert_eq!(r.status, 404, "{missing}: {}", r.body);
        assert!(is_json(&r));
    }
    // Bodies: wrong type 415, oversized 413, garbage 400, nothing in common 406.
    let r = http(
        addr,
        "POST",
        &whep,
        &[("Content-Type", "text/plain"), ("Authorization", &admin)],
        good.as_bytes(),
    );
    assert_eq!(r.status, 415);
    let huge = format!("{good}{}", "a=x\r\n".repeat(200_000));
    let r = post(&admin, &whep, huge.as_bytes());
    assert_eq!(r.status, 413, "{}", r.body);
    for garbage in [
        &b"hello"[..],
        b"v=0\r\nm=video x\r\n",
        b"\xff\xfe\x00v=0",
        b"",
    ] {
        let r = post(&admin, &whep, garbage);
        assert_eq!(r.status, 400, "{:?}: {}", garbage, r.body);
        assert!(is_json(&r));
    }
    let r = post(&admin, &whep, whep_offer(0).as_bytes());
    assert_eq!(r.status, 406, "{}", r.body);
    assert!(is_json(&r));
    // No trickle: PATCH is 405.
    let r = http(
        addr,
        "PATCH",
        &format!("{whep}/0123"),
        &[("Authorization", &admin)],
        b"",
    );
    assert_eq!(r.status, 405);

    // At most webrtc_max_sessions at once: the third offer is 503.
    let a = post(&admin, &whep, good.as_bytes());
    assert_eq!(a.status, 201, "{}", a.body);
    assert!(
        a.head
            .to_ascii_lowercase()
            .contains("content-type: application/sdp")
    );
    assert!(a.body.starts_with("v=0"), "{}", a.body);
    assert!(
        a.body.contains("a=candidate"),
        "no candidates in the answer: {}",
        a.body
    );
    assert!(a.body.contains("H264/90000"), "{}", a.body);
    // Host candidates on loopback only (webrtc_local_addresses), UDP, no STUN/TURN.
    for l in a.body.lines().filter(|l| l.starts_with("a=candidate")) {
        assert!(
            l.contains(" UDP ") && l.contains(" 127.0.0.1 ") && l.ends_with("typ host"),
            "{l}"
        );
    }
    let location = a
        .head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with("location:")
                .then(|| l[9..].trim().to_string())
        })
        .expect("Location");
    assert!(location.starts_with(&format!("{whep}/")), "{location}");
    let b = post(&admin, &whep, good.as_bytes());
    assert_eq!(b.status, 201, "{}", b.body);
    let c = post(&admin, &whep, good.as_bytes());
    assert_eq!(c.status, 503, "{}", c.body);
    assert!(is_json(&c));
    let snap = gw.snapshot();
    assert_eq!(snap.webrtc_sessions.len(), 2);
    assert_eq!(snap.webrtc_refused, 1);
    // The API lists them as webrtc readers, with their user.
    let list = http(
        addr,
        "GET",
        "/v1/sessions",
        &[("Authorization", &admin)],
        b"",
    );
    let list: Value = serde_json::from_str(&list.body).unwrap();
    let webrtc: Vec<&Value> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["protocol"] == "webrtc")
        .collect();
    assert_eq!(webrtc.len(), 2, "{list}");
    assert_eq!(webrtc[0]["user"], "admin");
    // A wrong token ends nothing; the right one ends its session; the API kicks the other.
    let r = http(
        addr,
        "DELETE",
        &format!("{whep}/00000000000000000000000000000000"),
        &[("Authorization", &admin)],
        b"",
    );
    assert_eq!(r.status, 404);
    assert_eq!(
        http(addr, "DELETE", &location, &[("Authorization", &other)], b"").status,
        403
    );
    assert_eq!(
        http(addr, "DELETE", &location, &[("Authorization", &admin)], b"").status,
        200
    );
    assert_eq!(gw.snapshot().webrtc_sessions.len(), 1);
    let n = webrtc
        .iter()
        .map(|s| s["id"].as_u64().unwrap())
        .find(|n| {
            gw.snapshot()
                .webrtc_sessions
                .iter()
                .any(|s| s.id == n.to_string())
        })
        .unwrap();
    let r = http(
        addr,
        "DELETE",
        &format!("/v1/sessions/{n}"),
        &[("Authorization", &admin)],
        b"",
    );
    assert_eq!(r.status, 204, "{}", r.body);
    assert!(gw.snapshot().webrtc_sessions.is_empty());

    // Peers that never connect are ended after webrtc_connect_timeout_s.
    for _ in 0..2 {
        assert_eq!(post(&admin, &whep, good.as_bytes()).status, 201);
    }
    let t = std::time::Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || gw
            .snapshot()
            .webrtc_sessions
            .is_empty()),
        "unconnected WebRTC readers are ended"
    );
    println!("unconnected WHEP sessions ended after {:?}", t.elapsed());
    // And the gateway still serves: a new offer is answered.
    assert_eq!(post(&admin, &whep, good.as_bytes()).status, 201);
    let m = http(addr, "GET", "/metrics", &[("Authorization", &admin)], b"");
    assert!(
        m.body.contains("webrtc_sessions_refused_total 1"),
        "{}",
        m.body
    );
}

/// An H.265 channel is not sent over WebRTC: 406 with a message naming HLS.
#[test]
fn whep_answers_h265_channels_with_use_hls() {
    let _g = serial();
    gst_ipcam_gateway::gateway::init().unwrap();
    let cfg = Config {
        sim_codec: "h265".into(),
        ..config()
    };
    let gw = Gateway::start(cfg).expect("gateway starts");
    assert!(wait_until(Duration::from_secs(10), || !gw
        .channels()
        .is_empty()));
    let channel = gw.channels()[0].clone();
    let admin = gst_ipcam_gateway::auth::basic_value(ADMIN.0, ADMIN.1);
    let r = http(
        gw.metrics_addr().unwrap(),
        "POST",
        &format!("/{channel}/whep"),
        &[
            ("Content-Type", "application/sdp"),
            ("Authorization", &admin),
        ],
        whep_offer(1).as_bytes(),
    );
    assert_eq!(r.status, 406, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert!(v["message"].as_str().unwrap().contains("HLS"), "{v}");
    assert!(gw.snapshot().webrtc_sessions.is_empty());
}

/// One address cannot take every WebRTC reader: at most `http_max_connections_per_ip` of
/// them (429 beyond), the gateway's cap on HTTP connections per address.
#[test]
fn whep_caps_sessions_per_address() {
    let _g = serial();
    gst_ipcam_gateway::gateway::init().unwrap();
    let mut cfg = config();
    cfg.webrtc_max_sessions = 10;
    cfg.http_max_connections_per_ip = 2;
    let gw = Gateway::start(cfg).expect("gateway starts");
    assert!(wait_until(Duration::from_secs(10), || !gw
        .channels()
        .is_empty()));
    let whep = format!("/{}/whep", gw.channels()[0]);
    let admin = gst_ipcam_gateway::auth::basic_value(ADMIN.0, ADMIN.1);
    let post = || {
        http(
            gw.metrics_addr().unwrap(),
            "POST",
            &whep,
            &[
                ("Content-Type", "application/sdp"),
                ("Authorization", &admin),
            ],
            whep_offer(1).as_bytes(),
        )
    };
    assert_eq!(post().status, 201);
    assert_eq!(post().status, 201);
    let r = post();
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.body.contains("from this address"), "{}", r.body);
    assert_eq!(gw.snapshot().webrtc_sessions.len(), 2);
}

/// A WebRTC peer in this process (webrtcbin, ICE on 127.0.0.1) receiving `path`'s WHEP
/// stream: its pipeline and the src pad its video comes out of, once it has frames.
struct Peer {
    pipeline: gst::Pipeline,
    video: std::sync::Arc<std::sync::Mutex<Option<gst::Pad>>>,
    frames: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Peer {
    fn connect(addr: std::net::SocketAddr, path: &str, auth: &str) -> Peer {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::{Arc, Mutex};
        let pipeline = gst::Pipeline::new();
        let wb = gst::ElementFactory::make("webrtcbin")
            .property_from_str("bundle-policy", "max-bundle")
            .build()
            .unwrap();
        pipeline.add(&wb).unwrap();
        let ice = wb.property::<gst_webrtc::WebRTCICE>("ice-agent");
        assert!(ice.emit_by_name::<bool>("add-local-ip-address", &[&"127.0.0.1"]));
        // Loopback only: no SSDP search for a router.
        gst_ipcam_gateway::webrtc::session::disable_upnp(&ice);
        let caps: gst::Caps =
            "application/x-rtp,media=video,encoding-name=H264,payload=102,clock-rate=90000,\
             packetization-mode=(string)1,profile-level-id=(string)42e01f,\
             rtcp-fb-nack-pli=(boolean)true"
                .parse()
                .unwrap();
        wb.emit_by_name::<gst_webrtc::WebRTCRTPTransceiver>(
            "add-transceiver",
            &[&gst_webrtc::WebRTCRTPTransceiverDirection::Recvonly, &caps],
        );
        let video = Arc::new(Mutex::new(None));
        let frames = Arc::new(AtomicU64::new(0));
        let (v, f, p) = (video.clone(), frames.clone(), pipeline.downgrade());
        wb.connect_pad_added(move |_, pad| {
            let Some(p) = p.upgrade() else { return };
            let sink = gst::ElementFactory::make("fakesink")
                .property("sync", false)
                .build()
                .unwrap();
            p.add(&sink).unwrap();
            sink.sync_state_with_parent().unwrap();
            pad.link(&sink.static_pad("sink").unwrap()).unwrap();
            let f = f.clone();
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                f.fetch_add(1, Ordering::Relaxed);
                gst::PadProbeReturn::Ok
            });
            *v.lock().unwrap() = Some(pad.clone());
        });
        pipeline.set_state(gst::State::Playing).unwrap();
        let p = gst::Promise::new();
        wb.emit_by_name::<()>("create-offer", &[&None::<gst::Structure>, &p]);
        assert_eq!(p.wait(), gst::PromiseResult::Replied);
        let offer = p
            .get_reply()
            .unwrap()
            .get::<gst_webrtc::WebRTCSessionDescription>("offer")
            .unwrap();
        wb.emit_by_name::<()>("set-local-description", &[&offer, &None::<gst::Promise>]);
        assert!(
            wait_until(Duration::from_secs(10), || wb
                .property::<gst_webrtc::WebRTCICEGatheringState>("ice-gathering-state")
                == gst_webrtc::WebRTCICEGatheringState::Complete),
            "ICE gathering completes"
        );
        let sdp = wb
            .property::<gst_webrtc::WebRTCSessionDescription>("local-description")
            .sdp()
            .as_text()
            .unwrap();
        let r = http(
            addr,
            "POST",
            path,
            &[("Content-Type", "application/sdp"), ("Authorization", auth)],
            sdp.as_bytes(),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        assert!(
            r.body.contains("nack pli"),
            "the answer takes PLI: {}",
            r.body
        );
        let answer = gst_webrtc::WebRTCSessionDescription::new(
            gst_webrtc::WebRTCSDPType::Answer,
            gst_sdp::SDPMessage::parse_buffer(r.body.as_bytes()).unwrap(),
        );
        wb.emit_by_name::<()>("set-remote-description", &[&answer, &None::<gst::Promise>]);
        let peer = Peer {
            pipeline,
            video,
            frames,
        };
        assert!(
            wait_until(Duration::from_secs(15), || peer
                .frames
                .load(Ordering::Relaxed)
                > 10),
            "the peer receives video"
        );
        peer
    }

    /// What a receiver does on a decoding error: asks upstream for a key unit, which its
    /// rtpsession sends to the gateway as RTCP PLI.
    fn send_pli(&self) {
        let pad = self.video.lock().unwrap().clone().unwrap();
        let ev = gst::event::CustomUpstream::new(
            gst::Structure::builder("GstForceKeyUnit")
                .field("all-headers", true)
                .build(),
        );
        pad.send_event(ev);
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Key frame requests the camera saw within `d` (its sink posts one per IFameCmd).
fn camera_key_requests(bus: &gst::Bus, d: Duration, mut during: impl FnMut()) -> usize {
    let end = Instant::now() + d;
    let mut n = 0;
    while Instant::now() < end {
        during();
        while let Some(m) = bus.timed_pop_filtered(
            gst::ClockTime::from_mseconds(50),
            &[gst::MessageType::Element],
        ) {
            if m.structure()
                .is_some_and(|s| s.name() == "gb28181-key-frame-requested")
            {
                n += 1;
            }
        }
    }
    n
}

/// Local ports of this process's UDP sockets (IPv4 and IPv6), from /proc.
fn own_udp_ports() -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let mut ports = Vec::new();
    for table in ["/proc/self/net/udp", "/proc/self/net/udp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(inode)) = (f.get(1), f.get(9)) else {
                continue;
            };
            if inodes.iter().any(|i| i == inode)
                && let Some(port) = local.rsplit(':').next()
                && let Ok(port) = u16::from_str_radix(port, 16)
            {
                ports.push(port);
            }
        }
    }
    ports
}

/// A viewer's PLI reaches the camera as a key frame request (GB28181 IFameCmd), and a flood
/// of them is rate-limited per channel (key_frame_request_after_s = 2 s): the camera is not
/// made to send only I-frames.
#[test]
fn whep_peer_pli_reaches_the_camera_rate_limited() {
    let _g = serial();
    gst_ipcam_gateway::gateway::init().unwrap();
    let gw = Gateway::start(config()).expect("gateway starts");
    assert!(wait_until(Duration::from_secs(10), || !gw
        .channels()
        .is_empty()));
    let channel = gw.channels()[0].clone();
    let admin = gst_ipcam_gateway::auth::basic_value(ADMIN.0, ADMIN.1);
    let bus = gw.cameras()[0].pipeline().bus().unwrap();
    // GStreamer CRITICALs while PLIs come in (each one was a double unref of the key unit
    // event the gateway drops).
    let criticals = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let handler = {
        let c = criticals.clone();
        gst::glib::log_set_handler(
            Some("GStreamer"),
            gst::glib::LogLevels::LEVEL_CRITICAL,
            false,
            false,
            move |_, _, msg| {
                eprintln!("GStreamer CRITICAL: {msg}");
                c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            },
        )
    };
    let peer = Peer::connect(
        gw.metrics_addr().unwrap(),
        &format!("/{channel}/whep"),
        &admin,
    );
    // Requests from the start (a viewer waiting for its first key frame) are not counted,
    // nor is the rate limit's window they opened.
    camera_key_requests(&bus, Duration::from_millis(2500), || {});
    // One PLI: one request.
    peer.send_pli();
    let one = camera_key_requests(&bus, Duration::from_millis(1500), || {});
    assert_eq!(one, 1, "one PLI, one key frame request");
    camera_key_requests(&bus, Duration::from_millis(1000), || {});
    // A flood: 20 PLIs a second for 6 s.
    let t = Instant::now();
    let mut sent = 0;
    let flood = camera_key_requests(&bus, Duration::from_secs(6), || {
        peer.send_pli();
        sent += 1;
    });
    println!(
        "{sent} PLIs in {:?}: {flood} key frame requests to the camera",
        t.elapsed()
    );
    assert!(sent >= 60, "{sent}");
    assert!((2..=4).contains(&flood), "{flood} requests for {sent} PLIs");
    // The gateway still serves.
    assert!(peer.frames.load(std::sync::atomic::Ordering::Relaxed) > 0);
    assert_eq!(gw.snapshot().webrtc_sessions.len(), 1);
    // Its ICE agent did not look for a router: libnice's UPnP would have opened an SSDP
    // socket (UDP 1900) in this process during the session's candidate gathering.
    assert_eq!(own_udp_ports().iter().filter(|p| **p == 1900).count(), 0);
    gst::glib::log_remove_handler(Some("GStreamer"), handler);
    assert_eq!(
        criticals.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "GStreamer CRITICALs while handling PLIs"
    );
}

/// H.265 cameras in the browser: the page's plain WHEP offer gets 406, it asks for
/// `?transcode=h264` and says so; Chromium decodes the gateway's H.264. One transcoder per
/// channel, shared by its viewers, at most `webrtc_max_transcodes` channels (503 beyond),
/// stopped after its last viewer; hostile queries are refused (400).
#[test]
fn chromium_plays_an_h265_camera_transcoded_to_h264() {
    let _g = serial();
    gst_ipcam_gateway::gateway::init().unwrap();
    let cfg = Config {
        sim_codec: "h265".into(),
        simulate: 2,
        webrtc_max_transcodes: 1,
        webrtc_connect_timeout_s: 2,
        ..config()
    };
    let gw = Gateway::start(cfg).expect("gateway starts");
    assert!(
        wait_until(Duration::from_secs(15), || gw.channels().len() == 2),
        "both simulated cameras are mounted"
    );
    let (a, b) = (gw.channels()[0].clone(), gw.channels()[1].clone());
    let addr = gw.metrics_addr().unwrap();
    let base = format!("http://{addr}");
    let admin = gst_ipcam_gateway::auth::basic_value(ADMIN.0, ADMIN.1);
    let post = |path: &str| {
        http(
            addr,
            "POST",
            path,
            &[
                ("Content-Type", "application/sdp"),
                ("Authorization", &admin),
            ],
            whep_offer(1).as_bytes(),
        )
    };
    let transcodes = || gw.snapshot().webrtc_transcodes;
    // Hostile queries: refused before anything starts.
    let long = format!("/{a}/whep?transcode={}", "h264".repeat(50));
    for q in [
        format!("/{a}/whep?transcode=h265"),
        format!("/{a}/whep?transcode=h264&transcode=h264"),
        format!("/{a}/whep?x=%00%ff"),
        format!("/{a}/whep?transcode"),
        long,
    ] {
        let r = post(&q);
        assert_eq!(r.status, 400, "{}: {}", &q[..q.len().min(80)], r.body);
    }
    // A 20 KB query: refused by the HTTP stack or by us.
    let huge = post(&format!("/{a}/whep?transcode={}", "h264".repeat(5000)));
    assert!(
        (400..500).contains(&huge.status) || huge.status == 0,
        "{}",
        huge.status
    );
    assert_eq!(transcodes(), 0);

    let browser = chromium();
    let mut page = Page::open(&browser);
    log_in(&mut page, &base, &a);
    let r = page.eval(&format!("{PLAY_AND_TIME}('{a}')"));
    let ms = r["ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("no frame decoded: {r}"));
    println!(
        "browser: H.265 camera, click to first decoded (transcoded) frame {ms:.0} ms ({} frames)",
        r["frames"]
    );
    let note = page.eval("document.getElementById('note').textContent");
    assert!(
        note.as_str().is_some_and(|t| t.contains("transcoded")),
        "the page says it is transcoded: {note}"
    );
    assert_eq!(transcodes(), 1);
    let m = http(addr, "GET", "/metrics", &[("Authorization", &admin)], b"");
    assert!(m.body.contains("webrtc_transcodes 1"), "{}", m.body);

    // A second viewer of the same channel shares the transcoder; another channel is over
    // the cap.
    assert_eq!(post(&format!("/{a}/whep?transcode=h264")).status, 201);
    assert_eq!(transcodes(), 1, "one transcoder per channel");
    let r = post(&format!("/{b}/whep?transcode=h264"));
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("webrtc_max_transcodes"), "{}", r.body);
    // Without the query, H.265 is still 406.
    assert_eq!(post(&format!("/{b}/whep")).status, 406);

    // The last viewer gone (the page stops, the unconnected one times out): no transcoder.
    page.eval("document.getElementById('stop').click(); true");
    let t = Instant::now();
    assert!(
        wait_until(Duration::from_secs(15), || transcodes() == 0
            && gw.snapshot().webrtc_sessions.is_empty()),
        "the transcoder stops after the last viewer"
    );
    println!(
        "transcoder stopped {:?} after the last viewer's stop",
        t.elapsed()
    );
    let m = http(addr, "GET", "/metrics", &[("Authorization", &admin)], b"");
    assert!(m.body.contains("webrtc_transcodes 0"), "{}", m.body);
    // The cap is free again: the other channel can be transcoded.
    assert_eq!(post(&format!("/{b}/whep?transcode=h264")).status, 201);
    assert_eq!(transcodes(), 1);
}

/// The transcoded H.264 reaches a WebRTC peer (webrtcbin) too.
#[test]
fn whep_peer_receives_an_h265_camera_transcoded() {
    let _g = serial();
    gst_ipcam_gateway::gateway::init().unwrap();
    let cfg = Config {
        sim_codec: "h265".into(),
        ..config()
    };
    let gw = Gateway::start(cfg).expect("gateway starts");
    assert!(wait_until(Duration::from_secs(10), || !gw
        .channels()
        .is_empty()));
    let channel = gw.channels()[0].clone();
    let admin = gst_ipcam_gateway::auth::basic_value(ADMIN.0, ADMIN.1);
    let peer = Peer::connect(
        gw.metrics_addr().unwrap(),
        &format!("/{channel}/whep?transcode=h264"),
        &admin,
    );
    assert_eq!(gw.snapshot().webrtc_transcodes, 1);
    drop(peer);
}

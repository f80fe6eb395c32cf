//! Pulled cameras end to end over loopback: a simulated RTSP camera (gst-rtsp-server in this
//! process, H.264 + AAC, Basic and Digest authentication) pulled by the gateway binary
//! through `[[paths]]` tables, read with ffprobe; the camera counts DESCRIBE and TEARDOWN per
//! stream. Covered: on demand (no camera session before the first reader, closed after the
//! last), always on, reconnection after the camera restarts, a wrong camera password (a
//! clear error, the reader refused, the gateway serving on), loss and jitter of an impaired
//! camera in the metrics and the API, and the camera password nowhere in what the gateway
//! prints or serves. Bad `[[paths]]` tables: exit 2 with the reason.

mod common;
use common::*;

use gst::glib;
use gst::prelude::*;
use gst_ipcam_testutil::{Impairer, Impairment, wait_until};
use gst_rtsp_server::prelude::*;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CAM_USER: &str = "cam-admin";
const CAM_PASS: &str = "Cam-Pw-9173x";
const WRONG_PASS: &str = "Wrong-Pw-5521y";

/// Requests the camera got, per (method, stream path).
type Counts = Arc<Mutex<HashMap<(&'static str, String), u32>>>;

/// A simulated RTSP camera: `/main`, `/yard` and `/lossy` (the last with a seeded 5 % loss
/// of its video RTP), users by Basic and Digest.
struct Camera {
    server: gst_rtsp_server::RTSPServer,
    ctx: glib::MainContext,
    source: Option<glib::SourceId>,
    main_loop: glib::MainLoop,
    thread: Option<std::thread::JoinHandle<()>>,
    port: u16,
    counts: Counts,
}

impl Camera {
    fn start(port: u16, counts: Counts) -> Camera {
        gst::init().unwrap();
        let ctx = glib::MainContext::new();
        let server = gst_rtsp_server::RTSPServer::new();
        server.set_address("127.0.0.1");
        server.set_service(&port.to_string());
        let auth = gst_rtsp_server::RTSPAuth::new();
        let token = gst_rtsp_server::RTSPToken::builder()
            .field(gst_rtsp_server::RTSP_TOKEN_MEDIA_FACTORY_ROLE, "cam")
            .build();
        let basic = gst_rtsp_server::RTSPAuth::make_basic(CAM_USER, CAM_PASS);
        auth.add_basic(&basic, &token);
        auth.add_digest(CAM_USER, CAM_PASS, &token);
        // Digest asked of clients (what cameras ask); Basic taken too.
        auth.set_supported_methods(gst_rtsp_server::gst_rtsp::RTSPAuthMethod::Digest);
        server.set_auth(Some(&auth));
        let mounts = server.mount_points().unwrap();
        for name in ["main", "yard", "lossy"] {
            let factory = gst_rtsp_server::RTSPMediaFactory::new();
            factory.set_launch(
                "( videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=25/1 \
                 ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 bitrate=500 \
                 ! rtph264pay name=pay0 pt=96 \
                 audiotestsrc is-live=true ! audio/x-raw,rate=16000,channels=1 ! audioconvert \
                 ! avenc_aac ! rtpmp4gpay name=pay1 pt=97 )",
            );
            factory.set_shared(true);
            factory.add_role_from_structure(
                &gst::Structure::builder("cam")
                    .field(gst_rtsp_server::RTSP_PERM_MEDIA_FACTORY_ACCESS, true)
                    .field(gst_rtsp_server::RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, true)
                    .build(),
            );
            if name == "lossy" {
                factory.connect_media_configure(|_, media| {
                    let bin = media.element().downcast::<gst::Bin>().unwrap();
                    let pad = bin.by_name("pay0").unwrap().static_pad("src").unwrap();
                    impair(&pad);
                });
            }
            mounts.add_factory(&format!("/{name}"), factory);
        }
        let c = counts.clone();
        server.connect_client_connected(move |_, client| {
            for (method, count) in [("DESCRIBE", c.clone()), ("TEARDOWN", c.clone())] {
                let record = move |ctx: &gst_rtsp_server::RTSPContext| {
                    let path = ctx
                        .uri()
                        .map(|u| u.request_uri().to_string())
                        .and_then(|u| {
                            u.split('/')
                                .nth(3)
                                .map(|p| p.trim_end_matches("/").to_string())
                        })
                        .unwrap_or_default();
                    *count.lock().unwrap().entry((method, path)).or_default() += 1;
                };
                if method == "DESCRIBE" {
                    client.connect_describe_request(move |_, ctx| record(ctx));
                } else {
                    client.connect_teardown_request(move |_, ctx| record(ctx));
                }
            }
        });
        let source = server.attach(Some(&ctx)).unwrap();
        let port = server.bound_port() as u16;
        let main_loop = glib::MainLoop::new(Some(&ctx), false);
        let (ml, c2) = (main_loop.clone(), ctx.clone());
        let thread = std::thread::spawn(move || {
            c2.with_thread_default(|| ml.run()).unwrap();
        });
        Camera {
            server,
            ctx,
            source: Some(source),
            main_loop,
            thread: Some(thread),
            port,
            counts,
        }
    }

    fn count(&self, method: &'static str, path: &str) -> u32 {
        count(&self.counts, method, path)
    }

    /// Closes every connection and the listening socket.
    fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(id) = self.source.take() {
            self.server
                .client_filter(Some(&mut |_, _| gst_rtsp_server::RTSPFilterResult::Remove));
            if let Some(s) = self.ctx.find_source_by_id(&id) {
                s.destroy();
            }
            self.main_loop.quit();
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn count(counts: &Counts, method: &'static str, path: &str) -> u32 {
    counts
        .lock()
        .unwrap()
        .get(&(method, path.to_string()))
        .copied()
        .unwrap_or(0)
}

/// Drops RTP packets leaving `pad` as the project's seeded impairment model says (5 %).
fn impair(pad: &gst::Pad) {
    let model = Mutex::new(Impairer::new(Impairment::loss(0.05, 7)));
    let keep = move |b: &gst::BufferRef| {
        let bytes = b.map_readable().map(|m| m.to_vec()).unwrap_or_default();
        !model.lock().unwrap().process(bytes).is_empty()
    };
    pad.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
        move |_, info| match &mut info.data {
            Some(gst::PadProbeData::Buffer(b)) if !keep(b) => gst::PadProbeReturn::Drop,
            Some(gst::PadProbeData::BufferList(l)) => {
                let mut kept = gst::BufferList::new();
                for b in l.iter_owned() {
                    if keep(&b) {
                        kept.get_mut().unwrap().add(b);
                    }
                }
                *l = kept;
                gst::PadProbeReturn::Ok
            }
            _ => gst::PadProbeReturn::Ok,
        },
    );
}

/// `GET path` on the metrics/API port as the anonymous user.
fn http_get(port: u16, path: &str) -> String {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The status line the gateway answers a DESCRIBE of `path` with.
fn describe_status(rtsp: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", rtsp)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "DESCRIBE rtsp://127.0.0.1:{rtsp}/{path} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n"
    )
    .unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

fn sample(metrics: &str, name: &str, path: &str) -> Option<f64> {
    gst_ipcam_gateway::metrics::find_samples(metrics, name, &format!("name=\"{path}\""))
        .first()
        .copied()
}

fn ready(metrics_port: u16, path: &str) -> bool {
    http_get(metrics_port, "/metrics")
        .contains(&format!("paths{{name=\"{path}\",state=\"ready\"}} 1"))
}

fn write_config(dir: &Path, cam: u16) -> std::path::PathBuf {
    let conf = dir.join("gateway.toml");
    let src = |pw: &str, stream: &str| format!("rtsp://{CAM_USER}:{pw}@127.0.0.1:{cam}/{stream}");
    std::fs::write(
        &conf,
        format!(
            "[[users]]\nuser = \"any\"\n\
             permissions = [{{action = \"read\"}}, {{action = \"metrics\"}}, {{action = \"api\"}}]\n\
             [[paths]]\nname = \"garage\"\nsource = \"{}\"\nsource_protocol = \"tcp\"\n\
             source_on_demand_close_after_s = 1\n\
             [[paths]]\nname = \"yard\"\nsource = \"{}\"\nsource_protocol = \"tcp\"\n\
             source_on_demand = false\n\
             [[paths]]\nname = \"lossy\"\nsource = \"{}\"\nsource_protocol = \"udp\"\n\
             source_on_demand = false\n\
             [[paths]]\nname = \"wrongpw\"\nsource = \"{}\"\n",
            src(CAM_PASS, "main"),
            src(CAM_PASS, "yard"),
            src(CAM_PASS, "lossy"),
            src(WRONG_PASS, "main"),
        ),
    )
    .unwrap();
    conf
}

#[test]
fn pulled_camera_on_demand_always_on_reconnected_and_password_kept_secret() {
    let _g = serial();
    let dir = scratch("pull");
    let counts: Counts = Default::default();
    let cam = Camera::start(0, counts.clone());
    let cam_port = cam.port;
    let conf = write_config(&dir, cam_port);
    let (sip, rtsp, m) = (free_port(), free_port(), free_port());
    let stderr = std::fs::File::create(dir.join("stderr")).unwrap();
    let mut cmd = gateway_command(&conf, sip, rtsp, m);
    cmd.args(["--summary-interval-s", "0", "--simulate", "0"])
        .stderr(stderr);
    let mut gw = GatewayProcess::spawn(cmd);
    assert!(
        gw.wait_for("[gateway] path wrongpw", Duration::from_secs(20)),
        "{:?}",
        gw.lines()
    );

    // Always-on paths are opened by themselves; the on-demand one is not.
    assert!(
        wait_until(Duration::from_secs(30), || ready(m, "yard")
            && ready(m, "lossy")),
        "{}",
        http_get(m, "/metrics")
    );
    assert_eq!(
        cam.count("DESCRIBE", "main"),
        0,
        "no session before a reader"
    );

    // The first reader opens the camera; frames flow.
    let url = |p: &str| format!("rtsp://127.0.0.1:{rtsp}/{p}");
    let probe = ffprobe_frames(
        &["-rtsp_transport", "tcp", "-read_intervals", "%+3"],
        &url("garage"),
    );
    assert!(frames_of(&probe, "h264") >= 25, "{probe:?}");
    assert!(frames_of(&probe, "aac") > 0, "{probe:?}");
    assert_eq!(cam.count("DESCRIBE", "main"), 1);
    // Closed after the last reader (1 s later).
    assert!(
        wait_until(Duration::from_secs(10), || cam.count("TEARDOWN", "main")
            >= 1),
        "{counts:?}"
    );

    // A wrong camera password: the reader is refused, the reason is said, the gateway serves on.
    // Refused at DESCRIBE (gst-rtsp-server 1.22 answers 400 when a factory makes no media).
    let status = describe_status(rtsp, "wrongpw");
    assert!(
        status.starts_with("RTSP/1.0 4") || status.starts_with("RTSP/1.0 5"),
        "{status}"
    );
    let bad = ffprobe_frames(&["-rtsp_transport", "tcp"], &url("wrongpw"));
    assert_eq!(frames_of(&bad, "h264"), 0, "{bad:?}");
    let log = || std::fs::read_to_string(dir.join("stderr")).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(5), || log().contains(&format!(
            "channel wrongpw: camera rtsp://127.0.0.1:{cam_port}/main: "
        ))),
        "{}",
        log()
    );

    // Loss and jitter of the impaired camera, in the metrics and the API.
    assert!(
        wait_until(Duration::from_secs(20), || {
            let t = http_get(m, "/metrics");
            sample(&t, "paths_rtp_packets_lost", "lossy").is_some_and(|v| v > 0.0)
                && sample(&t, "paths_rtp_jitter_ms", "lossy").is_some()
        }),
        "{}",
        http_get(m, "/metrics")
    );
    let t = http_get(m, "/metrics");
    assert_eq!(
        sample(&t, "paths_rtp_packets_lost", "yard"),
        Some(0.0),
        "{t}"
    );
    let api = http_get(m, "/v1/paths");
    let body = api.split("\r\n\r\n").nth(1).unwrap_or("");
    let list: serde_json::Value = serde_json::from_str(body).expect(&api);
    let lossy = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "lossy")
        .expect(body);
    assert_eq!(lossy["source"]["type"], "rtspSource");
    assert_eq!(lossy["ready"], true);
    assert!(lossy["rtp_packets_lost"].as_u64().unwrap() > 0, "{lossy}");
    assert!(lossy["rtp_jitter_ms"].as_f64().is_some(), "{lossy}");

    // The camera restarts: the always-on path comes back by itself, readers get it again.
    cam.stop();
    assert!(
        wait_until(Duration::from_secs(30), || !ready(m, "yard")),
        "{}",
        http_get(m, "/metrics")
    );
    let cam = Camera::start(cam_port, counts.clone());
    assert!(
        wait_until(Duration::from_secs(60), || ready(m, "yard")),
        "{}",
        log()
    );
    let probe = ffprobe_frames(
        &["-rtsp_transport", "tcp", "-read_intervals", "%+3"],
        &url("garage"),
    );
    assert!(frames_of(&probe, "h264") >= 25, "{probe:?}");

    // The camera password appears nowhere: logs, metrics, API.
    let config = http_get(m, "/v1/config");
    assert!(
        config.contains(&format!("rtsp://{CAM_USER}:***@127.0.0.1:{cam_port}/main")),
        "{config}"
    );
    let everything = [
        log(),
        gw.lines().join("\n"),
        http_get(m, "/metrics"),
        http_get(m, "/v1/paths"),
        config,
    ]
    .join("\n");
    for secret in [CAM_PASS, WRONG_PASS] {
        assert!(
            !everything.contains(secret),
            "{secret} leaked:\n{everything}"
        );
    }
    drop(cam);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_paths_exit_2_with_the_reason() {
    let dir = scratch("pull-bad-config");
    let f = dir.join("gw.toml");
    for (body, reason) in [
        (
            "[[paths]]\nname = \"x\"\nsource = \"file:///etc/passwd\"\n",
            "path x: source: scheme `file` is not rtsp or rtsps",
        ),
        (
            "[[paths]]\nname = \"../etc\"\nsource = \"rtsp://cam/x\"\n",
            "bad path segment \"..\"",
        ),
        (
            "[[paths]]\nname = \"v1\"\nsource = \"rtsp://cam/x\"\n",
            "path name \"v1\" is reserved",
        ),
        (
            "[[paths]]\nname = \"x\"\nsource = \"rtsp://cam/x\"\nsource_protocol = \"sctp\"\n",
            "not one of automatic, tcp, udp",
        ),
        (
            "[[paths]]\nname = \"x\"\nsource = \"rtsp://cam/x\"\n[[paths]]\nname = \"x\"\nsource = \"rtsp://cam/y\"\n",
            "path x given twice",
        ),
        (
            "[[paths]]\nname = \"x\"\nsource = \"rtsp://cam/x\"\nsourc = 1\n",
            "unknown field `sourc`",
        ),
    ] {
        std::fs::write(&f, body).unwrap();
        let out = Command::new(gateway_bin())
            .args(["--config", f.to_str().unwrap(), "--check-config"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{body}: {err}");
        assert!(err.contains(reason), "{body}: {err}");
    }
    // A good one is accepted, and --check-config does not print the camera password.
    std::fs::write(
        &f,
        "[[paths]]\nname = \"garage\"\nsource = \"rtsp://u:s3cr3t-pw@cam:554/x\"\n",
    )
    .unwrap();
    let out = Command::new(gateway_bin())
        .args(["--config", f.to_str().unwrap(), "--check-config"])
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("# 1 pulled path(s)"), "{all}");
    assert!(!all.contains("s3cr3t-pw"), "{all}");
    std::fs::remove_dir_all(&dir).ok();
}

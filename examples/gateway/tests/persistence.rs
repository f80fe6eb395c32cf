//! Persistence under `--data-dir`: the gateway as a process is killed with SIGKILL and
//! started again on the same data dir; its device tree comes back before any REGISTER and a
//! camera whose registration is still valid is served again after its next keepalive, without
//! registering again. A keepalive for a restored device from another address is refused. An
//! unusable data dir stops the start with a clear error. Loopback only, bounded waits.

mod common;
use common::*;

use gst::prelude::*;
use gst_ipcam_gateway::auth::UserConfig;
use gst_ipcam_gateway::sim::wait_until;
use gst_ipcam_gateway::store::{self, ChannelInfo, Limits, Store, Write};
use std::io::{Read, Write as _};
use std::net::{TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const SERVER_ID: &str = "34020000002000000001";
const DEVICE: &str = "34020000001320000001";
const CHANNEL: &str = "34020000001310000001";
const PASSWORD: &str = "12345678";
/// `reader:reader-pw` (READER) for HTTP Basic.
const READER_BASIC: &str = "cmVhZGVyOnJlYWRlci1wdw==";

/// A gateway process, killed on drop, whose stdout lines are collected.
struct Gateway {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    fn start(conf: &Path, data: &Path, sip: u16, rtsp: u16, metrics: u16) -> Gateway {
        let mut child = gateway_command(conf, sip, rtsp, metrics)
            .args(["--simulate", "0"])
            .args(["--summary-interval-s", "0", "--wait-timeout-s", "10"])
            .args(["--data-dir", data.to_str().unwrap()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let rx = stdout_lines(&mut child);
        Gateway {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits (at most `secs`) for a line containing `what`; every line read is kept.
    fn wait_for(&mut self, what: &str, secs: u64) -> bool {
        if self.seen.iter().any(|l| l.contains(what)) {
            return true;
        }
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            if let Ok(l) = self.lines.recv_timeout(Duration::from_millis(100)) {
                let hit = l.contains(what);
                self.seen.push(l);
                if hit {
                    return true;
                }
            }
        }
        false
    }

    /// The lines read so far (and those waiting).
    fn lines(&mut self) -> &[String] {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
        &self.seen
    }

    fn kill9(&mut self) {
        self.child.kill().unwrap(); // SIGKILL
        let _ = self.child.wait();
    }
}

/// A config file with the reader (read and metrics).
fn config(dir: &Path) -> PathBuf {
    let reader = UserConfig::with_password(READER.0, READER.1, &[]).unwrap();
    let conf = dir.join("gateway.toml");
    std::fs::write(
        &conf,
        format!(
            "[[users]]\nuser = \"{}\"\npass = \"{}\"\n\
             permissions = [{{action = \"read\"}}, {{action = \"metrics\"}}]\n",
            READER.0, reader.pass
        ),
    )
    .unwrap();
    conf
}

/// The device tree as stored: (device, manufacturer, [(channel, name, status, ptz type)]).
type Tree = Vec<(String, String, Vec<(String, String, String, Option<u32>)>)>;

fn stored_tree(data: &Path) -> Tree {
    let s = Store::open(
        data,
        Limits {
            max_devices: 100,
            max_channels_per_device: 100,
        },
    )
    .unwrap();
    s.devices()
        .unwrap()
        .into_iter()
        .map(|d| {
            let chans = s
                .channels(&d.id)
                .unwrap()
                .into_iter()
                .map(|c| (c.id, c.name, c.status, c.ptz_type))
                .collect();
            (d.id, d.manufacturer, chans)
        })
        .collect()
}

/// A GB28181 camera in this process: live H.264 through psmux into gb28181sink, keepalives
/// every second; counts its successful REGISTERs.
struct Camera {
    pipeline: gst::Pipeline,
    sink: gst::Element,
    registers: Arc<AtomicU32>,
}

impl Camera {
    fn start(sip: u16) -> Camera {
        gst_ipcam_gateway::gateway::init().unwrap();
        let desc = format!(
            "videotestsrc is-live=true pattern=ball \
             ! video/x-raw,width=320,height=240,framerate=25/1 \
             ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 bitrate=300 \
             ! video/x-h264,profile=baseline ! h264parse config-interval=-1 \
             ! video/x-h264,stream-format=byte-stream,alignment=au ! psmux \
             ! gb28181sink name=sink server-ip=127.0.0.1 server-port={sip} server-id={SERVER_ID} \
               device-id={DEVICE} channel-id={CHANNEL} password={PASSWORD} \
               keepalive-interval=1000 device-name=Gate"
        );
        let pipeline = gst::parse::launch(&desc)
            .unwrap()
            .downcast::<gst::Pipeline>()
            .unwrap();
        let sink = pipeline.by_name("sink").unwrap();
        let registers = Arc::new(AtomicU32::new(0));
        let r = registers.clone();
        pipeline.bus().unwrap().set_sync_handler(move |_, m| {
            if let gst::MessageView::Element(e) = m.view()
                && e.structure()
                    .is_some_and(|s| s.name() == "gb28181-registered")
            {
                r.fetch_add(1, Ordering::SeqCst);
            }
            gst::BusSyncReply::Drop
        });
        pipeline.set_state(gst::State::Playing).unwrap();
        Camera {
            pipeline,
            sink,
            registers,
        }
    }

    fn stat(&self, name: &str) -> bool {
        self.sink
            .property::<Option<gst::Structure>>("stats")
            .and_then(|s| s.get::<bool>(name).ok())
            .unwrap_or(false)
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn rtsp_url(rtsp: u16) -> String {
    format!(
        "rtsp://{}:{}@127.0.0.1:{rtsp}/{CHANNEL}",
        READER.0, READER.1
    )
}

fn decoded_frames(rtsp: u16) -> u64 {
    let v = ffprobe_frames(
        &["-rtsp_transport", "tcp", "-read_intervals", "%+2"],
        &rtsp_url(rtsp),
    );
    frames_of(&v, "h264")
}

/// A keepalive MESSAGE from `DEVICE`, sent from `sock`; the status of the answer (0: none).
fn keepalive_from(sock: &UdpSocket, sip: u16, n: u32) -> u16 {
    let port = sock.local_addr().unwrap().port();
    let body = gstgb28181::core::manscdp::build_keepalive(n, DEVICE);
    let msg = format!(
        "MESSAGE sip:{SERVER_ID}@3402000000 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{port};rport;branch=z9hG4bK-ka-{port}-{n}\r\n\
         From: <sip:{DEVICE}@3402000000>;tag=ka{n}\r\n\
         To: <sip:{SERVER_ID}@3402000000>\r\n\
         Call-ID: ka-{port}-{n}@127.0.0.1\r\n\
         CSeq: {n} MESSAGE\r\n\
         Max-Forwards: 70\r\n\
         Content-Type: Application/MANSCDP+xml\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    sock.send_to(msg.as_bytes(), ("127.0.0.1", sip)).unwrap();
    let mut buf = [0u8; 4096];
    let Ok(len) = sock.recv(&mut buf) else {
        return 0;
    };
    let text = String::from_utf8_lossy(&buf[..len]);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// `/metrics` as the reader (plain HTTP/1.0 over loopback).
fn metrics(port: u16) -> String {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = write!(
        s,
        "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Basic {READER_BASIC}\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn device_online(port: u16) -> Option<bool> {
    let m = metrics(port);
    let key = format!("gb28181_device_online{{id=\"{DEVICE}\"}} ");
    m.lines()
        .find_map(|l| l.strip_prefix(&key))
        .map(|v| v.trim() == "1")
}

/// kill -9 and a restart on the same data dir: the device tree is back before any REGISTER,
/// the channel is mounted again, and after the camera's next keepalive ffprobe decodes it,
/// while the camera registered only once.
#[test]
fn restart_after_kill9_keeps_tree_and_serves_after_keepalive() {
    let _g = serial();
    let dir = scratch("persist-restart");
    let data = dir.join("data");
    let conf = config(&dir);
    let (sip, rtsp, m) = (free_port(), free_port(), free_port());

    let mut gw = Gateway::start(&conf, &data, sip, rtsp, m);
    assert!(gw.wait_for("[gateway] SIP", 20), "{:?}", gw.lines());
    let cam = Camera::start(sip);
    let mounted = format!("channel {CHANNEL} of device {DEVICE}");
    assert!(gw.wait_for(&mounted, 20), "{:?}", gw.lines());
    assert!(decoded_frames(rtsp) >= 10, "first run");
    // The catalog and DeviceInfo are written; the camera's session is over.
    assert!(
        wait_until(Duration::from_secs(15), || {
            let t = stored_tree(&data);
            t.len() == 1 && !t[0].1.is_empty() && t[0].2.iter().any(|c| c.0 == CHANNEL)
        }),
        "{:?}",
        stored_tree(&data)
    );
    assert!(wait_until(Duration::from_secs(15), || !cam.stat("streaming")));
    let before = stored_tree(&data);
    assert_eq!(before[0].0, DEVICE);
    assert_eq!(before[0].2[0].3, Some(3), "PTZ type from the catalog");
    assert_eq!(cam.registers.load(Ordering::SeqCst), 1);

    gw.kill9();
    drop(gw);
    let restart = Instant::now();
    let mut gw = Gateway::start(&conf, &data, sip, rtsp, m);
    // The tree is back and mounted before the camera said anything.
    assert!(
        gw.wait_for(&format!("device {DEVICE} restored from the data dir"), 20),
        "{:?}",
        gw.lines()
    );
    assert!(gw.wait_for(&mounted, 10), "{:?}", gw.lines());
    assert_eq!(stored_tree(&data), before);
    // Its next keepalive (every second) brings it online.
    assert!(
        gw.wait_for(&format!("device {DEVICE} online"), 15),
        "{:?}",
        gw.lines()
    );
    let online = restart.elapsed();
    assert!(decoded_frames(rtsp) >= 10, "after the restart");
    eprintln!(
        "restart → device online {} ms, → 2 s of video decoded {} ms",
        online.as_millis(),
        restart.elapsed().as_millis()
    );
    assert_eq!(
        cam.registers.load(Ordering::SeqCst),
        1,
        "the camera registered again"
    );
    let registered = format!("device {DEVICE} registered");
    assert!(
        !gw.lines().iter().any(|l| l.contains(&registered)),
        "{:?}",
        gw.lines()
    );
    drop(cam);
    drop(gw);
    std::fs::remove_dir_all(&dir).ok();
}

/// A stored, unexpired registration from 127.0.0.1:A: a keepalive claiming the device from
/// another port gets 403 and leaves it offline; one from A brings it online.
#[test]
fn keepalive_from_another_address_is_refused_for_a_restored_device() {
    let _g = serial();
    let dir = scratch("persist-forged");
    let data = dir.join("data");
    let conf = config(&dir);
    let (sip, rtsp, m) = (free_port(), free_port(), free_port());
    let device_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let attacker = UdpSocket::bind("127.0.0.1:0").unwrap();
    {
        let mut s = Store::open(
            &data,
            Limits {
                max_devices: 10,
                max_channels_per_device: 10,
            },
        )
        .unwrap();
        let addr = device_sock.local_addr().unwrap().to_string();
        let now = gstgb28181::endpoint::now_ms();
        s.apply(&[
            Write::Registered {
                device_id: DEVICE.into(),
                address: addr.clone(),
                transport: "UDP".into(),
                contact: format!("sip:{DEVICE}@{addr}"),
                now_ms: now,
                expires_at_ms: now + 3_600_000,
                refresh: false,
            },
            Write::Catalog {
                device_id: DEVICE.into(),
                channels: vec![ChannelInfo {
                    id: CHANNEL.into(),
                    name: "Gate".into(),
                    ..Default::default()
                }],
            },
        ])
        .unwrap();
    }
    let mut gw = Gateway::start(&conf, &data, sip, rtsp, m);
    assert!(
        gw.wait_for(&format!("device {DEVICE} restored from the data dir"), 20),
        "{:?}",
        gw.lines()
    );
    assert!(wait_until(Duration::from_secs(10), || device_online(m).is_some()));
    assert_eq!(device_online(m), Some(false));

    for n in 1..=3 {
        assert_eq!(keepalive_from(&attacker, sip, n), 403, "forged keepalive");
    }
    assert_eq!(
        device_online(m),
        Some(false),
        "a forged keepalive confirmed it"
    );
    // The device itself, from its recorded address.
    assert_eq!(keepalive_from(&device_sock, sip, 10), 200);
    assert!(wait_until(Duration::from_secs(5), || device_online(m) == Some(true)));
    assert!(
        gw.wait_for(&format!("device {DEVICE} online"), 5),
        "{:?}",
        gw.lines()
    );
    drop(gw);
    std::fs::remove_dir_all(&dir).ok();
}

/// A data dir the gateway cannot use stops the start at once with a message naming the
/// problem (exit 1, no panic): a file that is not a database, and a data dir that is a file.
#[test]
fn unusable_data_dir_stops_the_start_with_a_clear_error() {
    let _g = serial();
    let dir = scratch("persist-corrupt");
    let conf = config(&dir);
    let corrupt = dir.join("corrupt");
    std::fs::create_dir_all(&corrupt).unwrap();
    std::fs::write(corrupt.join(store::DB_FILE), vec![0x5au8; 16 * 1024]).unwrap();
    let not_a_dir = dir.join("plain-file");
    std::fs::write(&not_a_dir, b"x").unwrap();
    for (data, expected) in [
        (&corrupt, "not a database"),
        (&not_a_dir, "not a directory"),
    ] {
        let (sip, rtsp, m) = (free_port(), free_port(), free_port());
        let mut child = gateway_command(&conf, sip, rtsp, m)
            .args(["--simulate", "0"])
            .args(["--data-dir", data.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut status = None;
        let exited = wait_until(Duration::from_secs(20), || {
            status = child.try_wait().unwrap();
            status.is_some()
        });
        if !exited {
            let _ = child.kill();
            let _ = child.wait();
        }
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(exited, "{} kept running", data.display());
        assert_eq!(status.unwrap().code(), Some(1), "{err}");
        assert!(
            err.contains("--data-dir") && err.contains(expected),
            "{}: {err}",
            data.display()
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    // The corrupt file is left as it was.
    assert_eq!(
        std::fs::read(corrupt.join(store::DB_FILE)).unwrap(),
        vec![0x5au8; 16 * 1024]
    );
    std::fs::remove_dir_all(&dir).ok();
}

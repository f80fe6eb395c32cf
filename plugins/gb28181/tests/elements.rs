//! End-to-end tests of gb28181src and gb28181sink in one process on 127.0.0.1:
//! `videotestsrc ! x264enc ! mpegpsmux ! gb28181sink` registers to the endpoint of a
//! `gb28181src ! mpegpsdemux ! h264parse ! avdec_h264 ! appsink` pipeline, which INVITEs it;
//! decoded frames are the oracle (stock x264enc / mpegpsmux / mpegpsdemux / avdec_h264 as
//! independent peers). All loops are bounded by deadlines.

use gst::prelude::*;
use gst_ipcam_testutil::{
    count_samples, is_element_message as element_named, wait_count as wait_frames,
    wait_message as wait_for, wait_until,
};
use gstgb28181::core::client::{ClientAction, RegisterClient, RegisterClientConfig};
use gstgb28181::core::sip::Message;
use gstgb28181::endpoint::SipTransport;
use std::net::UdpSocket;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

mod common;
use common::{endpoint_on, init, serial, sip_port};

const DEVICE: &str = "34020000001320000101";

/// `gb28181src name=src` on 127.0.0.1:`port` (0: any, read back with [`sip_port`]) decoding
/// to a counting appsink.
fn src_pipeline(
    port: u16,
    device: &str,
    transport: &str,
    extra: &str,
) -> (gst::Pipeline, Arc<AtomicUsize>) {
    let p = gst_ipcam_testutil::launch(&format!(
        "gb28181src name=src sip-address=127.0.0.1 sip-port={port} device-id={device} \
         password=secret transport={transport} wait-timeout=15 stream-timeout=5 {extra} \
         ! mpegpsdemux ! h264parse ! avdec_h264 ! appsink name=out sync=false emit-signals=false"
    ));
    let frames = count_samples(&p, "out");
    (p, frames)
}

fn sink_pipeline(port: u16, device: &str, password: &str, extra: &str) -> gst::Pipeline {
    let desc = format!(
        "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=25/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 bitrate=300 ! h264parse \
         ! mpegpsmux ! gb28181sink name=dev server-ip=127.0.0.1 server-port={port} \
         device-id={device} password={password} retry-interval=300 {extra}"
    );
    gst::parse::launch(&desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap()
}

fn live_view(transport: &str) {
    live_view_sip(transport, "udp");
}

/// Live view with media over `transport` and SIP over `sip` (`udp` or `tcp`) on both sides.
fn live_view_sip(transport: &str, sip: &str) {
    init();
    let _g = serial();
    let device = match (transport, sip) {
        (_, "tcp") => "34020000001320000114",
        ("udp", _) => "34020000001320000111",
        ("tcp-passive", _) => "34020000001320000112",
        _ => "34020000001320000113",
    };
    let (src, frames) = src_pipeline(0, device, transport, &format!("sip-transport={sip}"));
    let src_bus = src.bus().unwrap();
    src.set_state(gst::State::Playing).unwrap();
    let port = sip_port(&src, "src");
    let sink = sink_pipeline(
        port,
        device,
        "secret",
        &format!("keepalive-interval=500 sip-transport={sip}"),
    );
    let sink_bus = sink.bus().unwrap();
    sink.set_state(gst::State::Playing).unwrap();

    let reg = wait_for(&src_bus, Duration::from_secs(10), |m| {
        element_named(m, "gb28181-device-registered")
    })
    .expect("device registered message");
    assert_eq!(
        reg.structure().unwrap().get::<String>("device-id").unwrap(),
        device
    );
    let n = wait_frames(&frames, 15, Duration::from_secs(20), &src_bus);
    assert!(n >= 15, "{transport}: only {n} frames decoded");
    let started = wait_for(&sink_bus, Duration::from_secs(2), |m| {
        element_named(m, "gb28181-session-started")
    })
    .expect("session started on the device");
    let t = started
        .structure()
        .unwrap()
        .get::<String>("transport")
        .unwrap();
    assert_eq!(t, transport);
    let stats = src
        .by_name("src")
        .unwrap()
        .property::<gst::Structure>("stats");
    assert!(stats.get::<u64>("frames").unwrap() >= 15, "{stats}");
    // An application polling `stats` while media flows must not wait on the streaming
    // thread's socket receive.
    let el = src.by_name("src").unwrap();
    let slowest = (0..100)
        .map(|_| {
            let t = std::time::Instant::now();
            let _ = el.property::<gst::Structure>("stats");
            let took = t.elapsed();
            // Spreads the 100 reads over the stream (the thing under test), not a wait; not
            // part of the time measured (it used to be: a late wake-up on a loaded machine
            // failed the test).
            std::thread::sleep(Duration::from_millis(2));
            took
        })
        .max()
        .unwrap();
    assert!(
        slowest < Duration::from_millis(100),
        "{transport}: reading stats took {slowest:?}"
    );
    let sink_stats = sink
        .by_name("dev")
        .unwrap()
        .property::<gst::Structure>("stats");
    assert!(
        sink_stats.get::<bool>("registered").unwrap(),
        "{sink_stats}"
    );
    assert!(sink_stats.get::<bool>("connected").unwrap(), "{sink_stats}");

    // The camera hangs up (sink to NULL sends BYE): the source ends with EOS.
    sink.set_state(gst::State::Null).unwrap();
    let eos = wait_for(&src_bus, Duration::from_secs(5), |m| {
        matches!(m.view(), gst::MessageView::Eos(_))
    });
    assert!(eos.is_some(), "{transport}: no EOS after the camera's BYE");
    src.set_state(gst::State::Null).unwrap();
}

#[test]
fn live_view_udp_and_camera_bye_eos() {
    live_view("udp");
}

#[test]
fn live_view_tcp_passive() {
    live_view("tcp-passive");
}

#[test]
fn live_view_tcp_active() {
    live_view("tcp-active");
}

/// SIP over TCP on both sides (the sink connects to the source's endpoint and registers on
/// that connection; INVITE, ACK and the camera's BYE travel on it).
#[test]
fn live_view_sip_over_tcp_and_camera_bye_eos() {
    live_view_sip("udp", "tcp");
}

/// SIP over TCP: the platform's endpoint goes away (its connections close) and comes back on
/// the same port; the sink connects again, registers again and is watched again.
#[test]
fn sip_tcp_platform_restart_device_reconnects_and_registers_again() {
    init();
    let _g = serial();
    let device = "34020000001320000115";
    let (src, frames) = src_pipeline(0, device, "udp", "sip-transport=tcp");
    let src_bus = src.bus().unwrap();
    src.set_state(gst::State::Playing).unwrap();
    let port = sip_port(&src, "src");
    let sink = sink_pipeline(port, device, "secret", "sip-transport=tcp");
    let sink_bus = sink.bus().unwrap();
    sink.set_state(gst::State::Playing).unwrap();
    wait_for(&src_bus, Duration::from_secs(10), |m| {
        element_named(m, "gb28181-device-registered")
    })
    .expect("device registered over TCP");
    let n = wait_frames(&frames, 5, Duration::from_secs(20), &src_bus);
    assert!(n >= 5, "only {n} frames before the restart");
    wait_for(&sink_bus, Duration::from_secs(2), |m| {
        element_named(m, "gb28181-registered")
    })
    .expect("registered on the device's bus");

    // The platform goes away: its pipeline stops and its SIP endpoint shuts down.
    src.set_state(gst::State::Null).unwrap();
    endpoint_on(port, SipTransport::Tcp).shutdown();
    let gone = wait_for(&sink_bus, Duration::from_secs(5), |m| {
        element_named(m, "gb28181-disconnected")
    })
    .expect("the device noticed the closed connection");
    let retry = gone.structure().unwrap().get::<u64>("retry-in-ms").unwrap();
    assert!((300..=9600).contains(&retry), "{retry}");

    // The platform comes back on the same port (the one the OS gave the first endpoint, free
    // again since its shutdown; the device knows no other): the device registers again and
    // streams.
    let (src2, frames2) = src_pipeline(port, device, "udp", "sip-transport=tcp");
    let src2_bus = src2.bus().unwrap();
    src2.set_state(gst::State::Playing).unwrap();
    wait_for(&src2_bus, Duration::from_secs(15), |m| {
        element_named(m, "gb28181-device-registered")
    })
    .expect("device registered again after the platform came back");
    wait_for(&sink_bus, Duration::from_secs(5), |m| {
        element_named(m, "gb28181-registered")
    })
    .expect("registered again on the device's bus");
    let n = wait_frames(&frames2, 5, Duration::from_secs(20), &src2_bus);
    assert!(n >= 5, "only {n} frames after the restart");
    sink.set_state(gst::State::Null).unwrap();
    let eos = wait_for(&src2_bus, Duration::from_secs(5), |m| {
        matches!(m.view(), gst::MessageView::Eos(_))
    });
    assert!(eos.is_some(), "no EOS after the camera's BYE over TCP");
    src2.set_state(gst::State::Null).unwrap();
}

#[test]
fn queries_and_restart_reinvites_registered_camera() {
    init();
    let _g = serial();
    let device = "34020000001320000121";
    let (src, frames) = src_pipeline(0, device, "udp", "");
    let src_bus = src.bus().unwrap();
    src.set_state(gst::State::Playing).unwrap();
    let port = sip_port(&src, "src");
    let sink = sink_pipeline(port, device, "secret", "device-name=cam121");
    sink.set_state(gst::State::Playing).unwrap();
    assert!(wait_frames(&frames, 10, Duration::from_secs(20), &src_bus) >= 10);

    let el = src.by_name("src").unwrap();
    let sn = el.emit_by_name::<u32>("query-catalog", &[]);
    assert!(sn > 0);
    let cat = wait_for(&src_bus, Duration::from_secs(5), |m| {
        element_named(m, "gb28181-catalog")
    })
    .expect("catalog answer");
    let s = cat.structure().unwrap();
    assert_eq!(s.get::<u32>("sn").unwrap(), sn);
    assert_eq!(s.get::<u32>("count").unwrap(), 1);
    let names = s.get::<gst::Array>("names").unwrap();
    assert_eq!(names.as_slice()[0].get::<String>().unwrap(), "cam121");

    let sn = el.emit_by_name::<u32>("query-device-info", &[]);
    let info = wait_for(&src_bus, Duration::from_secs(5), |m| {
        element_named(m, "gb28181-device-info")
    })
    .expect("device info answer");
    assert_eq!(info.structure().unwrap().get::<u32>("sn").unwrap(), sn);
    el.emit_by_name::<u32>("query-device-status", &[]);
    let st = wait_for(&src_bus, Duration::from_secs(5), |m| {
        element_named(m, "gb28181-device-status")
    })
    .expect("device status answer");
    assert_eq!(
        st.structure().unwrap().get::<String>("online").unwrap(),
        "ONLINE"
    );
    assert!(el.emit_by_name::<bool>("ptz", &[&"left", &5u32]));
    let sink_bus = sink.bus().unwrap();
    let ptz = wait_for(&sink_bus, Duration::from_secs(5), |m| {
        element_named(m, "gb28181-ptz")
    })
    .expect("PTZ reached the device");
    // A5 0F 01 cmd=02 (left) pan=05 tilt=05 zoom=00, checksum = sum mod 256 = C1.
    assert!(
        ptz.structure()
            .unwrap()
            .get::<String>("command")
            .unwrap()
            .eq_ignore_ascii_case("A50F0102050500C1")
    );

    // Restart the platform pipeline: the camera is still registered and is INVITEd again.
    src.set_state(gst::State::Null).unwrap();
    // The endpoint outlives the element: applications still see the device.
    let ep = endpoint_on(port, SipTransport::Udp);
    assert!(ep.device(device).is_some_and(|d| d.online));
    // sip-port=0 again: the same (address, port, transport) key, so the same endpoint.
    let (src2, frames2) = src_pipeline(0, device, "udp", "");
    let bus2 = src2.bus().unwrap();
    src2.set_state(gst::State::Playing).unwrap();
    assert_eq!(
        sip_port(&src2, "src"),
        port,
        "the endpoint that outlived src"
    );
    assert!(
        wait_frames(&frames2, 10, Duration::from_secs(20), &bus2) >= 10,
        "no frames after restart"
    );
    let stats = src2
        .by_name("src")
        .unwrap()
        .property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u64>("invites").unwrap(), 1);
    src2.set_state(gst::State::Null).unwrap();
    sink.set_state(gst::State::Null).unwrap();
}

#[test]
fn wrong_password_refused() {
    init();
    let _g = serial();
    let device = "34020000001320000131";
    let (src, _) = src_pipeline(0, device, "udp", "");
    let src_bus = src.bus().unwrap();
    src.set_state(gst::State::Ready).unwrap();
    let port = sip_port(&src, "src");
    let sink = gst::parse::launch(&format!(
        "fakesrc num-buffers=0 ! video/mpeg,systemstream=true ! gb28181sink server-ip=127.0.0.1 \
         server-port={port} device-id={device} password=wrong retry-interval=5000"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sink_bus = sink.bus().unwrap();
    sink.set_state(gst::State::Paused).unwrap();
    let failed = wait_for(&sink_bus, Duration::from_secs(5), |m| {
        element_named(m, "gb28181-register-failed")
    })
    .expect("registration refused");
    assert_eq!(
        failed.structure().unwrap().get::<u32>("status").unwrap(),
        403
    );
    assert!(
        wait_for(&src_bus, Duration::from_secs(2), |m| element_named(
            m,
            "gb28181-auth-failed"
        ))
        .is_some()
    );
    assert!(
        endpoint_on(port, SipTransport::Udp)
            .device(device)
            .is_none()
    );
    sink.set_state(gst::State::Null).unwrap();
    src.set_state(gst::State::Null).unwrap();
}

#[test]
fn silent_camera_goes_offline() {
    init();
    let _g = serial();
    let device = "34020000001320000141";
    let (src, _) = src_pipeline(
        0,
        device,
        "udp",
        "keepalive-interval=200 keepalive-max-missed=2",
    );
    let bus = src.bus().unwrap();
    src.set_state(gst::State::Ready).unwrap();
    let port = sip_port(&src, "src");
    // A device that registers and sends one keepalive, then goes silent.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut client = RegisterClient::new(RegisterClientConfig {
        device_id: device.into(),
        local_port: sock.local_addr().unwrap().port(),
        password: "secret".into(),
        keepalive_interval_ms: 100,
        ..Default::default()
    });
    let server = format!("127.0.0.1:{port}");
    let mut registered = false;
    let start = Instant::now();
    let mut actions = client.start(0);
    while start.elapsed() < Duration::from_secs(3) && !registered {
        for a in actions.drain(..) {
            match a {
                ClientAction::Send(m) => {
                    sock.send_to(&m.to_bytes(), &server).unwrap();
                }
                ClientAction::Registered { .. } => registered = true,
                _ => {}
            }
        }
        let mut buf = [0u8; 4096];
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            let m = Message::parse(&buf[..n]).unwrap();
            actions = client.on_response(&m, start.elapsed().as_millis() as u64);
        }
    }
    assert!(registered);
    let online = wait_for(&bus, Duration::from_secs(2), |m| {
        element_named(m, "gb28181-device-registered")
    });
    assert!(online.is_some());
    let t0 = Instant::now();
    let off = wait_for(&bus, Duration::from_secs(3), |m| {
        element_named(m, "gb28181-device-offline")
    })
    .expect("offline reported");
    assert_eq!(
        off.structure().unwrap().get::<String>("device-id").unwrap(),
        device
    );
    // 2 missed intervals of 200 ms.
    assert!(t0.elapsed() < Duration::from_millis(1500));
    src.set_state(gst::State::Null).unwrap();
}

/// Registers `device` with `password` using the core client over UDP; returns the final
/// status (200, 403, ...).
fn register_status(port: u16, device: &str, password: &str) -> Option<u16> {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut client = RegisterClient::new(RegisterClientConfig {
        device_id: device.into(),
        local_port: sock.local_addr().unwrap().port(),
        password: password.into(),
        ..Default::default()
    });
    let mut actions = client.start(0);
    for _ in 0..10 {
        for a in actions.drain(..) {
            match a {
                ClientAction::Send(m) => {
                    sock.send_to(&m.to_bytes(), ("127.0.0.1", port)).unwrap();
                }
                ClientAction::Registered { .. } => return Some(200),
                ClientAction::Failed { status } => return status,
                ClientAction::Unregistered => {}
            }
        }
        let mut buf = [0u8; 4096];
        let (n, _) = sock.recv_from(&mut buf).ok()?;
        actions = client.on_response(&Message::parse(&buf[..n]).unwrap(), 0);
    }
    None
}

#[test]
fn per_device_passwords() {
    init();
    let _g = serial();
    let special = "34020000001320000181";
    let other = "34020000001320000182";
    let (src, _) = src_pipeline(
        0,
        special,
        "udp",
        &format!("device-passwords=\"{special}=devpw,34020000001320000999=x\""),
    );
    src.set_state(gst::State::Ready).unwrap();
    let port = sip_port(&src, "src");
    assert_eq!(register_status(port, special, "devpw"), Some(200));
    assert_eq!(register_status(port, special, "secret"), Some(403));
    // Devices without an entry use the element's password.
    assert_eq!(register_status(port, other, "secret"), Some(200));
    assert_eq!(register_status(port, other, "devpw"), Some(403));
    src.set_state(gst::State::Null).unwrap();
}

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/gb28181/sip")
}

#[test]
fn real_camera_vectors_get_sensible_answers() {
    init();
    let _g = serial();
    let (src, _) = src_pipeline(0, DEVICE, "udp", "");
    src.set_state(gst::State::Ready).unwrap();
    let port = sip_port(&src, "src");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    // (file, expected status; None = a response, which gets no answer)
    let cases: &[(&str, Option<&[u16]>)] = &[
        ("01-register-noauth.sip", Some(&[401])),
        ("02-register-401.sip", None),
        // Valid digest, but for a nonce this platform did not issue: challenged again.
        ("03-register-auth.sip", Some(&[401])),
        ("03b-register-auth-noqop.sip", Some(&[401])),
        ("04-register-200.sip", None),
        // Keepalive from an unregistered device: refused so that it registers again.
        ("05-keepalive.sip", Some(&[404])),
        // MANSCDP from a device (or platform) that never registered from this address.
        ("06-catalog-query.sip", Some(&[403])),
        ("07-catalog-response.sip", Some(&[403])),
        // An INVITE to the platform (only a registered device's talk call is taken).
        ("08-invite.sip", Some(&[403])),
        ("09-invite-100.sip", None),
        ("10-invite-200.sip", None),
        ("11-ack.sip", None),
        ("12-bye.sip", Some(&[481])),
    ];
    for (name, expected) in cases {
        let data = std::fs::read(vectors_dir().join(name)).unwrap();
        let req = Message::parse(&data).unwrap();
        sock.send_to(&data, ("127.0.0.1", port)).unwrap();
        let mut buf = [0u8; 8192];
        let got = sock
            .recv_from(&mut buf)
            .ok()
            .map(|(n, _)| Message::parse(&buf[..n]).unwrap());
        match (expected, got) {
            (None, None) => {}
            (Some(codes), Some(resp)) => {
                assert!(
                    codes.contains(&resp.status().unwrap()),
                    "{name}: got {:?}",
                    resp.status()
                );
                assert_eq!(resp.call_id(), req.call_id(), "{name}");
                assert_eq!(resp.cseq(), req.cseq(), "{name}");
            }
            (e, g) => panic!("{name}: expected {e:?}, got {:?}", g.map(|m| m.status())),
        }
    }
    src.set_state(gst::State::Null).unwrap();
}

/// The project's own psmux (video + G.711 A-law) and psdemux around the GB28181 elements.
#[test]
fn live_view_psmux_with_audio_tcp_passive() {
    init();
    let _g = serial();
    let device = "34020000001320000151";
    let src = gst::parse::launch(&format!(
        "gb28181src name=src sip-address=127.0.0.1 sip-port=0 device-id={device} \
         password=secret transport=tcp-passive wait-timeout=15 stream-timeout=5 ! psdemux name=d \
         d.video_e0 ! queue ! h264parse ! avdec_h264 ! appsink name=v sync=false \
         d.audio_c0 ! queue ! alawdec ! appsink name=a sync=false"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let video = count_samples(&src, "v");
    let audio = count_samples(&src, "a");
    let bus = src.bus().unwrap();
    src.set_state(gst::State::Playing).unwrap();
    let port = sip_port(&src, "src");
    let sink = gst::parse::launch(&format!(
        "videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=25/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 bitrate=300 \
         ! h264parse config-interval=-1 ! queue ! psmux name=m ! gb28181sink server-ip=127.0.0.1 \
         server-port={port} device-id={device} password=secret \
         audiotestsrc is-live=true samplesperbuffer=320 ! audio/x-raw,rate=8000,channels=1 \
         ! alawenc ! queue ! m."
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    sink.set_state(gst::State::Playing).unwrap();
    let v = wait_frames(&video, 15, Duration::from_secs(20), &bus);
    let a = wait_frames(&audio, 10, Duration::from_secs(5), &bus);
    sink.set_state(gst::State::Null).unwrap();
    src.set_state(gst::State::Null).unwrap();
    assert!(v >= 15, "only {v} video frames");
    assert!(a >= 10, "only {a} audio buffers");
}

/// Errors an application must see: no registration within wait-timeout; a camera that
/// stops sending (pipeline paused, no BYE) within stream-timeout.
#[test]
fn wait_timeout_and_stream_timeout_are_errors() {
    init();
    let _g = serial();
    let device = "34020000001320000161";
    let (src, _) = src_pipeline(0, device, "udp", "wait-timeout=1");
    let bus = src.bus().unwrap();
    let t0 = Instant::now();
    src.set_state(gst::State::Playing).unwrap();
    let port = sip_port(&src, "src");
    let err = wait_for(&bus, Duration::from_secs(5), |m| {
        matches!(m.view(), gst::MessageView::Error(_))
    })
    .expect("error for a device that never registers");
    assert!(t0.elapsed() >= Duration::from_millis(900));
    let gst::MessageView::Error(e) = err.view() else {
        unreachable!()
    };
    assert!(
        e.error().to_string().contains("did not register"),
        "{}",
        e.error()
    );
    src.set_state(gst::State::Null).unwrap();

    // sip-port=0 again: the same endpoint as the first element's.
    let (src, frames) = src_pipeline(0, device, "udp", "stream-timeout=1");
    let bus = src.bus().unwrap();
    src.set_state(gst::State::Playing).unwrap();
    assert_eq!(sip_port(&src, "src"), port);
    let sink = sink_pipeline(port, device, "secret", "");
    sink.set_state(gst::State::Playing).unwrap();
    assert!(wait_frames(&frames, 5, Duration::from_secs(20), &bus) >= 5);
    // The camera stays registered and in the dialog but sends nothing more.
    sink.set_state(gst::State::Paused).unwrap();
    let err = wait_for(&bus, Duration::from_secs(5), |m| {
        matches!(m.view(), gst::MessageView::Error(_))
    })
    .expect("stream timeout error");
    let gst::MessageView::Error(e) = err.view() else {
        unreachable!()
    };
    assert!(e.error().to_string().contains("No media"), "{}", e.error());
    src.set_state(gst::State::Null).unwrap();
    sink.set_state(gst::State::Null).unwrap();
}

/// Playback: s=Playback INVITE with the time range and a history SSRC, MANSRTSP PAUSE/PLAY
/// INFO reaching the device, a RecordInfo query answered, and the device's MediaStatus 121
/// (sent by gb28181sink when its input ends) ending the stream with EOS.
#[test]
fn playback_control_record_info_and_end_of_file() {
    init();
    let _g = serial();
    let device = "34020000001320000171";
    let (src, frames) = src_pipeline(
        0,
        device,
        "udp",
        "session-kind=playback start-time=1600000000 end-time=1600003600 media-port-range=20000-20100",
    );
    let bus = src.bus().unwrap();
    src.set_state(gst::State::Playing).unwrap();
    let port = sip_port(&src, "src");
    let sink = gst::parse::launch(&format!(
        "videotestsrc is-live=true num-buffers=100 ! video/x-raw,width=320,height=240,framerate=25/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 bitrate=300 ! h264parse \
         ! mpegpsmux ! gb28181sink name=dev server-ip=127.0.0.1 server-port={port} \
         device-id={device} password=secret"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sink_bus = sink.bus().unwrap();
    sink.set_state(gst::State::Playing).unwrap();
    assert!(wait_frames(&frames, 10, Duration::from_secs(20), &bus) >= 10);
    let started = wait_for(&sink_bus, Duration::from_secs(2), |m| {
        element_named(m, "gb28181-session-started")
    })
    .unwrap();
    assert_eq!(
        started.structure().unwrap().get::<String>("kind").unwrap(),
        "Playback"
    );
    // History SSRC: first digit 1.
    let stats = src
        .by_name("src")
        .unwrap()
        .property::<gst::Structure>("stats");
    let ssrc = stats.get::<u32>("ssrc").unwrap();
    assert_eq!(format!("{ssrc:010}").chars().next(), Some('1'), "{stats}");
    let media_port = stats.get::<u32>("media-port").unwrap();
    assert!((20000..=20100).contains(&media_port), "{stats}");

    let el = src.by_name("src").unwrap();
    assert!(el.emit_by_name::<bool>("playback-pause", &[]));
    let c = wait_for(&sink_bus, Duration::from_secs(3), |m| {
        element_named(m, "gb28181-playback-control")
    })
    .expect("PAUSE reached the device");
    assert_eq!(
        c.structure().unwrap().get::<String>("method").unwrap(),
        "PAUSE"
    );
    assert!(el.emit_by_name::<bool>("playback-play", &[&2.0f64, &-1.0f64]));
    let c = wait_for(&sink_bus, Duration::from_secs(3), |m| {
        element_named(m, "gb28181-playback-control")
    })
    .expect("PLAY reached the device");
    let s = c.structure().unwrap();
    assert_eq!(s.get::<String>("method").unwrap(), "PLAY");
    assert_eq!(s.get::<f64>("scale").unwrap(), 2.0);

    let sn = el.emit_by_name::<u32>(
        "query-record-info",
        &[&"2020-09-13T20:26:40", &"2020-09-13T21:26:40"],
    );
    let r = wait_for(&bus, Duration::from_secs(3), |m| {
        element_named(m, "gb28181-record-info")
    })
    .expect("RecordInfo answer");
    assert_eq!(r.structure().unwrap().get::<u32>("sn").unwrap(), sn);
    assert_eq!(r.structure().unwrap().get::<u32>("count").unwrap(), 0);

    // The device's input ends (num-buffers): MediaStatus 121, then EOS on the platform side.
    let status = wait_for(&bus, Duration::from_secs(10), |m| {
        element_named(m, "gb28181-media-status")
    })
    .expect("MediaStatus");
    assert_eq!(
        status
            .structure()
            .unwrap()
            .get::<u32>("notify-type")
            .unwrap(),
        121
    );
    assert!(
        wait_for(&bus, Duration::from_secs(3), |m| matches!(
            m.view(),
            gst::MessageView::Eos(_)
        ))
        .is_some()
    );
    src.set_state(gst::State::Null).unwrap();
    sink.set_state(gst::State::Null).unwrap();
}

/// The platform asks a camera for a key frame (DeviceControl `IFameCmd`): gb28181sink passes
/// it upstream as a force-key-unit event (through psmux and h264parse) and the encoder, whose
/// GOP is otherwise 400 s long, sends one at once.
#[test]
fn platform_forces_a_key_frame() {
    init();
    let _g = serial();
    let device = "34020000001320000117";
    let src = gst::parse::launch(&format!(
        "gb28181src name=src sip-address=127.0.0.1 sip-port=0 device-id={device} password=secret \
         wait-timeout=15 stream-timeout=5 ! psdemux name=d d.video_e0 ! queue \
         ! appsink name=out sync=false"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let keys = Arc::new(AtomicUsize::new(0));
    let frames = Arc::new(AtomicUsize::new(0));
    let (k, f) = (keys.clone(), frames.clone());
    src.by_name("out")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap()
        .set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    if sample
                        .buffer()
                        .is_some_and(|b| !b.flags().contains(gst::BufferFlags::DELTA_UNIT))
                    {
                        k.fetch_add(1, Ordering::SeqCst);
                    }
                    f.fetch_add(1, Ordering::SeqCst);
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
    let src_bus = src.bus().unwrap();
    src.set_state(gst::State::Playing).unwrap();
    let port = sip_port(&src, "src");
    let sink = gst::parse::launch(&format!(
        "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=25/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10000 bitrate=300 \
         ! h264parse ! psmux ! gb28181sink server-ip=127.0.0.1 server-port={port} \
         device-id={device} password=secret retry-interval=300"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sink_bus = sink.bus().unwrap();
    sink.set_state(gst::State::Playing).unwrap();
    // 25 frames of the stream: its first key frame and a second of P-frames only.
    let n = wait_frames(&frames, 25, Duration::from_secs(20), &src_bus);
    assert!(n >= 25, "only {n} frames");
    let before = keys.load(Ordering::SeqCst);
    assert_eq!(before, 1, "one key frame at the start, then a long GOP");
    let ep = endpoint_on(port, SipTransport::Udp);
    ep.force_key_frame(device, device).expect("request sent");
    wait_for(&sink_bus, Duration::from_secs(5), |m| {
        element_named(m, "gb28181-key-frame-requested")
    })
    .expect("the device got the request");
    wait_until(Duration::from_secs(5), || {
        keys.load(Ordering::SeqCst) != before
    });
    assert_eq!(
        keys.load(Ordering::SeqCst),
        before + 1,
        "a key frame on request"
    );
    sink.set_state(gst::State::Null).unwrap();
    src.set_state(gst::State::Null).unwrap();
}

/// Subscriptions from a launch line's elements: gb28181src's `subscribe` signal, the
/// camera's `position` property and `send-alarm` signal; the events arrive as bus messages.
#[test]
fn subscriptions_through_the_elements() {
    init();
    let _g = serial();
    let device = "34020000001320000131";
    let (src, frames) = src_pipeline(0, device, "udp", "subscribe=mobile-position=1");
    let src_bus = src.bus().unwrap();
    src.set_state(gst::State::Playing).unwrap();
    let port = sip_port(&src, "src");
    let sink = sink_pipeline(port, device, "secret", "position=116.39,39.91");
    let sink_bus = sink.bus().unwrap();
    sink.set_state(gst::State::Playing).unwrap();
    assert!(wait_frames(&frames, 5, Duration::from_secs(20), &src_bus) >= 5);
    let el = src.by_name("src").unwrap();
    assert_eq!(el.property::<String>("subscribe"), "mobile-position=1");
    // The property subscribed to positions; the signal adds alarms.
    assert!(el.emit_by_name::<bool>("subscribe", &[&"alarm", &60u32, &0u32]));
    assert!(!el.emit_by_name::<bool>("subscribe", &[&"weather", &60u32, &0u32]));
    wait_for(&sink_bus, Duration::from_secs(5), |m| {
        element_named(m, "gb28181-subscribed")
    })
    .expect("the camera saw the subscription");
    // Two position reports (the initial one and one a second later).
    for _ in 0..2 {
        let m = wait_for(&src_bus, Duration::from_secs(5), |m| {
            element_named(m, "gb28181-mobile-position")
        })
        .expect("a position");
        let s = m.structure().unwrap();
        assert_eq!(s.get::<String>("device-id").unwrap(), device);
        assert_eq!(s.get::<f64>("longitude").unwrap(), 116.39);
        assert_eq!(s.get::<f64>("latitude").unwrap(), 39.91);
    }
    let dev = sink.by_name("dev").unwrap();
    assert!(dev.emit_by_name::<bool>("send-alarm", &[&1u32, &5u32, &"motion at the gate"]));
    let m = wait_for(&src_bus, Duration::from_secs(5), |m| {
        element_named(m, "gb28181-alarm")
    })
    .expect("the alarm");
    let s = m.structure().unwrap();
    assert_eq!(
        s.get::<String>("description").unwrap(),
        "motion at the gate"
    );
    assert_eq!(s.get::<u32>("priority").unwrap(), 1);
    assert!(el.emit_by_name::<bool>("unsubscribe", &[&"mobile-position"]));
    assert!(!el.emit_by_name::<bool>("unsubscribe", &[&"mobile-position"]));
    sink.set_state(gst::State::Null).unwrap();
    src.set_state(gst::State::Null).unwrap();
}

/// A playing camera (H.264 through `gb28181sink` registering at `port`) whose `talk` pad is
/// decoded into a counted appsink: (pipeline, decoded talk buffers, bus).
fn talking_camera(
    port: u16,
    device: &str,
    talk_props: &str,
) -> (gst::Pipeline, Arc<AtomicUsize>, gst::Bus) {
    let cam = gst::parse::launch(&format!(
        "videotestsrc is-live=true ! video/x-raw,width=160,height=120,framerate=25/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 ! h264parse \
         ! mpegpsmux ! gb28181sink name=dev server-ip=127.0.0.1 server-port={port} \
         device-id={device} password=secret retry-interval=300 {talk_props} \
         dev.talk ! alawdec ! appsink name=heard sync=false"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let heard = count_samples(&cam, "heard");
    let bus = cam.bus().unwrap();
    cam.set_state(gst::State::Playing).unwrap();
    (cam, heard, bus)
}

/// The platform's video and its talk in ONE pipeline (`gb28181src ! ...` and `... !
/// gb28181talksink`, both on the port-0 endpoint, which they share): the video plays and the
/// camera hears every buffer of the talk.
#[test]
fn talkback_in_the_pipeline_of_the_video() {
    init();
    let _g = serial();
    let device = "34020000001320000142";
    let platform = gst_ipcam_testutil::launch(&format!(
        "gb28181src name=src sip-address=127.0.0.1 sip-port=0 device-id={device} \
         password=secret wait-timeout=15 stream-timeout=5 \
         ! mpegpsdemux ! h264parse ! avdec_h264 ! appsink name=out sync=false \
         audiotestsrc is-live=true samplesperbuffer=160 num-buffers=100 \
         ! audio/x-raw,rate=8000,channels=1 ! alawenc \
         ! gb28181talksink name=talk sip-address=127.0.0.1 sip-port=0 device-id={device}"
    ));
    let frames = count_samples(&platform, "out");
    let bus = platform.bus().unwrap();
    platform.set_state(gst::State::Playing).unwrap();
    let port = sip_port(&platform, "src");
    assert_eq!(
        gst_ipcam_testutil::by_name(&platform, "talk").property::<u32>("sip-port"),
        u32::from(port),
        "the talk sink shares the video's endpoint"
    );
    let (cam, heard, cam_bus) = talking_camera(port, device, "");
    wait_for(&bus, Duration::from_secs(20), |m| {
        element_named(m, "gb28181-talk-started")
    })
    .expect("the talk started");
    wait_for(&cam_bus, Duration::from_secs(5), |m| {
        element_named(m, "gb28181-talk-started")
    })
    .expect("the camera took the call");
    assert!(wait_frames(&frames, 10, Duration::from_secs(20), &bus) >= 10);
    // The talk's 100 buffers (2 s) all sent, and heard by the camera.
    let talk = gst_ipcam_testutil::by_name(&platform, "talk");
    assert!(
        gst_ipcam_testutil::wait_until(Duration::from_secs(10), || {
            talk.property::<gst::Structure>("stats")
                .get::<u64>("packets")
                .unwrap_or(0)
                == 100
        }),
        "{}",
        talk.property::<gst::Structure>("stats")
    );
    assert!(
        gst_ipcam_testutil::wait_until(Duration::from_secs(5), || heard.load(Ordering::SeqCst)
            >= 95),
        "decoded talk buffers: {}",
        heard.load(Ordering::SeqCst)
    );
    cam.set_state(gst::State::Null).unwrap();
    platform.set_state(gst::State::Null).unwrap();
}

/// Voice broadcast from launch lines: `gb28181talksink` on the platform's endpoint talks to
/// the camera; the camera's `gb28181sink` puts the audio out of its `talk` pad, where a
/// decoder plays it; stopping the talk sends BYE and the pad goes.
#[test]
fn talkback_through_the_elements() {
    talkback("talk-transport=udp", "34020000001320000141");
}

/// The same with the camera asking for the audio in MPEG-PS (`talk-ps`).
#[test]
fn talkback_in_ps() {
    talkback("talk-ps=true", "34020000001320000145");
}

/// The same over TCP, the camera listening (`a=setup:passive`: the platform connects).
#[test]
fn talkback_over_tcp_camera_listening() {
    talkback("talk-transport=tcp-passive", "34020000001320000143");
}

/// The same over TCP, the camera connecting to the platform's listener (`a=setup:active`,
/// wvp's "TCP active" talk).
#[test]
fn talkback_over_tcp_camera_connecting() {
    talkback("talk-transport=tcp-active", "34020000001320000144");
}

fn talkback(camera_props: &str, device: &str) {
    init();
    let _g = serial();
    let (src, frames) = src_pipeline(0, device, "udp", "");
    let src_bus = src.bus().unwrap();
    src.set_state(gst::State::Playing).unwrap();
    let port = sip_port(&src, "src");
    let (cam, heard, cam_bus) = talking_camera(port, device, camera_props);
    assert!(wait_frames(&frames, 5, Duration::from_secs(20), &src_bus) >= 5);
    // One second of a tone, 20 ms buffers.
    let talk = gst::parse::launch(&format!(
        "audiotestsrc is-live=true samplesperbuffer=160 num-buffers=50 \
         ! audio/x-raw,rate=8000,channels=1 ! alawenc \
         ! gb28181talksink name=talk sip-address=127.0.0.1 sip-port={port} device-id={device}"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let talk_bus = talk.bus().unwrap();
    talk.set_state(gst::State::Playing).unwrap();
    let started = wait_for(&talk_bus, Duration::from_secs(10), |m| {
        element_named(m, "gb28181-talk-started")
    })
    .expect("the talk started");
    let codec = started.structure().unwrap().get::<String>("codec").unwrap();
    let ps = camera_props.contains("talk-ps=true");
    assert_eq!(codec, if ps { "PS/PCMA" } else { "PCMA" });
    wait_for(&cam_bus, Duration::from_secs(5), |m| {
        element_named(m, "gb28181-talk-started")
    })
    .expect("the camera took the call");
    talk_bus
        .timed_pop_filtered(gst::ClockTime::from_seconds(10), &[gst::MessageType::Eos])
        .expect("the talk pipeline played its second");
    let stats = talk
        .by_name("talk")
        .unwrap()
        .property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u64>("packets").unwrap(), 50, "{stats}");
    assert!(
        gst_ipcam_testutil::wait_until(Duration::from_secs(5), || heard.load(Ordering::SeqCst)
            >= 45),
        "decoded talk buffers: {}",
        heard.load(Ordering::SeqCst)
    );
    // Stopping the talk hangs up.
    talk.set_state(gst::State::Null).unwrap();
    wait_for(&cam_bus, Duration::from_secs(5), |m| {
        element_named(m, "gb28181-talk-stopped")
    })
    .expect("the camera saw the BYE");
    cam.set_state(gst::State::Null).unwrap();
    src.set_state(gst::State::Null).unwrap();
}

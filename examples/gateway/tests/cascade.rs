//! GB28181 cascade over loopback: the gateway (with a simulated camera below it) registers
//! as a lower platform with an upper one and serves it the camera's channel.
//!
//! - gst-ipcam's own `gb28181src` is the upper platform: it waits for the gateway's
//!   registration, INVITEs the channel (media over UDP, TCP active, TCP passive) and decodes
//!   the PS through `psdemux ! h264parse`; its BYE releases the gateway's ingest (the camera
//!   gets BYE).
//! - Gateway above gateway: gateway A cascades to gateway B; B lists A as a device, mounts
//!   the camera's channel from A's Catalog and an RTSP reader of B gets pictures (ffprobe);
//!   B's Catalog subscription is told of the channel's coming (ADD) and going (DEL).
//! - Forwarding through A: B's PTZ reaches the camera below A, B's RecordInfo query gets the
//!   camera's recordings, B's playback of a range plays (ffprobe), its scale reaches the
//!   camera, and it ends with the camera's MediaStatus 121 relayed by A.
//! - Attacks from a hand-written upper platform (a UDP socket of the test): unshared and
//!   malformed channel IDs, hostile SDP, an INVITE from a stranger's address, one session
//!   too many; each refused while the session that was admitted keeps streaming.

mod common;
use common::*;

use gst::prelude::*;
use gst_ipcam_gateway::auth::{Action, UserConfig, basic_value};
use gst_ipcam_gateway::cascade::CascadeConfig;
use gst_ipcam_gateway::config::Config;
use gst_ipcam_gateway::gateway::Gateway;
use gst_ipcam_gateway::http;
use gst_ipcam_gateway::sim::wait_until;
use gst_ipcam_testutil::programs::{ffprobe_frames, frames_of};
use gstgb28181::core::sdp::{MediaTransport, Offer, SessionKind};
use gstgb28181::core::sip::Message;
use gstgb28181::endpoint::{Endpoint, SipTransport, endpoints};
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The gateway's ID toward its upper platform.
const GW_ID: &str = "34020000002000000077";
/// The simulated camera (its one channel has its ID).
const CAM: &str = "34020000001320000001";
const UPPER_PW: &str = "upper-secret";

fn small_camera(cfg: Config) -> Config {
    Config {
        simulate: 1,
        sim_width: 160,
        sim_height: 120,
        sim_bitrate_kbps: 200,
        ..cfg
    }
}

fn upper(port: u16, transport: &str) -> CascadeConfig {
    CascadeConfig {
        address: "127.0.0.1".into(),
        port,
        transport: transport.into(),
        device_id: GW_ID.into(),
        password: UPPER_PW.into(),
        keepalive_interval_s: 2,
        register_retry_s: 1,
        ..Default::default()
    }
}

/// The running endpoint on local `port` over `t`.
fn endpoint_on(port: u16, t: SipTransport) -> Arc<Endpoint> {
    endpoints()
        .into_iter()
        .find(|e| e.local_addr().port() == port && e.transport() == t)
        .expect("the upper platform's endpoint")
}

fn mounted(gw: &Gateway, channel: &str) -> bool {
    gw.channels().iter().any(|c| c == channel)
}

/// gst-ipcam's gb28181src as the upper platform: live view of `CAM` through the gateway
/// `GW_ID`, media over each transport; the upper's BYE releases the camera.
#[test]
fn gb28181src_above_the_gateway_decodes_the_camera() {
    let _serial = gst_ipcam_testutil::programs::serial();
    gst_ipcam_gateway::gateway::init().unwrap();
    // The upper platform's endpoint (SIP over TCP: the gateway's own endpoint for its
    // cameras is UDP on port 0), held by an element in READY; each live view below is a
    // pipeline of its own on that endpoint.
    let upper_pipeline = |port: u16, transport: &str| {
        let p = gst_ipcam_testutil::launch(&format!(
            "gb28181src name=src sip-address=127.0.0.1 sip-port={port} sip-transport=tcp \
             device-id={GW_ID} channel-id={CAM} password={UPPER_PW} transport={transport} \
             wait-timeout=20 stream-timeout=5 ! psdemux name=d  d. ! queue ! h264parse \
             ! appsink name=out sync=false emit-signals=false"
        ));
        let frames = gst_ipcam_testutil::count_samples(&p, "out");
        (p, frames)
    };
    let (holder, _) = upper_pipeline(0, "udp");
    holder.set_state(gst::State::Ready).unwrap();
    let port = u16::try_from(holder.by_name("src").unwrap().property::<u32>("sip-port")).unwrap();
    assert!(port > 0);
    let cfg = Config {
        cascade: vec![upper(port, "tcp")],
        ..small_camera(loopback_config("127.0.0.1"))
    };
    let mut gw = Gateway::start(cfg).expect("gateway starts");
    let ep = endpoint_on(port, SipTransport::Tcp);
    assert!(
        wait_until(Duration::from_secs(15), || mounted(&gw, CAM)
            && ep.device(GW_ID).is_some()),
        "the camera is mounted and the gateway registered upward"
    );
    for transport in ["udp", "tcp-active", "tcp-passive"] {
        let (p, frames) = upper_pipeline(port, transport);
        p.set_state(gst::State::Playing).unwrap();
        let bus = p.bus().unwrap();
        let n = gst_ipcam_testutil::wait_count(&frames, 25, Duration::from_secs(20), &bus);
        assert!(
            n >= 25,
            "{transport}: {n} frames decoded by the upper platform"
        );
        assert!(gw.cameras()[0].is_streaming(), "the camera streams");
        // The upper hangs up: the gateway's session ends, nobody else watches: the camera
        // gets BYE.
        p.set_state(gst::State::Null).unwrap();
        assert!(
            wait_until(Duration::from_secs(10), || !gw.cameras()[0].is_streaming()),
            "{transport}: the camera session ended after the upper's BYE"
        );
    }
    gw.stop();
    holder.set_state(gst::State::Null).unwrap();
}

/// Gateway A (camera below) cascades to gateway B: B sees A as a device, B's Catalog of A
/// lists the camera's channel, and an RTSP reader of B gets its pictures.
#[test]
fn gateway_above_gateway_serves_rtsp() {
    let _serial = gst_ipcam_testutil::programs::serial();
    gst_ipcam_gateway::gateway::init().unwrap();
    // B: SIP over TCP (A's cameras use the UDP endpoint on port 0), no camera of its own.
    let mut users = loopback_config("127.0.0.1").users;
    users.push(UserConfig::with_password(ADMIN.0, ADMIN.1, &[(Action::Api, "")]).unwrap());
    let b_cfg = Config {
        users,
        sip_transport: "tcp".into(),
        password: UPPER_PW.into(),
        ..loopback_config("127.0.0.1")
    };
    let mut b = Gateway::start(b_cfg).expect("gateway B starts");
    let a_cfg = Config {
        cascade: vec![upper(b.sip_port(), "tcp")],
        ..small_camera(loopback_config("127.0.0.1"))
    };
    let mut a = Gateway::start(a_cfg).expect("gateway A starts");
    // A registers with B before its camera registers with A: B asks A's Catalog again
    // (what `POST /v1/devices/{id}/catalog` does) until it lists the camera.
    let mut asked = Instant::now();
    assert!(
        wait_until(Duration::from_secs(20), || {
            if mounted(&a, CAM) && asked.elapsed() > Duration::from_secs(1) {
                let _ = b.endpoint().query(GW_ID, "Catalog");
                asked = Instant::now();
            }
            mounted(&b, CAM)
        }),
        "A mounts its camera; B mounts it from A's Catalog: A {:?}, B {:?}",
        a.channels(),
        b.channels()
    );
    assert!(
        b.endpoint().device(GW_ID).is_some(),
        "B lists A as a device"
    );
    let url = b.url_with_credentials(CAM, READER.0, READER.1);
    let probed = ffprobe_frames(&["-rtsp_transport", "tcp", "-read_intervals", "%+3"], &url);
    let n = frames_of(&probed, "h264");
    assert!(n >= 10, "frames read from B: {probed:?}");
    // The camera's A-law went up in A's PS too.
    assert!(
        frames_of(&probed, "pcm_alaw") >= 10,
        "audio read from B: {probed:?}"
    );
    // B subscribed to A's Catalog when A registered: A NOTIFYs what changes (its camera
    // mounted, then gone).
    let change = |event: &str| {
        let v: serde_json::Value =
            serde_json::from_slice(&get_as(&b, ADMIN, &format!("/v1/devices/{GW_ID}/events")))
                .unwrap();
        v["catalog_changes"].as_array().is_some_and(|c| {
            c.iter()
                .any(|i| i["channel_id"] == CAM && i["event"] == event)
        })
    };
    assert!(
        wait_until(Duration::from_secs(10), || change("ADD")),
        "B is told the camera's channel was added"
    );
    a.cameras()[0].stop();
    assert!(
        wait_until(Duration::from_secs(15), || change("DEL")),
        "B is told the camera's channel is gone"
    );
    a.stop();
    b.stop();
}

/// Gateway B above gateway A: what B's API asks of a channel of A reaches the camera below A
/// and comes back, as wvp's cascade forwards it: PTZ (the camera's gb28181sink posts it),
/// RecordInfo (the camera's list relayed under B's SN), and playback (B INVITEs A for a
/// range, A plays it from the camera: B's RTSP reader gets pictures; the camera's end of the
/// recording, MediaStatus 121, reaches B, whose playback ends by itself).
#[test]
fn upper_platform_controls_lists_and_plays_back_through_the_gateway() {
    let _serial = gst_ipcam_testutil::programs::serial();
    gst_ipcam_gateway::gateway::init().unwrap();
    const CAM2: &str = "34020000001320000301";
    let mut users = loopback_config("127.0.0.1").users;
    users.push(UserConfig::with_password(ADMIN.0, ADMIN.1, &[(Action::Api, "")]).unwrap());
    let mut b = Gateway::start(Config {
        users: users.clone(),
        sip_transport: "tcp".into(),
        password: UPPER_PW.into(),
        ..loopback_config("127.0.0.1")
    })
    .expect("gateway B starts");
    let mut a = Gateway::start(Config {
        users,
        cascade: vec![upper(b.sip_port(), "tcp")],
        ..loopback_config("127.0.0.1")
    })
    .expect("gateway A starts");
    let cam = camera_with_records(
        a.endpoint().local_addr().port(),
        CAM2,
        "2024-03-01T08:00:00/2024-03-01T09:00:00;2024-03-01T10:00:00/2024-03-01T10:30:00",
    );
    let mut asked = Instant::now();
    assert!(
        wait_until(Duration::from_secs(20), || {
            if mounted(&a, CAM2) && asked.elapsed() > Duration::from_secs(1) {
                let _ = b.endpoint().query(GW_ID, "Catalog");
                asked = Instant::now();
            }
            mounted(&b, CAM2)
        }),
        "B mounts the camera's channel from A's Catalog"
    );

    // RecordInfo: B asks A, A asks the camera, the camera's list comes back.
    let (code, body) = api_as(
        &b,
        ADMIN,
        "GET",
        &format!(
            "/v1/devices/{GW_ID}/channels/{CAM2}/records?start=2024-03-01T00:00:00&end=2024-03-01T23:59:59"
        ),
        None,
    );
    assert_eq!(code, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{body}");
    assert_eq!(list[0]["start"], "2024-03-01T08:00:00");
    assert_eq!(list[1]["end"], "2024-03-01T10:30:00");
    assert_eq!(list[0]["channel_id"], CAM2);

    // PTZ: B's DeviceControl for the channel goes on to the camera.
    let bus = cam.pipeline().bus().unwrap();
    let (code, body) = api_as(
        &b,
        ADMIN,
        "POST",
        &format!("/v1/channels/{CAM2}/ptz"),
        Some(r#"{"pan":"left","speed":64}"#),
    );
    assert_eq!(code, 200, "{body}");
    let ptz = gst_ipcam_testutil::wait_message(&bus, Duration::from_secs(10), |m| {
        gst_ipcam_testutil::is_element_message(m, "gb28181-ptz")
    })
    .expect("the camera got the PTZ command");
    let command = ptz.structure().unwrap().get::<String>("command").unwrap();
    assert!(command.to_uppercase().starts_with("A50F01"), "{command}");

    // Playback of 8 s: B's reader plays it, B's scale 2 reaches the camera, then the camera's
    // end of file ends it on B.
    let file_ended = Arc::new(AtomicUsize::new(0));
    let f = file_ended.clone();
    let sub = b.endpoint().subscribe(move |e| {
        if let gstgb28181::endpoint::EndpointEvent::MediaStatus {
            device_id,
            channel_id,
            notify_type: 121,
        } = e
            && device_id == GW_ID
            && channel_id == CAM2
        {
            f.fetch_add(1, Ordering::SeqCst);
        }
    });
    let (code, body) = api_as(
        &b,
        ADMIN,
        "POST",
        &format!("/v1/devices/{GW_ID}/channels/{CAM2}/playback"),
        Some(r#"{"start":"2024-03-01T08:00:00","end":"2024-03-01T08:00:08"}"#),
    );
    assert_eq!(code, 200, "{body}");
    let pb: serde_json::Value = serde_json::from_str(&body).unwrap();
    let path = format!("playback-{}", pb["id"]);
    let probed = ffprobe_frames(
        &["-rtsp_transport", "tcp", "-read_intervals", "%+2"],
        &b.url_with_credentials(&path, READER.0, READER.1),
    );
    assert!(frames_of(&probed, "h264") >= 10, "{probed:?}");
    let (code, body) = api_as(
        &b,
        ADMIN,
        "POST",
        &format!("/v1/playback/{}/control", pb["id"]),
        Some(r#"{"scale":2.0}"#),
    );
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("\"sent\":true"),
        "A answered the INFO: {body}"
    );
    let control = gst_ipcam_testutil::wait_message(&bus, Duration::from_secs(10), |m| {
        gst_ipcam_testutil::is_element_message(m, "gb28181-playback-control")
    })
    .expect("the camera got the scale");
    let control = control.structure().unwrap();
    assert_eq!(control.get::<String>("method").unwrap(), "PLAY");
    assert_eq!(control.get::<f64>("scale").unwrap(), 2.0);
    assert!(
        api_cascade(&a)[0]["sessions"]
            .as_array()
            .is_some_and(|s| s.len() == 1),
        "A serves the playback to B: {}",
        api_cascade(&a)
    );
    assert!(
        wait_until(Duration::from_secs(30), || api_as(
            &b,
            ADMIN,
            "GET",
            "/v1/playback",
            None
        )
        .1
        .trim()
            == "[]"),
        "B's playback ended with the recording: {}",
        api_as(&b, ADMIN, "GET", "/v1/playback", None).1
    );
    // Ended by A's MediaStatus 121 for the channel, not by B's no-media timeout.
    assert_eq!(file_ended.load(Ordering::SeqCst), 1);
    b.endpoint().unsubscribe(sub);
    assert!(
        wait_until(Duration::from_secs(10), || api_cascade(&a)[0]["sessions"]
            .as_array()
            .is_some_and(|s| s.is_empty())),
        "A's session with B ended"
    );
    drop(cam);
    a.stop();
    b.stop();
}

/// The test's own upper platform: a UDP socket answering the gateway's REGISTER and
/// MESSAGEs with 200, handing the responses to our requests over.
struct FakeUpper {
    socket: Arc<UdpSocket>,
    /// Where the gateway's agent sends from (learnt from its REGISTER).
    agent: Arc<std::sync::Mutex<Option<SocketAddr>>>,
    responses: mpsc::Receiver<Message>,
    /// BYEs the gateway sent.
    byes: mpsc::Receiver<Message>,
    catalogs: Arc<AtomicUsize>,
}

impl FakeUpper {
    fn start() -> FakeUpper {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        let agent = Arc::new(std::sync::Mutex::new(None));
        let catalogs = Arc::new(AtomicUsize::new(0));
        let (tx, responses) = mpsc::channel();
        let (bye_tx, byes) = mpsc::channel();
        let (s, a, c) = (socket.clone(), agent.clone(), catalogs.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            loop {
                let Ok((n, from)) = s.recv_from(&mut buf) else {
                    return;
                };
                let Ok(m) = Message::parse(&buf[..n]) else {
                    continue;
                };
                if !m.is_request() {
                    if tx.send(m).is_err() {
                        return;
                    }
                    continue;
                }
                if m.method() == Some("REGISTER") {
                    *a.lock().unwrap() = Some(from);
                }
                if m.method() == Some("BYE") {
                    let _ = bye_tx.send(m.clone());
                }
                if String::from_utf8_lossy(&m.body).contains("<CmdType>Catalog</CmdType>") {
                    c.fetch_add(1, Ordering::SeqCst);
                }
                if m.method() != Some("ACK") {
                    let mut ok = Message::response_to(&m, 200, "OK", Some("upper"));
                    if m.method() == Some("REGISTER") {
                        ok.add_header("Expires", "3600");
                    }
                    let _ = s.send_to(&ok.to_bytes(), from);
                }
            }
        });
        FakeUpper {
            socket,
            agent,
            responses,
            byes,
            catalogs,
        }
    }

    fn port(&self) -> u16 {
        self.socket.local_addr().unwrap().port()
    }

    fn agent(&self) -> SocketAddr {
        self.agent.lock().unwrap().expect("the gateway registered")
    }

    /// The final response to the request with `call_id` (bounded wait).
    fn final_response(&self, call_id: &str) -> Message {
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(m) = self.responses.recv_timeout(Duration::from_millis(200))
                && m.call_id() == Some(call_id)
                && m.status().is_some_and(|s| s >= 200)
            {
                return m;
            }
        }
        panic!("no final response to {call_id}");
    }
}

/// An INVITE for `channel` with an SDP offer to `media` (`ssrc`), from `upper_port`'s view.
fn invite(channel: &str, to: SocketAddr, call_id: &str, sdp: &str) -> Message {
    let mut m = Message::request("INVITE", &format!("sip:{channel}@{to}"));
    m.add_header(
        "Via",
        "SIP/2.0/UDP 127.0.0.1:5060;rport;branch=z9hG4bKtest".to_string(),
    )
    .add_header(
        "From",
        "<sip:34020000002000000001@3402000000>;tag=up1".to_string(),
    )
    .add_header("To", format!("<sip:{channel}@3402000000>"))
    .add_header("Call-ID", call_id.to_string())
    .add_header("CSeq", "1 INVITE")
    .add_header("Contact", "<sip:34020000002000000001@127.0.0.1:5060>")
    .add_header("Max-Forwards", "70")
    .add_header(
        "Subject",
        format!("{channel}:0200000001,34020000002000000001:0"),
    );
    m.set_body("APPLICATION/SDP", sdp.as_bytes().to_vec());
    m
}

/// An SDP offer to `ip`:`port`; a history SSRC (first digit 1) makes it a Playback of the
/// last hour.
fn offer(ip: &str, port: u16, ssrc: &str) -> String {
    let playback = ssrc.starts_with('1');
    Offer {
        kind: if playback {
            SessionKind::Playback
        } else {
            SessionKind::Play
        },
        origin_id: "34020000002000000001".into(),
        ip: ip.into(),
        port,
        transport: MediaTransport::Udp,
        ssrc: ssrc.into(),
        channel_id: if playback { CAM.into() } else { String::new() },
        start: if playback { 1_700_000_000 } else { 0 },
        end: if playback { 1_700_003_600 } else { 0 },
        download_speed: None,
        format: None,
    }
    .to_sdp()
}

fn ack_or_bye(method: &str, ok: &Message, to: SocketAddr, cseq: u32) -> Message {
    let mut m = Message::request(method, &format!("sip:{CAM}@{to}"));
    m.add_header(
        "Via",
        "SIP/2.0/UDP 127.0.0.1:5060;rport;branch=z9hG4bKtest2".to_string(),
    )
    .add_header("From", ok.header("from").unwrap().to_string())
    .add_header("To", ok.header("to").unwrap().to_string())
    .add_header("Call-ID", ok.call_id().unwrap().to_string())
    .add_header("CSeq", format!("{cseq} {method}"))
    .add_header("Max-Forwards", "70");
    m
}

/// Hostile requests are refused, the admitted session keeps streaming.
#[test]
fn hostile_invites_are_refused_and_the_gateway_keeps_serving() {
    let _serial = gst_ipcam_testutil::programs::serial();
    gst_ipcam_gateway::gateway::init().unwrap();
    let up = FakeUpper::start();
    let mut users = loopback_config("127.0.0.1").users;
    users.push(UserConfig::with_password(ADMIN.0, ADMIN.1, &[(Action::Api, "")]).unwrap());
    let cfg = Config {
        users,
        cascade: vec![CascadeConfig {
            password: String::new(),
            max_sessions: 1,
            channels: vec![CAM.into()],
            ..upper(up.port(), "udp")
        }],
        ..small_camera(loopback_config("127.0.0.1"))
    };
    let mut gw = Gateway::start(cfg).expect("gateway starts");
    assert!(
        wait_until(Duration::from_secs(15), || mounted(&gw, CAM)
            && up.agent.lock().unwrap().is_some()),
        "the camera is mounted and the gateway registered upward"
    );
    let agent = up.agent();
    let send = |m: &Message| {
        up.socket.send_to(&m.to_bytes(), agent).unwrap();
    };
    // Media to a socket of the test.
    let media = UdpSocket::bind("127.0.0.1:0").unwrap();
    media
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mport = media.local_addr().unwrap().port();
    let good = offer("127.0.0.1", mport, "0200000001");

    // The admitted session.
    send(&invite(CAM, agent, "good-1", &good));
    let ok = up.final_response("good-1");
    assert_eq!(ok.status(), Some(200));
    send(&ack_or_bye("ACK", &ok, agent, 1));
    let rtp_count = |min: usize| {
        let mut buf = [0u8; 2048];
        let mut n = 0;
        let end = Instant::now() + Duration::from_secs(10);
        while n < min && Instant::now() < end {
            if let Ok(len) = media.recv(&mut buf)
                && len > 12
                && buf[0] >> 6 == 2
            {
                n += 1;
            }
        }
        n
    };
    assert!(rtp_count(20) >= 20, "PS over RTP reaches the upper");
    let state = api_cascade(&gw);
    assert_eq!(state[0]["registered"], true, "{state}");
    assert_eq!(state[0]["sessions"][0]["channel"], CAM, "{state}");
    assert!(
        state[0]["sessions"][0]["packets"].as_u64().unwrap() > 0,
        "{state}"
    );
    assert!(state[0].get("password").is_none(), "{state}");

    // (what, channel, media address, media port, SSRC, status expected)
    let cases: [(&str, String, &str, u16, &str, u16); 12] = [
        (
            "unshared channel",
            "34020000001320009999".into(),
            "127.0.0.1",
            mport,
            "0200000001",
            404,
        ),
        (
            "malformed channel",
            "a.b/c".into(),
            "127.0.0.1",
            mport,
            "0200000001",
            404,
        ),
        (
            "overlong channel",
            "1".repeat(100),
            "127.0.0.1",
            mport,
            "0200000001",
            404,
        ),
        (
            "broadcast address",
            CAM.into(),
            "255.255.255.255",
            mport,
            "0200000001",
            488,
        ),
        (
            "unspecified address",
            CAM.into(),
            "0.0.0.0",
            mport,
            "0200000001",
            488,
        ),
        (
            "multicast address",
            CAM.into(),
            "239.1.2.3",
            mport,
            "0200000001",
            488,
        ),
        (
            "privileged port",
            CAM.into(),
            "127.0.0.1",
            7,
            "0200000001",
            488,
        ),
        ("port 0", CAM.into(), "127.0.0.1", 0, "0200000001", 488),
        ("other family", CAM.into(), "::1", mport, "0200000001", 488),
        ("bad SSRC", CAM.into(), "127.0.0.1", mport, "12;DROP", 488),
        (
            "playback of more than a week",
            CAM.into(),
            "127.0.0.1",
            mport,
            "1200000001",
            488,
        ),
        (
            "one session too many",
            CAM.into(),
            "127.0.0.1",
            mport,
            "0200000001",
            486,
        ),
    ];
    for (i, (what, channel, ip, port, ssrc, status)) in cases.iter().enumerate() {
        let cid = format!("attack-{i}");
        let mut sdp = offer(ip, *port, ssrc);
        if what.starts_with("playback") {
            sdp = sdp.replace("t=1700000000 1700003600", "t=1700000000 1700700000");
            assert!(sdp.contains("t=1700000000 1700700000"), "{sdp}");
        }
        send(&invite(channel, agent, &cid, &sdp));
        assert_eq!(up.final_response(&cid).status(), Some(*status), "{what}");
    }
    // A stranger (another address) may not INVITE, nor query.
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    stranger
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stranger
        .send_to(&invite(CAM, agent, "stranger", &good).to_bytes(), agent)
        .unwrap();
    let mut buf = vec![0u8; 65_536];
    let (n, _) = stranger
        .recv_from(&mut buf)
        .expect("the stranger gets an answer");
    let r = Message::parse(&buf[..n]).unwrap();
    assert_eq!(r.status(), Some(403), "a stranger's INVITE");

    // The admitted session still streams; the gateway still answers its upper platform.
    assert!(rtp_count(20) >= 20, "the session survived the attacks");
    let before = up.catalogs.load(Ordering::SeqCst);
    let mut q = Message::request("MESSAGE", &format!("sip:{GW_ID}@{agent}"));
    q.add_header(
        "Via",
        "SIP/2.0/UDP 127.0.0.1:5060;rport;branch=z9hG4bKq".to_string(),
    )
    .add_header("From", "<sip:34020000002000000001@3402000000>;tag=q")
    .add_header("To", format!("<sip:{GW_ID}@3402000000>"))
    .add_header("Call-ID", "catalog-1")
    .add_header("CSeq", "1 MESSAGE")
    .add_header("Max-Forwards", "70");
    q.set_body(
        "Application/MANSCDP+xml",
        format!(
            "<?xml version=\"1.0\"?><Query><CmdType>Catalog</CmdType><SN>7</SN><DeviceID>{GW_ID}</DeviceID></Query>"
        )
        .into_bytes(),
    );
    send(&q);
    assert!(
        wait_until(Duration::from_secs(5), || up
            .catalogs
            .load(Ordering::SeqCst)
            > before),
        "the Catalog is answered"
    );
    let state = api_cascade(&gw);
    assert_eq!(
        state[0]["refused"], 13,
        "12 INVITEs and the stranger's: {state}"
    );
    let metrics = metrics_text(&gw);
    assert!(
        metrics.contains("gateway_cascade_registered{upper=\"34020000002000000001\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("gateway_cascade_sessions{upper=\"34020000002000000001\"} 1"));
    // The upper hangs up: the camera is released.
    send(&ack_or_bye("BYE", &ok, agent, 2));
    assert!(
        wait_until(Duration::from_secs(10), || !gw.cameras()[0].is_streaming()),
        "the camera session ended after the upper's BYE"
    );
    // A new session; then the camera goes away: the gateway hangs up on the upper.
    send(&invite(CAM, agent, "good-2", &good));
    let ok = up.final_response("good-2");
    assert_eq!(ok.status(), Some(200));
    send(&ack_or_bye("ACK", &ok, agent, 1));
    assert!(rtp_count(20) >= 20, "the second session streams");
    gw.cameras()[0].stop();
    let bye = up
        .byes
        .recv_timeout(Duration::from_secs(20))
        .expect("the gateway sends BYE when the camera is gone");
    assert_eq!(bye.call_id(), Some("good-2"));
    assert!(
        wait_until(Duration::from_secs(5), || api_cascade(&gw)[0]["sessions"]
            .as_array()
            .is_some_and(|s| s.is_empty())),
        "no session left"
    );
    gw.stop();
}

const ADMIN: (&str, &str) = ("admin", "admin-pw");

/// `GET /v1/cascade` as the admin.
fn api_cascade(gw: &Gateway) -> serde_json::Value {
    serde_json::from_slice(&get_as(gw, ADMIN, "/v1/cascade")).unwrap()
}

/// `/metrics` as the reader.
fn metrics_text(gw: &Gateway) -> String {
    String::from_utf8_lossy(&get_as(gw, READER, "/metrics")).into_owned()
}

/// The body of `path` on the API/metrics listener as `user` (200 expected).
fn get_as(gw: &Gateway, user: (&str, &str), path: &str) -> Vec<u8> {
    let auth = basic_value(user.0, user.1);
    let r = http::request(
        None,
        gw.metrics_addr().unwrap(),
        path,
        &[("Authorization", &auth)],
    )
    .expect("the HTTP listener answers");
    assert_eq!(
        r.status,
        200,
        "{path}: {}",
        String::from_utf8_lossy(&r.body)
    );
    r.body
}

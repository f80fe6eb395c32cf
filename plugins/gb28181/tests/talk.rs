//! Voice broadcast (GB/T 28181 §9.12) end to end without GStreamer, over loopback: the
//! platform's `Talk` tells the device agent to call, takes its INVITE, sends G.711, and
//! either side hangs up; INVITEs nobody asked for are refused.

mod common;

use common::{Conn, device_agent, next_matching, serial, udp_endpoint};
use gst_ipcam_testutil::wait_until;
use gstgb28181::core::sdp::MediaTransport;
use gstgb28181::core::sip::Message;
use gstgb28181::core::talk::{self, G711, TalkFormat};
use gstgb28181::device::DeviceEvent;
use gstgb28181::endpoint::SipTransport;
use gstgb28181::platform::{Talk, TalkParams};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SERVER: &str = "34020000002000000001";
const DEV: &str = "34020000001320000001";

fn params() -> TalkParams {
    TalkParams {
        source_id: SERVER.into(),
        device_id: DEV.into(),
        target_id: DEV.into(),
        media_address: None,
        wait_timeout: Duration::from_secs(5),
        invite_timeout: Duration::from_secs(5),
    }
}

#[test]
fn the_platform_talks_and_the_device_hears_every_sample() {
    talk_over(MediaTransport::Udp, false);
}

/// A device asking for PS gets its audio as G.711 A-law in MPEG-PS (PT 96), every sample.
#[test]
fn talk_in_ps() {
    talk_over(MediaTransport::Udp, true);
}

/// PS over TCP, the device connecting (the combination wvp's users meet most).
#[test]
fn talk_in_ps_over_tcp() {
    talk_over(MediaTransport::TcpActive, true);
}

/// Over TCP, the device listening: the platform connects; every sample arrives in order.
#[test]
fn talk_over_tcp_to_a_listening_device() {
    talk_over(MediaTransport::TcpPassive, false);
}

/// Over TCP, the device connecting (wvp's "TCP active" talk): the platform listens and takes
/// the device's connection before `start` returns.
#[test]
fn talk_over_tcp_from_a_connecting_device() {
    talk_over(MediaTransport::TcpActive, false);
}

fn talk_over(transport: MediaTransport, ps: bool) {
    let _g = serial();
    let ep = udp_endpoint();
    let (agent, dev) = device_agent(ep.local_addr());
    agent.set_talk_transport(transport);
    agent.set_talk_ps(ps);
    next_matching(&dev, |e| matches!(e, DeviceEvent::Registered { .. }));
    let heard = Arc::new(Mutex::new(Vec::new()));
    let h = heard.clone();
    agent.set_talk_sink(Some(Arc::new(move |law, payload: &[u8]| {
        assert_eq!(law, G711::Alaw);
        h.lock().unwrap().extend_from_slice(payload);
    })));
    let mut talk = Talk::start(&ep, &params(), &|| false).expect("talk set up");
    assert_eq!(talk.format.law(), G711::Alaw);
    assert_eq!(talk.is_tcp(), transport != MediaTransport::Udp);
    assert_eq!(talk.format.is_ps(), ps);
    let DeviceEvent::TalkStarted { codec, .. } =
        next_matching(&dev, |e| matches!(e, DeviceEvent::TalkStarted { .. }))
    else {
        unreachable!()
    };
    assert_eq!(codec, if ps { "PS/PCMA" } else { "PCMA" });
    // One second of A-law, in the order sent, in blocks that do not fall on packets (as a
    // decoder's resampled frames): 50 packets of 160 samples.
    let samples: Vec<u8> = (0..8000u32).map(|i| (i * 7 % 251) as u8).collect();
    for block in samples.chunks(171) {
        talk.send(block).unwrap();
    }
    assert_eq!(talk.packets, 50);
    assert!(
        wait_until(Duration::from_secs(5), || heard.lock().unwrap().len()
            >= 8000),
        "heard {} of 8000",
        heard.lock().unwrap().len()
    );
    assert_eq!(*heard.lock().unwrap(), samples);
    assert_eq!(agent.talk_stats(), (50, 8000));
    // The platform hangs up: the device stops.
    talk.hang_up(&ep);
    let DeviceEvent::TalkStopped { reason, .. } =
        next_matching(&dev, |e| matches!(e, DeviceEvent::TalkStopped { .. }))
    else {
        unreachable!()
    };
    assert_eq!(reason, "bye");
    assert!(!agent.has_talk());
    agent.stop();
    ep.shutdown();
}

#[test]
fn the_device_hangs_up() {
    let _g = serial();
    let ep = udp_endpoint();
    let (agent, dev) = device_agent(ep.local_addr());
    next_matching(&dev, |e| matches!(e, DeviceEvent::Registered { .. }));
    let talk = Talk::start(&ep, &params(), &|| false).expect("talk set up");
    next_matching(&dev, |e| matches!(e, DeviceEvent::TalkStarted { .. }));
    agent.stop();
    let bye = talk
        .bye_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the device's BYE");
    assert_eq!(bye.method(), Some("BYE"));
    ep.shutdown();
}

/// An INVITE to the platform from a registered device, to `to_user`.
fn invite_from(conn: &Conn, to_user: &str) -> Message {
    let offer = talk::build_talk_offer(
        DEV,
        "127.0.0.1",
        9,
        TalkFormat::Rtp(G711::Alaw),
        "0000000001",
        MediaTransport::Udp,
    );
    let mut m = Message::request("INVITE", &format!("sip:{to_user}@3402000000"));
    m.add_header(
        "Via",
        format!("SIP/2.0/UDP {};rport;branch=z9hG4bK-talk", conn.local()),
    )
    .add_header("From", format!("<sip:{DEV}@3402000000>;tag=d1"))
    .add_header("To", format!("<sip:{to_user}@3402000000>"))
    .add_header("Call-ID", "talk-attack")
    .add_header("CSeq", "1 INVITE")
    .add_header("Max-Forwards", "70");
    m.set_body("APPLICATION/SDP", offer.into_bytes());
    m
}

#[test]
fn invites_nobody_asked_for_are_refused() {
    let _g = serial();
    let ep = udp_endpoint();
    // Not registered: 403.
    let mut stranger = Conn::open(SipTransport::Udp, ep.local_addr());
    assert_eq!(
        stranger.request(&invite_from(&stranger, SERVER), Duration::from_secs(3)),
        Some(403)
    );
    // Registered, but no broadcast is waiting for it: 603.
    let mut dev = Conn::open(SipTransport::Udp, ep.local_addr());
    assert_eq!(dev.register(DEV, "12345678"), Some(200));
    assert_eq!(
        dev.request(&invite_from(&dev, SERVER), Duration::from_secs(3)),
        Some(603)
    );
    // A broadcast is waiting, but the INVITE comes from another address claiming the
    // device: 403, and the waiter still gets the real one later.
    let rx = ep.expect_invite(DEV, SERVER).unwrap();
    assert_eq!(
        stranger.request(&invite_from(&stranger, SERVER), Duration::from_secs(3)),
        Some(403)
    );
    // From the device, to another user than the source: 603.
    assert_eq!(
        dev.request(
            &invite_from(&dev, "34020000002000000099"),
            Duration::from_secs(3)
        ),
        Some(603)
    );
    assert!(rx.try_recv().is_err(), "nothing reached the waiter");
    ep.shutdown();
}

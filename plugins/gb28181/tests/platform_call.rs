//! `platform::Call` without GStreamer: the platform side of one INVITE session driven from
//! Rust against the device agent (gb28181sink's SIP, also GStreamer-free) over loopback.
//! Registration wait, INVITE/ACK, the offer's SSRC on the media, hang-up (the device sees
//! BYE), the device's BYE (the call sees it), and the errors a caller gets.

mod common;

use common::{ps_frame, serial};
use gstgb28181::core::sdp::{MediaTransport, SessionKind};
use gstgb28181::device::{DeviceAgent, DeviceEvent};
use gstgb28181::endpoint::{Endpoint, SipTransport};
use gstgb28181::platform::{Call, CallError, CallEvent, CallParams};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

const SERVER: &str = "34020000002000000001";
const DEV: &str = "34020000001320000001";
const PASSWORD: &str = "12345678";

fn endpoint() -> Arc<Endpoint> {
    common::udp_endpoint()
}

fn device(server: SocketAddr) -> (Arc<DeviceAgent>, mpsc::Receiver<DeviceEvent>) {
    common::device_agent(server)
}

fn params(wait: Duration) -> CallParams {
    CallParams {
        server_id: SERVER.into(),
        domain: "3402000000".into(),
        device_id: DEV.into(),
        channel_id: DEV.into(),
        kind: SessionKind::Play,
        transport: MediaTransport::Udp,
        media_address: None,
        sdp_address: None,
        ports: vec![0],
        start: 0,
        end: 0,
        download_speed: 1,
        wait_timeout: wait,
        buffer_size: 0,
        max_frame_size: 1 << 20,
        ssrc_policy: SsrcPolicy::Dialog,
    }
}

fn wait_event(
    rx: &mpsc::Receiver<DeviceEvent>,
    pred: impl Fn(&DeviceEvent) -> bool,
) -> DeviceEvent {
    common::next_matching(rx, pred)
}

#[test]
fn a_call_from_rust_gets_media_and_hangs_up() {
    let _g = serial();
    let ep = endpoint();
    let (agent, events) = device(ep.local_addr());
    wait_event(&events, |e| matches!(e, DeviceEvent::Registered { .. }));

    let mut invited = None;
    let mut on_event = |e: CallEvent<'_>| {
        if let CallEvent::Inviting { ssrc, media, .. } = e {
            invited = Some((ssrc.to_string(), media));
        }
    };
    let mut call = Call::start(
        &ep,
        &params(Duration::from_secs(5)),
        &|| false,
        &mut on_event,
    )
    .expect("the call is set up");
    let (ssrc, media) = invited.expect("Inviting reported");
    assert_eq!(ssrc, call.ssrc);
    assert!(ssrc.starts_with('0'), "a live SSRC starts with 0: {ssrc}");
    assert_eq!(media.ip().to_string(), "127.0.0.1");
    let started = wait_event(&events, |e| matches!(e, DeviceEvent::SessionStarted { .. }));
    let DeviceEvent::SessionStarted { ssrc: dev_ssrc, .. } = started else {
        unreachable!()
    };
    assert_eq!(
        dev_ssrc,
        ssrc.parse::<u32>().unwrap(),
        "the device uses the offered SSRC"
    );

    // Media reaches the call's receiver, frame by frame.
    let key = ps_frame(&[0x67, 0x42, 1, 2]);
    let delta = ps_frame(&[0x41, 0x9A, 3, 4]);
    let mut receiver = call.receiver.take().unwrap();
    let mut got = Vec::new();
    let end = Instant::now() + Duration::from_secs(5);
    let mut ts = 0u32;
    while got.len() < 2 && Instant::now() < end {
        ts += 3600;
        agent.send_frame(if ts == 3600 { &key } else { &delta }, None, ts);
        if let Some(f) = receiver.next_frame(Duration::from_millis(100)).unwrap() {
            got.push(f);
        }
    }
    assert!(got.len() >= 2, "frames received: {}", got.len());
    assert_eq!(got[0].data, key, "the key frame first, byte for byte");
    assert_eq!(
        receiver.sender().map(|(_, s)| s),
        Some(dev_ssrc),
        "the sender is locked to the answered SSRC"
    );

    // Hanging up reaches the device as BYE.
    call.hang_up(&ep);
    wait_event(&events, |e| matches!(e, DeviceEvent::SessionStopped { .. }));
    assert!(!agent.has_session());
    agent.stop();
    ep.shutdown();
}

#[test]
fn the_devices_bye_reaches_the_call() {
    let _g = serial();
    let ep = endpoint();
    let (agent, events) = device(ep.local_addr());
    wait_event(&events, |e| matches!(e, DeviceEvent::Registered { .. }));
    let call = Call::start(&ep, &params(Duration::from_secs(5)), &|| false, &mut |_| {})
        .expect("the call is set up");
    wait_event(&events, |e| matches!(e, DeviceEvent::SessionStarted { .. }));
    // The device going away hangs up its sessions.
    agent.stop();
    let bye = call
        .bye_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the device's BYE reaches the call");
    assert_eq!(bye.method(), Some("BYE"));
    assert_eq!(bye.call_id(), Some(call.dialog.call_id.as_str()));
    ep.shutdown();
}

#[test]
fn errors_a_caller_gets() {
    let _g = serial();
    let ep = endpoint();
    // Nobody registered: NotRegistered after the wait (bounded), named in the message.
    let t = Instant::now();
    let e = Call::start(
        &ep,
        &params(Duration::from_millis(300)),
        &|| false,
        &mut |_| {},
    )
    .err()
    .expect("no device");
    assert!(matches!(e, CallError::NotRegistered { .. }), "{e}");
    assert!(e.to_string().contains(DEV), "{e}");
    assert!(t.elapsed() < Duration::from_secs(3));
    // Cancelled at once.
    let t = Instant::now();
    let e = Call::start(&ep, &params(Duration::from_secs(30)), &|| true, &mut |_| {})
        .err()
        .expect("cancelled");
    assert!(matches!(e, CallError::Cancelled), "{e}");
    assert!(t.elapsed() < Duration::from_secs(1));
    // A media port that is taken: MediaSocket names the address.
    let (agent, events) = device(ep.local_addr());
    wait_event(&events, |e| matches!(e, DeviceEvent::Registered { .. }));
    let busy = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let p = CallParams {
        media_address: Some("127.0.0.1".parse().unwrap()),
        ports: vec![port],
        ..params(Duration::from_secs(5))
    };
    let e = Call::start(&ep, &p, &|| false, &mut |_| {})
        .err()
        .expect("port taken");
    assert!(matches!(e, CallError::MediaSocket { .. }), "{e}");
    assert!(e.to_string().contains(&port.to_string()), "{e}");
    agent.stop();
    ep.shutdown();
}

// ---- SSRC trouble (wvp's "stream receive timeout"): a scripted device over raw sockets ----

use common::Conn;
use gstgb28181::core::media::SsrcPolicy;
use gstgb28181::core::sip::Message;
use std::net::UdpSocket;

/// A device that registers, answers the INVITE with `answer_ssrc` and then sends RTP from
/// `media_from` with `sent_ssrcs` (one key frame per SSRC, in order). Returns what the call's
/// receiver got (frames) and the call.
fn scripted_call(
    policy: SsrcPolicy,
    answer_ssrc: u32,
    media_from: &str,
    sent_ssrcs: &[u32],
) -> (usize, Call, u64) {
    let ep = endpoint();
    let mut dev = Conn::open(SipTransport::Udp, ep.local_addr());
    assert_eq!(dev.register(DEV, PASSWORD), Some(200));
    let ep2 = ep.clone();
    let caller = std::thread::spawn(move || {
        let p = CallParams {
            ssrc_policy: policy,
            ..params(Duration::from_secs(5))
        };
        Call::start(&ep2, &p, &|| false, &mut |_| {})
    });
    // INVITE → 100? no: straight 200 with our SDP (y= answer_ssrc), then the ACK.
    let invite = loop {
        let m = dev.recv(Duration::from_secs(5)).expect("INVITE");
        if m.method() == Some("INVITE") {
            break m;
        }
    };
    let offer = gstgb28181::core::sdp::parse(&invite.body).unwrap();
    let media_to = offer.media_addr().unwrap();
    let mut ok = Message::response_to(&invite, 200, "OK", Some("dev1"));
    ok.add_header("Contact", format!("<sip:{DEV}@{}>", dev.local()));
    let answer = format!(
        "v=0\r\no={DEV} 0 0 IN IP4 127.0.0.1\r\ns=Play\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=video 15060 RTP/AVP 96\r\na=sendonly\r\na=rtpmap:96 PS/90000\r\ny={answer_ssrc:010}\r\n"
    );
    ok.set_body("APPLICATION/SDP", answer.into_bytes());
    dev.send(&ok);
    let mut call = caller.join().unwrap().expect("call set up");
    assert_eq!(call.answer_ssrc, Some(answer_ssrc));
    let sock = UdpSocket::bind(media_from).unwrap();
    let mut receiver = call.receiver.take().unwrap();
    let mut frames = 0;
    let mut seq = 0u16;
    for (i, ssrc) in sent_ssrcs.iter().enumerate() {
        // A few frames per SSRC; each one packet with the marker bit.
        for k in 0..3u32 {
            let mut pkt = vec![0x80, 0xE0];
            pkt.extend(seq.to_be_bytes());
            pkt.extend((((i as u32) * 3 + k + 1) * 3600).to_be_bytes());
            pkt.extend(ssrc.to_be_bytes());
            pkt.extend(ps_frame(&[0x65, 0x88, k as u8, 1]));
            seq = seq.wrapping_add(1);
            sock.send_to(&pkt, media_to).unwrap();
        }
    }
    // Every packet is one frame (marker bit): wait until each one is either a frame or
    // dropped (bounded).
    let total = sent_ssrcs.len() as u64 * 3;
    let end = Instant::now() + Duration::from_secs(5);
    while (frames as u64) + receiver.dropped_foreign() < total && Instant::now() < end {
        if receiver
            .next_frame(Duration::from_millis(100))
            .unwrap()
            .is_some()
        {
            frames += 1;
        }
    }
    let dropped = receiver.dropped_foreign();
    call.receiver = Some(receiver);
    call.hang_up(&ep);
    ep.shutdown();
    (frames, call, dropped)
}

#[test]
fn a_device_sending_another_ssrc_than_it_answered_is_followed_by_dialog() {
    let _g = serial();
    // The device answered 100000001 but sends 0x0BADBEEF from its own IP: by dialog the
    // frames arrive (before: every packet dropped, "no media for 10 s").
    let (frames, call, dropped) = scripted_call(
        SsrcPolicy::Dialog,
        100_000_001,
        "127.0.0.1:0",
        &[0x0BAD_BEEF],
    );
    assert!(frames >= 2, "frames by dialog: {frames}");
    assert_eq!(dropped, 0);
    assert_eq!(
        call.receiver.as_ref().unwrap().ssrc_mismatch(),
        Some(0x0BAD_BEEF)
    );
    // Strict: the same device gets nothing through.
    let (frames, call, dropped) = scripted_call(
        SsrcPolicy::Strict,
        100_000_001,
        "127.0.0.1:0",
        &[0x0BAD_BEEF],
    );
    assert_eq!(frames, 0);
    assert_eq!(dropped, 3);
    assert_eq!(call.receiver.as_ref().unwrap().ssrc_mismatch(), None);
}

#[test]
fn an_encoder_restart_with_a_new_ssrc_is_followed_and_a_stranger_is_not() {
    let _g = serial();
    // Answered SSRC first, then a new one from the same address (encoder restart).
    let (frames, call, _) = scripted_call(
        SsrcPolicy::Dialog,
        100_000_002,
        "127.0.0.1:0",
        &[100_000_002, 77],
    );
    assert!(frames >= 4, "frames across the SSRC change: {frames}");
    let r = call.receiver.as_ref().unwrap();
    assert_eq!(r.ssrc_changes(), 1);
    assert_eq!(
        r.ssrc_mismatch(),
        Some(77),
        "now off the answered SSRC: said"
    );
    // A sender on another IP (127.0.0.2: loopback, not the device's IP) with a wrong SSRC is
    // dropped even by dialog.
    let (frames, call, dropped) = scripted_call(
        SsrcPolicy::Dialog,
        100_000_003,
        "127.0.0.2:0",
        &[0x0BAD_BEEF],
    );
    assert_eq!(frames, 0);
    assert_eq!(dropped, 3);
    assert_eq!(call.receiver.as_ref().unwrap().ssrc_mismatch(), None);
}

/// The set-up sleeps on the endpoint's changes instead of polling: a device registering
/// during the wait is called at once (a missing wake-up would wait out the 30 s), and a
/// cancel (the flag, then `wake_waiters`, as an element's `unlock` does) ends a wait at once.
#[test]
fn waits_wake_on_registration_and_on_cancel() {
    use gstgb28181::endpoint::Cancelled;
    use std::sync::atomic::{AtomicBool, Ordering};
    let _g = serial();
    let ep = endpoint();
    // A cancel from another thread, once the waiter has looked (it sleeps next).
    let flag = Arc::new(AtomicBool::new(false));
    let (looked_tx, looked) = mpsc::channel();
    let waiter = {
        let (ep, flag) = (ep.clone(), flag.clone());
        std::thread::spawn(move || {
            let t = Instant::now();
            let r = ep.wait_until(
                t + Duration::from_secs(30),
                &|| flag.load(Ordering::SeqCst),
                || {
                    let _ = looked_tx.send(());
                    None::<()>
                },
            );
            (r, t.elapsed())
        })
    };
    looked.recv().unwrap();
    flag.store(true, Ordering::SeqCst);
    ep.wake_waiters();
    let (r, took) = waiter.join().unwrap();
    assert_eq!(r, Err(Cancelled));
    assert!(took < Duration::from_secs(5), "{took:?}");

    // A call waiting (30 s) for a device that registers meanwhile.
    let (done_tx, done) = mpsc::channel();
    let caller = {
        let ep = ep.clone();
        std::thread::spawn(move || {
            let t = Instant::now();
            let call = Call::start(
                &ep,
                &params(Duration::from_secs(30)),
                &|| false,
                &mut |_| {},
            );
            let _ = done_tx.send(t.elapsed());
            call.map(|c| c.hang_up(&ep))
        })
    };
    let (agent, events) = device(ep.local_addr());
    wait_event(&events, |e| matches!(e, DeviceEvent::Registered { .. }));
    let took = done
        .recv_timeout(Duration::from_secs(20))
        .expect("the call went on when the device registered");
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert!(caller.join().unwrap().is_ok(), "the call was set up");
    agent.stop();
    ep.shutdown();
}

/// A call made when its device registers comes after the registration's event has been told
/// to the endpoint's subscribers (an element posts "device registered" on its bus before
/// "stream started"), even when a subscriber is slow: here it takes 300 ms per event, far
/// longer than the call's set-up over loopback.
#[test]
fn a_call_comes_after_the_registration_event() {
    use gstgb28181::core::registrar::Event;
    use gstgb28181::endpoint::EndpointEvent;
    use std::sync::Mutex;
    let _g = serial();
    let ep = endpoint();
    let told = Arc::new(Mutex::new(Vec::<&'static str>::new()));
    {
        let told = told.clone();
        ep.subscribe(move |e| {
            if let EndpointEvent::Registrar(Event::Registered { .. }) = e {
                std::thread::sleep(Duration::from_millis(300));
                told.lock().unwrap().push("registered");
            }
        });
    }
    let caller = {
        let (ep, told) = (ep.clone(), told.clone());
        std::thread::spawn(move || {
            let call = Call::start(
                &ep,
                &params(Duration::from_secs(30)),
                &|| false,
                &mut |_| {},
            );
            told.lock().unwrap().push("call set up");
            call.map(|c| c.hang_up(&ep))
        })
    };
    let (agent, events) = device(ep.local_addr());
    wait_event(&events, |e| matches!(e, DeviceEvent::Registered { .. }));
    assert!(caller.join().unwrap().is_ok(), "the call was set up");
    assert_eq!(*told.lock().unwrap(), ["registered", "call set up"]);
    agent.stop();
    ep.shutdown();
}

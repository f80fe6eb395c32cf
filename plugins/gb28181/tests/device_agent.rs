//! The device-side agent (gb28181sink's SIP) against a scripted platform on a UDP socket,
//! without GStreamer: registration, INVITE with 200 retransmitted until ACK, a retransmitted
//! INVITE answered with the same 200, media sent to the offer's port with the offer's SSRC,
//! the GOP cache replayed to a new viewer, BYE.

use gstgb28181::core::sip::Message;
use gstgb28181::device::{DeviceAgent, DeviceConfig, DeviceEvent};
use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn recv(sock: &UdpSocket) -> (Message, SocketAddr) {
    let mut buf = [0u8; 65_536];
    let (n, from) = sock.recv_from(&mut buf).expect("message");
    (Message::parse(&buf[..n]).unwrap(), from)
}

fn invite(media_port: u16, call_id: &str) -> Message {
    let sdp = format!(
        "v=0\r\no=34020000002000000001 0 0 IN IP4 127.0.0.1\r\ns=Play\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=video {media_port} RTP/AVP 96\r\na=recvonly\r\na=rtpmap:96 PS/90000\r\ny=0200000042\r\n"
    );
    let mut m = Message::request("INVITE", "sip:34020000001320000001@3402000000");
    m.add_header("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1")
        .add_header("From", "<sip:34020000002000000001@3402000000>;tag=p1")
        .add_header("To", "<sip:34020000001320000001@3402000000>")
        .add_header("Call-ID", call_id)
        .add_header("CSeq", "1 INVITE")
        .add_header("Contact", "<sip:34020000002000000001@127.0.0.1:5060>")
        .add_header(
            "Subject",
            "34020000001320000001:0200000042,34020000002000000001:0",
        );
    m.set_body("APPLICATION/SDP", sdp.into_bytes());
    m
}

/// A PS frame: pack header, then one video PES carrying `nal` (Annex B).
fn ps_frame(nal: &[u8]) -> Vec<u8> {
    let mut f = vec![0, 0, 1, 0xBA, 0x44, 0, 4, 0, 4, 1, 1, 0x89, 0xC3, 0xF8];
    let pes_len = 3 + 4 + nal.len();
    f.extend([
        0,
        0,
        1,
        0xE0,
        (pes_len >> 8) as u8,
        pes_len as u8,
        0x80,
        0,
        0,
    ]);
    f.extend([0, 0, 0, 1]);
    f.extend(nal);
    f
}

#[test]
fn invite_ack_media_gop_and_bye() {
    let platform = UdpSocket::bind("127.0.0.1:0").unwrap();
    platform
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let media = UdpSocket::bind("127.0.0.1:0").unwrap();
    media
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let (tx, events) = mpsc::channel();
    let agent = DeviceAgent::start(
        DeviceConfig {
            server: platform.local_addr().unwrap(),
            server_id: "34020000002000000001".into(),
            domain: "3402000000".into(),
            device_id: "34020000001320000001".into(),
            channel_id: "34020000001320000001".into(),
            password: "x".into(),
            local_ip: "127.0.0.1".into(),
            local_port: 0,
            expires: 3600,
            keepalive_interval_ms: 60_000,
            retry_ms: 1000,
            device_name: "test".into(),
        },
        move |e| {
            let _ = tx.send(e);
        },
    )
    .unwrap();
    // REGISTER → 200 (this platform doesn't challenge).
    let (reg, dev) = recv(&platform);
    assert_eq!(reg.method(), Some("REGISTER"));
    let mut ok = Message::response_to(&reg, 200, "OK", Some("r"));
    ok.add_header("Expires", "3600");
    platform.send_to(&ok.to_bytes(), dev).unwrap();
    assert_eq!(
        events.recv_timeout(Duration::from_secs(2)).unwrap(),
        DeviceEvent::Registered { expires_s: 3600 }
    );

    // Frames before anyone watches: a key frame (SPS) and a delta frame are cached.
    let key = ps_frame(&[0x67, 0x42, 1, 2]);
    let delta = ps_frame(&[0x41, 0x9A, 3, 4]);
    agent.send_frame(&key, None, 1000);
    agent.send_frame(&delta, None, 4600);

    let inv = invite(media.local_addr().unwrap().port(), "c1");
    platform.send_to(&inv.to_bytes(), dev).unwrap();
    let (trying, _) = recv(&platform);
    assert_eq!(trying.status(), Some(100));
    let (ok1, _) = recv(&platform);
    assert_eq!(ok1.status(), Some(200));
    let answer = gstgb28181::core::sdp::parse(&ok1.body).unwrap();
    assert_eq!(answer.ssrc.as_deref(), Some("0200000042"));
    // No ACK yet: the 200 comes again (Timer G, 500 ms).
    let t0 = Instant::now();
    let (ok2, _) = recv(&platform);
    assert_eq!(ok2.to_bytes(), ok1.to_bytes());
    assert!(t0.elapsed() >= Duration::from_millis(300));
    // A retransmitted INVITE gets the same 200 at once.
    platform.send_to(&inv.to_bytes(), dev).unwrap();
    let (ok3, _) = recv(&platform);
    assert_eq!(ok3.to_bytes(), ok1.to_bytes());
    let mut ack = Message::request("ACK", "sip:34020000001320000001@127.0.0.1");
    for h in ["via", "from", "call-id"] {
        ack.add_header(h, inv.header(h).unwrap());
    }
    ack.add_header("To", ok1.header("to").unwrap());
    ack.add_header("CSeq", "1 ACK");
    platform.send_to(&ack.to_bytes(), dev).unwrap();
    let started = events.recv_timeout(Duration::from_secs(2)).unwrap();
    assert!(
        matches!(
            started,
            DeviceEvent::SessionStarted {
                ssrc: 200_000_042,
                ..
            }
        ),
        "{started:?}"
    );
    // The next frame makes the agent send the cached GOP (key, delta) then nothing else new
    // (the new frame is part of the GOP already).
    let delta2 = ps_frame(&[0x41, 0x9A, 5, 6]);
    agent.send_frame(&delta2, None, 8200);
    let mut buf = [0u8; 2048];
    let mut got = Vec::new();
    for _ in 0..3 {
        let (n, _) = media.recv_from(&mut buf).unwrap();
        let p = &buf[..n];
        assert_eq!(p[1] & 0x7f, 96);
        assert_eq!(p[1] & 0x80, 0x80, "one packet per small frame, marker set");
        assert_eq!(u32::from_be_bytes([p[8], p[9], p[10], p[11]]), 200_000_042);
        got.push((
            u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
            p[12..].to_vec(),
        ));
    }
    assert_eq!(got[0], (1000, key.clone()));
    assert_eq!(got[1], (4600, delta.clone()));
    assert_eq!(got[2], (8200, delta2.clone()));
    // No more 200s after the ACK.
    platform
        .set_read_timeout(Some(Duration::from_millis(800)))
        .unwrap();
    let mut b = [0u8; 4096];
    assert!(platform.recv_from(&mut b).is_err());

    // BYE from the platform ends the session.
    let mut bye = Message::request("BYE", "sip:34020000001320000001@127.0.0.1");
    bye.add_header("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK2")
        .add_header("From", inv.header("from").unwrap())
        .add_header("To", ok1.header("to").unwrap())
        .add_header("Call-ID", "c1")
        .add_header("CSeq", "2 BYE");
    platform.send_to(&bye.to_bytes(), dev).unwrap();
    let (bye_ok, _) = recv(&platform);
    assert_eq!(bye_ok.status(), Some(200));
    assert!(matches!(
        events.recv_timeout(Duration::from_secs(2)).unwrap(),
        DeviceEvent::SessionStopped { .. }
    ));
    assert!(!agent.has_session());
    agent.stop();
}

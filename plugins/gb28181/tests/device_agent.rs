//! The device-side agent (gb28181sink's SIP) against a scripted platform on a UDP socket,
//! without GStreamer: registration, INVITE with 200 retransmitted until ACK, a retransmitted
//! INVITE answered with the same 200, media sent to the offer's port with the offer's SSRC,
//! the GOP cache replayed to a new viewer, BYE.

mod common;

use common::ps_frame;
use gstgb28181::core::sip::Message;
use gstgb28181::device::{DeviceAgent, DeviceConfig, DeviceEvent, SipTransport};
use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gst_ipcam_testutil::wait_until;

fn recv(sock: &UdpSocket) -> (Message, SocketAddr) {
    let mut buf = [0u8; 65_536];
    let (n, from) = sock.recv_from(&mut buf).expect("message");
    (Message::parse(&buf[..n]).unwrap(), from)
}

fn invite(media_port: u16, call_id: &str) -> Message {
    invite_kind(media_port, call_id, "Play", "0 0")
}

/// An INVITE of session kind `s` (`Play`, `Playback`, `Download`) for the range `t`.
fn invite_kind(media_port: u16, call_id: &str, s: &str, t: &str) -> Message {
    let sdp = format!(
        "v=0\r\no=34020000002000000001 0 0 IN IP4 127.0.0.1\r\ns={s}\r\nc=IN IP4 127.0.0.1\r\nt={t}\r\nm=video {media_port} RTP/AVP 96\r\na=recvonly\r\na=rtpmap:96 PS/90000\r\ny=0200000042\r\n"
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
        common::device_config(platform.local_addr().unwrap()),
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

/// A playback's "file" is the INVITE's range (`t=`, played at real time): at its end the
/// device sends MediaStatus 121 and no more media; while it runs, a live INVITE is refused
/// (486) instead of cutting it.
#[test]
fn playback_file_ends_with_media_status_121() {
    let platform = UdpSocket::bind("127.0.0.1:0").unwrap();
    platform
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let media = UdpSocket::bind("127.0.0.1:0").unwrap();
    media
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let agent = DeviceAgent::start(
        common::device_config(platform.local_addr().unwrap()),
        |_| {},
    )
    .unwrap();
    let (reg, dev) = recv(&platform);
    let mut ok = Message::response_to(&reg, 200, "OK", Some("r"));
    ok.add_header("Expires", "3600");
    platform.send_to(&ok.to_bytes(), dev).unwrap();
    assert!(wait_until(Duration::from_secs(2), || agent.is_registered()));

    let port = media.local_addr().unwrap().port();
    let inv = invite_kind(port, "p1", "Playback", "1709280000 1709280001");
    platform.send_to(&inv.to_bytes(), dev).unwrap();
    let (trying, _) = recv(&platform);
    assert_eq!(trying.status(), Some(100));
    let (ok1, _) = recv(&platform);
    assert_eq!(ok1.status(), Some(200));
    let mut ack = Message::request("ACK", "sip:34020000001320000001@127.0.0.1");
    for h in ["via", "from", "call-id"] {
        ack.add_header(h, inv.header(h).unwrap());
    }
    ack.add_header("To", ok1.header("to").unwrap());
    ack.add_header("CSeq", "1 ACK");
    platform.send_to(&ack.to_bytes(), dev).unwrap();
    assert!(wait_until(Duration::from_secs(2), || agent.has_session()));
    let key = ps_frame(&[0x67, 0x42, 1, 2]);
    let mut buf = [0u8; 2048];
    agent.send_frame(&key, None, 0);
    assert!(media.recv_from(&mut buf).is_ok(), "media during the file");

    // A live request meanwhile is refused; the playback goes on.
    platform
        .send_to(&invite(port, "live").to_bytes(), dev)
        .unwrap();
    let (busy, _) = recv(&platform);
    assert_eq!(busy.status(), Some(486));

    // Frames keep coming in; about 1 s after the INVITE the file ends.
    let t0 = Instant::now();
    let mut status = None;
    platform
        .set_read_timeout(Some(Duration::from_millis(40)))
        .unwrap();
    while status.is_none() && t0.elapsed() < Duration::from_secs(5) {
        agent.send_frame(&key, None, 0);
        let mut b = [0u8; 4096];
        if let Ok((n, _)) = platform.recv_from(&mut b)
            && let Ok(m) = Message::parse(&b[..n])
            && m.method() == Some("MESSAGE")
        {
            status = Some(gstgb28181::core::manscdp::Manscdp::parse(&m.body).unwrap());
        }
    }
    let Some(gstgb28181::core::manscdp::Manscdp::MediaStatus { notify_type, .. }) = status else {
        panic!("no MediaStatus: {status:?}");
    };
    assert_eq!(notify_type, 121);
    assert!(t0.elapsed() < Duration::from_secs(3));
    // No media after the end of the file.
    while media.recv_from(&mut buf).is_ok() {}
    agent.send_frame(&key, None, 0);
    assert!(media.recv_from(&mut buf).is_err(), "media after the end");
    agent.stop();
}

// ---- SIP over TCP ----

use gstgb28181::core::sip::StreamFramer;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

fn tcp_config(server: SocketAddr, retry_ms: u64) -> DeviceConfig {
    DeviceConfig {
        retry_ms,
        transport: SipTransport::Tcp,
        ..common::device_config(server)
    }
}

fn accept_within(l: &TcpListener, timeout: Duration) -> TcpStream {
    l.set_nonblocking(true).unwrap();
    let mut accepted = None;
    wait_until(timeout, || {
        accepted = l.accept().ok();
        accepted.is_some()
    });
    let (s, _) = accepted.expect("no connection");
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    s
}

/// The platform's side of one TCP connection: messages framed by Content-Length.
struct Conn {
    s: TcpStream,
    framer: StreamFramer,
    queue: std::collections::VecDeque<Message>,
    eof: bool,
}

impl Conn {
    fn new(s: TcpStream) -> Self {
        Conn {
            s,
            framer: StreamFramer::new(),
            queue: Default::default(),
            eof: false,
        }
    }

    /// The next message within `timeout`, if any.
    fn next_within(&mut self, timeout: Duration) -> Option<Message> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 8192];
        while self.queue.is_empty() && !self.eof && Instant::now() < deadline {
            match self.s.read(&mut buf) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    for m in self.framer.push(&buf[..n]) {
                        self.queue
                            .push_back(m.expect("well-framed message from the device"));
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => self.eof = true,
            }
        }
        self.queue.pop_front()
    }

    fn next(&mut self) -> Message {
        self.next_within(Duration::from_secs(3))
            .expect("a message from the device")
    }

    fn send(&mut self, m: &Message) {
        self.s.write_all(&m.to_bytes()).unwrap();
    }
}

fn wait_event(
    events: &mpsc::Receiver<DeviceEvent>,
    timeout: Duration,
    mut pred: impl FnMut(&DeviceEvent) -> bool,
) -> DeviceEvent {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = events
            .recv_timeout(left)
            .expect("the expected device event in time");
        if pred(&e) {
            return e;
        }
    }
}

fn register_ok(c: &mut Conn) -> Message {
    let reg = c.next();
    assert_eq!(reg.method(), Some("REGISTER"));
    let mut ok = Message::response_to(&reg, 200, "OK", Some("r"));
    ok.add_header("Expires", "3600");
    c.send(&ok);
    reg
}

fn catalog_query() -> Message {
    let mut m = Message::request("MESSAGE", "sip:34020000001320000001@3402000000");
    m.add_header("Via", "SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bKq1")
        .add_header("From", "<sip:34020000002000000001@3402000000>;tag=p9")
        .add_header("To", "<sip:34020000001320000001@3402000000>")
        .add_header("Call-ID", "q1")
        .add_header("CSeq", "1 MESSAGE");
    m.set_body(
        "Application/MANSCDP+xml",
        b"<?xml version=\"1.0\"?>\r\n<Query>\r\n<CmdType>Catalog</CmdType>\r\n<SN>77</SN>\r\n<DeviceID>34020000001320000001</DeviceID>\r\n</Query>\r\n".to_vec(),
    );
    m
}

#[test]
fn tcp_register_requests_framing_reconnect_and_clean_stop() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = listener.local_addr().unwrap();
    let media = UdpSocket::bind("127.0.0.1:0").unwrap();
    media
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let (tx, events) = mpsc::channel();
    let agent = DeviceAgent::start(tcp_config(server, 100), move |e| {
        let _ = tx.send(e);
    })
    .unwrap();
    let mut c = Conn::new(accept_within(&listener, Duration::from_secs(3)));
    let device_port = c.s.peer_addr().unwrap().port();

    // REGISTER over TCP: Via TCP, Contact with transport=tcp and the connection's port.
    let reg = register_ok(&mut c);
    let via = reg.header("via").unwrap();
    assert!(via.starts_with("SIP/2.0/TCP 127.0.0.1:"), "{via}");
    let contact = reg.header("contact").unwrap();
    assert!(
        contact.contains(&format!(":{device_port};transport=tcp")),
        "{contact}"
    );
    wait_event(&events, Duration::from_secs(2), |e| {
        *e == DeviceEvent::Registered { expires_s: 3600 }
    });
    assert!(agent.is_registered() && agent.is_connected());

    // Garbage, a Catalog query and an INVITE in one stream, cut mid-header: the framer
    // skips the garbage and splits the messages.
    let inv = invite(media.local_addr().unwrap().port(), "t1");
    let mut stream = b"\r\nnot sip at all\r\n".to_vec();
    stream.extend(catalog_query().to_bytes());
    stream.extend(inv.to_bytes());
    for chunk in stream.chunks(97) {
        c.s.write_all(chunk).unwrap();
        // Pacing: each chunk a segment of its own (the split reads under test), not a wait.
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(c.next());
    }
    let status_of = |method: &str, status: u16| {
        got.iter().any(|m| {
            m.status() == Some(status)
                && m.cseq()
                    .is_some_and(|c| c.method.eq_ignore_ascii_case(method))
        })
    };
    assert!(status_of("MESSAGE", 200), "{got:?}");
    assert!(status_of("INVITE", 100), "{got:?}");
    assert!(status_of("INVITE", 200), "{got:?}");
    let catalog = got
        .iter()
        .find(|m| m.method() == Some("MESSAGE"))
        .expect("catalog response");
    assert!(catalog.header("via").unwrap().starts_with("SIP/2.0/TCP "));
    assert!(String::from_utf8_lossy(&catalog.body).contains("<SN>77</SN>"));
    let ok = got
        .iter()
        .find(|m| m.status() == Some(200) && m.cseq().is_some_and(|c| c.method == "INVITE"))
        .unwrap()
        .clone();
    assert!(ok.header("contact").unwrap().contains(";transport=tcp>"));
    // No ACK yet, but over TCP the 200 is not re-sent (over UDP it is after 500 ms).
    assert!(c.next_within(Duration::from_millis(1200)).is_none());

    let mut ack = Message::request("ACK", "sip:34020000001320000001@127.0.0.1");
    for h in ["via", "from", "call-id"] {
        ack.add_header(h, inv.header(h).unwrap());
    }
    ack.add_header("To", ok.header("to").unwrap())
        .add_header("CSeq", "1 ACK");
    c.send(&ack);
    wait_event(&events, Duration::from_secs(2), |e| {
        matches!(
            e,
            DeviceEvent::SessionStarted {
                ssrc: 200_000_042,
                ..
            }
        )
    });
    agent.send_frame(&ps_frame(&[0x67, 0x42, 1, 2]), None, 1000);
    let mut buf = [0u8; 2048];
    let (n, _) = media.recv_from(&mut buf).expect("media over UDP");
    assert_eq!(
        u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
        200_000_042
    );
    assert!(n > 12);

    // The platform closes the connection: the device connects again and registers again.
    drop(c);
    let e = wait_event(&events, Duration::from_secs(2), |e| {
        matches!(e, DeviceEvent::Disconnected { .. })
    });
    assert!(
        matches!(
            &e,
            DeviceEvent::Disconnected {
                retry_in_ms: 100,
                ..
            }
        ),
        "{e:?}"
    );
    let t0 = Instant::now();
    let mut c = Conn::new(accept_within(&listener, Duration::from_secs(3)));
    assert!(t0.elapsed() < Duration::from_secs(2));
    let reg2 = register_ok(&mut c);
    assert_ne!(reg2.call_id(), reg.call_id(), "a fresh registration");
    assert!(reg2.header("contact").unwrap().contains(&format!(
        ":{};transport=tcp",
        c.s.peer_addr().unwrap().port()
    )));
    wait_event(&events, Duration::from_secs(2), |e| {
        matches!(e, DeviceEvent::Registered { .. })
    });

    // Stop: BYE for the session, REGISTER Expires: 0, then the connection closes.
    let a = agent.clone();
    let stopper = std::thread::spawn(move || a.stop());
    let bye = c.next();
    assert_eq!(bye.method(), Some("BYE"));
    assert_eq!(bye.call_id(), Some("t1"));
    c.send(&Message::response_to(&bye, 200, "OK", None));
    let unreg = c.next();
    assert_eq!(unreg.method(), Some("REGISTER"));
    assert_eq!(unreg.expires(), Some(0));
    c.send(&Message::response_to(&unreg, 200, "OK", Some("r")));
    stopper.join().unwrap();
    assert!(c.next_within(Duration::from_secs(2)).is_none());
    assert!(c.eof, "connection closed after the unregistration");
}

#[test]
fn tcp_refused_backs_off_then_registers_when_the_server_comes_up() {
    // A port nobody listens on yet: this socket holds it, bound but not listening (connections
    // are refused), until the server comes up on it.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let server = socket.local_addr().unwrap().as_socket().unwrap();
    let (tx, events) = mpsc::channel();
    let agent = DeviceAgent::start(tcp_config(server, 100), move |e| {
        let _ = tx.send(e);
    })
    .unwrap();
    let mut delays = Vec::new();
    for _ in 0..3 {
        if let DeviceEvent::Disconnected { retry_in_ms, .. } =
            wait_event(&events, Duration::from_secs(3), |e| {
                matches!(e, DeviceEvent::Disconnected { .. })
            })
        {
            delays.push(retry_in_ms);
        }
    }
    assert_eq!(delays, [100, 200, 400], "doubling backoff");
    assert!(!agent.is_registered() && !agent.is_connected());
    socket.listen(16).unwrap();
    let listener = TcpListener::from(socket);
    let mut c = Conn::new(accept_within(&listener, Duration::from_secs(3)));
    register_ok(&mut c);
    wait_event(&events, Duration::from_secs(2), |e| {
        matches!(e, DeviceEvent::Registered { .. })
    });
    assert!(agent.is_registered());
    // Stop answers nothing here: the unregister gets no answer, stop still returns quickly.
    let t0 = Instant::now();
    agent.stop();
    assert!(t0.elapsed() < Duration::from_secs(2));
}

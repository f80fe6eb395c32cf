use super::*;

/// The timers' clock starts at the wall clock and only moves forward.
#[test]
fn timer_clock_is_monotonic_from_the_wall_clock() {
    let (a, wall) = (now_ms(), wall_ms());
    assert!(a.abs_diff(wall) < 60_000, "{a} vs {wall}");
    let mut last = a;
    for _ in 0..1000 {
        let t = now_ms();
        assert!(t >= last);
        last = t;
    }
}

fn key() -> EndpointKey {
    EndpointKey {
        address: "127.0.0.1".into(),
        port: 0,
        transport: SipTransport::Udp,
    }
}

#[test]
fn register_vector_challenged_and_shared() {
    let k = EndpointKey { port: 0, ..key() };
    let ep = Endpoint::start(k, RegistrarConfig::default()).unwrap();
    let (tx, rx) = mpsc::channel();
    ep.subscribe(move |e| {
        let _ = tx.send(e.clone());
    });
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let reg = b"REGISTER sip:34020000002000000001@3402000000 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1\r\nFrom: <sip:34020000001320000001@3402000000>;tag=1\r\nTo: <sip:34020000001320000001@3402000000>\r\nCall-ID: 1\r\nCSeq: 1 REGISTER\r\nContact: <sip:34020000001320000001@127.0.0.1:5060>\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n";
    client.send_to(reg, ep.local_addr()).unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = client.recv_from(&mut buf).unwrap();
    let resp = Message::parse(&buf[..n]).unwrap();
    assert_eq!(resp.status(), Some(401));
    assert!(rx.try_recv().is_err());
    ep.shutdown();
}

fn register_over_tcp(ep: &Endpoint, device: &str) -> (TcpStream, StreamFramer) {
    use crate::core::client::{ClientAction, RegisterClient, RegisterClientConfig};
    let mut s = TcpStream::connect(ep.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut client = RegisterClient::new(RegisterClientConfig {
        device_id: device.into(),
        transport: "TCP".into(),
        local_port: s.local_addr().unwrap().port(),
        ..Default::default()
    });
    let mut framer = StreamFramer::new();
    let mut actions = client.start(0);
    let mut buf = [0u8; 4096];
    for _ in 0..10 {
        let mut registered = false;
        for a in actions.drain(..) {
            match a {
                ClientAction::Send(m) => s.write_all(&m.to_bytes()).unwrap(),
                ClientAction::Registered { .. } => registered = true,
                other => panic!("{other:?}"),
            }
        }
        if registered {
            return (s, framer);
        }
        let n = s.read(&mut buf).unwrap();
        for m in framer.push(&buf[..n]) {
            actions.extend(client.on_response(&m.unwrap(), 0));
        }
    }
    panic!("not registered");
}

#[test]
fn tcp_registration_and_query_on_the_same_connection() {
    let k = EndpointKey {
        transport: SipTransport::Tcp,
        ..key()
    };
    let ep = Endpoint::start(k, RegistrarConfig::default()).unwrap();
    let (tx, rx) = mpsc::channel();
    ep.subscribe(move |e| {
        let _ = tx.send(e.clone());
    });
    let device = "34020000001320000009";
    let (mut s, mut framer) = register_over_tcp(&ep, device);
    let ev = rx.recv_timeout(Duration::from_secs(2)).unwrap();
    assert!(matches!(
        ev,
        EndpointEvent::Registrar(registrar::Event::Registered { .. })
    ));
    assert_eq!(ep.devices().len(), 1);
    let sn = ep.query(device, "Catalog").unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    let msgs: Vec<_> = framer.push(&buf[..n]);
    let m = msgs[0].as_ref().unwrap();
    assert_eq!(m.method(), Some("MESSAGE"));
    match Manscdp::parse(&m.body).unwrap() {
        Manscdp::CatalogQuery { sn: got, .. } => assert_eq!(got, sn),
        other => panic!("{other:?}"),
    }
    ep.shutdown();
}

#[test]
fn udp_requests_are_retransmitted_until_answered() {
    let ep = Endpoint::start(key(), RegistrarConfig::default()).unwrap();
    let dev = UdpSocket::bind("127.0.0.1:0").unwrap();
    dev.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let dest = dev.local_addr().unwrap();
    let m = ep.new_request("MESSAGE", "34020000001320000001", dest);
    let rx = ep.request(&m, dest).unwrap();
    let mut buf = [0u8; 4096];
    let t0 = std::time::Instant::now();
    let (n1, _) = dev.recv_from(&mut buf).unwrap();
    let first = buf[..n1].to_vec();
    let (n2, _) = dev.recv_from(&mut buf).unwrap();
    // Timer E: the same request again after T1 (500 ms).
    assert_eq!(&buf[..n2], &first[..]);
    assert!(t0.elapsed() >= Duration::from_millis(400));
    // A 200 ends the transaction and reaches the requester.
    let req = Message::parse(&first).unwrap();
    let ok = Message::response_to(&req, 200, "OK", Some("x"));
    dev.send_to(&ok.to_bytes(), ep.local_addr()).unwrap();
    match rx.recv_timeout(Duration::from_secs(2)).unwrap() {
        TxReply::Response(r) => assert_eq!(r.status(), Some(200)),
        TxReply::Timeout => panic!("timeout"),
    }
    ep.shutdown();
}

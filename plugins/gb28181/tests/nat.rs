//! A device behind NAT: its Via names its private address, but the endpoint answers where the
//! request came from and tells it how it was seen (`received`, `rport`: RFC 3581). Over
//! loopback, the "private" address in the Via is only text: nothing is ever sent to it.

mod common;

use common::{Conn, request_to_server, serial};
use gstgb28181::core::registrar::RegistrarConfig;
use gstgb28181::endpoint::{Endpoint, EndpointKey, SipTransport};
use std::time::Duration;

fn options_from_behind_nat(server_ip: &str) {
    let ep = Endpoint::obtain(
        &EndpointKey {
            address: server_ip.into(),
            port: 0,
            transport: SipTransport::Udp,
        },
        RegistrarConfig::default(),
    )
    .unwrap();
    let mut conn = Conn::open(SipTransport::Udp, ep.local_addr());
    let local = conn.local();
    let mut req = request_to_server("OPTIONS", "34020000001320000001");
    req.set_header(
        "Via",
        "SIP/2.0/UDP 192.168.1.64:5060;rport;branch=z9hG4bK-nat-1",
    );
    conn.send(&req);
    let resp = conn
        .recv(Duration::from_secs(3))
        .expect("the answer comes back to the source address, not to the Via's");
    assert_eq!(resp.status(), Some(200));
    let via = resp.via().expect("Via");
    assert_eq!(via.host, "192.168.1.64", "sent-by is kept");
    assert_eq!(via.param("rport"), Some(local.port().to_string().as_str()));
    assert_eq!(via.param("received"), Some(local.ip().to_string().as_str()));
    assert_eq!(via.branch(), Some("z9hG4bK-nat-1"));
    ep.shutdown();
}

#[test]
fn answers_tell_a_device_behind_nat_where_it_is_seen_v4() {
    let _g = serial();
    options_from_behind_nat("127.0.0.1");
}

#[test]
fn answers_tell_a_device_behind_nat_where_it_is_seen_v6() {
    let _g = serial();
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback on this machine");
        return;
    }
    options_from_behind_nat("::1");
}

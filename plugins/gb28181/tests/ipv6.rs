//! GB28181 over IPv6 on ::1: gb28181sink registering to gb28181src over SIP UDP and SIP TCP,
//! live view with media over UDP, TCP passive and TCP active (`c=IN IP6`), frames decoded
//! by stock mpegpsdemux / avdec_h264; SIP over IPv4 with media over IPv6; an endpoint on an
//! IPv6 socket where IPv4 devices appear under their IPv4 address (v4-mapped sources
//! normalised) and forged requests are refused; `server-ip=::1` with an IPv4 `local-ip` and a
//! bad `media-address` are element errors, not silence. Skipped (with a message) on a machine
//! without ::1. Loopback addresses only. Every wait is bounded.

use gst::prelude::*;
use gst_ipcam_testutil::{
    count_samples, is_element_message as element_named, wait_count as wait_frames,
    wait_message as wait_for,
};
use gstgb28181::core::manscdp::Manscdp;
use gstgb28181::core::registrar::RegistrarConfig;
use gstgb28181::core::sip::Message;
use gstgb28181::endpoint::{Endpoint, EndpointKey, SipTransport};
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

mod common;
// serial(): real-time pipelines and x264 on a 2-core machine, one test at a time.
use common::{Conn, init, keepalive, serial, sip_port};

/// Whether this machine has ::1 (checked once; the tests skip with a message otherwise).
fn has_ipv6() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| match UdpSocket::bind("[::1]:0") {
        Ok(_) => true,
        Err(e) => {
            eprintln!("SKIPPED: no IPv6 loopback on this machine ({e})");
            false
        }
    })
}

/// `gb28181src` on `sip_address` decoding to a counting appsink.
fn src_pipeline(
    sip_address: &str,
    port: u16,
    device: &str,
    transport: &str,
    sip: &str,
    extra: &str,
) -> (gst::Pipeline, Arc<AtomicUsize>) {
    let p = gst_ipcam_testutil::launch(&format!(
        "gb28181src name=src sip-address={sip_address} sip-port={port} sip-transport={sip} \
         device-id={device} password=secret transport={transport} wait-timeout=15 \
         stream-timeout=5 {extra} ! mpegpsdemux ! h264parse ! avdec_h264 \
         ! appsink name=out sync=false emit-signals=false"
    ));
    let frames = count_samples(&p, "out");
    (p, frames)
}

fn sink_pipeline(server_ip: &str, port: u16, device: &str, extra: &str) -> gst::Pipeline {
    let desc = format!(
        "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=25/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 bitrate=300 ! h264parse \
         ! mpegpsmux ! gb28181sink name=dev server-ip={server_ip} server-port={port} \
         device-id={device} password=secret retry-interval=300 keepalive-interval=500 {extra}"
    );
    gst::parse::launch(&desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap()
}

/// The sink registers to the source over `sip` on ::1, is INVITEd with media `transport` on
/// ::1 and the source decodes its frames. `sip_address` / `server_ip` spell ::1 with or
/// without brackets.
fn live_view_v6(transport: &str, sip: &str, sip_address: &str, server_ip: &str, device: &str) {
    live_view(transport, sip, sip_address, server_ip, device, "");
}

/// [`live_view_v6`] with `src_extra` gb28181src properties; SIP on `server_ip`'s family.
fn live_view(
    transport: &str,
    sip: &str,
    sip_address: &str,
    server_ip: &str,
    device: &str,
    src_extra: &str,
) {
    if !has_ipv6() {
        return;
    }
    init();
    let _g = serial();
    let (src, frames) = src_pipeline(sip_address, 0, device, transport, sip, src_extra);
    let src_bus = src.bus().unwrap();
    src.set_state(gst::State::Playing).unwrap();
    let port = sip_port(&src, "src");
    let sink = sink_pipeline(server_ip, port, device, &format!("sip-transport={sip}"));
    let sink_bus = sink.bus().unwrap();
    sink.set_state(gst::State::Playing).unwrap();

    let reg = wait_for(&src_bus, Duration::from_secs(10), |m| {
        element_named(m, "gb28181-device-registered")
    })
    .expect("device registered over IPv6");
    let s = reg.structure().unwrap();
    assert_eq!(s.get::<String>("device-id").unwrap(), device);
    let source = s.get::<String>("source").unwrap();
    let contact = s.get::<String>("contact").unwrap();
    if server_ip.contains(':') {
        assert!(source.starts_with("[::1]:"), "source {source}");
        assert!(contact.contains("@[::1]:"), "contact {contact}");
    } else {
        assert!(source.starts_with("127.0.0.1:"), "source {source}");
    }

    let n = wait_frames(&frames, 15, Duration::from_secs(20), &src_bus);
    assert!(
        n >= 15,
        "{transport}/{sip}: only {n} frames decoded over IPv6"
    );
    let started = wait_for(&sink_bus, Duration::from_secs(2), |m| {
        element_named(m, "gb28181-session-started")
    })
    .expect("session started on the device");
    let st = started.structure().unwrap();
    assert_eq!(st.get::<String>("transport").unwrap(), transport);
    let dest = st.get::<String>("destination").unwrap();
    assert!(dest.contains("::1"), "media destination {dest}");
    let stats = src
        .by_name("src")
        .unwrap()
        .property::<gst::Structure>("stats");
    assert!(stats.get::<u64>("frames").unwrap() >= 15, "{stats}");

    // The camera hangs up (BYE over IPv6): the source ends with EOS.
    sink.set_state(gst::State::Null).unwrap();
    let eos = wait_for(&src_bus, Duration::from_secs(5), |m| {
        matches!(m.view(), gst::MessageView::Eos(_))
    });
    assert!(
        eos.is_some(),
        "{transport}/{sip}: no EOS after the camera's BYE"
    );
    src.set_state(gst::State::Null).unwrap();
}

#[test]
fn ipv6_sip_udp_media_udp() {
    live_view_v6("udp", "udp", "::1", "::1", "34020000001320000601");
}

#[test]
fn ipv6_sip_udp_media_tcp_passive() {
    live_view_v6(
        "tcp-passive",
        "udp",
        "[::1]",
        "[::1]",
        "34020000001320000602",
    );
}

#[test]
fn ipv6_sip_udp_media_tcp_active() {
    live_view_v6("tcp-active", "udp", "::1", "[::1]", "34020000001320000603");
}

#[test]
fn ipv6_sip_tcp_media_udp() {
    live_view_v6("udp", "tcp", "[::1]", "::1", "34020000001320000604");
}

#[test]
fn ipv6_sip_tcp_media_tcp_active() {
    live_view_v6("tcp-active", "tcp", "::1", "::1", "34020000001320000605");
}

/// SIP over IPv4, media over IPv6 (`media-address=[::1]`: `c=IN IP6 ::1` in the offer): the
/// device sends from an address of the media's family, not of its SIP socket's.
#[test]
fn sip_ipv4_media_ipv6_udp_and_tcp_passive() {
    for (transport, device) in [
        ("udp", "34020000001320000609"),
        ("tcp-passive", "34020000001320000610"),
    ] {
        live_view(
            transport,
            "udp",
            "127.0.0.1",
            "127.0.0.1",
            device,
            "media-address=[::1]",
        );
    }
}

/// A media-address that is no IP literal is an error when the element starts (it used to
/// become 0.0.0.0 silently).
#[test]
fn bad_media_address_is_an_element_error() {
    init();
    let _g = serial();
    let (src, _) = src_pipeline(
        "127.0.0.1",
        0,
        "34020000001320000611",
        "udp",
        "udp",
        "media-address=not-an-address",
    );
    let bus = src.bus().unwrap();
    assert!(src.set_state(gst::State::Playing).is_err());
    let err = wait_for(&bus, Duration::from_secs(2), |m| {
        matches!(m.view(), gst::MessageView::Error(_))
    })
    .expect("error for a bad media-address");
    let gst::MessageView::Error(e) = err.view() else {
        unreachable!()
    };
    let text = format!("{} {:?}", e.error(), e.debug());
    assert!(text.contains("media-address"), "{text}");
    src.set_state(gst::State::Null).unwrap();
}

/// Before: the sink bound an IPv4 socket and sent nothing, with no warning. Now a local
/// address of the wrong family is an element error that says so, and the pipeline does
/// not start.
#[test]
fn ipv6_server_with_ipv4_local_ip_is_an_element_error() {
    if !has_ipv6() {
        return;
    }
    init();
    // The server: a port of ::1 held by this socket for the whole test (the sink must fail
    // before it sends anything; nothing else can be there).
    let server = UdpSocket::bind("[::1]:0").unwrap();
    let port = server.local_addr().unwrap().port();
    for transport in ["udp", "tcp"] {
        let sink = sink_pipeline(
            "::1",
            port,
            "34020000001320000606",
            &format!("local-ip=127.0.0.1 sip-transport={transport}"),
        );
        let bus = sink.bus().unwrap();
        let res = sink.set_state(gst::State::Playing);
        let err = wait_for(&bus, Duration::from_secs(5), |m| {
            matches!(m.view(), gst::MessageView::Error(_))
        })
        .unwrap_or_else(|| panic!("{transport}: no error for an IPv4 socket to an IPv6 server"));
        let gst::MessageView::Error(e) = err.view() else {
            unreachable!()
        };
        let text = format!("{} {:?}", e.error(), e.debug());
        assert!(
            text.contains("IPv4") && text.contains("IPv6") && text.contains("[::1]"),
            "{transport}: unclear error: {text}"
        );
        assert!(res.is_err(), "{transport}: the pipeline started anyway");
        sink.set_state(gst::State::Null).unwrap();
    }
}

/// An endpoint on an IPv6 socket that also receives IPv4 (bound to `::ffff:127.0.0.1`, the
/// loopback-only form of `::`: its IPv4 peers arrive v4-mapped): an IPv4 device is known under
/// its IPv4 address (not `[::ffff:127.0.0.1]:port`), requests claiming it from another port or
/// connection are refused (403) and its binding stays; queries reach it. The same on `::1`
/// for an IPv6 device. Over UDP and TCP.
fn mapped_and_v6_sources(t: SipTransport) {
    if !has_ipv6() {
        return;
    }
    // Port 0 on ::1 is the key the live views' gb28181src use too: not at the same time.
    let _g = serial();
    let d = Duration::from_secs(2);
    for (bind, dev_id) in [
        ("::ffff:127.0.0.1", "34020000001320000607"),
        ("::1", "34020000001320000608"),
    ] {
        let key = EndpointKey {
            address: bind.into(),
            port: 0,
            transport: t,
        };
        let ep = Endpoint::obtain(&key, RegistrarConfig::default()).unwrap();
        let server = SocketAddr::new(ep.local_addr().ip().to_canonical(), ep.local_addr().port());
        let mut dev = Conn::open(t, server);
        assert_eq!(dev.register(dev_id, "12345678"), Some(200), "{t:?} {bind}");
        let bound = ep.device(dev_id).unwrap().source;
        assert_eq!(bound, dev.local().to_string(), "{t:?} {bind}");
        assert!(!bound.contains("ffff"), "{bound}");

        // Forgeries from another port / connection of the same host.
        let forged_before = ep.stats().registrar.forged_requests;
        let mut atk = Conn::open(t, server);
        assert_eq!(atk.request(&keepalive(dev_id, dev_id), d), Some(403));
        assert_eq!(ep.stats().registrar.forged_requests, forged_before + 1);
        assert_eq!(ep.device(dev_id).unwrap().source, bound);

        // The real device's keepalive is accepted and a query reaches it.
        assert_eq!(dev.request(&keepalive(dev_id, dev_id), d), Some(200));
        let sn = ep.query(dev_id, "Catalog").unwrap();
        let q = dev.recv(d).expect("query reached the device");
        match Manscdp::parse(&q.body).unwrap() {
            Manscdp::CatalogQuery { sn: got, .. } => assert_eq!(got, sn),
            other => panic!("{other:?}"),
        }
        dev.send(&Message::response_to(&q, 200, "OK", Some("d")));
        assert!(atk.recv(Duration::from_millis(200)).is_none());
        ep.shutdown();
    }
}

#[test]
fn mapped_and_v6_sources_udp() {
    mapped_and_v6_sources(SipTransport::Udp);
}

#[test]
fn mapped_and_v6_sources_tcp() {
    mapped_and_v6_sources(SipTransport::Tcp);
}

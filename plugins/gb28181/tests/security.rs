//! Attacks on the platform's SIP endpoint over loopback UDP and TCP, against a real
//! [`Endpoint`] (and real gb28181src / gb28181sink elements where an element is involved):
//! keepalive hijacking and forged MANSCDP, invalid IDs, Catalog floods with a slow subscriber,
//! password guessing from many source ports, guessable identifiers and forged in-dialog BYEs.
//! Every loop is bounded by a deadline.

use gst::prelude::*;
use gst_ipcam_testutil::{
    count_samples, is_element_message as element_named, wait_message as wait_bus, wait_until,
};
use gstgb28181::core::client::{ClientAction, RegisterClient, RegisterClientConfig};
use gstgb28181::core::digest::{Challenge, answer_challenge};
use gstgb28181::core::manscdp::{self, Manscdp};
use gstgb28181::core::random;
use gstgb28181::core::ratelimit::LimiterConfig;
use gstgb28181::core::registrar::{
    Event, RegistrarConfig, RestoredBinding, process_secret, reason,
};
use gstgb28181::core::sip::Message;
use gstgb28181::core::transaction::Dialog;
use gstgb28181::endpoint::{Endpoint, EndpointEvent, EndpointKey, SipTransport};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

mod common;
// serial(): the tests measure latencies and send thousands of requests, one at a time.
use common::{
    Conn, init as gst_init, keepalive, manscdp_message, request_to_server, serial, sip_port,
};

const SERVER: &str = "34020000002000000001";
const DEV: &str = "34020000001320000001";
const OTHER: &str = "34020000001320000002";
const PASSWORD: &str = "12345678";

/// An endpoint on 127.0.0.1, a port the OS gives (`ep.local_addr()`), with `config`
/// ([`serial`] leaves no earlier endpoint of the same key to share).
fn endpoint(t: SipTransport, config: RegistrarConfig) -> Arc<Endpoint> {
    let key = EndpointKey {
        address: "127.0.0.1".into(),
        port: 0,
        transport: t,
    };
    let ep = Endpoint::obtain(&key, config).unwrap();
    assert_ne!(ep.local_addr().port(), 0);
    ep
}

/// Every event, as it reaches subscribers.
fn collect(ep: &Endpoint) -> Arc<Mutex<Vec<EndpointEvent>>> {
    let events = Arc::new(Mutex::new(Vec::new()));
    let e = events.clone();
    ep.subscribe(move |ev| e.lock().unwrap().push(ev.clone()));
    events
}

/// Waits until `pred` holds for some collected event.
fn wait_event(
    events: &Mutex<Vec<EndpointEvent>>,
    timeout: Duration,
    pred: impl Fn(&EndpointEvent) -> bool,
) -> Option<EndpointEvent> {
    let mut found = None;
    wait_until(timeout, || {
        found = events.lock().unwrap().iter().find(|e| pred(e)).cloned();
        found.is_some()
    });
    found
}

/// A compact Catalog response (DeviceID and Status per item, as small as devices make them).
fn catalog(from_id: &str, sn: u32, sum_num: usize, ids: &[String]) -> Message {
    let mut b = format!(
        "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Response>\r\n<CmdType>Catalog</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{from_id}</DeviceID>\r\n<SumNum>{sum_num}</SumNum>\r\n<DeviceList Num=\"{}\">\r\n",
        ids.len()
    );
    for id in ids {
        b.push_str(&format!(
            "<Item><DeviceID>{id}</DeviceID><Status>ON</Status></Item>\r\n"
        ));
    }
    b.push_str("</DeviceList>\r\n</Response>\r\n");
    manscdp_message(from_id, &b)
}

fn forged_count(ep: &Endpoint) -> u64 {
    ep.stats().registrar.forged_requests
}

// ---- 1. Keepalive hijack and forged MANSCDP ----

fn keepalive_hijack(t: SipTransport) {
    let ep = endpoint(t, RegistrarConfig::default());
    let events = collect(&ep);
    let mut dev = Conn::open(t, ep.local_addr());
    assert_eq!(dev.register(DEV, PASSWORD), Some(200), "{t:?}");
    let bound = ep.device(DEV).unwrap().source;
    assert_eq!(bound, dev.local().to_string());
    let d = Duration::from_secs(2);

    // The attacker claims to be DEV: keepalive, Catalog, DeviceInfo, Alarm, over MESSAGE and
    // NOTIFY. All refused, the binding stays.
    let mut atk = Conn::open(t, ep.local_addr());
    assert_eq!(atk.request(&keepalive(DEV, DEV), d), Some(403), "{t:?}");
    assert_eq!(ep.device(DEV).unwrap().source, bound);
    assert_eq!(
        atk.request(
            &catalog(DEV, 1, 1, &["34020000001310000666".to_string()]),
            d
        ),
        Some(403)
    );
    let info = manscdp::build_device_info_response(
        7,
        &manscdp::DeviceInfo {
            device_id: DEV.into(),
            result: "OK".into(),
            ..Default::default()
        },
    );
    assert_eq!(atk.request(&manscdp_message(DEV, &info), d), Some(403));
    let alarm = format!(
        "<?xml version=\"1.0\"?>\r\n<Notify>\r\n<CmdType>Alarm</CmdType>\r\n<SN>3</SN>\r\n<DeviceID>{DEV}</DeviceID>\r\n</Notify>\r\n"
    );
    let mut notify = request_to_server("NOTIFY", DEV);
    notify.set_body("Application/MANSCDP+xml", alarm.into_bytes());
    assert_eq!(atk.request(&notify, d), Some(403));
    assert_eq!(forged_count(&ep), 4);
    let ev = wait_event(&events, d, |e| {
        matches!(e, EndpointEvent::Registrar(Event::ForgedRequest { .. }))
    })
    .expect("forged request reported");
    let EndpointEvent::Registrar(Event::ForgedRequest {
        device_id, source, ..
    }) = ev
    else {
        unreachable!()
    };
    assert_eq!(device_id, DEV);
    assert_eq!(source, atk.local().to_string());

    // A registered device may not speak for another one in its body.
    assert_eq!(atk.register(OTHER, PASSWORD), Some(200));
    assert_eq!(atk.request(&keepalive(OTHER, DEV), d), Some(403));
    assert_eq!(atk.request(&manscdp_message(OTHER, &info), d), Some(403));
    assert!(wait_event(&events, d, |e| matches!(
        e,
        EndpointEvent::Registrar(Event::ForgedRequest { reason: r, .. }) if *r == reason::BODY_ID_MISMATCH
    ))
    .is_some());
    // ... and its own keepalive is fine.
    assert_eq!(atk.request(&keepalive(OTHER, OTHER), d), Some(200));
    // The real device's keepalive is accepted.
    assert_eq!(dev.request(&keepalive(DEV, DEV), d), Some(200));
    // A device that never registered stays refused (404: register first).
    let unknown = "34020000001320000003";
    let mut stranger = Conn::open(t, ep.local_addr());
    assert_eq!(stranger.request(&keepalive(unknown, unknown), d), Some(404));
    assert!(ep.device(unknown).is_none());

    // Requests to DEV still go to the real device, not to the attacker.
    assert_eq!(ep.device(DEV).unwrap().source, bound);
    let sn = ep.query(DEV, "Catalog").unwrap();
    let q = dev.recv(d).expect("query reached the device");
    match Manscdp::parse(&q.body).unwrap() {
        Manscdp::CatalogQuery { sn: got, .. } => assert_eq!(got, sn),
        other => panic!("{other:?}"),
    }
    dev.send(&Message::response_to(&q, 200, "OK", Some("d")));
    let dest = ep.device_addr(DEV).unwrap();
    let invite = ep.new_request("INVITE", DEV, dest);
    let _rx = ep.request(&invite, dest).unwrap();
    let got = dev.recv(d).expect("INVITE reached the device");
    assert_eq!(got.method(), Some("INVITE"));
    assert_eq!(got.call_id(), invite.call_id());
    // Nothing for the attacker (only answers to its own requests).
    assert!(atk.recv(Duration::from_millis(300)).is_none());
    ep.shutdown();
}

/// Thousands of forged requests: all refused and counted, only a bounded number of them
/// published as events, signalling unaffected.
#[test]
fn forged_flood_is_counted_but_published_at_a_bounded_rate() {
    let _g = serial();
    let ep = endpoint(SipTransport::Udp, RegistrarConfig::default());
    let events = collect(&ep);
    let mut dev = Conn::open(SipTransport::Udp, ep.local_addr());
    assert_eq!(dev.register(DEV, PASSWORD), Some(200));
    let mut atk = Conn::open(SipTransport::Udp, ep.local_addr());
    let t0 = Instant::now();
    let n = 3000;
    for i in 0..n {
        let m = if i % 2 == 0 {
            keepalive(DEV, DEV)
        } else {
            keepalive("x/../y", "x/../y")
        };
        assert_eq!(atk.request(&m, Duration::from_secs(1)), Some(403));
        if i % 200 == 0 {
            // Answers keep flowing meanwhile.
            assert_eq!(
                dev.request(&request_to_server("OPTIONS", DEV), Duration::from_secs(1)),
                Some(200)
            );
        }
    }
    // Everything was handled (counted) ...
    wait_until(Duration::from_secs(10), || {
        ep.stats().registrar.forged_requests + ep.stats().registrar.invalid_ids >= n
    });
    let secs = t0.elapsed().as_secs_f64();
    let st = ep.stats();
    assert_eq!(st.registrar.forged_requests, n / 2);
    assert_eq!(st.registrar.invalid_ids, n / 2);
    assert_eq!(ep.device(DEV).unwrap().source, dev.local().to_string());
    // ... but only a bounded number published: each refusal is published (just after its
    // request is answered) or counted as suppressed.
    let refusals_published = || {
        events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    EndpointEvent::Registrar(Event::ForgedRequest { .. } | Event::InvalidId { .. })
                )
            })
            .count() as u64
    };
    wait_until(Duration::from_secs(5), || {
        ep.stats().events_suppressed + refusals_published() >= n
    });
    let published = refusals_published() as f64;
    let bound = gstgb28181::endpoint::REFUSAL_EVENT_BURST
        + gstgb28181::endpoint::REFUSAL_EVENTS_PER_S * (secs + 1.0);
    assert!(
        published >= 1.0 && published <= bound,
        "{published} > {bound}"
    );
    assert_eq!(ep.stats().events_suppressed as f64 + published, n as f64);
    ep.shutdown();
}

#[test]
fn keepalive_from_another_address_does_not_move_the_binding_udp() {
    let _g = serial();
    keepalive_hijack(SipTransport::Udp);
}

#[test]
fn keepalive_from_another_connection_does_not_move_the_binding_tcp() {
    let _g = serial();
    keepalive_hijack(SipTransport::Tcp);
}

// ---- 2. IDs ----

/// A registration restored after a restart (`Endpoint::restore`): nothing is sent to it and
/// nothing from elsewhere is believed until a keepalive comes from the recorded address; then
/// it is online and reachable, its stored channels known. Over TCP nothing is restored.
#[test]
fn restored_binding_is_confirmed_only_by_its_own_address() {
    let _g = serial();
    let ep = endpoint(SipTransport::Udp, RegistrarConfig::default());
    let events = collect(&ep);
    let d = Duration::from_secs(2);
    let mut dev = Conn::open(SipTransport::Udp, ep.local_addr());
    let mut atk = Conn::open(SipTransport::Udp, ep.local_addr());
    let channel = "34020000001310000001";
    let now = gstgb28181::endpoint::now_ms();
    let binding = RestoredBinding {
        device_id: DEV.into(),
        contact: format!("sip:{DEV}@{}", dev.local()),
        source: dev.local().to_string(),
        registered_at_ms: now - 60_000,
        expires_at_ms: now + 3_600_000,
        last_seen_ms: now - 30_000,
    };
    ep.restore(&binding, &[channel.to_string()]).unwrap();
    // A second restore (or one racing a live REGISTER) is refused.
    assert!(ep.restore(&binding, &[]).is_err());
    assert!(!ep.device(DEV).unwrap().online);
    assert!(
        ep.device_addr(DEV).is_none(),
        "reachable before confirmation"
    );
    assert!(ep.query(DEV, "Catalog").is_err());

    // The attacker's keepalive and Catalog for the device: 403, still unconfirmed.
    assert_eq!(atk.request(&keepalive(DEV, DEV), d), Some(403));
    assert_eq!(
        atk.request(&catalog(DEV, 1, 1, &[channel.into()]), d),
        Some(403)
    );
    assert!(ep.device_addr(DEV).is_none());
    assert!(!ep.device(DEV).unwrap().online);
    assert_eq!(forged_count(&ep), 2);

    // The device, from its address: online, reachable, its channel known.
    assert_eq!(dev.request(&keepalive(DEV, DEV), d), Some(200));
    assert_eq!(ep.device_addr(DEV), Some(dev.local()));
    assert!(ep.device(DEV).unwrap().online);
    assert!(
        wait_event(&events, d, |e| matches!(
            e,
            EndpointEvent::Registrar(Event::Online { device_id }) if device_id == DEV
        ))
        .is_some()
    );
    ep.query(DEV, "Catalog").unwrap();
    assert!(dev.recv(d).is_some(), "query reached the device");
    let info = manscdp::build_device_info_response(
        7,
        &manscdp::DeviceInfo {
            device_id: channel.into(),
            result: "OK".into(),
            ..Default::default()
        },
    );
    assert_eq!(
        dev.request(&manscdp_message(DEV, &info), d),
        Some(200),
        "the restored channel is the device's"
    );
    assert!(atk.recv(Duration::from_millis(300)).is_none());
    ep.shutdown();

    let tcp = endpoint(SipTransport::Tcp, RegistrarConfig::default());
    assert!(tcp.restore(&binding, &[]).is_err());
    assert!(tcp.device(DEV).is_none());
    tcp.shutdown();
}

#[test]
fn invalid_ids_are_refused_and_catalog_items_dropped() {
    let _g = serial();
    for t in [SipTransport::Udp, SipTransport::Tcp] {
        let ep = endpoint(t, RegistrarConfig::default());
        let events = collect(&ep);
        let d = Duration::from_secs(2);
        let mut c = Conn::open(t, ep.local_addr());
        // Not [A-Za-z0-9_-]: 400; outside the pattern: 403. Nothing registered.
        assert_eq!(c.register("../../etc", PASSWORD), Some(400), "{t:?}");
        assert_eq!(c.register("3402000000132000000A", PASSWORD), Some(403));
        assert_eq!(c.register("340200000013200000011", PASSWORD), Some(403));
        let mut reg = request_to_server("REGISTER", DEV);
        reg.set_header("To", "<sip:..%2f..%2fx@3402000000>");
        assert_eq!(c.request(&reg, d), Some(400), "To user checked too");
        assert_eq!(ep.devices().len(), 0);
        assert_eq!(ep.stats().registrar.invalid_ids, 4);
        let ev = wait_event(&events, d, |e| {
            matches!(e, EndpointEvent::Registrar(Event::InvalidId { .. }))
        })
        .unwrap();
        assert!(matches!(
            ev,
            EndpointEvent::Registrar(Event::InvalidId { ref id, context: "REGISTER", .. }) if id == "../../etc"
        ));
        // MESSAGE from an invalid ID.
        assert_eq!(c.request(&keepalive("bad/id", "bad/id"), d), Some(403));

        // A registered device's Catalog: items with invalid IDs are dropped.
        assert_eq!(c.register(DEV, PASSWORD), Some(200));
        let ids: Vec<String> = [
            "34020000001310000001",
            "../../etc/passwd",
            "34020000001310000002",
            "a b",
            "340200000013100000031",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(c.request(&catalog(DEV, 5, ids.len(), &ids), d), Some(200));
        let cat = wait_event(&events, d, |e| matches!(e, EndpointEvent::Catalog { .. }))
            .expect("catalog");
        let EndpointEvent::Catalog { items, .. } = cat else {
            unreachable!()
        };
        let got: Vec<&str> = items.iter().map(|i| i.device_id.as_str()).collect();
        assert_eq!(got, ["34020000001310000001", "34020000001310000002"]);
        let dropped = wait_event(&events, d, |e| {
            matches!(e, EndpointEvent::CatalogItemsDropped { .. })
        })
        .unwrap();
        assert!(matches!(
            dropped,
            EndpointEvent::CatalogItemsDropped { invalid: 3, over_limit: 0, ref example, .. } if example == "../../etc/passwd"
        ));
        assert_eq!(ep.stats().catalog_items_dropped, 3);
        // Its channels may now be named in its messages.
        let st = manscdp_message(
            DEV,
            &manscdp::build_media_status(9, "34020000001310000002", 121),
        );
        assert_eq!(c.request(&st, d), Some(200));
        // A forged Catalog from a socket that never registered: 403.
        let mut stranger = Conn::open(t, ep.local_addr());
        assert_eq!(
            stranger.request(&catalog(DEV, 6, 1, &ids[..1]), d),
            Some(403)
        );
        ep.shutdown();
    }
}

#[test]
fn gb28181src_id_pattern_property() {
    let _g = serial();
    gst_init();
    let src = gst::ElementFactory::make("gb28181src")
        .property("sip-address", "127.0.0.1")
        .property("sip-port", 0u32)
        .property("password", PASSWORD)
        .property("device-id", "cam-7")
        .property("id-pattern", "cam-[0-9]+")
        .property("max-channels-per-device", 8u32)
        .property("max-devices", 2u32)
        .build()
        .unwrap();
    assert_eq!(src.property::<String>("id-pattern"), "cam-[0-9]+");
    let pipeline = gst::Pipeline::new();
    pipeline.add(&src).unwrap();
    let bus = pipeline.bus().unwrap();
    pipeline.set_state(gst::State::Ready).unwrap();
    // The port the OS gave, read back.
    let port = u16::try_from(src.property::<u32>("sip-port")).unwrap();
    assert_ne!(port, 0);
    let server = SocketAddr::from(([127, 0, 0, 1], port));
    let mut c = Conn::open(SipTransport::Udp, server);
    assert_eq!(c.register("cam-7", PASSWORD), Some(200));
    // A standard ID does not match this deployment's pattern.
    let mut c2 = Conn::open(SipTransport::Udp, server);
    assert_eq!(c2.register(DEV, PASSWORD), Some(403));
    let m = wait_bus(&bus, Duration::from_secs(2), |m| {
        element_named(m, "gb28181-invalid-id")
    })
    .expect("invalid ID posted");
    assert_eq!(m.structure().unwrap().get::<String>("id").unwrap(), DEV);
    // max-devices: the third device gets 503.
    let mut c3 = Conn::open(SipTransport::Udp, server);
    assert_eq!(c3.register("cam-8", PASSWORD), Some(200));
    let mut c4 = Conn::open(SipTransport::Udp, server);
    assert_eq!(c4.register("cam-9", PASSWORD), Some(503));
    let stats = src.property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u64>("invalid-ids").unwrap(), 1);
    pipeline.set_state(gst::State::Null).unwrap();
    for ep in gstgb28181::endpoint::endpoints() {
        if ep.local_addr().port() == port {
            ep.shutdown();
        }
    }
    // A pattern that does not compile is an error at startup.
    let bad = gst::ElementFactory::make("gb28181src")
        .property("sip-address", "127.0.0.1")
        .property("sip-port", 0u32)
        .property("id-pattern", "(")
        .build()
        .unwrap();
    assert!(bad.set_state(gst::State::Ready).is_err());
    let _ = bad.set_state(gst::State::Null);
}

// ---- 3. Catalog flood with a slow subscriber ----

#[test]
fn catalog_flood_with_slow_subscriber_never_stalls_signalling() {
    let _g = serial();
    let ep = endpoint(
        SipTransport::Udp,
        RegistrarConfig {
            max_channels_per_device: 500,
            ..Default::default()
        },
    );
    // A subscriber that blocks 2 s on each of the first events, then records.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let slow = Arc::new(AtomicUsize::new(0));
    {
        let seen = seen.clone();
        let slow = slow.clone();
        ep.subscribe(move |e| {
            if slow.fetch_add(1, Ordering::SeqCst) < 3 {
                // The slow subscriber under test, not a wait.
                std::thread::sleep(Duration::from_secs(2));
            }
            seen.lock().unwrap().push(e.clone());
        });
    }
    let server = ep.local_addr();
    let d = Duration::from_secs(2);
    let mut dev = Conn::open(SipTransport::Udp, server);
    assert_eq!(dev.register(DEV, PASSWORD), Some(200));

    // Probe: OPTIONS and REGISTER (challenge) from other sockets, every 10 ms, while the
    // device floods; record the slowest answer.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let prober = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut worst = Duration::ZERO;
            let mut n = 0;
            let mut probe = Conn::open(SipTransport::Udp, server);
            while !stop.load(Ordering::SeqCst) {
                let req = if n % 2 == 0 {
                    request_to_server("OPTIONS", OTHER)
                } else {
                    let mut r = request_to_server("REGISTER", OTHER);
                    r.set_header("To", format!("<sip:{OTHER}@3402000000>"));
                    r
                };
                let t0 = Instant::now();
                let status = probe.request(&req, Duration::from_secs(3));
                let took = t0.elapsed();
                assert!(
                    matches!(status, Some(200) | Some(401)),
                    "probe {n}: {status:?}"
                );
                worst = worst.max(took);
                n += 1;
                // Pacing the probes (one every 10 ms), not a wait.
                std::thread::sleep(Duration::from_millis(10));
            }
            (worst, n)
        })
    };
    let ids: Vec<String> = (0..700).map(|i| format!("340200000013100{i:05}")).collect();
    // SN 1: seven datagrams of 100 items, as devices split them.
    for chunk in ids.chunks(100) {
        assert_eq!(dev.request(&catalog(DEV, 1, 700, chunk), d), Some(200));
    }
    // SN 2: one datagram with all 700.
    let big = catalog(DEV, 2, 700, &ids);
    assert!(big.to_bytes().len() > 30_000);
    assert_eq!(dev.request(&big, d), Some(200));
    // Keep probing while the subscriber is still busy (it blocks 6 s in all): the length of
    // the measurement window, not a wait for something to happen.
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::SeqCst);
    let (worst, probes) = prober.join().unwrap();
    eprintln!("flood: {probes} probes, slowest {worst:?}");
    assert!(probes > 50, "{probes} probes");
    // The stall this guards against is the subscriber's 2 s block per event; 500 ms leaves
    // room for a loaded 2-core machine (answers took up to 194 ms at load average 90).
    assert!(
        worst < Duration::from_millis(500),
        "signalling stalled: slowest answer {worst:?}"
    );
    // Each list keeps 500 of its 700 items; 200 + 200 dropped and counted.
    let st = ep.stats();
    assert_eq!(st.catalog_items_dropped, 400);
    assert_eq!(st.events_dropped, 0);
    let catalogs = || -> Vec<usize> {
        seen.lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                EndpointEvent::Catalog { items, .. } => Some(items.len()),
                _ => None,
            })
            .collect()
    };
    wait_until(Duration::from_secs(10), || catalogs().len() == 2);
    assert_eq!(catalogs(), [500, 500]);
    ep.shutdown();
}

// ---- 4. Password guessing ----

/// A challenge from the endpoint (for the attacker's guesses).
fn challenge(c: &mut Conn, device: &str) -> Challenge {
    let mut reg = request_to_server("REGISTER", device);
    reg.set_header("To", format!("<sip:{device}@3402000000>"));
    c.send(&reg);
    let resp = c.recv(Duration::from_secs(2)).expect("401");
    assert_eq!(resp.status(), Some(401));
    Challenge::parse(resp.header("www-authenticate").unwrap()).unwrap()
}

fn guess(ch: &Challenge, device: &str, password: &str) -> Message {
    let uri = format!("sip:{SERVER}@3402000000");
    let mut reg = Message::request("REGISTER", &uri);
    reg.add_header(
        "Via",
        format!(
            "SIP/2.0/UDP 127.0.0.1:5060;rport;branch={}",
            random::branch()
        ),
    )
    .add_header(
        "From",
        format!("<sip:{device}@3402000000>;tag={}", random::tag()),
    )
    .add_header("To", format!("<sip:{device}@3402000000>"))
    .add_header("Call-ID", random::call_id())
    .add_header("CSeq", "2 REGISTER")
    .add_header("Contact", format!("<sip:{device}@127.0.0.1:5060>"))
    .add_header("Expires", "3600");
    let c = answer_challenge(ch, device, password, "REGISTER", &uri, &random::tag(), 1);
    reg.add_header("Authorization", c.to_header_value());
    reg
}

fn password_guessing(t: SipTransport, attempts: usize) {
    // The default free failures; a first block long enough that the end of the attack is
    // still inside a block whatever the machine's speed.
    let limiter = LimiterConfig {
        base_block_ms: 30_000,
        ..LimiterConfig::default()
    };
    let free = u64::from(limiter.free_failures);
    let base_s = limiter.base_block_ms as f64 / 1000.0;
    let ep = endpoint(
        t,
        RegistrarConfig {
            auth_limiter: limiter,
            ..Default::default()
        },
    );
    let events = collect(&ep);
    let server = ep.local_addr();
    // The real device registered before the attack.
    let mut dev = Conn::open(t, server);
    assert_eq!(dev.register(DEV, PASSWORD), Some(200));
    let ch = challenge(&mut Conn::open(t, server), DEV);
    let t0 = Instant::now();
    let mut refused = 0;
    for i in 0..attempts {
        // A new source port for every guess.
        let mut c = Conn::open(t, server);
        let status = c.request(
            &guess(&ch, DEV, &format!("guess{i}")),
            Duration::from_secs(2),
        );
        assert_eq!(status, Some(403), "{t:?} guess {i}");
        refused += 1;
    }
    let secs = t0.elapsed().as_secs_f64();
    let st = ep.stats().registrar;
    // The free failures, the one that blocks, then at most one check per expired block
    // (base, 2 × base, 4 × base...).
    let backoff_checks = (secs / base_s + 1.0).log2().ceil() as u64 + 1;
    eprintln!(
        "{t:?}: {attempts} guesses in {secs:.2} s, {} checked, {} refused",
        st.auth_failures, st.rate_limited
    );
    assert!(
        st.auth_failures <= free + backoff_checks,
        "{t:?}: {} of {attempts} guesses checked in {secs:.1} s",
        st.auth_failures
    );
    assert_eq!(st.auth_failures + st.rate_limited, attempts as u64);
    assert_eq!(refused, attempts);
    assert!(st.sources_blocked >= 1);
    let auth_failed = || -> Vec<EndpointEvent> {
        events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| matches!(e, EndpointEvent::Registrar(Event::AuthFailed { .. })))
            .cloned()
            .collect()
    };
    wait_until(Duration::from_secs(2), || {
        auth_failed().len() as u64 >= st.auth_failures
    });
    let failed = auth_failed();
    assert_eq!(failed.len() as u64, st.auth_failures);
    assert!(matches!(
        &failed[0],
        EndpointEvent::Registrar(Event::AuthFailed { device_id, source }) if device_id == DEV && source.starts_with("127.0.0.1:")
    ));
    assert!(
        wait_event(&events, Duration::from_secs(1), |e| matches!(
            e,
            EndpointEvent::Registrar(Event::SourceBlocked { ip, .. }) if ip == "127.0.0.1"
        ))
        .is_some()
    );
    // The real device, bound to exactly its ip:port, still refreshes during the block.
    assert_eq!(dev.register(DEV, PASSWORD), Some(200), "{t:?}");
    // Anyone else from the blocked IP (here a new device with the right password) waits.
    assert_eq!(
        Conn::open(t, server).register(OTHER, PASSWORD),
        Some(403),
        "{t:?}"
    );
    ep.shutdown();
}

#[test]
fn password_guessing_from_new_ports_is_limited_per_ip_udp() {
    let _g = serial();
    password_guessing(SipTransport::Udp, 3000);
}

#[test]
fn password_guessing_from_new_connections_is_limited_per_ip_tcp() {
    let _g = serial();
    password_guessing(SipTransport::Tcp, 300);
}

// ---- 5. Randomness and dialogs ----

#[test]
fn identifiers_and_nonce_secret_are_random() {
    let _g = serial();
    let secret = process_secret();
    assert_eq!(secret.len(), 32);
    assert_ne!(secret, b"gst-ipcam".to_vec());
    assert_eq!(RegistrarConfig::default().nonce_secret, secret);

    let ep = endpoint(SipTransport::Udp, RegistrarConfig::default());
    let dest: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut seen = HashSet::new();
    for _ in 0..500 {
        let m = ep.new_request("MESSAGE", DEV, dest);
        let via = m.via().unwrap();
        let branch = via.branch().unwrap().to_string();
        let rest = branch.strip_prefix("z9hG4bK").expect("RFC 3261 cookie");
        assert!(rest.len() >= 16 && rest.bytes().all(|b| b.is_ascii_hexdigit()));
        let tag = m.from().unwrap().tag().unwrap().to_string();
        assert!(tag.len() >= 16);
        let cid = m.call_id().unwrap().to_string();
        assert!(cid.split('@').next().unwrap().len() >= 32);
        assert!(seen.insert(branch) && seen.insert(tag) && seen.insert(cid));
    }
    ep.shutdown();

    // The device side: two clients with the same settings share no identifier.
    let first = |c: &mut RegisterClient| match c.start(0).remove(0) {
        ClientAction::Send(m) => m,
        other => panic!("{other:?}"),
    };
    let a = first(&mut RegisterClient::new(RegisterClientConfig::default()));
    let b = first(&mut RegisterClient::new(RegisterClientConfig::default()));
    assert_ne!(a.call_id(), b.call_id());
    assert_ne!(a.from().unwrap().tag(), b.from().unwrap().tag());
    assert_ne!(a.via().unwrap().branch(), b.via().unwrap().branch());
    assert!(a.from().unwrap().tag().unwrap().len() >= 16);
}

/// The endpoint's dialog table with real sockets: a BYE needs the Call-ID, both tags and the
/// device's address.
fn dialog_matching(t: SipTransport) {
    let ep = endpoint(t, RegistrarConfig::default());
    let server = ep.local_addr();
    let d = Duration::from_secs(2);
    let mut dev = Conn::open(t, server);
    assert_eq!(dev.register(DEV, PASSWORD), Some(200));
    let dest = ep.device_addr(DEV).unwrap();
    let invite = ep.new_request("INVITE", DEV, dest);
    let rx = ep.request(&invite, dest).unwrap();
    let got = dev.recv(d).expect("INVITE");
    let device_tag = random::tag();
    let mut ok = Message::response_to(&got, 200, "OK", Some(&device_tag));
    ok.add_header("Contact", format!("<sip:{DEV}@{}>", dev.local()));
    dev.send(&ok);
    let ok = loop {
        match rx.recv_timeout(d).expect("200") {
            gstgb28181::endpoint::TxReply::Response(r) if r.status() == Some(200) => break r,
            _ => {}
        }
    };
    let dialog = Dialog::from_invite(&invite, &ok).unwrap();
    let (owner, byes) = mpsc::channel();
    ep.add_dialog(&dialog, dest, owner, Some(&dialog.ack()));

    let in_dialog = |method: &str, from_tag: &str, to_tag: &str| {
        let mut m = Message::request(method, &format!("sip:{SERVER}@{server}"));
        m.add_header(
            "Via",
            format!("SIP/2.0/UDP 127.0.0.1:5060;branch={}", random::branch()),
        )
        .add_header("From", format!("<sip:{DEV}@3402000000>;tag={from_tag}"))
        .add_header("To", format!("<sip:{SERVER}@3402000000>;tag={to_tag}"))
        .add_header("Call-ID", dialog.call_id.clone())
        .add_header("CSeq", format!("1 {method}"));
        m
    };
    let bye = |from_tag: &str, to_tag: &str| in_dialog("BYE", from_tag, to_tag);
    let before = forged_count(&ep);
    // The right Call-ID and tags, from another address: 481.
    let mut atk = Conn::open(t, server);
    assert_eq!(
        atk.request(&bye(&device_tag, &dialog.local_tag), d),
        Some(481),
        "{t:?}"
    );
    // From the device's address with a wrong tag: 481.
    assert_eq!(dev.request(&bye("guess", &dialog.local_tag), d), Some(481));
    assert_eq!(dev.request(&bye(&device_tag, "guess"), d), Some(481));
    // INFO in the dialog from elsewhere: 481.
    let info = in_dialog("INFO", &device_tag, &dialog.local_tag);
    assert_eq!(atk.request(&info, d), Some(481));
    assert!(byes.try_recv().is_err(), "the dialog goes on");
    assert_eq!(forged_count(&ep), before + 4);
    // The device's own BYE ends it.
    assert_eq!(
        dev.request(&bye(&device_tag, &dialog.local_tag), d),
        Some(200)
    );
    assert!(byes.recv_timeout(d).is_ok());
    ep.shutdown();
}

#[test]
fn in_dialog_requests_need_tags_and_peer_udp() {
    let _g = serial();
    dialog_matching(SipTransport::Udp);
}

#[test]
fn in_dialog_requests_need_tags_and_peer_tcp() {
    let _g = serial();
    dialog_matching(SipTransport::Tcp);
}

/// A real gb28181src streaming from a real gb28181sink: forged BYEs to either side (the
/// Call-ID is known, the tags are not; or from another address) get 481 and the stream goes on.
#[test]
fn forged_bye_does_not_end_a_real_stream() {
    let _g = serial();
    gst_init();
    let device = "34020000001320000501";
    let src = gst_ipcam_testutil::launch(&format!(
        "gb28181src name=src sip-address=127.0.0.1 sip-port=0 device-id={device} \
         password=secret wait-timeout=15 stream-timeout=5 \
         ! appsink name=out sync=false emit-signals=false"
    ));
    let frames = count_samples(&src, "out");
    let src_bus = src.bus().unwrap();
    src.set_state(gst::State::Playing).unwrap();
    let port = sip_port(&src, "src");
    let sink = gst_ipcam_testutil::launch(&format!(
        "videotestsrc is-live=true pattern=ball ! video/x-raw,width=160,height=120,framerate=25/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 bitrate=100 ! h264parse \
         ! mpegpsmux ! gb28181sink name=dev server-ip=127.0.0.1 server-port={port} \
         device-id={device} password=secret retry-interval=300"
    ));
    let sink_bus = sink.bus().unwrap();
    sink.set_state(gst::State::Playing).unwrap();
    let reg = wait_bus(&src_bus, Duration::from_secs(10), |m| {
        element_named(m, "gb28181-device-registered")
    })
    .expect("registered");
    let device_addr: SocketAddr = reg
        .structure()
        .unwrap()
        .get::<String>("source")
        .unwrap()
        .parse()
        .unwrap();
    let started = wait_bus(&src_bus, Duration::from_secs(20), |m| {
        element_named(m, "gb28181-stream-started")
    })
    .expect("stream started");
    let call_id = started
        .structure()
        .unwrap()
        .get::<String>("call-id")
        .unwrap();
    wait_until(Duration::from_secs(20), || {
        frames.load(Ordering::SeqCst) >= 10
    });
    assert!(frames.load(Ordering::SeqCst) >= 10, "no stream");

    let bye = |from: &str, to: &str| {
        let mut m = Message::request("BYE", &format!("sip:{from}@3402000000"));
        m.add_header(
            "Via",
            format!("SIP/2.0/UDP 127.0.0.1:5060;branch={}", random::branch()),
        )
        .add_header(
            "From",
            format!("<sip:{from}@3402000000>;tag={}", random::tag()),
        )
        .add_header("To", format!("<sip:{to}@3402000000>;tag={}", random::tag()))
        .add_header("Call-ID", call_id.clone())
        .add_header("CSeq", "9 BYE");
        m
    };
    let d = Duration::from_secs(2);
    // To the platform, as the device.
    let platform = SocketAddr::from(([127, 0, 0, 1], port));
    let mut atk = Conn::open(SipTransport::Udp, platform);
    assert_eq!(atk.request(&bye(device, SERVER), d), Some(481));
    // To the device, as the platform.
    let mut atk2 = Conn::open(SipTransport::Udp, device_addr);
    assert_eq!(atk2.request(&bye(SERVER, device), d), Some(481));

    // The stream goes on: more frames, no end on either side.
    let n = frames.load(Ordering::SeqCst);
    wait_until(Duration::from_secs(10), || {
        frames.load(Ordering::SeqCst) >= n + 15
    });
    assert!(frames.load(Ordering::SeqCst) >= n + 15, "stream stopped");
    let ended = |m: &gst::Message| {
        element_named(m, "gb28181-stream-ended")
            || element_named(m, "gb28181-session-stopped")
            || matches!(
                m.view(),
                gst::MessageView::Eos(_) | gst::MessageView::Error(_)
            )
    };
    assert!(wait_bus(&src_bus, Duration::from_millis(100), ended).is_none());
    assert!(wait_bus(&sink_bus, Duration::from_millis(100), ended).is_none());
    let stats = src
        .by_name("src")
        .unwrap()
        .property::<gst::Structure>("stats");
    assert!(stats.get::<u64>("forged-requests").unwrap() >= 1);
    assert!(stats.get::<bool>("streaming").unwrap());
    sink.set_state(gst::State::Null).unwrap();
    src.set_state(gst::State::Null).unwrap();
}

// ---- 6. SIP/TCP connections left silent ----

/// Holding the endpoint's TCP slots: connections opened and never used, and a registered
/// device that froze (half-open: it neither sends nor closes). Both are closed when silent
/// for too long (the first message within min(idle limit, TCP_FIRST_MESSAGE_MS); then one
/// keepalive interval more than makes the device offline), the slots come back, the device
/// goes offline and registers again on a new connection; a device keeping alive stays.
#[test]
fn silent_tcp_connections_are_closed() {
    use std::io::Read;
    let _g = serial();
    let config = RegistrarConfig {
        keepalive_interval_ms: 500,
        max_missed_keepalives: 2,
        ..RegistrarConfig::default()
    };
    let limit = gstgb28181::endpoint::tcp_idle_limit_ms(500, 2);
    assert_eq!(limit, 1500);
    let ep = endpoint(SipTransport::Tcp, config);
    let events = collect(&ep);
    // The live device first: it keeps alive every 300 ms.
    let mut live = Conn::open(SipTransport::Tcp, ep.local_addr());
    assert_eq!(live.register(DEV, PASSWORD), Some(200));
    // Ten connections that never say anything, and a device that registers and freezes.
    let silent: Vec<std::net::TcpStream> = (0..10)
        .map(|_| std::net::TcpStream::connect(ep.local_addr()).unwrap())
        .collect();
    let frozen_id = "34020000001320000002";
    let mut frozen = Conn::open(SipTransport::Tcp, ep.local_addr());
    assert_eq!(frozen.register(frozen_id, PASSWORD), Some(200));
    assert!(wait_until(Duration::from_secs(5), || ep
        .stats()
        .tcp_connections
        == 12));
    let t0 = Instant::now();
    let d = Duration::from_secs(2);
    // Until every silent one is closed (bounded), the live device keeps alive.
    while ep.stats().tcp_idle_closed < 11 && t0.elapsed() < Duration::from_secs(15) {
        assert_eq!(live.request(&keepalive(DEV, DEV), d), Some(200));
        std::thread::sleep(Duration::from_millis(300));
    }
    let took = t0.elapsed();
    let st = ep.stats();
    assert_eq!(st.tcp_idle_closed, 11, "{st:?}");
    assert_eq!(
        st.tcp_connections, 1,
        "only the live device's connection is left"
    );
    assert!(took >= Duration::from_millis(1400), "closed after {took:?}");
    // The silent ones see the close (EOF or reset), no reply ever came.
    for mut s in silent {
        s.set_read_timeout(Some(d)).unwrap();
        let mut b = [0u8; 16];
        assert!(matches!(s.read(&mut b), Ok(0) | Err(_)));
    }
    // The frozen device is offline, the live one online.
    assert!(wait_until(Duration::from_secs(5), || {
        ep.device(frozen_id).is_some_and(|d| !d.online)
    }));
    assert!(ep.device(DEV).is_some_and(|d| d.online));
    assert!(
        wait_event(&events, d, |e| matches!(
            e,
            EndpointEvent::Registrar(Event::Offline { device_id }) if device_id == frozen_id
        ))
        .is_some()
    );
    // It comes back on a new connection.
    let mut back = Conn::open(SipTransport::Tcp, ep.local_addr());
    assert_eq!(back.register(frozen_id, PASSWORD), Some(200));
    assert_eq!(back.request(&keepalive(frozen_id, frozen_id), d), Some(200));
    assert!(ep.device(frozen_id).is_some_and(|d| d.online));
    drop(frozen);
    ep.shutdown();
}

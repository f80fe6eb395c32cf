//! A device's life in the registrar with time passed in: challenge, register, keepalives,
//! missed keepalives → Offline, back Online, refresh, expiry, unregister, unknown keepalives
//! and failed-auth rate limiting. The device side is built with the core's own builders.

use gstgb28181::core::digest::{Challenge, answer_challenge};
use gstgb28181::core::manscdp::{self, Manscdp};
use gstgb28181::core::ratelimit::LimiterConfig;
use gstgb28181::core::registrar::{Event, Registrar, RegistrarConfig, UnregisterReason};
use gstgb28181::core::sip::Message;

const DEV: &str = "34020000001320000001";
const SRC: &str = "10.0.0.9:5060";

struct Camera {
    password: String,
    cseq: u32,
    nc: u32,
}

impl Camera {
    fn register(&mut self, expires: u32, challenge: Option<&Challenge>) -> Message {
        self.cseq += 1;
        let uri = "sip:34020000002000000001@3402000000";
        let mut m = Message::request("REGISTER", uri);
        m.add_header(
            "Via",
            format!(
                "SIP/2.0/UDP 10.0.0.9:5060;rport;branch=z9hG4bK{}",
                self.cseq
            ),
        )
        .add_header("From", format!("<sip:{DEV}@3402000000>;tag=1"))
        .add_header("To", format!("<sip:{DEV}@3402000000>"))
        .add_header("Call-ID", "reg-1")
        .add_header("CSeq", format!("{} REGISTER", self.cseq))
        .add_header("Contact", format!("<sip:{DEV}@10.0.0.9:5060>"))
        .add_header("Expires", expires.to_string());
        if let Some(ch) = challenge {
            self.nc += 1;
            let c = answer_challenge(ch, DEV, &self.password, "REGISTER", uri, "c0ffee", self.nc);
            m.add_header("Authorization", c.to_header_value());
        }
        // Go through the wire format like a real datagram would.
        Message::parse(&m.to_bytes()).unwrap()
    }

    fn keepalive(&mut self, sn: u32) -> (Message, manscdp::Keepalive) {
        self.cseq += 1;
        let mut m = Message::request("MESSAGE", "sip:34020000002000000001@3402000000");
        m.add_header("Via", "SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKka")
            .add_header("From", format!("<sip:{DEV}@3402000000>;tag=2"))
            .add_header("To", "<sip:34020000002000000001@3402000000>")
            .add_header("Call-ID", format!("ka-{sn}"))
            .add_header("CSeq", format!("{} MESSAGE", self.cseq));
        m.set_body(
            "Application/MANSCDP+xml",
            manscdp::encode_body(&manscdp::build_keepalive(sn, DEV), manscdp::Charset::Gb2312),
        );
        let m = Message::parse(&m.to_bytes()).unwrap();
        let Ok(Manscdp::Keepalive(ka)) = Manscdp::parse(&m.body) else {
            panic!("keepalive body")
        };
        (m, ka)
    }
}

/// Registers from scratch (REGISTER → 401 → REGISTER with credentials) at `now`.
fn register(r: &mut Registrar, cam: &mut Camera, expires: u32, now: u64) -> (Message, Vec<Event>) {
    let first = r.handle_register(&cam.register(expires, None), SRC, now);
    assert_eq!(first.response.status(), Some(401));
    let ch = Challenge::parse(first.response.header("www-authenticate").unwrap()).unwrap();
    let out = r.handle_register(&cam.register(expires, Some(&ch)), SRC, now + 20);
    (out.response, out.events)
}

fn camera(password: &str) -> Camera {
    Camera {
        password: password.into(),
        cseq: 0,
        nc: 0,
    }
}

#[test]
fn register_keepalive_offline_online_unregister() {
    let mut r = Registrar::new(RegistrarConfig {
        keepalive_interval_ms: 60_000,
        max_missed_keepalives: 3,
        ..Default::default()
    });
    let mut cam = camera("12345678");
    let t0 = 1_700_000_000_000;

    let (resp, events) = register(&mut r, &mut cam, 3600, t0);
    assert_eq!(resp.status(), Some(200));
    assert_eq!(resp.header("date"), Some("2023-11-15T06:13:20.020"));
    assert_eq!(
        events,
        vec![Event::Registered {
            device_id: DEV.into(),
            contact: format!("sip:{DEV}@10.0.0.9:5060"),
            source: SRC.into(),
            expires_s: 3600,
            refresh: false
        }]
    );

    // Keepalives every 60 s keep it online.
    let mut now = t0;
    for sn in 1..=5 {
        now += 60_000;
        assert!(r.poll(now).is_empty());
        let (m, ka) = cam.keepalive(sn);
        let out = r.handle_keepalive(&m, &ka, SRC, now);
        assert_eq!(out.response.status(), Some(200));
        assert!(out.events.is_empty());
    }
    // Two missed keepalives: still online; the third: offline.
    assert!(r.poll(now + 120_000).is_empty());
    assert!(r.poll(now + 179_999).is_empty());
    assert_eq!(
        r.poll(now + 180_000),
        vec![Event::Offline {
            device_id: DEV.into()
        }]
    );
    assert!(!r.device(DEV).unwrap().online);
    assert!(r.poll(now + 200_000).is_empty(), "Offline is reported once");
    now += 200_000;
    let (m, ka) = cam.keepalive(6);
    let out = r.handle_keepalive(&m, &ka, SRC, now);
    assert_eq!(
        out.events,
        vec![Event::Online {
            device_id: DEV.into()
        }]
    );

    // Refresh.
    let (resp, events) = register(&mut r, &mut cam, 3600, now);
    assert_eq!(resp.status(), Some(200));
    assert!(matches!(
        events[..],
        [Event::Registered { refresh: true, .. }]
    ));

    // Unregister with Expires: 0.
    let (resp, events) = register(&mut r, &mut cam, 0, now + 1000);
    assert_eq!(resp.status(), Some(200));
    assert_eq!(
        events,
        vec![Event::Unregistered {
            device_id: DEV.into(),
            reason: UnregisterReason::Requested
        }]
    );
    assert!(r.device(DEV).is_none());

    // Its keepalives are now refused so that it registers again.
    let (m, ka) = cam.keepalive(7);
    let out = r.handle_keepalive(&m, &ka, SRC, now + 2000);
    assert_eq!(out.response.status(), Some(404));
    assert_eq!(
        out.events,
        vec![Event::KeepaliveRefused {
            device_id: DEV.into(),
            source: SRC.into()
        }]
    );
    assert_eq!(r.stats.keepalives_refused, 1);
}

#[test]
fn contact_expires_zero_and_expiry() {
    let mut r = Registrar::new(RegistrarConfig::default());
    let mut cam = camera("12345678");
    let t0 = 1_000_000;
    let (resp, _) = register(&mut r, &mut cam, 120, t0);
    assert_eq!(resp.expires(), Some(120));
    assert_eq!(r.next_deadline(), Some(t0 + 20 + 120_000));
    let ev = r.poll(t0 + 20 + 120_000);
    assert_eq!(
        ev,
        vec![Event::Unregistered {
            device_id: DEV.into(),
            reason: UnregisterReason::Expired
        }]
    );
    // Contact ;expires=0 removes the binding even with a non-zero Expires header.
    register(&mut r, &mut cam, 3600, t0 + 200_000);
    assert!(r.device(DEV).is_some());
    let first = r.handle_register(&cam.register(3600, None), SRC, t0 + 300_000);
    let ch = Challenge::parse(first.response.header("www-authenticate").unwrap()).unwrap();
    let mut req = cam.register(3600, Some(&ch));
    req.set_header("Contact", format!("<sip:{DEV}@10.0.0.9:5060>;expires=0"));
    let out = r.handle_register(&req, SRC, t0 + 300_010);
    assert_eq!(out.response.status(), Some(200));
    assert!(r.device(DEV).is_none());
}

#[test]
fn per_device_passwords_stale_nonces_and_rate_limit() {
    let mut cfg = RegistrarConfig {
        default_password: None,
        auth_limiter: LimiterConfig {
            free_failures: 2,
            base_block_ms: 60_000,
            ..LimiterConfig::default()
        },
        nonce_max_age_ms: 30_000,
        ..Default::default()
    };
    cfg.passwords.insert(DEV.into(), "s3cret".into());
    let mut r = Registrar::new(cfg);

    // An unknown device (no default password) cannot register.
    let mut other = camera("12345678");
    let first = r.handle_register(&other.register(3600, None), SRC, 0);
    let ch = Challenge::parse(first.response.header("www-authenticate").unwrap()).unwrap();
    let mut req = other.register(3600, Some(&ch));
    req.set_header("From", "<sip:34020000001320000099@3402000000>;tag=9");
    assert_eq!(
        r.handle_register(&req, "10.0.0.99:5060", 10)
            .response
            .status(),
        Some(403)
    );

    // Stale nonce → 401 stale=true, then success with a fresh one.
    let mut cam = camera("s3cret");
    let first = r.handle_register(&cam.register(3600, None), SRC, 0);
    let ch = Challenge::parse(first.response.header("www-authenticate").unwrap()).unwrap();
    let out = r.handle_register(&cam.register(3600, Some(&ch)), SRC, 40_000);
    assert_eq!(out.response.status(), Some(401));
    let ch = Challenge::parse(out.response.header("www-authenticate").unwrap()).unwrap();
    assert!(ch.stale);
    let out = r.handle_register(&cam.register(3600, Some(&ch)), SRC, 40_010);
    assert_eq!(out.response.status(), Some(200));

    // Wrong password three times from one address: the third blocks the IP, which is then
    // refused even with the right password, from any port.
    let mut bad = camera("wrong");
    let src = "10.0.0.66:5060";
    for i in 0..3 {
        let out = r.handle_register(&bad.register(3600, Some(&ch)), src, 40_020 + i);
        assert_eq!(out.response.status(), Some(403));
        assert!(matches!(out.events[0], Event::AuthFailed { .. }));
        assert_eq!(
            matches!(out.events[..], [_, Event::SourceBlocked { .. }]),
            i == 2,
            "{:?}",
            out.events
        );
    }
    let out = r.handle_register(&cam.register(3600, Some(&ch)), src, 40_100);
    assert_eq!(out.response.status(), Some(403), "rate limited");
    assert!(out.response.header("retry-after").is_some());
    let out = r.handle_register(&cam.register(3600, Some(&ch)), "10.0.0.66:5999", 40_100);
    assert_eq!(out.response.status(), Some(403), "any port of the IP");
    assert_eq!(r.stats.rate_limited, 2);
    assert_eq!(r.stats.auth_failures, 4);
    // Other addresses are unaffected, and the block lifts after the window.
    assert_eq!(
        r.handle_register(&cam.register(3600, Some(&ch)), SRC, 40_200)
            .response
            .status(),
        Some(200)
    );
    let first = r.handle_register(&cam.register(3600, None), src, 101_000);
    let ch = Challenge::parse(first.response.header("www-authenticate").unwrap()).unwrap();
    assert_eq!(
        r.handle_register(&cam.register(3600, Some(&ch)), src, 101_010)
            .response
            .status(),
        Some(200)
    );
}

#[test]
fn blocked_ip_lets_only_the_bound_device_refresh_a_few_times() {
    let mut r = Registrar::new(RegistrarConfig {
        auth_limiter: LimiterConfig {
            free_failures: 2,
            base_block_ms: 60_000,
            ..LimiterConfig::default()
        },
        ..Default::default()
    });
    let mut cam = camera("12345678");
    let (resp, _) = register(&mut r, &mut cam, 3600, 0);
    assert_eq!(resp.status(), Some(200));
    // Someone else on the camera's IP (another port) guesses until the IP is blocked.
    let other_port = "10.0.0.9:7000";
    let first = r.handle_register(&cam.register(3600, None), other_port, 100);
    let ch = Challenge::parse(first.response.header("www-authenticate").unwrap()).unwrap();
    let mut bad = camera("wrong");
    for i in 0..3 {
        let out = r.handle_register(&bad.register(3600, Some(&ch)), other_port, 200 + i);
        assert_eq!(out.response.status(), Some(403));
    }
    assert_eq!(r.stats.sources_blocked, 1);
    // The camera bound to exactly 10.0.0.9:5060 still refreshes.
    let (resp, _) = register(&mut r, &mut cam, 3600, 1000);
    assert_eq!(resp.status(), Some(200));
    // Nobody else from the IP: refused unchecked.
    let out = r.handle_register(&cam.register(3600, Some(&ch)), "10.0.0.9:7001", 1100);
    assert_eq!(out.response.status(), Some(403));
    assert!(out.events.is_empty());
    // A keepalive from another port does not move the binding.
    let (m, ka) = cam.keepalive(1);
    let out = r.handle_keepalive(&m, &ka, other_port, 1200);
    assert_eq!(out.response.status(), Some(403));
    assert!(matches!(out.events[..], [Event::ForgedRequest { .. }]));
    assert_eq!(r.device(DEV).unwrap().source, SRC);
    assert_eq!(r.stats.forged_requests, 1);
    // Failures on the bound path are checked only `free_failures` times in a row...
    let failures = r.stats.auth_failures;
    for i in 0..4 {
        r.handle_register(&bad.register(3600, Some(&ch)), SRC, 1300 + i);
    }
    assert_eq!(r.stats.auth_failures, failures + 2);
    // ... then even that binding waits for the block to end.
    let out = r.handle_register(&cam.register(3600, None), SRC, 1400);
    assert_eq!(out.response.status(), Some(403));
    let (resp, _) = register(&mut r, &mut cam, 3600, 10_000_000);
    assert_eq!(resp.status(), Some(200));
}

/// An operator's delete forgets the device: its keepalives are refused until it registers
/// again (then it is back as a new registration).
#[test]
fn removed_device_must_register_again() {
    let mut r = Registrar::new(RegistrarConfig::default());
    let mut cam = camera("12345678");
    let t0 = 1_700_000_000_000;
    let (resp, _) = register(&mut r, &mut cam, 3600, t0);
    assert_eq!(resp.status(), Some(200));
    assert_eq!(
        r.remove(DEV),
        Some(Event::Unregistered {
            device_id: DEV.into(),
            reason: UnregisterReason::Requested
        })
    );
    assert!(r.device(DEV).is_none());
    assert_eq!(r.remove(DEV), None, "removed once");
    let (m, ka) = cam.keepalive(1);
    let out = r.handle_keepalive(&m, &ka, SRC, t0 + 1000);
    assert_ne!(out.response.status(), Some(200));
    let (resp, events) = register(&mut r, &mut cam, 3600, t0 + 2000);
    assert_eq!(resp.status(), Some(200));
    assert!(matches!(
        events[..],
        [Event::Registered { refresh: false, .. }]
    ));
}

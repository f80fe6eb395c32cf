//! The real GB28181 session in shared/testdata/gb28181/sip (Hikvision camera ↔ LiveGBS),
//! run through the core: every message parses and re-serializes byte for byte, and each
//! module understands its part of it.

use gstgb28181::core::digest::{Challenge, Credentials, NonceIssuer, NonceStatus};
use gstgb28181::core::manscdp::{self, Manscdp};
use gstgb28181::core::registrar::{Event, Registrar, RegistrarConfig};
use gstgb28181::core::sdp::{self, MediaTransport, SessionKind};
use gstgb28181::core::sip::{Message, ParseError};
use gstgb28181::core::ssrc::{Ssrc, SsrcKind};
use gstgb28181::core::subject::Subject;
use gstgb28181::core::transaction::Dialog;
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/gb28181/sip")
}

fn raw(name: &str) -> Vec<u8> {
    std::fs::read(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn msg(name: &str) -> Message {
    Message::parse(&raw(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn every_vector_parses_and_round_trips() {
    let mut names: Vec<_> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".sip"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 13, "{names:?}");
    for name in &names {
        let data = raw(name);
        let m = msg(name);
        let head_end = data.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert_eq!(m.body, &data[head_end..], "{name}: body bytes");
        let cl: usize = m.header("Content-Length").unwrap().parse().unwrap();
        assert_eq!(cl, m.body.len(), "{name}: Content-Length");
        assert!(m.call_id().is_some() && m.cseq().is_some(), "{name}");
        assert!(m.from().unwrap().tag().is_some(), "{name}: From tag");
        assert!(m.via().unwrap().branch().unwrap().starts_with("z9hG4bK"));
        assert_eq!(m.to_bytes(), data, "{name}: byte-exact re-serialization");
        // A datagram cut short anywhere must fail cleanly or parse as a shorter message.
        for cut in 0..data.len() {
            let _ = Message::parse(&data[..cut]);
        }
        if cl > 0 {
            assert_eq!(
                Message::parse(&data[..data.len() - 1]),
                Err(ParseError::Truncated),
                "{name}"
            );
        }
    }
}

#[test]
fn start_lines_and_headers() {
    let expect = [
        ("01-register-noauth.sip", Some("REGISTER"), None),
        ("02-register-401.sip", None, Some(401)),
        ("03-register-auth.sip", Some("REGISTER"), None),
        ("03b-register-auth-noqop.sip", Some("REGISTER"), None),
        ("04-register-200.sip", None, Some(200)),
        ("05-keepalive.sip", Some("MESSAGE"), None),
        ("06-catalog-query.sip", Some("MESSAGE"), None),
        ("07-catalog-response.sip", Some("MESSAGE"), None),
        ("08-invite.sip", Some("INVITE"), None),
        ("09-invite-100.sip", None, Some(100)),
        ("10-invite-200.sip", None, Some(200)),
        ("11-ack.sip", Some("ACK"), None),
        ("12-bye.sip", Some("BYE"), None),
    ];
    for (name, method, status) in expect {
        let m = msg(name);
        assert_eq!(m.method(), method, "{name}");
        assert_eq!(m.status(), status, "{name}");
    }
    let reg = msg("01-register-noauth.sip");
    assert_eq!(reg.expires(), Some(3600));
    assert_eq!(reg.uri(), Some("sip:34020000002000000001@3402000000"));
    let c = reg.contact().unwrap().sip_uri().unwrap();
    assert_eq!(c.host, "192.168.137.109");
    assert_eq!(c.port, Some(5060));
    assert_eq!(reg.header("user-agent"), Some("IP Camera"));
    let via = msg("02-register-401.sip").via().unwrap();
    assert_eq!(via.param("rport"), Some("47918"));
    assert_eq!(via.param("received"), Some("192.168.64.3"));
    let ok = msg("04-register-200.sip");
    assert_eq!(ok.header("date"), Some("2020-06-09T14:09:01.830"));
    assert_eq!(ok.to().unwrap().tag(), Some("410042311"));
    assert_eq!(ok.cseq().unwrap().method, "REGISTER");
}

#[test]
fn digest_vectors() {
    let ch = Challenge::parse(
        msg("02-register-401.sip")
            .header("www-authenticate")
            .unwrap(),
    )
    .unwrap();
    assert_eq!(ch.realm, "3402000000");
    assert!(ch.qop_auth);
    assert_eq!(ch.nonce, "a1b6ba00d8cbaa8ce99d1d39b2905d12");
    for name in ["03-register-auth.sip", "03b-register-auth-noqop.sip"] {
        let m = msg(name);
        let c = Credentials::parse(m.header("authorization").unwrap()).unwrap();
        assert_eq!(c.nonce, ch.nonce, "{name}: answers 02's nonce");
        assert!(Registrar::verify_register(&m, "12345678"), "{name}");
        for wrong in ["", "1234567", "123456789", "12345679", "admin"] {
            assert!(!Registrar::verify_register(&m, wrong), "{name} {wrong}");
        }
    }
    // LiveGBS's nonce is not one of ours: freshness checking calls it foreign.
    let issuer = NonceIssuer::new(b"x", 60_000);
    assert_eq!(
        issuer.check(&ch.nonce, "3402000000", 0),
        NonceStatus::Foreign
    );
}

const NOW: u64 = 1_591_682_941_830; // 2020-06-09T06:09:01.830Z

fn foreign_registrar(password: &str) -> Registrar {
    Registrar::new(RegistrarConfig {
        default_password: Some(password.into()),
        accept_foreign_nonces: true,
        ..Default::default()
    })
}

#[test]
fn registrar_accepts_03_and_03b_only_with_the_password() {
    for name in ["03-register-auth.sip", "03b-register-auth-noqop.sip"] {
        let req = msg(name);
        let mut r = foreign_registrar("12345678");
        let out = r.handle_register(&req, "192.168.137.109:5060", NOW);
        assert_eq!(out.response.status(), Some(200), "{name}");
        assert_eq!(
            out.response.header("date"),
            Some("2020-06-09T14:09:01.830"),
            "{name}: GB Date in UTC+8 like vector 04"
        );
        assert_eq!(out.response.expires(), Some(3600));
        assert!(
            matches!(&out.events[0], Event::Registered { device_id, refresh: false, .. } if device_id == "34020000001320000001")
        );
        // Response copies the dialog-identifying headers and adds a To tag.
        let back = Message::parse(&out.response.to_bytes()).unwrap();
        assert_eq!(back.call_id(), req.call_id());
        assert_eq!(back.cseq(), req.cseq());
        assert_eq!(back.header("via"), req.header("via"));
        assert_eq!(back.header("from"), req.header("from"));
        assert!(back.to().unwrap().tag().is_some());
        assert!(r.device("34020000001320000001").unwrap().online);

        for wrong in ["", "12345679", "87654321", "admin"] {
            let mut r = foreign_registrar(wrong);
            let out = r.handle_register(&req, "192.168.137.109:5060", NOW);
            assert_eq!(out.response.status(), Some(403), "{name} with {wrong:?}");
            assert!(r.device("34020000001320000001").is_none());
        }
        // Without accepting foreign nonces the device is challenged afresh, not admitted.
        let mut r = Registrar::new(RegistrarConfig::default());
        let out = r.handle_register(&req, "192.168.137.109:5060", NOW);
        assert_eq!(out.response.status(), Some(401));
        assert!(out.response.header("www-authenticate").is_some());
    }
}

#[test]
fn registrar_challenges_01_like_02() {
    let mut r = Registrar::new(RegistrarConfig::default());
    let req = msg("01-register-noauth.sip");
    let out = r.handle_register(&req, "192.168.137.109:5060", NOW);
    let ours = out.response;
    let theirs = msg("02-register-401.sip");
    assert_eq!(ours.status(), theirs.status());
    for h in ["via", "from", "call-id", "cseq"] {
        assert_eq!(ours.header(h), req.header(h), "{h}");
    }
    assert!(ours.to().unwrap().tag().is_some());
    let ch = Challenge::parse(ours.header("www-authenticate").unwrap()).unwrap();
    assert_eq!(ch.realm, "3402000000");
    assert!(ch.qop_auth);
}

#[test]
fn manscdp_vectors() {
    let Manscdp::Keepalive(ka) = Manscdp::parse(&msg("05-keepalive.sip").body).unwrap() else {
        panic!("05 is a keepalive")
    };
    assert_eq!(ka.sn, 123);
    assert_eq!(ka.device_id, "34020000001320000001");
    assert!(ka.status_ok);

    let q = msg("06-catalog-query.sip");
    assert_eq!(q.content_type(), Some("Application/MANSCDP+xml"));
    assert_eq!(
        Manscdp::parse(&q.body).unwrap(),
        Manscdp::CatalogQuery {
            sn: 445043391,
            device_id: "34020000001320000001".into()
        }
    );
    // Our builder says the same thing.
    let built = manscdp::encode_body(
        &manscdp::build_query("Catalog", 445043391, "34020000001320000001"),
        manscdp::Charset::Utf8,
    );
    assert_eq!(
        Manscdp::parse(&built).unwrap(),
        Manscdp::parse(&q.body).unwrap()
    );

    let body = msg("07-catalog-response.sip").body;
    let (_, enc) = manscdp::decode_body(&body);
    assert_eq!(enc.name(), "GBK");
    let Manscdp::Catalog(list) = Manscdp::parse(&body).unwrap() else {
        panic!("07 is a catalog response")
    };
    assert_eq!(list.sn, 445043391);
    assert_eq!(list.sum_num, 1);
    assert_eq!(list.items.len(), 1);
    let item = &list.items[0];
    assert_eq!(item.name, "摄像机 01");
    assert_eq!(item.manufacturer, "Hikvision");
    assert_eq!(item.parent_id, "34020000002000000001");
    assert_eq!(item.status, "ON");
    assert_eq!(item.parental, Some(0));
    // Re-encoding it as GB2312 reproduces the camera's bytes for the name.
    let rebuilt = manscdp::encode_body(
        &manscdp::build_catalog_response(list.sn, &list.device_id, 1, &list.items),
        manscdp::Charset::Gb2312,
    );
    assert!(
        rebuilt
            .windows(6)
            .any(|w| w == [0xC9, 0xE3, 0xCF, 0xF1, 0xBB, 0xFA])
    );
    assert_eq!(Manscdp::parse(&rebuilt).unwrap(), Manscdp::Catalog(list));
}

#[test]
fn invite_offer_and_answer() {
    let inv = msg("08-invite.sip");
    let subject = Subject::parse(inv.header("subject").unwrap()).unwrap();
    assert_eq!(subject.sender_id, "34020000001320000001");
    assert_eq!(subject.ssrc, "0200000001");
    assert_eq!(subject.receiver_id, "34020000002020000001");
    let offer = sdp::parse(&inv.body).unwrap();
    assert_eq!(offer.kind, Some(SessionKind::Play));
    assert_eq!(offer.ssrc.as_deref(), Some("0200000001"));
    assert_eq!(offer.ps_payload_type(), Some(96));
    assert_eq!(offer.payload_types, vec![96, 97, 98]);
    assert_eq!(offer.port, 30000);
    assert_eq!(offer.transport(), MediaTransport::Udp);
    assert_eq!(offer.direction.as_deref(), Some("recvonly"));
    assert_eq!(offer.connection_ip.as_deref(), Some("192.168.137.105"));
    let ssrc = Ssrc::parse(offer.ssrc.as_deref().unwrap()).unwrap();
    assert_eq!(ssrc.kind, SsrcKind::Live);
    assert_eq!(Ssrc::new(SsrcKind::Live, "3402000000", 1), Some(ssrc));

    // Our offer with the same parameters parses to the same description.
    let ours = sdp::Offer {
        kind: SessionKind::Play,
        origin_id: "34020000002000000001".into(),
        ip: "192.168.137.105".into(),
        port: 30000,
        transport: MediaTransport::Udp,
        ssrc: "0200000001".into(),
        channel_id: "34020000001320000001".into(),
        start: 0,
        end: 0,
        download_speed: None,
        format: None,
    };
    assert_eq!(sdp::parse(ours.to_sdp().as_bytes()).unwrap(), offer);

    let answer = sdp::parse(&msg("10-invite-200.sip").body).unwrap();
    assert_eq!(answer.port, 15060);
    assert_eq!(answer.direction.as_deref(), Some("sendonly"));
    assert_eq!(answer.connection_ip.as_deref(), Some("192.168.137.109"));
    assert_eq!(answer.ssrc.as_deref(), Some("0200000001"));
    assert_eq!(answer.file_size, Some(0));
    assert_eq!(answer.ps_payload_type(), Some(96));
}

#[test]
fn dialog_matches_ack_and_bye() {
    let inv = msg("08-invite.sip");
    let ok = msg("10-invite-200.sip");
    let mut d = Dialog::from_invite(&inv, &ok).unwrap();
    assert_eq!(
        d.remote_target,
        "sip:34020000001320000001@192.168.64.3:55302"
    );
    let ack = d.ack();
    let their_ack = msg("11-ack.sip");
    for h in ["from", "to", "call-id", "cseq"] {
        assert_eq!(ack.header(h), their_ack.header(h), "ACK {h}");
    }
    let bye = d.bye();
    let their_bye = msg("12-bye.sip");
    assert_eq!(bye.uri(), their_bye.uri());
    for h in ["from", "to", "call-id", "cseq"] {
        assert_eq!(bye.header(h), their_bye.header(h), "BYE {h}");
    }
    assert_ne!(
        bye.via().unwrap().branch(),
        inv.via().unwrap().branch(),
        "new transaction, new branch"
    );
    // A BYE from the camera matches the dialog (tags swapped).
    let mut from_cam = Message::request("BYE", "sip:34020000002000000001@192.168.64.3:15060");
    from_cam
        .add_header("From", ok.header("to").unwrap())
        .add_header("To", inv.header("from").unwrap())
        .add_header("Call-ID", "16516245")
        .add_header("CSeq", "1 BYE");
    assert!(d.matches(&from_cam));
    assert!(!d.matches(&their_bye));
    let info = d.info(&gstgb28181::core::mansrtsp::Request::pause(1).to_body());
    assert_eq!(info.cseq().unwrap().seq, 6);
    assert_eq!(info.content_type(), Some("Application/MANSRTSP"));
}

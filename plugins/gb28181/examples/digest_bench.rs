//! Registrar throughput on one core, without GStreamer or sockets:
//! - full digest REGISTER handling: parse the datagram + verify the digest (qop=auth) +
//!   build and serialize the 200 OK, for N distinct devices;
//! - keepalives: parse SIP + MANSCDP + update the registry + serialize the 200 OK, and the
//!   cost of 10,000 devices' keepalives per 60 s (plus one `poll` per second).
//!
//! Run: `cargo run --release -p gst-plugin-gb28181 --example digest_bench [devices]`

use clap::builder::RangedU64ValueParser;
use gstgb28181::core::digest::{Challenge, answer_challenge};
use gstgb28181::core::manscdp::{self, Manscdp};
use gstgb28181::core::registrar::{Registrar, RegistrarConfig};
use gstgb28181::core::sip::Message;
use std::hint::black_box;
use std::time::Instant;

const T0: u64 = 1_700_000_000_000;

fn device_id(i: usize) -> String {
    format!("340200000013{:08}", i)
}

fn register_bytes(r: &mut Registrar, i: usize) -> Vec<u8> {
    let id = device_id(i);
    let uri = "sip:34020000002000000001@3402000000";
    let mut m = Message::request("REGISTER", uri);
    m.add_header(
        "Via",
        format!(
            "SIP/2.0/UDP 10.1.{}.{}:5060;rport;branch=z9hG4bK{i}",
            i / 250,
            i % 250
        ),
    )
    .add_header("From", format!("<sip:{id}@3402000000>;tag={i}"))
    .add_header("To", format!("<sip:{id}@3402000000>"))
    .add_header("Call-ID", format!("{i}"))
    .add_header("CSeq", "1 REGISTER")
    .add_header("Contact", format!("<sip:{id}@10.1.0.1:5060>"))
    .add_header("Max-Forwards", "70")
    .add_header("User-Agent", "IP Camera")
    .add_header("Expires", "3600");
    // Ask the registrar for a challenge, answer it like the camera does.
    let first = r.handle_register(&Message::parse(&m.to_bytes()).unwrap(), "10.1.0.1:5060", T0);
    let ch = Challenge::parse(first.response.header("www-authenticate").unwrap()).unwrap();
    let c = answer_challenge(&ch, &id, "12345678", "REGISTER", uri, "0a4f113b", 1);
    m.add_header("Authorization", c.to_header_value());
    m.to_bytes()
}

fn keepalive_bytes(i: usize) -> Vec<u8> {
    let id = device_id(i);
    let mut m = Message::request("MESSAGE", "sip:34020000002000000001@3402000000");
    m.add_header("Via", "SIP/2.0/UDP 10.1.0.1:5060;rport;branch=z9hG4bK1")
        .add_header("From", format!("<sip:{id}@3402000000>;tag={i}"))
        .add_header("To", "<sip:34020000002000000001@3402000000>")
        .add_header("Call-ID", format!("ka{i}"))
        .add_header("CSeq", "20 MESSAGE")
        .add_header("Max-Forwards", "70");
    m.set_body(
        "Application/MANSCDP+xml",
        manscdp::encode_body(
            &manscdp::build_keepalive(123, &id),
            manscdp::Charset::Gb2312,
        ),
    );
    m.to_bytes()
}

/// Registrar throughput on one core.
#[derive(clap::Parser, Debug)]
#[command(
    name = "digest_bench",
    version,
    about = "Registrar throughput on one core (digest REGISTER, keepalives), no GStreamer or sockets"
)]
struct Args {
    /// Number of distinct devices.
    #[arg(default_value_t = 10_000, value_parser = RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    devices: usize,
}

fn main() {
    let Args { devices } = <Args as clap::Parser>::parse();
    let mut r = Registrar::new(RegistrarConfig {
        max_devices: devices * 2,
        ..Default::default()
    });
    let registers: Vec<Vec<u8>> = (0..devices).map(|i| register_bytes(&mut r, i)).collect();

    // Full REGISTER handling: every request is new to the registry on the first round,
    // a refresh on the following rounds.
    let rounds = 3;
    let start = Instant::now();
    let mut ok = 0;
    for round in 0..rounds {
        for (i, data) in registers.iter().enumerate() {
            let req = Message::parse(data).unwrap();
            let out = r.handle_register(&req, "10.1.0.1:5060", T0 + 1000 + round);
            ok += usize::from(out.response.status() == Some(200));
            black_box(out.response.to_bytes());
            black_box(i);
        }
    }
    let el = start.elapsed().as_secs_f64();
    let n = (rounds as usize * devices) as f64;
    assert_eq!(ok, rounds as usize * devices, "all registrations accepted");
    println!(
        "REGISTER (parse + MD5 digest verify + 200 OK): {:.0} /s on one core ({:.2} µs each, {} devices)",
        n / el,
        el / n * 1e6,
        devices
    );

    let keepalives: Vec<Vec<u8>> = (0..devices).map(keepalive_bytes).collect();
    let start = Instant::now();
    let mut ok = 0;
    for round in 0..rounds {
        for data in &keepalives {
            let req = Message::parse(data).unwrap();
            let Ok(Manscdp::Keepalive(ka)) = Manscdp::parse(&req.body) else {
                panic!("keepalive body")
            };
            let out = r.handle_keepalive(&req, &ka, "10.1.0.1:5060", T0 + 60_000 + round);
            ok += usize::from(out.response.status() == Some(200));
            black_box(out.response.to_bytes());
        }
    }
    let el = start.elapsed().as_secs_f64();
    assert_eq!(ok, rounds as usize * devices);
    let per = el / n;
    // Registry timers: one poll per second over all devices.
    let start = Instant::now();
    for s in 0..10 {
        black_box(r.poll(T0 + 61_000 + s * 1000));
    }
    let poll = start.elapsed().as_secs_f64() / 10.0;
    let per_minute = per * devices as f64 + poll * 60.0;
    println!(
        "keepalive (parse SIP + MANSCDP GB2312 + registry + 200 OK): {:.0} /s ({:.2} µs each)",
        1.0 / per,
        per * 1e6
    );
    println!(
        "{} devices, keepalive every 60 s + poll every 1 s ({:.3} ms each): {:.1} ms CPU per 60 s = {:.3} % of one core",
        devices,
        poll * 1e3,
        per_minute * 1e3,
        per_minute / 60.0 * 100.0
    );
}

//! The device-side RegisterClient against the platform-side Registrar over a simulated
//! datagram network with time passed in: every message goes through bytes and the parser.

use gstgb28181::core::client::{ClientAction, ClientState, RegisterClient, RegisterClientConfig};
use gstgb28181::core::manscdp::Manscdp;
use gstgb28181::core::registrar::{Event, Registrar, RegistrarConfig};
use gstgb28181::core::sip::Message;

const SRC: &str = "127.0.0.1:5070";

#[derive(Default)]
struct Log {
    client: Vec<ClientAction>,
    registrar: Vec<Event>,
    sent: Vec<Message>,
    keepalives_ok: usize,
}

/// Delivers `actions`; `drop` decides whether a request is lost on the way.
fn deliver(
    r: &mut Registrar,
    c: &mut RegisterClient,
    actions: Vec<ClientAction>,
    now: u64,
    log: &mut Log,
    drop: &mut dyn FnMut(&Message) -> bool,
) {
    let mut queue = actions;
    while let Some(a) = queue.pop() {
        let ClientAction::Send(m) = a else {
            log.client.push(a);
            continue;
        };
        log.sent.push(m.clone());
        if drop(&m) {
            continue;
        }
        let req = Message::parse(&m.to_bytes()).unwrap();
        let out = match req.method() {
            Some("REGISTER") => r.handle_register(&req, SRC, now),
            Some("MESSAGE") => {
                let Ok(Manscdp::Keepalive(ka)) = Manscdp::parse(&req.body) else {
                    panic!("keepalive expected")
                };
                r.handle_keepalive(&req, &ka, SRC, now)
            }
            other => panic!("unexpected {other:?}"),
        };
        if req.method() == Some("MESSAGE") && out.response.status() == Some(200) {
            log.keepalives_ok += 1;
        }
        log.registrar.extend(out.events);
        let resp = Message::parse(&out.response.to_bytes()).unwrap();
        queue.extend(c.on_response(&resp, now + 5));
    }
}

fn run(
    r: &mut Registrar,
    c: &mut RegisterClient,
    from: u64,
    to: u64,
    log: &mut Log,
    drop: &mut dyn FnMut(&Message) -> bool,
) {
    let mut now = from;
    while now < to {
        let actions = c.poll(now);
        deliver(r, c, actions, now, log, drop);
        log.registrar.extend(r.poll(now));
        now += 100;
    }
}

fn setup(password: &str) -> (Registrar, RegisterClient) {
    let r = Registrar::new(RegistrarConfig::default());
    let c = RegisterClient::new(RegisterClientConfig {
        password: password.into(),
        expires: 600,
        local_port: 5070,
        ..Default::default()
    });
    (r, c)
}

#[test]
fn registers_keeps_alive_and_refreshes() {
    let (mut r, mut c) = setup("12345678");
    let mut log = Log::default();
    let t0 = 1_700_000_000_000;
    let actions = c.start(t0);
    deliver(&mut r, &mut c, actions, t0, &mut log, &mut |_| false);
    assert_eq!(c.state, ClientState::Registered);
    assert!(matches!(
        &log.client[0],
        ClientAction::Registered { expires_s: 600, server_date: Some(d) } if d == "2023-11-15T06:13:20.000"
    ));
    // 20 minutes: keepalives every 60 s, refreshes at 80 % of 600 s, never offline.
    run(&mut r, &mut c, t0, t0 + 20 * 60_000, &mut log, &mut |_| {
        false
    });
    assert!(
        !log.registrar
            .iter()
            .any(|e| matches!(e, Event::Offline { .. } | Event::Unregistered { .. }))
    );
    assert!(
        (18..=20).contains(&log.keepalives_ok),
        "{}",
        log.keepalives_ok
    );
    let refreshes = log
        .registrar
        .iter()
        .filter(|e| matches!(e, Event::Registered { refresh: true, .. }))
        .count();
    assert_eq!(refreshes, 2);
    assert!(r.device("34020000001320000001").unwrap().online);

    // The platform restarts and forgets the device: the next keepalive is refused and the
    // device registers again straight away.
    let mut r2 = Registrar::new(RegistrarConfig::default());
    let t1 = t0 + 20 * 60_000;
    let mut log2 = Log::default();
    run(&mut r2, &mut c, t1, t1 + 70_000, &mut log2, &mut |_| false);
    assert!(
        log2.registrar
            .iter()
            .any(|e| matches!(e, Event::KeepaliveRefused { .. }))
    );
    assert!(
        log2.registrar
            .iter()
            .any(|e| matches!(e, Event::Registered { refresh: false, .. }))
    );
    assert!(r2.device("34020000001320000001").is_some());

    // Unregister.
    let actions = c.unregister(t1 + 80_000);
    deliver(
        &mut r2,
        &mut c,
        actions,
        t1 + 80_000,
        &mut log2,
        &mut |_| false,
    );
    assert_eq!(c.state, ClientState::Idle);
    assert!(r2.device("34020000001320000001").is_none());
}

#[test]
fn retransmits_lost_requests() {
    let (mut r, mut c) = setup("12345678");
    let mut log = Log::default();
    let mut lost = 0;
    // Lose the first two datagrams.
    let mut drop = |_: &Message| {
        lost += 1;
        lost <= 2
    };
    let actions = c.start(0);
    deliver(&mut r, &mut c, actions, 0, &mut log, &mut drop);
    run(&mut r, &mut c, 0, 5_000, &mut log, &mut drop);
    assert_eq!(c.state, ClientState::Registered);
    // Timer E: the same REGISTER again at 500 ms and 1500 ms.
    assert_eq!(log.sent[0], log.sent[1]);
    assert_eq!(log.sent[1], log.sent[2]);
}

#[test]
fn wrong_password_backs_off_and_silence_times_out() {
    let (mut r, mut c) = setup("wrong");
    let mut log = Log::default();
    let actions = c.start(0);
    deliver(&mut r, &mut c, actions, 0, &mut log, &mut |_| false);
    assert_eq!(c.state, ClientState::Backoff);
    assert_eq!(log.client, vec![ClientAction::Failed { status: Some(403) }]);
    // Retries after retry_ms, still refused.
    run(&mut r, &mut c, 0, 10_200, &mut log, &mut |_| false);
    assert_eq!(
        log.client.len(),
        2,
        "{:?} {:?}",
        log.client,
        log.sent
            .iter()
            .map(|m| m.header("cseq"))
            .collect::<Vec<_>>()
    );
    // Exponential backoff: the next retry comes 2 × retry_ms after the second refusal.
    run(&mut r, &mut c, 10_200, 29_500, &mut log, &mut |_| false);
    assert_eq!(log.client.len(), 2);
    run(&mut r, &mut c, 29_500, 30_500, &mut log, &mut |_| false);
    assert_eq!(log.client.len(), 3);

    // A platform that never answers: Timer F (32 s) → Failed { None }.
    let (mut r, mut c) = setup("12345678");
    let mut log = Log::default();
    let actions = c.start(0);
    deliver(&mut r, &mut c, actions, 0, &mut log, &mut |_| true);
    run(&mut r, &mut c, 0, 33_000, &mut log, &mut |_| true);
    assert_eq!(log.client, vec![ClientAction::Failed { status: None }]);
    assert!(c.next_deadline().is_some());
}

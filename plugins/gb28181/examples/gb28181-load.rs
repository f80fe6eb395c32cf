//! GB28181 load tool: simulates N devices from one process (REGISTER with digest, then
//! keepalives, with `core::client::RegisterClient`) against a SIP endpoint, and prints
//! registrations/s, keepalives/s and, for the in-process endpoint, its CPU use (from
//! /proc/self/task/*/stat, threads named `gb28181-sip-*`).
//!
//! ```text
//! cargo run --release -p gst-plugin-gb28181 --example gb28181-load -- \
//!     --devices 10000 --keepalive-ms 60000 --duration-s 60
//! # against another endpoint (e.g. a gb28181src pipeline on port 5060):
//! cargo run --release -p gst-plugin-gb28181 --example gb28181-load -- --server 127.0.0.1:5060
//! ```
//! Options and defaults: `gb28181-load --help`.

use clap::builder::RangedU64ValueParser;
use gstgb28181::core::client::{ClientAction, RegisterClient, RegisterClientConfig};
use gstgb28181::core::registrar::RegistrarConfig;
use gstgb28181::core::sip::Message;
use gstgb28181::endpoint::{Endpoint, EndpointKey, SipTransport, now_ms};
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Simulated GB28181 devices against a SIP endpoint.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "gb28181-load",
    version,
    about = "N simulated GB28181 devices (REGISTER + keepalives) against a SIP endpoint, with rates and CPU"
)]
struct Opts {
    /// Number of devices.
    #[arg(long, default_value_t = 1000, value_parser = RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    devices: usize,
    /// The SIP endpoint, IP:PORT (default: an in-process endpoint on 127.0.0.1).
    #[arg(long)]
    server: Option<SocketAddr>,
    /// Password the devices register with.
    #[arg(long, default_value = "12345678")]
    password: String,
    /// Keepalive interval of each device.
    #[arg(long, default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(100..))]
    keepalive_ms: u64,
    /// Steady-state measurement after all devices registered.
    #[arg(long, default_value_t = 60)]
    duration_s: u64,
    /// UDP sockets the devices are spread over.
    #[arg(long, default_value_t = 16, value_parser = RangedU64ValueParser::<usize>::new().range(1..=1024))]
    sockets: usize,
    /// Registrations in flight per socket.
    #[arg(long, default_value_t = 8, value_parser = RangedU64ValueParser::<usize>::new().range(1..=1024))]
    window: usize,
}

#[derive(Default)]
struct Counters {
    registered: AtomicU64,
    failures: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
    keepalives: AtomicU64,
}

/// CPU ticks (utime + stime) of this process's threads, split into endpoint threads and
/// the rest.
fn cpu_ticks() -> (u64, u64) {
    let mut ep = 0;
    let mut rest = 0;
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return (0, 0);
    };
    for t in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        // comm is in parentheses and may hold spaces: split after the last ')'.
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let comm = stat
            .get(stat.find('(').unwrap_or(0) + 1..close)
            .unwrap_or("");
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        // Fields 14 and 15 of stat are at indices 11 and 12 after the comm.
        let ticks = fields
            .get(11)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            + fields
                .get(12)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        if comm.starts_with("gb28181-sip") {
            ep += ticks;
        } else {
            rest += ticks;
        }
    }
    (ep, rest)
}

fn ticks_per_second() -> f64 {
    // sysconf(_SC_CLK_TCK) is 100 on every Linux configuration in practice.
    100.0
}

fn worker(
    ids: Vec<String>,
    server: SocketAddr,
    opts: Arc<Opts>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
) {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    let port = sock.local_addr().unwrap().port();
    let mut clients: Vec<RegisterClient> = ids
        .iter()
        .map(|id| {
            RegisterClient::new(RegisterClientConfig {
                device_id: id.clone(),
                local_port: port,
                password: opts.password.clone(),
                keepalive_interval_ms: opts.keepalive_ms,
                retry_ms: 2000,
                ..Default::default()
            })
        })
        .collect();
    let index: HashMap<String, usize> = ids.iter().cloned().zip(0..).collect();
    let mut started = 0usize;
    let mut in_flight = 0usize;
    let mut was_registered = vec![false; clients.len()];
    let mut buf = vec![0u8; 65_536];
    let mut next_poll = 0u64;
    let send_all = |acts: Vec<ClientAction>, counters: &Counters| {
        let mut reg = 0;
        for a in acts {
            match a {
                ClientAction::Send(m) => {
                    if m.method() == Some("MESSAGE") {
                        counters.keepalives.fetch_add(1, Ordering::Relaxed);
                    }
                    counters.sent.fetch_add(1, Ordering::Relaxed);
                    let _ = sock.send_to(&m.to_bytes(), server);
                }
                ClientAction::Registered { .. } => reg += 1,
                ClientAction::Failed { .. } => {
                    counters.failures.fetch_add(1, Ordering::Relaxed);
                }
                ClientAction::Unregistered => {}
            }
        }
        reg
    };
    while !stop.load(Ordering::Relaxed) {
        let now = now_ms();
        while started < clients.len() && in_flight < opts.window {
            let acts = clients[started].start(now);
            send_all(acts, &counters);
            started += 1;
            in_flight += 1;
        }
        for _ in 0..64 {
            let Ok((n, _)) = sock.recv_from(&mut buf) else {
                break;
            };
            counters.received.fetch_add(1, Ordering::Relaxed);
            if let Ok(m) = Message::parse(&buf[..n])
                && let Some(user) = m.from().and_then(|f| f.sip_uri()).and_then(|u| u.user)
                && let Some(&i) = index.get(&user)
            {
                let acts = clients[i].on_response(&m, now_ms());
                if send_all(acts, &counters) > 0 && !was_registered[i] {
                    was_registered[i] = true;
                    in_flight = in_flight.saturating_sub(1);
                    counters.registered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if now >= next_poll {
            next_poll = now + 10;
            for c in clients.iter_mut().take(started) {
                let acts = c.poll(now);
                if !acts.is_empty() {
                    send_all(acts, &counters);
                }
            }
        }
    }
    // Unregister (REGISTER Expires: 0, challenged again) and finish within a bound.
    let now = now_ms();
    for c in &mut clients {
        let _ = send_all(c.unregister(now), &counters);
    }
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        if let Ok((n, _)) = sock.recv_from(&mut buf)
            && let Ok(m) = Message::parse(&buf[..n])
            && let Some(user) = m.from().and_then(|f| f.sip_uri()).and_then(|u| u.user)
            && let Some(&i) = index.get(&user)
        {
            let acts = clients[i].on_response(&m, now_ms());
            send_all(acts, &counters);
        }
    }
}

fn main() {
    let opts = Arc::new(<Opts as clap::Parser>::parse());
    let (server, endpoint) = match opts.server {
        Some(s) => (s, None),
        None => {
            let ep = Endpoint::obtain(
                &EndpointKey {
                    address: "127.0.0.1".into(),
                    port: 0,
                    transport: SipTransport::Udp,
                },
                RegistrarConfig {
                    default_password: Some(opts.password.clone()),
                    keepalive_interval_ms: opts.keepalive_ms,
                    max_devices: opts.devices.max(1) * 2,
                    ..Default::default()
                },
            )
            .expect("endpoint");
            (ep.local_addr(), Some(ep))
        }
    };
    println!(
        "gb28181-load: {} devices against {server} ({}), {} sockets, keepalive every {} ms",
        opts.devices,
        if endpoint.is_some() {
            "in-process endpoint"
        } else {
            "external"
        },
        opts.sockets,
        opts.keepalive_ms
    );
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let per = opts.devices.div_ceil(opts.sockets);
    let mut handles = Vec::new();
    for w in 0..opts.sockets {
        let ids: Vec<String> = (w * per..((w + 1) * per).min(opts.devices))
            .map(|n| format!("3402000000132{n:07}"))
            .collect();
        if ids.is_empty() {
            continue;
        }
        let (o, c, s) = (opts.clone(), counters.clone(), stop.clone());
        handles.push(
            std::thread::Builder::new()
                .name(format!("load-{w}"))
                .spawn(move || worker(ids, server, o, c, s))
                .unwrap(),
        );
    }
    // Phase 1: registration.
    let t0 = Instant::now();
    let (ep0, rest0) = cpu_ticks();
    let deadline = t0 + Duration::from_secs(120);
    let mut last = 0;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        let r = counters.registered.load(Ordering::Relaxed);
        if r as usize >= opts.devices {
            break;
        }
        if t0.elapsed().as_secs() != last {
            last = t0.elapsed().as_secs();
            println!("  {r} registered after {last} s");
        }
    }
    let reg_time = t0.elapsed().as_secs_f64();
    let (ep1, rest1) = cpu_ticks();
    let registered = counters.registered.load(Ordering::Relaxed);
    println!(
        "registration: {registered}/{} devices in {reg_time:.2} s = {:.0} registrations/s \
         (REGISTER + 401 + REGISTER + 200 each); endpoint CPU {:.2} s, load generator CPU {:.2} s",
        opts.devices,
        registered as f64 / reg_time,
        (ep1 - ep0) as f64 / ticks_per_second(),
        (rest1 - rest0) as f64 / ticks_per_second(),
    );
    if let Some(ep) = &endpoint {
        let s = ep.stats();
        println!(
            "  endpoint: {} devices ({} online), {} messages in, {} out, {} auth failures",
            s.devices, s.devices_online, s.messages_in, s.messages_out, s.registrar.auth_failures
        );
    }
    // Phase 2: steady state with keepalives.
    let k0 = counters.keepalives.load(Ordering::Relaxed);
    let t1 = Instant::now();
    let (ep2, rest2) = cpu_ticks();
    std::thread::sleep(Duration::from_secs(opts.duration_s));
    let dt = t1.elapsed().as_secs_f64();
    let (ep3, rest3) = cpu_ticks();
    let k = counters.keepalives.load(Ordering::Relaxed) - k0;
    let ep_cpu = (ep3 - ep2) as f64 / ticks_per_second();
    println!(
        "steady state over {dt:.1} s: {k} keepalives = {:.0}/s; endpoint CPU {ep_cpu:.2} s = {:.2} % of one core; load generator CPU {:.2} s",
        k as f64 / dt,
        100.0 * ep_cpu / dt,
        (rest3 - rest2) as f64 / ticks_per_second(),
    );
    if let Some(ep) = &endpoint {
        let s = ep.stats();
        println!(
            "  endpoint: {} devices ({} online), {} keepalives handled, {} refused, {} retransmissions",
            s.devices,
            s.devices_online,
            s.registrar.keepalives,
            s.registrar.keepalives_refused,
            s.retransmissions
        );
    }
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    println!(
        "failures: {}, sent {}, received {}",
        counters.failures.load(Ordering::Relaxed),
        counters.sent.load(Ordering::Relaxed),
        counters.received.load(Ordering::Relaxed)
    );
    if let Some(ep) = endpoint {
        std::thread::sleep(Duration::from_millis(300));
        println!(
            "  endpoint after unregister: {} devices",
            ep.stats().devices
        );
        ep.shutdown();
    }
}

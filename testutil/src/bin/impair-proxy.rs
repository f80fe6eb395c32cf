//! `impair-proxy`: a seeded UDP or TCP impairment proxy for trying gst-ipcam on a bad network
//! without netem (loss, bursts, duplication, reordering, delay/jitter, bandwidth cap, and
//! scheduled cuts). Prints the address it listens on, runs until Ctrl-C or `--seconds`, then
//! prints what it did.
//!
//! ```text
//! impair-proxy --udp --listen 127.0.0.1:0 --to 127.0.0.1:30000 --loss 0.05 --burst 4 --seed 7
//! impair-proxy --tcp --listen 127.0.0.1:15060 --to 127.0.0.1:5060 --delay-ms 80 --cut-at-s 10 --cut-for-s 5
//! ```

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser;
use gst_ipcam_testutil::impair::{Direction, Impairment, TcpProxy, UdpProxy};

#[derive(Parser, Debug)]
#[command(
    name = "impair-proxy",
    version,
    about = "Seeded UDP/TCP impairment proxy (user-space netem)"
)]
struct Args {
    /// Proxy UDP datagrams (the default).
    #[arg(long, conflicts_with = "tcp")]
    udp: bool,
    /// Proxy TCP connections.
    #[arg(long)]
    tcp: bool,
    /// Address to listen on (port 0: any free port, printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Where to forward.
    #[arg(long)]
    to: SocketAddr,
    /// Share of packets lost, 0..1 (UDP).
    #[arg(long, default_value_t = 0.0, value_parser = share)]
    loss: f64,
    /// Mean loss burst length in packets (1: independent losses) (UDP).
    #[arg(long, default_value_t = 1.0)]
    burst: f64,
    /// Share of packets duplicated, 0..1 (UDP).
    #[arg(long, default_value_t = 0.0, value_parser = share)]
    duplicate: f64,
    /// Share of packets swapped with the next one, 0..1 (UDP).
    #[arg(long, default_value_t = 0.0, value_parser = share)]
    reorder: f64,
    /// One-way delay in milliseconds.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Extra random delay 0..jitter in milliseconds.
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
    /// Bandwidth cap in kbit/s (0: none).
    #[arg(long, default_value_t = 0)]
    rate_kbps: u64,
    /// Apply the impairment to the answers too (target → client), not only client → target.
    #[arg(long)]
    both_ways: bool,
    /// Random seed: the same seed and traffic give the same decisions.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Cut the link (UDP: drop all; TCP: close all and refuse) this many seconds after start.
    #[arg(long)]
    cut_at_s: Option<u64>,
    /// How long the cut lasts (default: for good).
    #[arg(long)]
    cut_for_s: Option<u64>,
    /// TCP: make connections half-open (silent, no close) instead of closing them at the cut.
    #[arg(long)]
    half_open: bool,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    seconds: Option<u64>,
    /// Print statistics every this many seconds (0: only at the end).
    #[arg(long, default_value_t = 5)]
    stats_interval_s: u64,
}

fn share(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err("must be within 0..1".into())
    }
}

enum Proxy {
    Udp(UdpProxy),
    Tcp(TcpProxy),
}

impl Proxy {
    fn stats(&self) -> String {
        match self {
            Proxy::Udp(p) => {
                let (f, b, cut) = p.stats();
                format!(
                    "forward: {} in, {} out, {} lost, {} dup, {} reordered, {} over the cap; backward: {} in, {} out; {} lost to cuts",
                    f.received,
                    f.forwarded,
                    f.dropped,
                    f.duplicated,
                    f.reordered,
                    f.queue_dropped,
                    b.received,
                    b.forwarded,
                    cut
                )
            }
            Proxy::Tcp(p) => format!("{:?}", p.stats()),
        }
    }
}

fn main() {
    let a = Args::parse();
    let imp = Impairment {
        drop: a.loss,
        burst: a.burst.max(1.0),
        duplicate: a.duplicate,
        reorder: a.reorder,
        delay: Duration::from_millis(a.delay_ms),
        jitter: Duration::from_millis(a.jitter_ms),
        rate_bps: a.rate_kbps * 1000,
        seed: a.seed,
        ..Impairment::none()
    };
    let back = if a.both_ways {
        Impairment {
            seed: a.seed.wrapping_add(1),
            ..imp
        }
    } else {
        Impairment::none()
    };
    let started = if a.tcp {
        TcpProxy::start(a.listen, a.to, imp, back).map(Proxy::Tcp)
    } else {
        UdpProxy::start(a.listen, a.to, imp, back).map(Proxy::Udp)
    };
    let proxy = match started {
        Ok(p) => p,
        Err(e) => {
            eprintln!("impair-proxy: cannot listen on {}: {e}", a.listen);
            std::process::exit(1);
        }
    };
    let addr = match &proxy {
        Proxy::Udp(p) => p.addr(),
        Proxy::Tcp(p) => p.addr(),
    };
    println!(
        "impair-proxy: {} {addr} -> {} (seed {})",
        if a.tcp { "tcp" } else { "udp" },
        a.to,
        a.seed
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let stop = stop.clone();
        if let Err(e) =
            ctrlc::set_handler(move || stop.store(true, std::sync::atomic::Ordering::SeqCst))
        {
            eprintln!("impair-proxy: no Ctrl-C handler: {e}");
        }
    }
    let start = Instant::now();
    let (mut cut, mut last_stats) = (false, Instant::now());
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let t = start.elapsed();
        if stop.load(std::sync::atomic::Ordering::SeqCst)
            || a.seconds.is_some_and(|s| t >= Duration::from_secs(s))
        {
            break;
        }
        if let Some(at) = a.cut_at_s.map(Duration::from_secs) {
            let end = a.cut_for_s.map(|d| at + Duration::from_secs(d));
            let should = t >= at && end.is_none_or(|e| t < e);
            if should != cut {
                cut = should;
                println!(
                    "impair-proxy: link {}",
                    if cut { "cut" } else { "restored" }
                );
                match (&proxy, cut) {
                    (Proxy::Udp(p), true) => p.cut(),
                    (Proxy::Udp(p), false) => {
                        p.restore();
                        p.set(Direction::Forward, imp);
                    }
                    (Proxy::Tcp(p), true) if a.half_open => p.freeze(),
                    (Proxy::Tcp(p), true) => p.cut(),
                    (Proxy::Tcp(p), false) => {
                        p.thaw();
                        p.restore();
                    }
                }
            }
        }
        if a.stats_interval_s > 0 && last_stats.elapsed() >= Duration::from_secs(a.stats_interval_s)
        {
            last_stats = Instant::now();
            println!("impair-proxy: {}", proxy.stats());
        }
    }
    println!("impair-proxy: {}", proxy.stats());
}

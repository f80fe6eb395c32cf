//! Helpers shared by the gst-ipcam test suites (plugin tests and the cross-plugin `tests`
//! crate): one-time init, bounded waits on events and counts (never a sleep as
//! synchronisation), pipelines and their bus, buffer counters, ports read back from sockets
//! bound to port 0, and a seeded UDP impairment relay (loss, duplication, reordering that is
//! the same on every run).

pub mod programs;

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gst::prelude::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// `gst::init()` and `register` (the plugins under test, statically), once per process.
pub fn init_with(register: impl FnOnce()) {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        gst::init().expect("gst::init");
        register();
    });
}

/// Checks `cond` every 5 ms until it holds (true) or `timeout` passes (false).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Parses a pipeline description (not started).
pub fn launch(description: &str) -> gst::Pipeline {
    gst::parse::launch(description)
        .unwrap_or_else(|e| panic!("parse {description}: {e}"))
        .downcast::<gst::Pipeline>()
        .expect("a pipeline")
}

/// Parses and starts a pipeline description.
pub fn start_pipeline(description: &str) -> gst::Pipeline {
    let pipeline = launch(description);
    pipeline
        .set_state(gst::State::Playing)
        .unwrap_or_else(|e| panic!("start {description}: {e:?}"));
    pipeline
}

/// Sets `pipeline` PLAYING and waits (bounded) until it is: sockets are bound, sources run.
/// Sinks after a live source that may stay silent need `async=false`.
pub fn play_and_wait(pipeline: &gst::Pipeline) {
    pipeline.set_state(gst::State::Playing).expect("PLAYING");
    let (res, state, _) = pipeline.state(gst::ClockTime::from_seconds(10));
    res.expect("state change");
    assert_eq!(state, gst::State::Playing, "pipeline did not reach PLAYING");
}

/// The element `name` of `pipeline`.
pub fn by_name(pipeline: &gst::Pipeline, name: &str) -> gst::Element {
    pipeline
        .by_name(name)
        .unwrap_or_else(|| panic!("no element {name}"))
}

/// The port a `udpsrc port=0` bound (valid once it is at least READY).
pub fn udpsrc_port(udpsrc: &gst::Element) -> u16 {
    let port = udpsrc.property::<i32>("port");
    assert!(port > 0, "udpsrc did not bind a port");
    u16::try_from(port).expect("a port")
}

/// What a pipeline posted while it ran.
#[derive(Debug, Default)]
pub struct BusLog {
    pub eos: bool,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

/// Runs `pipeline` (already PLAYING) until EOS, an error or `timeout`, collecting errors and
/// warnings. Never blocks longer than `timeout`.
pub fn wait_for_eos(pipeline: &gst::Pipeline, timeout: Duration) -> BusLog {
    let bus = pipeline.bus().expect("pipeline bus");
    let deadline = Instant::now() + timeout;
    let mut log = BusLog::default();
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let left = gst::ClockTime::from_nseconds((deadline - now).as_nanos() as u64);
        let Some(msg) = bus.timed_pop(left) else {
            break;
        };
        use gst::MessageView;
        match msg.view() {
            MessageView::Eos(_) => {
                log.eos = true;
                break;
            }
            MessageView::Error(e) => {
                log.errors.push(format!(
                    "{}: {} ({:?})",
                    msg.src()
                        .map(|s| s.path_string().to_string())
                        .unwrap_or_default(),
                    e.error(),
                    e.debug()
                ));
                break;
            }
            MessageView::Warning(w) => {
                log.warnings
                    .push(format!("{} ({:?})", w.error(), w.debug()))
            }
            _ => {}
        }
    }
    log
}

/// Waits for EOS; panics on an error message or after `timeout`.
pub fn expect_eos(pipeline: &gst::Pipeline, timeout: Duration) {
    let log = wait_for_eos(pipeline, timeout);
    assert!(log.errors.is_empty(), "errors: {:?}", log.errors);
    assert!(log.eos, "no EOS within {timeout:?}");
}

/// Panics if the pipeline posted an error.
pub fn assert_no_error(pipeline: &gst::Pipeline) {
    let bus = pipeline.bus().expect("pipeline bus");
    while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
        if let gst::MessageView::Error(err) = msg.view() {
            panic!(
                "{:?}: {} ({:?})",
                err.src().map(|s| s.path_string()),
                err.error(),
                err.debug()
            );
        }
    }
}

/// Counts buffers (and buffers in lists) through an element's static pad.
pub fn count_buffers(element: &gst::Element, pad: &str) -> Arc<AtomicUsize> {
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    element
        .static_pad(pad)
        .unwrap_or_else(|| panic!("no pad {pad}"))
        .add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
            move |_, info| {
                let n = match &info.data {
                    Some(gst::PadProbeData::BufferList(l)) => l.len(),
                    _ => 1,
                };
                counter.fetch_add(n, Ordering::SeqCst);
                gst::PadProbeReturn::Ok
            },
        );
    count
}

/// Collects the bytes of every buffer through an element's static pad.
pub fn collect_bytes(element: &gst::Element, pad: &str) -> Arc<Mutex<Vec<u8>>> {
    let bytes = Arc::new(Mutex::new(Vec::new()));
    let sink = bytes.clone();
    element
        .static_pad(pad)
        .unwrap_or_else(|| panic!("no pad {pad}"))
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(buffer) = info.buffer()
                && let Ok(map) = buffer.map_readable()
            {
                sink.lock().unwrap().extend_from_slice(&map);
            }
            gst::PadProbeReturn::Ok
        });
    bytes
}

/// Records the PTS of every buffer reaching the appsink `name` in `pipeline`.
pub fn count_appsink(
    pipeline: &gst::Pipeline,
    name: &str,
) -> Arc<Mutex<Vec<Option<gst::ClockTime>>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = by_name(pipeline, name)
        .downcast::<gst_app::AppSink>()
        .expect("an appsink");
    let seen2 = seen.clone();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |s| {
                let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let pts = sample.buffer().and_then(|b| b.pts());
                seen2.lock().unwrap().push(pts);
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    seen
}

/// One RTP packet: version 2, no CSRC, no extension.
pub fn rtp_packet(pt: u8, marker: bool, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + payload.len());
    p.extend([0x80, (pt & 0x7f) | if marker { 0x80 } else { 0 }]);
    p.extend(seq.to_be_bytes());
    p.extend(ts.to_be_bytes());
    p.extend(ssrc.to_be_bytes());
    p.extend(payload);
    p
}

/// A classic pcap file (microseconds, LINKTYPE_RAW) of UDP datagrams 127.0.0.1:40000 →
/// 127.0.0.1:`port`, each given with its arrival time in microseconds: input for tshark.
pub fn pcap_udp<'a>(port: u16, datagrams: impl IntoIterator<Item = (u64, &'a [u8])>) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(0xA1B2_C3D4u32.to_le_bytes());
    out.extend(2u16.to_le_bytes());
    out.extend(4u16.to_le_bytes());
    out.extend(0i32.to_le_bytes());
    out.extend(0u32.to_le_bytes());
    out.extend(65535u32.to_le_bytes());
    out.extend(101u32.to_le_bytes()); // LINKTYPE_RAW
    for (id, (usec, payload)) in datagrams.into_iter().enumerate() {
        let udp_len = 8 + payload.len();
        let ip_len = 20 + udp_len;
        out.extend(((usec / 1_000_000) as u32).to_le_bytes());
        out.extend(((usec % 1_000_000) as u32).to_le_bytes());
        out.extend((ip_len as u32).to_le_bytes());
        out.extend((ip_len as u32).to_le_bytes());
        let mut ip = vec![0x45, 0];
        ip.extend((ip_len as u16).to_be_bytes());
        ip.extend((id as u16).to_be_bytes());
        ip.extend([0x40, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1]);
        let sum = ip
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum::<u32>();
        let sum = (sum & 0xFFFF) + (sum >> 16);
        let checksum = !(((sum & 0xFFFF) + (sum >> 16)) as u16);
        ip[10..12].copy_from_slice(&checksum.to_be_bytes());
        out.extend(ip);
        out.extend(40000u16.to_be_bytes());
        out.extend(port.to_be_bytes());
        out.extend((udp_len as u16).to_be_bytes());
        out.extend(0u16.to_be_bytes());
        out.extend(payload);
    }
    out
}

/// Seeded network impairment: the same packets are dropped, duplicated and swapped on every
/// run with the same seed and input.
#[derive(Debug, Clone, Copy)]
pub struct Impairment {
    pub drop: f64,
    pub duplicate: f64,
    /// Probability that a packet is held back and sent after the next one.
    pub reorder: f64,
    /// The first packets pass untouched (stream headers a receiver cannot do without).
    pub spare_first: usize,
    pub seed: u64,
}

/// What an [`Impairer`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImpairStats {
    pub received: usize,
    pub forwarded: usize,
    pub dropped: usize,
    pub duplicated: usize,
    pub reordered: usize,
}

/// Applies an [`Impairment`] to a packet sequence (no I/O, no time).
#[derive(Debug)]
pub struct Impairer {
    config: Impairment,
    rng: SmallRng,
    held: Option<Vec<u8>>,
    pub stats: ImpairStats,
}

impl Impairer {
    pub fn new(config: Impairment) -> Self {
        Impairer {
            config,
            rng: SmallRng::seed_from_u64(config.seed),
            held: None,
            stats: ImpairStats::default(),
        }
    }

    /// The packets to send for `packet`, in order.
    pub fn process(&mut self, packet: Vec<u8>) -> Vec<Vec<u8>> {
        self.stats.received += 1;
        // Three draws per packet whatever happens: the decisions depend on the index only.
        let (d, u, r) = (
            self.rng.random::<f64>(),
            self.rng.random::<f64>(),
            self.rng.random::<f64>(),
        );
        if self.stats.received <= self.config.spare_first {
            self.stats.forwarded += 1;
            return vec![packet];
        }
        if d < self.config.drop {
            self.stats.dropped += 1;
            return Vec::new();
        }
        if self.held.is_none() && r < self.config.reorder {
            self.stats.reordered += 1;
            self.held = Some(packet);
            return Vec::new();
        }
        let mut out = Vec::with_capacity(3);
        if u < self.config.duplicate {
            self.stats.duplicated += 1;
            out.push(packet.clone());
        }
        out.push(packet);
        out.extend(self.held.take());
        self.stats.forwarded += out.len();
        out
    }

    /// The packet held back for reordering, if any (at the end of the stream).
    pub fn flush(&mut self) -> Option<Vec<u8>> {
        let held = self.held.take();
        self.stats.forwarded += held.is_some() as usize;
        held
    }
}

/// A UDP relay on 127.0.0.1 applying a seeded [`Impairment`]: senders send to
/// [`UdpRelay::port`], the relay forwards to `127.0.0.1:to_port`.
pub struct UdpRelay {
    port: u16,
    forwarded: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<ImpairStats>>,
}

impl UdpRelay {
    pub fn start(to_port: u16, impairment: Impairment) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind relay");
        let port = socket.local_addr().expect("relay address").port();
        // Wakes up to see `stop` and to release a held packet when the sender pauses.
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("read timeout");
        let forwarded = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (fwd, stop2) = (forwarded.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut impairer = Impairer::new(impairment);
            let mut buf = vec![0u8; 65536];
            let to = ("127.0.0.1", to_port);
            loop {
                let out = match socket.recv(&mut buf) {
                    Ok(n) => impairer.process(buf[..n].to_vec()),
                    Err(_) => impairer.flush().into_iter().collect(),
                };
                for p in out {
                    let _ = socket.send_to(&p, to);
                }
                fwd.store(impairer.stats.forwarded, Ordering::SeqCst);
                // Only once idle: what was sent before `finish` is relayed.
                if stop2.load(Ordering::SeqCst) && impairer.held.is_none() && socket_idle(&socket) {
                    break;
                }
            }
            impairer.stats
        });
        UdpRelay {
            port,
            forwarded,
            stop,
            thread: Some(thread),
        }
    }

    /// Where senders send.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Datagrams forwarded so far.
    pub fn forwarded(&self) -> usize {
        self.forwarded.load(Ordering::SeqCst)
    }

    /// Relays what was sent so far, stops and tells what it did.
    pub fn finish(mut self) -> ImpairStats {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .map(|t| t.join().expect("relay thread"))
            .unwrap_or_default()
    }
}

/// No datagram waiting (the socket's read timeout bounds the wait).
fn socket_idle(socket: &UdpSocket) -> bool {
    let mut probe = [0u8; 1];
    socket.peek(&mut probe).is_err()
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impairment_is_seeded() {
        let config = Impairment {
            drop: 0.05,
            duplicate: 0.05,
            reorder: 0.05,
            spare_first: 10,
            seed: 7,
        };
        let run = || {
            let mut i = Impairer::new(config);
            let mut out: Vec<Vec<u8>> = (0..1000u16)
                .flat_map(|n| i.process(n.to_be_bytes().to_vec()))
                .collect();
            out.extend(i.flush());
            (out, i.stats)
        };
        let (a, stats) = run();
        assert_eq!(a, run().0);
        assert!(stats.dropped > 0 && stats.duplicated > 0 && stats.reordered > 0);
        assert_eq!(a.len(), stats.forwarded);
        assert_eq!(
            stats.forwarded,
            stats.received - stats.dropped + stats.duplicated
        );
    }

    #[test]
    fn udpsrc_port_zero_is_read_back_and_relay_forwards() {
        init_with(|| {});
        let rx =
            launch("udpsrc name=src address=127.0.0.1 port=0 ! fakesink name=sink async=false");
        play_and_wait(&rx);
        let port = udpsrc_port(&by_name(&rx, "src"));
        let got = count_buffers(&by_name(&rx, "sink"), "sink");
        let relay = UdpRelay::start(
            port,
            Impairment {
                drop: 0.0,
                duplicate: 0.0,
                reorder: 0.5,
                spare_first: 0,
                seed: 1,
            },
        );
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        for n in 0..20u8 {
            tx.send_to(&[n], ("127.0.0.1", relay.port())).unwrap();
        }
        assert!(wait_until(Duration::from_secs(5), || relay.forwarded() == 20));
        assert!(wait_until(Duration::from_secs(5), || got
            .load(Ordering::SeqCst)
            == 20));
        let stats = relay.finish();
        assert!(stats.reordered > 0);
        rx.set_state(gst::State::Null).unwrap();
    }
}

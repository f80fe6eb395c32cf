//! Helpers shared by the gst-ipcam test suites (plugin tests and the cross-plugin `tests`
//! crate): one-time init, bounded waits on events and counts (never a sleep as
//! synchronisation), pipelines and their bus, buffer counters, ports read back from sockets
//! bound to port 0, and a seeded UDP impairment relay (loss, duplication, reordering that is
//! the same on every run).

pub mod fuzz;
pub mod impair;
pub mod programs;

pub use impair::{ImpairStats, Impairer, Impairment};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use gst::prelude::*;
pub(crate) use gst_ipcam_common::sync::lock;

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

/// Counts the samples reaching the appsink `name` in `pipeline`.
pub fn count_samples(pipeline: &gst::Pipeline, name: &str) -> Arc<AtomicUsize> {
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    by_name(pipeline, name)
        .downcast::<gst_app::AppSink>()
        .expect("an appsink")
        .set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    let _ = s.pull_sample();
                    counter.fetch_add(1, Ordering::SeqCst);
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
    count
}

/// Whether `m` is an element message whose structure is named `name`.
pub fn is_element_message(m: &gst::Message, name: &str) -> bool {
    matches!(m.view(), gst::MessageView::Element(_))
        && m.structure().is_some_and(|s| s.name() == name)
}

/// Pops messages of `bus` until `pred` accepts one (returned) or `timeout` passes (None).
/// An error message that `pred` does not accept fails the test.
pub fn wait_message(
    bus: &gst::Bus,
    timeout: Duration,
    mut pred: impl FnMut(&gst::Message) -> bool,
) -> Option<gst::Message> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let m = bus.timed_pop(gst::ClockTime::from_nseconds(left.as_nanos() as u64))?;
        if pred(&m) {
            return Some(m);
        }
        if let gst::MessageView::Error(e) = m.view() {
            panic!("error on the bus: {} ({:?})", e.error(), e.debug());
        }
    }
}

/// Waits until `count` reaches `n` or `timeout` passes; an error on `bus` meanwhile fails the
/// test. Returns the count.
pub fn wait_count(count: &AtomicUsize, n: usize, timeout: Duration, bus: &gst::Bus) -> usize {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline && count.load(Ordering::SeqCst) < n {
        if let Some(m) = bus.timed_pop_filtered(
            gst::ClockTime::from_mseconds(20),
            &[gst::MessageType::Error],
        ) && let gst::MessageView::Error(e) = m.view()
        {
            panic!("error on the bus: {} ({:?})", e.error(), e.debug());
        }
    }
    count.load(Ordering::SeqCst)
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

/// A one-way UDP relay on 127.0.0.1 applying a seeded [`Impairment`]: senders send to
/// [`UdpRelay::port`], the relay forwards to `127.0.0.1:to_port` (an [`impair::UdpProxy`]).
pub struct UdpRelay(impair::UdpProxy);

impl UdpRelay {
    pub fn start(to_port: u16, impairment: Impairment) -> Self {
        let target = std::net::SocketAddr::from(([127, 0, 0, 1], to_port));
        let listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        UdpRelay(
            impair::UdpProxy::start(listen, target, impairment, Impairment::none())
                .expect("bind relay"),
        )
    }

    /// Where senders send.
    pub fn port(&self) -> u16 {
        self.0.port()
    }

    /// Datagrams forwarded so far (or due to be: delayed ones count).
    pub fn forwarded(&self) -> usize {
        self.0.stats().0.forwarded
    }

    /// Relays what was sent so far, stops and tells what it did.
    pub fn finish(self) -> ImpairStats {
        self.0.drain(Duration::from_secs(10));
        self.0.stats().0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

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
                ..Impairment::default()
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

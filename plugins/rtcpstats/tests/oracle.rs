//! Oracle test: an RTP stream with known loss, duplication, reordering and arrival jitter is
//! written as a pcap; tshark's `rtp,streams` table must agree with rtcpstats on the packet
//! and loss counts, and the jitter must equal a separate straightforward RFC 3550
//! computation over the (arrival, timestamp) pairs.

use std::process::Command;

use gst::prelude::*;
use gstrtcpstats::stats::Session;

const SSRC: u32 = 0x1CEB00DA;
const PORT: u16 = 5004;
const CLOCK_RATE: u64 = 90_000;

fn init() {
    gst_ipcam_testutil::init_with(|| {
        gstrtcpstats::plugin_register_static().expect("register rtcpstats");
    });
}

/// xorshift64*: deterministic, no external crate.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Packet {
    /// Index in send order (before loss/dup/reorder).
    index: u64,
    /// Arrival in microseconds relative to the first packet.
    arrival_us: u64,
    data: Vec<u8>,
}

struct Stream {
    packets: Vec<Packet>,
    lost: usize,
    duplicated: usize,
    swapped: usize,
}

const SEQ0: u16 = 65000; // wraps during the stream
const TS0: u32 = u32::MAX - 200_000; // wraps too

fn rtp_packet(index: u64, payload_len: usize) -> Vec<u8> {
    let seq = SEQ0.wrapping_add(index as u16);
    let ts = TS0.wrapping_add((index * 3000) as u32);
    let payload: Vec<u8> = (0..payload_len)
        .map(|i| (i as u8).wrapping_mul(31))
        .collect();
    gst_ipcam_testutil::rtp_packet(96, false, seq, ts, SSRC, &payload)
}

fn make_stream(seed: u64, n: u64) -> Stream {
    let mut rng = Rng(seed);
    let mut order: Vec<u64> = Vec::new();
    let (mut lost, mut duplicated, mut swapped) = (0, 0, 0);
    for i in 0..n {
        // Keep the first packets clean so probation is unambiguous.
        if i > 3 && rng.below(100) < 3 {
            lost += 1;
            continue;
        }
        order.push(i);
        if i > 3 && rng.below(100) < 1 {
            order.push(i);
            duplicated += 1;
        }
    }
    // Reorder: swap some adjacent pairs.
    let mut k = 4;
    while k + 1 < order.len() {
        if rng.below(100) < 2 && order[k] != order[k + 1] {
            order.swap(k, k + 1);
            swapped += 1;
            k += 2;
        } else {
            k += 1;
        }
    }
    // Arrivals: 33.333 ms apart plus up to +-6 ms of jitter, strictly increasing.
    let mut packets = Vec::new();
    let mut t: u64 = 0;
    for (k, &index) in order.iter().enumerate() {
        if k > 0 {
            t += 33_333 + rng.below(12_000) - 6_000;
        }
        packets.push(Packet {
            index,
            arrival_us: t,
            data: rtp_packet(index, 200 + rng.below(800) as usize),
        });
    }
    Stream {
        packets,
        lost,
        duplicated,
        swapped,
    }
}

/// Classic pcap of the stream's datagrams at their arrival times.
fn write_pcap(stream: &Stream) -> Vec<u8> {
    gst_ipcam_testutil::pcap_udp(
        PORT,
        stream
            .packets
            .iter()
            .map(|p| (p.arrival_us, p.data.as_slice())),
    )
}

struct TsharkRow {
    packets: u64,
    lost: i64,
    min_jitter_ms: f64,
    max_jitter_ms: f64,
}

/// Runs `tshark -z rtp,streams` and parses the row of our SSRC. `-d rtp.pt==96,h264` gives
/// the dynamic payload type a 90 kHz clock for the jitter columns.
fn tshark_streams(pcap: &[u8]) -> TsharkRow {
    let path = std::env::temp_dir().join(format!(
        "rtcpstats-oracle-{}-{:?}.pcap",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&path, pcap).unwrap();
    let out = Command::new("tshark")
        .args(["-r"])
        .arg(&path)
        .args([
            "-q",
            "-d",
            &format!("udp.port=={PORT},rtp"),
            "-d",
            "rtp.pt==96,h264",
            "-z",
            "rtp,streams",
        ])
        .output()
        .expect("tshark runs");
    let _ = std::fs::remove_file(&path);
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text
        .lines()
        .find(|l| l.contains(&format!("0x{SSRC:08x}")) || l.contains(&format!("0x{SSRC:08X}")))
        .unwrap_or_else(|| panic!("no stream row in tshark output:\n{text}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    // Start End SrcIP SrcPort DstIP DstPort SSRC Payload Pkts Lost (pct) MinD MeanD MaxD MinJ MeanJ MaxJ
    let ssrc_col = cols.iter().position(|c| c.starts_with("0x")).unwrap();
    let packets = cols[ssrc_col + 2].parse().unwrap();
    let lost = cols[ssrc_col + 3].parse().unwrap();
    let min_jitter_ms = cols[ssrc_col + 8].parse().unwrap();
    let max_jitter_ms = cols[ssrc_col + 10].parse().unwrap();
    TsharkRow {
        packets,
        lost,
        min_jitter_ms,
        max_jitter_ms,
    }
}

/// Straightforward RFC 3550 section 6.4.1 / A.8 over (arrival, timestamp) pairs, with
/// unwrapped 64-bit timestamps (so independent of the element's 32-bit modular arithmetic).
fn reference_jitter(stream: &Stream) -> f64 {
    let mut j = 0f64;
    let mut prev: Option<i64> = None;
    for p in &stream.packets {
        let arrival_units = (p.arrival_us * 1000 * CLOCK_RATE / 1_000_000_000) as i64;
        let ts = TS0 as i64 + (p.index * 3000) as i64;
        let transit = arrival_units - ts;
        if let Some(prev) = prev {
            let d = (transit - prev).abs() as f64;
            j += (d - j) / 16.0;
        }
        prev = Some(transit);
    }
    j
}

#[test]
fn loss_and_jitter_match_tshark_and_reference() {
    if Command::new("tshark").arg("--version").output().is_err() {
        panic!("tshark is required for the oracle test");
    }
    for seed in [0x5EED_0001u64, 0xC0FF_EE42] {
        let stream = make_stream(seed, 900);
        assert!(stream.lost > 5 && stream.duplicated > 1 && stream.swapped > 1);
        let row = tshark_streams(&write_pcap(&stream));

        let mut session = Session::default();
        session.set_clock_rate(Some(CLOCK_RATE as u32));
        for p in &stream.packets {
            assert!(session.handle_rtp(&p.data, p.arrival_us * 1000, None));
        }
        let src = session.source(SSRC).unwrap();
        assert_eq!(src.packets_received(), row.packets, "seed {seed:#x}");
        assert_eq!(src.packets_lost(), row.lost, "seed {seed:#x}");
        // Our own bookkeeping agrees with the generator too.
        assert_eq!(
            src.packets_lost(),
            stream.lost as i64 - stream.duplicated as i64
        );
        assert_eq!(src.duplicates(), stream.duplicated as u64);
        assert!(src.reordered() >= stream.swapped as u64);

        let reference = reference_jitter(&stream);
        assert_eq!(src.jitter(), reference, "seed {seed:#x}");
        // tshark's jitter differs in detail (its own arrival arithmetic); loosely in range.
        let ours_ms = src.jitter_ns() as f64 / 1e6;
        assert!(
            ours_ms >= row.min_jitter_ms - 0.5 && ours_ms <= row.max_jitter_ms + 0.5,
            "jitter {ours_ms} ms outside tshark's [{}, {}]",
            row.min_jitter_ms,
            row.max_jitter_ms
        );

        // The same packets through the element in a pipeline, arrival = running time.
        let stats = run_pipeline(&stream);
        let sources = stats.get::<gst::Array>("sources").unwrap();
        let s = sources.as_slice()[0].get::<gst::Structure>().unwrap();
        assert_eq!(s.get::<u32>("ssrc").unwrap(), SSRC);
        assert_eq!(s.get::<i32>("packets-lost").unwrap() as i64, row.lost);
        assert_eq!(s.get::<u64>("packets-received").unwrap(), row.packets);
        assert_eq!(s.get::<u32>("jitter").unwrap(), reference as u32);
        assert_eq!(
            s.get::<u64>("jitter-ns").unwrap(),
            (reference * 1e9 / CLOCK_RATE as f64) as u64
        );
    }
}

fn run_pipeline(stream: &Stream) -> gst::Structure {
    init();
    let pipeline = gst::parse::launch(
        "appsrc name=src format=time caps=application/x-rtp,media=video,clock-rate=90000,\
         encoding-name=H264,payload=96 ! rtcpstats name=stats interval=0 ! fakesink sync=false",
    )
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let appsrc = pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    for p in &stream.packets {
        let mut buf = gst::Buffer::from_slice(p.data.clone());
        buf.get_mut()
            .unwrap()
            .set_pts(gst::ClockTime::from_useconds(p.arrival_us));
        appsrc.push_buffer(buf).unwrap();
    }
    appsrc.end_of_stream().unwrap();
    let bus = pipeline.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(20),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("pipeline finishes");
    assert!(matches!(msg.view(), gst::MessageView::Eos(_)), "{msg:?}");
    let stats = pipeline
        .by_name("stats")
        .unwrap()
        .property::<gst::Structure>("stats");
    pipeline.set_state(gst::State::Null).unwrap();
    stats
}

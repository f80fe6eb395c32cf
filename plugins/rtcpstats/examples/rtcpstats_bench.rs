//! Per-packet cost of rtcpstats versus identity: N prebuilt RTP buffers pushed from a bare
//! src pad through `identity ! fakesink` and `rtcpstats ! fakesink` (and straight into
//! fakesink as the baseline), timed on the pushing thread.
//!
//! Usage: rtcpstats_bench [packets] (default 5_000_000). Run in release.

use std::time::Instant;

use gst::prelude::*;

const POOL: usize = 65536;

fn rtp_packet(seq: u16, ts: u32) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p.resize(12 + 188, 0x47);
    p
}

/// Returns nanoseconds per packet.
fn run(element: Option<&str>, pool: &mut [gst::Buffer], packets: usize) -> f64 {
    let pipeline = gst::Pipeline::new();
    let sink = gst::ElementFactory::make("fakesink")
        .property("sync", false)
        .property("async", false)
        .build()
        .unwrap();
    pipeline.add(&sink).unwrap();
    let first = match element {
        Some(name) => {
            let e = gst::ElementFactory::make(name).build().unwrap();
            if name == "identity" {
                e.set_property("silent", true);
            }
            pipeline.add(&e).unwrap();
            e.link(&sink).unwrap();
            e
        }
        None => sink.clone(),
    };
    let src = gst::Pad::builder(gst::PadDirection::Src)
        .name("benchsrc")
        .build();
    src.set_active(true).unwrap();
    src.link(&first.static_pad("sink").unwrap()).unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    src.push_event(gst::event::StreamStart::new("bench"));
    src.push_event(gst::event::Caps::new(
        &gst::Caps::builder("application/x-rtp")
            .field("media", "video")
            .field("clock-rate", 90000i32)
            .field("encoding-name", "MP2T")
            .field("payload", 96i32)
            .build(),
    ));
    src.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
        gst::ClockTime,
    >::new()));

    let start = Instant::now();
    for k in 0..packets {
        let slot = &mut pool[k % POOL];
        // The sink released the previous push, so this is not a copy.
        debug_assert!(slot.is_writable());
        slot.make_mut()
            .set_pts(gst::ClockTime::from_nseconds(k as u64 * 100_000));
        src.push(slot.clone()).unwrap();
    }
    let elapsed = start.elapsed();
    src.push_event(gst::event::Eos::new());
    pipeline.set_state(gst::State::Null).unwrap();
    if element == Some("rtcpstats") {
        let stats = first.property::<gst::Structure>("stats");
        let sources = stats.get::<gst::Array>("sources").unwrap();
        let s = sources.as_slice()[0].get::<gst::Structure>().unwrap();
        assert_eq!(s.get::<u64>("packets-received").unwrap(), packets as u64);
        assert_eq!(s.get::<i32>("packets-lost").unwrap(), 0);
    }
    elapsed.as_nanos() as f64 / packets as f64
}

fn main() {
    gst::init().unwrap();
    gstrtcpstats::plugin_register_static().unwrap();
    let packets: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5_000_000);
    let mut pool: Vec<gst::Buffer> = (0..POOL)
        .map(|i| gst::Buffer::from_mut_slice(rtp_packet(i as u16, (i as u32).wrapping_mul(3000))))
        .collect();

    // Warm up, then alternate and keep the best of three rounds each.
    run(Some("rtcpstats"), &mut pool, POOL);
    run(Some("identity"), &mut pool, POOL);
    let (mut bare, mut ident, mut stats) = (f64::MAX, f64::MAX, f64::MAX);
    for _ in 0..3 {
        bare = bare.min(run(None, &mut pool, packets));
        ident = ident.min(run(Some("identity"), &mut pool, packets));
        stats = stats.min(run(Some("rtcpstats"), &mut pool, packets));
    }
    println!("packets per run:        {packets}");
    println!("fakesink only:          {bare:8.1} ns/packet");
    println!("identity ! fakesink:    {ident:8.1} ns/packet");
    println!("rtcpstats ! fakesink:   {stats:8.1} ns/packet");
    println!("rtcpstats - identity:   {:8.1} ns/packet", stats - ident);
    println!("rtcpstats - fakesink:   {:8.1} ns/packet", stats - bare);
}

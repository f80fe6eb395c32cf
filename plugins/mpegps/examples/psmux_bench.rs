//! Side-by-side muxer throughput: the same H.264 access units, parsed once into memory,
//! pushed `loops` times from the bench's thread into `<mux> ! fakesink` for psmux, stock
//! mpegpsmux and no muxer at all (the floor). Prints wall time, process CPU time, throughput in bytes and
//! frames per second, and the per-frame muxer cost above the floor.
//!
//!   cargo run --release -p gst-plugin-mpegps --example psmux_bench -- FILE.h264 [loops] [runs] [psmux|mpegpsmux]

use gst::prelude::*;
use std::time::{Duration, Instant};

/// CPU time of this process, every thread (CLOCK_PROCESS_CPUTIME_ID: nanoseconds, where
/// /proc's utime and stime count 10 ms ticks).
fn cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a pointer to a timespec that lives for the call.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The file's access units with caps, as h264parse outputs them.
fn parse_access_units(path: &str) -> (gst::Caps, Vec<gst::Buffer>) {
    let pipeline = gst::parse::launch(&format!(
        "filesrc location={path} ! h264parse ! video/x-h264,stream-format=byte-stream,alignment=au ! appsink name=s sync=false"
    ))
    .expect("parse pipeline")
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sink = pipeline
        .by_name("s")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut caps = None;
    let mut buffers = Vec::new();
    while let Ok(sample) = sink.pull_sample() {
        caps = caps.or_else(|| sample.caps().map(|c| c.to_owned()));
        if let Some(b) = sample.buffer_owned() {
            buffers.push(b);
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    (caps.expect("caps"), buffers)
}

/// Pushes every buffer `loops` times with increasing timestamps; returns (wall, cpu).
///
/// The buffers are pushed from this thread through a pad of our own linked straight to the
/// muxer's sink pad (or to the fakesink for the floor): no source element and no thread
/// hand-off before the muxer. Both muxers then mux in this thread (mpegpsmux through its
/// collect pads, psmux through its one-pad direct path), so the floor is only the push and
/// the fakesink, and the difference is the muxer's own work.
fn run(mux: &str, caps: &gst::Caps, aus: &[gst::Buffer], loops: usize) -> (Duration, Duration) {
    let desc = if mux.is_empty() {
        "fakesink name=sink sync=false".to_string()
    } else {
        format!("{mux} name=mux ! fakesink sync=false")
    };
    let pipeline = gst::Pipeline::new();
    pipeline
        .add(&gst::parse::bin_from_description(&desc, false).expect("bench pipeline"))
        .unwrap();
    let sinkpad = match pipeline.by_name("mux") {
        Some(m) => m.request_pad_simple("sink_%u").expect("muxer sink pad"),
        None => pipeline
            .by_name("sink")
            .unwrap()
            .static_pad("sink")
            .unwrap(),
    };
    // Answers the latency query as a non-live source does (a file, an encoder).
    let src = gst::Pad::builder(gst::PadDirection::Src)
        .name("benchsrc")
        .query_function(|pad, parent, query| match query.view_mut() {
            gst::QueryViewMut::Latency(l) => {
                l.set(false, gst::ClockTime::ZERO, gst::ClockTime::NONE);
                true
            }
            _ => gst::Pad::query_default(pad, parent, query),
        })
        .build();
    src.set_active(true).unwrap();
    src.link(&sinkpad).unwrap();
    let frame = gst::ClockTime::from_nseconds(40_000_000);
    // Timestamped copies of the buffer metadata (the memory is shared, not copied).
    let mut stamped = Vec::with_capacity(aus.len() * loops);
    for l in 0..loops {
        for (i, b) in aus.iter().enumerate() {
            let mut b = b.copy();
            let t = frame * ((l * aus.len() + i) as u64);
            let bm = b.get_mut().unwrap();
            bm.set_pts(t + gst::ClockTime::from_seconds(1));
            bm.set_dts(t + gst::ClockTime::from_seconds(1));
            stamped.push(b);
        }
    }
    pipeline.set_state(gst::State::Playing).unwrap();
    assert!(src.push_event(gst::event::StreamStart::new("bench")));
    assert!(src.push_event(gst::event::Caps::new(caps)));
    assert!(
        src.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
            gst::ClockTime,
        >::new()))
    );
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    for b in stamped {
        if src.push(b).is_err() {
            break;
        }
    }
    src.push_event(gst::event::Eos::new());
    let bus = pipeline.bus().unwrap();
    let msg = bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(300),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    let wall = t0.elapsed();
    let cpu = cpu_time().saturating_sub(cpu0);
    pipeline.set_state(gst::State::Null).unwrap();
    match msg.as_ref().map(|m| m.view()) {
        Some(gst::MessageView::Eos(_)) => {}
        other => panic!("{desc}: {other:?}"),
    }
    (wall, cpu)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let file = args
        .next()
        .expect("usage: psmux_bench FILE.h264 [loops] [runs] [psmux|mpegpsmux]");
    let loops: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    // For profiling one of them: "psmux" or "mpegpsmux" (the floor and the other are skipped).
    let only = args.next();
    gst::init().unwrap();
    gstmpegps::plugin_register_static().unwrap();

    let (caps, aus) = parse_access_units(&file);
    let frames = aus.len() * loops;
    let bytes: usize = aus.iter().map(|b| b.size()).sum::<usize>() * loops;
    println!(
        "input: {} AUs x {loops} = {frames} frames, {bytes} bytes ({} bytes/frame avg), best of {runs}",
        aus.len(),
        bytes / frames.max(1)
    );
    let mut results = Vec::new();
    for (name, mux) in [
        ("floor (push ! fakesink)", ""),
        ("psmux", "psmux"),
        ("mpegpsmux", "mpegpsmux"),
    ] {
        if only.as_deref().is_some_and(|o| o != mux) {
            results.push((Duration::ZERO, Duration::ZERO));
            continue;
        }
        let mut best: Option<(Duration, Duration)> = None;
        for _ in 0..runs {
            let (w, c) = run(mux, &caps, &aus, loops);
            best = Some(match best {
                None => (w, c),
                Some((bw, bc)) => (bw.min(w), bc.min(c)),
            });
        }
        let (w, c) = best.unwrap();
        println!(
            "{name:<28} wall {:>8.3} ms  cpu {:>8.3} ms  {:>8.1} MB/s  {:>8.0} frames/s",
            w.as_secs_f64() * 1e3,
            c.as_secs_f64() * 1e3,
            bytes as f64 / w.as_secs_f64() / 1e6,
            frames as f64 / w.as_secs_f64()
        );
        results.push((w, c));
    }
    if only.is_some() {
        // One pipeline timed: nothing to compare with.
        return;
    }
    let (floor_w, floor_c) = results[0];
    let per_frame =
        |d: Duration, f: Duration| d.saturating_sub(f).as_secs_f64() * 1e9 / frames as f64;
    let (ps_w, ps_c) = results[1];
    let (mp_w, mp_c) = results[2];
    println!(
        "muxer cost above the floor, per frame: psmux wall {:.0} ns cpu {:.0} ns; mpegpsmux wall {:.0} ns cpu {:.0} ns",
        per_frame(ps_w, floor_w),
        per_frame(ps_c, floor_c),
        per_frame(mp_w, floor_w),
        per_frame(mp_c, floor_c)
    );
    println!(
        "throughput ratio psmux/mpegpsmux (whole pipeline, wall): {:.2}; cpu: {:.2}",
        mp_w.as_secs_f64() / ps_w.as_secs_f64(),
        mp_c.as_secs_f64() / ps_c.as_secs_f64().max(1e-9)
    );
}

//! Side-by-side muxer throughput: the same H.264 access units, parsed once into memory,
//! pushed `loops` times through `appsrc ! <mux> ! fakesink` for psmux, stock mpegpsmux and
//! no muxer at all (the floor). Prints wall time, process CPU time, throughput in bytes and
//! frames per second, and the per-frame muxer cost above the floor.
//!
//!   cargo run --release -p gst-plugin-mpegps --example psmux_bench -- FILE.h264 [loops] [runs]

use gst::prelude::*;
use std::time::{Duration, Instant};

fn cpu_time() -> Duration {
    // utime + stime of this process, in clock ticks (100 Hz on Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|u| u.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10)
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
fn run(mux: &str, caps: &gst::Caps, aus: &[gst::Buffer], loops: usize) -> (Duration, Duration) {
    let desc = if mux.is_empty() {
        "appsrc name=src format=time ! fakesink sync=false".to_string()
    } else {
        format!("appsrc name=src format=time ! {mux} ! fakesink sync=false")
    };
    let pipeline = gst::parse::launch(&desc)
        .expect("bench pipeline")
        .downcast::<gst::Pipeline>()
        .unwrap();
    let src = pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    src.set_caps(Some(caps));
    src.set_max_bytes(64 * 1024 * 1024);
    src.set_block(true);
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
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    for b in stamped {
        if src.push_buffer(b).is_err() {
            break;
        }
    }
    src.end_of_stream().unwrap();
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
        .expect("usage: psmux_bench FILE.h264 [loops] [runs]");
    let loops: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
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
        ("floor (appsrc ! fakesink)", ""),
        ("psmux", "psmux"),
        ("mpegpsmux", "mpegpsmux"),
    ] {
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

//! GB28181 concurrent-streams benchmark: N simulated cameras send PS over RTP (UDP) to one
//! receiving process that plays and demuxes all of them. Run the two roles as two processes so
//! that the receiver's CPU is measured alone (`benches/gb28181.sh` does this).
//!
//! ```text
//! # receiver: N `gb28181src transport=udp ! psdemux ! fakesink` on one shared SIP endpoint
//! cargo run --release -p gst-plugin-gb28181 --example gb28181-streams -- \
//!     --role recv --streams 50 --sip-port 15060 --duration-s 20
//! # sender: N `appsrc ! gb28181sink` (pre-muxed H.264 PS frames, 25 fps, ~4 Mbit/s each)
//! cargo run --release -p gst-plugin-gb28181 --example gb28181-streams -- \
//!     --role send --streams 50 --server 127.0.0.1:15060 --duration-s 30
//! ```
//!
//! Sender: encodes `--seconds` (10) of `--width`x`--height` (640x360) test video once with
//! x264enc at `--bitrate` kbit/s (4000) through psmux into memory, then loops those PS frames
//! with fresh timestamps into every stream, paced in real time by one thread (25 fps). A stream
//! starts at frame 0 (a key frame) once its sink reports a session (the platform's INVITE), so
//! the sink's GOP replay for new viewers is empty and no start-up burst distorts the figures.
//! It sends for `--duration-s` after all streams started (or after `--start-timeout-s`), stops
//! feeding, waits a second, then stops the pipelines (BYE).
//!
//! Receiver: waits until every stream delivered a video frame (`--start-timeout-s`, 60), lets
//! them settle for `--warmup-s` (2), then measures for `--duration-s` (20): video frames out
//! of psdemux per stream, `packets-lost` / `packets-received` / `frames-dropped` from each
//! gb28181src's `stats` (RTP sequence gaps: on loopback, packets the receiver did not read in
//! time) and the process CPU (utime + stime of /proc/self/stat). Then it waits for the senders
//! to hang up (`--end-timeout-s`, 60) and prints totals to compare with the sender's.
//!
//! Both print one `RESULT role=... key=value ...` line for scripts.
//!
//! `--stop-file PATH` (both roles): the receiver creates PATH after its window; the sender stops
//! sending when it appears (or after --duration-s), so the sender outlasts the window.
//!
//! All options and defaults: `gb28181-streams --help`.

use clap::builder::RangedU64ValueParser;
use gst::prelude::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const FPS: u64 = 25;
const FRAME_NS: u64 = 1_000_000_000 / FPS;

/// GB28181 concurrent-streams benchmark, one role per process.
#[derive(clap::Parser, Clone, Debug)]
#[command(
    name = "gb28181-streams",
    version,
    about = "GB28181 concurrent-streams benchmark: N cameras sending PS over RTP, one receiver"
)]
struct Opts {
    /// Which side this process plays.
    #[arg(long, value_parser = ["send", "recv"])]
    role: String,
    /// Number of streams (cameras).
    #[arg(long, default_value_t = 10, value_parser = RangedU64ValueParser::<usize>::new().range(1..=10_000))]
    streams: usize,
    /// The receiver's SIP endpoint, IP:PORT (sender).
    #[arg(long, default_value = "127.0.0.1:15060")]
    server: std::net::SocketAddr,
    /// SIP port to listen on (receiver).
    #[arg(long, default_value_t = 15060)]
    sip_port: u16,
    /// Password the cameras register with.
    #[arg(long, default_value = "12345678")]
    password: String,
    /// Measurement window (receiver); sending time after all streams started (sender).
    #[arg(long, default_value_t = 20)]
    duration_s: u64,
    /// Settling time before the window (receiver).
    #[arg(long, default_value_t = 2)]
    warmup_s: u64,
    /// How long to wait for every stream to start.
    #[arg(long, default_value_t = 60)]
    start_timeout_s: u64,
    /// How long the receiver waits for the senders to hang up.
    #[arg(long, default_value_t = 60)]
    end_timeout_s: u64,
    /// Width of the test video (sender).
    #[arg(long, default_value_t = 640, value_parser = clap::value_parser!(u32).range(16..=7680))]
    width: u32,
    /// Height of the test video (sender).
    #[arg(long, default_value_t = 360, value_parser = clap::value_parser!(u32).range(16..=7680))]
    height: u32,
    /// Video bitrate in kbit/s (sender).
    #[arg(long, visible_alias = "bitrate-kbps", default_value_t = 4000, value_parser = clap::value_parser!(u32).range(16..=100_000))]
    bitrate: u32,
    /// Seconds of video encoded once and looped (sender).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=60))]
    seconds: u32,
    /// Device IDs are 3402000000132 + 7 digits, from this serial on.
    #[arg(long, default_value_t = 1, value_parser = RangedU64ValueParser::<usize>::new().range(0..=9_000_000))]
    first_serial: usize,
    /// The receiver creates this file after its window; the sender stops when it appears.
    #[arg(long)]
    stop_file: Option<std::path::PathBuf>,
}

fn device_id(o: &Opts, i: usize) -> String {
    format!("3402000000132{:07}", o.first_serial + i)
}

/// utime + stime of this process, in clock ticks (100 per second on Linux in practice).
fn process_cpu_ticks() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    let Some(close) = stat.rfind(')') else {
        return 0;
    };
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let f = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Fields 14 (utime) and 15 (stime) of stat are at indices 11 and 12 after the comm.
    f(11) + f(12)
}

const TICKS_PER_S: f64 = 100.0;

/// A numeric field of /proc/self/status (e.g. `VmHWM:` in KiB).
fn proc_status(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn init() {
    gst::init().expect("gst init");
    gstmpegps::plugin_register_static().expect("mpegps plugin");
    gstgb28181::plugin_register_static().expect("gb28181 plugin");
}

/// Drains a pipeline's bus; returns the first error as text.
fn bus_error(p: &gst::Pipeline) -> Option<String> {
    let bus = p.bus()?;
    while let Some(m) = bus.pop() {
        match m.view() {
            gst::MessageView::Error(e) => {
                return Some(format!("{} ({:?})", e.error(), e.debug()));
            }
            gst::MessageView::Eos(_) => return Some("EOS".into()),
            _ => {}
        }
    }
    None
}

// ---------------------------------------------------------------------------------------
// Sender
// ---------------------------------------------------------------------------------------

/// Encodes the test sequence once: PS frames (one per access unit) in memory.
fn pre_encode(o: &Opts) -> Result<Vec<gst::Buffer>, String> {
    let frames = o.seconds * FPS as u32;
    let desc = format!(
        "videotestsrc num-buffers={frames} pattern=ball animation-mode=frames background-color=0xff306090 \
         ! video/x-raw,width={w},height={h},framerate={FPS}/1 \
         ! x264enc speed-preset=ultrafast tune=zerolatency bitrate={br} vbv-buf-capacity=1000 \
           key-int-max=50 option-string=\"nal-hrd=cbr:force-cfr=1\" \
         ! h264parse config-interval=-1 ! psmux ! appsink name=out sync=false",
        w = o.width,
        h = o.height,
        br = o.bitrate,
    );
    let p = gst::parse::launch(&desc)
        .map_err(|e| format!("pre-encode pipeline: {e}"))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| "not a pipeline")?;
    let sink = p
        .by_name("out")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or("no appsink")?;
    p.set_state(gst::State::Playing)
        .map_err(|e| format!("pre-encode: {e}"))?;
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        match sink.try_pull_sample(gst::ClockTime::from_seconds(1)) {
            Some(s) => {
                if let Some(b) = s.buffer_owned() {
                    out.push(b);
                }
            }
            None if sink.is_eos() => break,
            None => {
                if let Some(e) = bus_error(&p) {
                    let _ = p.set_state(gst::State::Null);
                    return Err(format!("pre-encode: {e}"));
                }
            }
        }
    }
    let _ = p.set_state(gst::State::Null);
    if out.is_empty() {
        return Err("pre-encode produced nothing".into());
    }
    Ok(out)
}

struct SendStream {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    sink: gst::Element,
    /// Tick at which the session started, once it did.
    start_tick: Option<u64>,
    pushed: u64,
    push_errors: u64,
}

fn run_send(o: &Opts) -> Result<(), String> {
    let (server_ip, server_port) = (o.server.ip().to_string(), u32::from(o.server.port()));
    let t_enc = Instant::now();
    let frames = pre_encode(o)?;
    let bytes: usize = frames.iter().map(|b| b.size()).sum();
    let seq_s = frames.len() as f64 / FPS as f64;
    let keys = frames
        .iter()
        .filter(|b| !b.flags().contains(gst::BufferFlags::DELTA_UNIT))
        .count();
    println!(
        "send: pre-encoded {} PS frames ({keys} key) of {}x{} in {:.1} s: {:.2} Mbit/s per stream",
        frames.len(),
        o.width,
        o.height,
        t_enc.elapsed().as_secs_f64(),
        bytes as f64 * 8.0 / seq_s / 1e6
    );
    let caps = gst::Caps::builder("video/mpeg")
        .field("systemstream", true)
        .field("mpegversion", 2i32)
        .build();
    let mut streams = Vec::with_capacity(o.streams);
    for i in 0..o.streams {
        let pipeline = gst::Pipeline::with_name(&format!("cam{i}"));
        let src = gst_app::AppSrc::builder()
            .caps(&caps)
            .format(gst::Format::Time)
            .is_live(true)
            .max_bytes(8 << 20)
            .build();
        let sink = gst::ElementFactory::make("gb28181sink")
            .property("server-ip", &server_ip)
            .property("server-port", server_port)
            .property("device-id", device_id(o, i))
            .property("password", &o.password)
            .property("local-ip", "127.0.0.1")
            .property("retry-interval", 1000u32)
            .property("sync", false)
            .build()
            .map_err(|e| format!("gb28181sink: {e}"))?;
        pipeline
            .add_many([src.upcast_ref(), &sink])
            .map_err(|e| e.to_string())?;
        src.link(&sink).map_err(|e| e.to_string())?;
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| format!("stream {i}: {e}"))?;
        streams.push(SendStream {
            pipeline,
            src,
            sink,
            start_tick: None,
            pushed: 0,
            push_errors: 0,
        });
    }
    println!("send: {} cameras registering with {}", o.streams, o.server);
    let cpu0 = process_cpu_ticks();
    let t0 = Instant::now();
    let mut all_started_tick: Option<u64> = None;
    let start_deadline_tick = o.start_timeout_s * FPS;
    let mut late_ticks = 0u64;
    let mut tick = 0u64;
    loop {
        let due = t0 + Duration::from_nanos(tick * FRAME_NS);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        } else if now - due > Duration::from_nanos(FRAME_NS) {
            late_ticks += 1;
        }
        let check_sessions = tick.is_multiple_of(5);
        for (i, s) in streams.iter_mut().enumerate() {
            if s.start_tick.is_none() {
                if !check_sessions {
                    continue;
                }
                let st = s.sink.property::<gst::Structure>("stats");
                if st.get::<bool>("streaming").unwrap_or(false) {
                    s.start_tick = Some(tick);
                } else {
                    if let Some(e) = bus_error(&s.pipeline) {
                        eprintln!("send: stream {i}: {e}");
                    }
                    continue;
                }
            }
            let n = tick - s.start_tick.unwrap_or(tick);
            let Some(frame) = frames.get((n % frames.len() as u64) as usize) else {
                continue;
            };
            let mut b = frame.copy();
            {
                let b = b.make_mut();
                b.set_pts(gst::ClockTime::from_nseconds(n * FRAME_NS));
                b.set_dts(gst::ClockTime::from_nseconds(n * FRAME_NS));
            }
            if s.src.push_buffer(b).is_ok() {
                s.pushed += 1;
            } else {
                s.push_errors += 1;
            }
        }
        let started = streams.iter().filter(|s| s.start_tick.is_some()).count();
        if all_started_tick.is_none() && (started == streams.len() || tick >= start_deadline_tick) {
            all_started_tick = Some(tick);
            println!(
                "send: {started}/{} sessions started after {:.1} s",
                streams.len(),
                t0.elapsed().as_secs_f64()
            );
        }
        if let Some(a) = all_started_tick
            && tick >= a + o.duration_s * FPS
        {
            break;
        }
        if let Some(f) = &o.stop_file
            && tick.is_multiple_of(FPS)
            && f.exists()
        {
            println!("send: the receiver is done ({} exists)", f.display());
            break;
        }
        tick += 1;
    }
    let wall = t0.elapsed().as_secs_f64();
    // Let the last packets leave, then read what the sinks sent and hang up.
    std::thread::sleep(Duration::from_millis(1500));
    let cpu = (process_cpu_ticks() - cpu0) as f64 / TICKS_PER_S;
    let mut started = 0;
    let mut pushed = 0u64;
    let mut rendered = 0u64;
    let mut per_stream = Vec::new();
    for s in &streams {
        let st = s.sink.property::<gst::Structure>("stats");
        let f = st.get::<u64>("frames").unwrap_or(0);
        if s.start_tick.is_some() {
            started += 1;
        }
        pushed += s.pushed;
        rendered += f;
        per_stream.push(f.to_string());
        if s.push_errors > 0 {
            eprintln!("send: {}: {} push errors", s.pipeline.name(), s.push_errors);
        }
    }
    for s in &streams {
        let _ = s.pipeline.set_state(gst::State::Null);
    }
    println!("send: frames sent per stream: {}", per_stream.join(" "));
    println!(
        "send: {wall:.1} s, sender CPU {cpu:.1} s = {:.0} % of one core; {late_ticks} ticks late by more than a frame",
        100.0 * cpu / wall
    );
    println!(
        "RESULT role=send streams={} started={started} frames_pushed={pushed} frames_sent={rendered} \
         cpu_s={cpu:.2} wall_s={wall:.1} late_ticks={late_ticks}",
        o.streams
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Receiver
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct RecvCounters {
    video_frames: AtomicU64,
}

struct RecvStream {
    pipeline: gst::Pipeline,
    src: gst::Element,
    counters: Arc<RecvCounters>,
    /// Latest `stats` of the source taken while it was streaming.
    last: Option<SrcStats>,
    error: Option<String>,
}

#[derive(Clone, Copy, Default, Debug)]
struct SrcStats {
    ps_frames: u64,
    packets: u64,
    lost: i64,
    frames_dropped: u64,
}

/// Longest single read of a source's `stats` property so far, in microseconds.
static MAX_STATS_READ_US: AtomicU64 = AtomicU64::new(0);

fn src_stats(src: &gst::Element) -> Option<SrcStats> {
    let t = Instant::now();
    let s = src.property::<gst::Structure>("stats");
    MAX_STATS_READ_US.fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
    if !s.get::<bool>("streaming").unwrap_or(false) {
        return None;
    }
    let u = |k: &str| {
        s.get::<u64>(k)
            .ok()
            .or_else(|| s.get::<u32>(k).ok().map(u64::from))
            .unwrap_or(0)
    };
    let lost = s
        .get::<i64>("packets-lost")
        .ok()
        .or_else(|| s.get::<u64>("packets-lost").ok().map(|v| v as i64))
        .unwrap_or(0);
    Some(SrcStats {
        ps_frames: u("frames"),
        packets: u("packets-received"),
        lost,
        frames_dropped: u("frames-dropped"),
    })
}

fn make_recv_stream(o: &Opts, i: usize) -> Result<RecvStream, String> {
    let pipeline = gst::Pipeline::with_name(&format!("play{i}"));
    let src = gst::ElementFactory::make("gb28181src")
        .property("sip-address", "127.0.0.1")
        .property("sip-port", u32::from(o.sip_port))
        .property("password", &o.password)
        .property("device-id", device_id(o, i))
        .property("media-address", "127.0.0.1")
        .property("wait-timeout", (o.start_timeout_s + 30) as u32)
        .property_from_str("transport", "udp")
        .build()
        .map_err(|e| format!("gb28181src: {e}"))?;
    let demux = gst::ElementFactory::make("psdemux")
        .build()
        .map_err(|e| format!("psdemux: {e}"))?;
    pipeline
        .add_many([&src, &demux])
        .map_err(|e| e.to_string())?;
    src.link(&demux).map_err(|e| e.to_string())?;
    let counters = Arc::new(RecvCounters::default());
    let c = counters.clone();
    let pipeline_weak = pipeline.downgrade();
    demux.connect_pad_added(move |_, pad| {
        let Some(pipeline) = pipeline_weak.upgrade() else {
            return;
        };
        let Ok(sink) = gst::ElementFactory::make("fakesink")
            .property("sync", false)
            .property("async", false)
            .build()
        else {
            return;
        };
        if pipeline.add(&sink).is_err() {
            return;
        }
        let _ = sink.sync_state_with_parent();
        if let Some(sinkpad) = sink.static_pad("sink") {
            let _ = pad.link(&sinkpad);
        }
        if pad.name().starts_with("video") {
            let c = c.clone();
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                c.video_frames.fetch_add(1, Ordering::Relaxed);
                gst::PadProbeReturn::Ok
            });
        }
    });
    Ok(RecvStream {
        pipeline,
        src,
        counters,
        last: None,
        error: None,
    })
}

/// Checks the buses and, with `with_stats`, reads every source's `stats` (in parallel: a read
/// waits for the source's state lock, which its streaming thread holds while it receives).
fn poll_recv(streams: &mut [RecvStream], with_stats: bool) {
    for (i, s) in streams.iter_mut().enumerate() {
        if s.error.is_none()
            && let Some(e) = bus_error(&s.pipeline)
        {
            if e != "EOS" {
                eprintln!("recv: stream {i}: {e}");
            }
            s.error = Some(e);
        }
    }
    if !with_stats {
        return;
    }
    std::thread::scope(|scope| {
        for chunk in streams.chunks_mut(4) {
            scope.spawn(move || {
                for s in chunk {
                    if let Some(st) = src_stats(&s.src) {
                        s.last = Some(st);
                    }
                }
            });
        }
    });
}

fn run_recv(o: &Opts) -> Result<(), String> {
    let mut streams = Vec::with_capacity(o.streams);
    for i in 0..o.streams {
        streams.push(make_recv_stream(o, i)?);
    }
    for (i, s) in streams.iter().enumerate() {
        s.pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| format!("stream {i}: {e}"))?;
    }
    println!(
        "recv: {} gb28181src (udp) ! psdemux on 127.0.0.1:{}, waiting for the cameras",
        o.streams, o.sip_port
    );
    let t0 = Instant::now();
    let frames = |v: &[RecvStream]| -> Vec<u64> {
        v.iter()
            .map(|s| s.counters.video_frames.load(Ordering::Relaxed))
            .collect()
    };
    // Phase 1: every stream delivers video (or the start timeout passes).
    let start_deadline = t0 + Duration::from_secs(o.start_timeout_s);
    let mut last_print = 0;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        poll_recv(&mut streams, false);
        let playing = frames(&streams).iter().filter(|&&f| f > 0).count();
        if playing == streams.len() || Instant::now() > start_deadline {
            break;
        }
        let secs = t0.elapsed().as_secs();
        if secs / 5 != last_print {
            last_print = secs / 5;
            println!("recv: {playing} streams playing after {secs} s");
        }
    }
    let started = frames(&streams).iter().filter(|&&f| f > 0).count();
    println!(
        "recv: {started}/{} streams playing after {:.1} s",
        streams.len(),
        t0.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(o.warmup_s));
    // Phase 2: the measurement window. Frame counts, time and CPU are taken together at its
    // edges; the sources' stats just before and just after it (reading them can take seconds:
    // each read waits for the source's state lock, which its streaming thread holds while it
    // receives), so packet counts and losses cover the window plus those reads.
    let p0 = Instant::now();
    poll_recv(&mut streams, true);
    let poll_time = p0.elapsed();
    let s0: Vec<Option<SrcStats>> = streams.iter().map(|s| s.last).collect();
    let f0 = frames(&streams);
    let w0 = Instant::now();
    let cpu0 = process_cpu_ticks();
    std::thread::sleep(Duration::from_secs(o.duration_s));
    let f1 = frames(&streams);
    let window = w0.elapsed().as_secs_f64();
    let cpu1 = process_cpu_ticks();
    let p1 = Instant::now();
    poll_recv(&mut streams, true);
    let stats_span = p0.elapsed().as_secs_f64();
    let ended_early = streams.iter().filter(|s| s.error.is_some()).count();
    if let Some(f) = &o.stop_file
        && let Err(e) = std::fs::write(f, b"done\n")
    {
        eprintln!("recv: cannot create {}: {e}", f.display());
    }
    println!(
        "recv: reading the stats of {} sources (4 per thread) took {:.0} ms before the window, \
         {:.0} ms after it; longest single read {:.0} ms",
        streams.len(),
        poll_time.as_secs_f64() * 1e3,
        p1.elapsed().as_secs_f64() * 1e3,
        MAX_STATS_READ_US.load(Ordering::Relaxed) as f64 / 1e3
    );
    let cpu = (cpu1 - cpu0) as f64 / TICKS_PER_S;
    let expected = window * FPS as f64;
    let mut behind = Vec::new();
    let mut win_frames = 0u64;
    let mut win_lost = 0i64;
    let mut win_packets = 0u64;
    let mut min_fps = f64::MAX;
    for (i, s) in streams.iter().enumerate() {
        let df = f1[i] - f0[i];
        win_frames += df;
        let fps = df as f64 / window;
        min_fps = min_fps.min(fps);
        let (a, b) = (s0[i].unwrap_or_default(), s.last.unwrap_or_default());
        let lost = b.lost - a.lost;
        win_lost += lost;
        win_packets += b.packets.saturating_sub(a.packets);
        // One frame of slack for where the window edges fall.
        if (df as f64) < expected - 1.5 || lost > 0 {
            behind.push(format!("{i}({fps:.1}fps,{lost}lost)"));
        }
    }
    let n = streams.len().max(1) as f64;
    println!(
        "recv: window {window:.1} s: {win_frames} video frames = {:.1} fps per stream (min {min_fps:.1}, expected {FPS}); \
         between the stats reads around it ({stats_span:.1} s): {win_packets} RTP packets, {win_lost} lost",
        win_frames as f64 / window / n
    );
    println!(
        "recv: receiver CPU {cpu:.2} s over {window:.1} s = {:.1} % of one core total, {:.2} % per stream",
        100.0 * cpu / window,
        100.0 * cpu / window / n
    );
    if ended_early > 0 {
        println!(
            "recv: WARNING: {ended_early} streams ended or failed before the end of the window: \
             the sender must run longer than start-up + warm-up + window"
        );
    }
    if behind.is_empty() {
        println!("recv: no stream fell behind");
    } else {
        println!(
            "recv: {} streams fell behind: {}",
            behind.len(),
            behind.join(" ")
        );
    }
    // Phase 3: until the senders hang up, keeping each source's latest stats.
    let end_deadline = Instant::now() + Duration::from_secs(o.end_timeout_s);
    while Instant::now() < end_deadline && streams.iter().any(|s| s.error.is_none()) {
        std::thread::sleep(Duration::from_millis(250));
        poll_recv(&mut streams, true);
    }
    let ended = streams.iter().filter(|s| s.error.is_some()).count();
    let total_frames: u64 = frames(&streams).iter().sum();
    let per_stream: Vec<String> = frames(&streams).iter().map(|f| f.to_string()).collect();
    let total = streams.iter().fold(SrcStats::default(), |mut t, s| {
        let l = s.last.unwrap_or_default();
        t.ps_frames += l.ps_frames;
        t.packets += l.packets;
        t.lost += l.lost;
        t.frames_dropped += l.frames_dropped;
        t
    });
    for s in &streams {
        let _ = s.pipeline.set_state(gst::State::Null);
    }
    println!("recv: video frames per stream: {}", per_stream.join(" "));
    println!(
        "recv: whole process: CPU {:.2} s in {:.1} s, peak RSS {} KiB, {} threads at the end",
        process_cpu_ticks() as f64 / TICKS_PER_S,
        t0.elapsed().as_secs_f64(),
        proc_status("VmHWM:"),
        proc_status("Threads:")
    );
    println!(
        "recv: {ended}/{} sessions ended; totals: {total_frames} video frames out of psdemux; \
         at the last stats read: {} PS frames, {} RTP packets, {} lost, {} incomplete frames dropped",
        streams.len(),
        total.ps_frames,
        total.packets,
        total.lost,
        total.frames_dropped
    );
    println!(
        "RESULT role=recv streams={} started={started} window_s={window:.1} window_frames={win_frames} \
         expected_window_frames={:.0} window_packets={win_packets} window_lost={win_lost} behind={} \
         cpu_s={cpu:.2} cpu_pct={:.1} cpu_pct_per_stream={:.2} total_frames={total_frames} \
         total_ps_frames={} total_packets={} total_lost={} total_frames_dropped={} ended={ended} ended_early={ended_early}",
        o.streams,
        expected * n,
        behind.len(),
        100.0 * cpu / window,
        100.0 * cpu / window / n,
        total.ps_frames,
        total.packets,
        total.lost,
        total.frames_dropped,
    );
    Ok(())
}

fn main() {
    let o = <Opts as clap::Parser>::parse();
    init();
    let r = if o.role == "send" {
        run_send(&o)
    } else {
        run_recv(&o)
    };
    if let Err(e) = r {
        eprintln!("gb28181-streams: {e}");
        std::process::exit(1);
    }
}

//! Plays or records any RTSP URL over TCP or UDP, printing `rtcpstats` figures (packets,
//! loss, jitter, bitrate per stream) as it goes; recording writes MP4 segments named by UTC
//! date and time, like `ffmpeg -f segment -segment_time 60 -strftime 1` (G.711 is transcoded
//! to AAC for MP4; H.264/H.265/AAC pass through).
//!
//! `cargo run --release --example rtsp-client -- rtsp://user:pass@127.0.0.1:8554/34020000001320000001
//!  [--transport tcp|udp] [--record DIR] [--segment-s 60] [--seconds N] [--interval-ms 2000]`

use gst::prelude::*;
use gst_ipcam_common::sync::lock;
use gst_ipcam_gateway::cli::rtsp_url;
use gst_ipcam_gateway::gateway::init;
use gst_ipcam_gateway::outputs::utc_stamp;
use gst_ipcam_gateway::signals;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// (depayloader, parser/transcoder for MP4, is video) by RTP encoding name.
fn chain_for(encoding: &str) -> Option<(&'static str, &'static str, bool)> {
    Some(match encoding {
        "H264" => ("rtph264depay", "h264parse", true),
        "H265" => ("rtph265depay", "h265parse", true),
        "PCMA" => (
            "rtppcmadepay",
            "alawdec ! audioconvert ! audioresample ! avenc_aac ! aacparse",
            false,
        ),
        "PCMU" => (
            "rtppcmudepay",
            "mulawdec ! audioconvert ! audioresample ! avenc_aac ! aacparse",
            false,
        ),
        "MPEG4-GENERIC" => ("rtpmp4gdepay", "aacparse", false),
        _ => return None,
    })
}

/// Plays or records an RTSP URL, printing rtcpstats figures as it goes.
#[derive(clap::Parser, Debug)]
#[command(
    name = "rtsp-client",
    version,
    about = "Plays or records an RTSP URL over TCP or UDP, printing rtcpstats figures (loss, jitter, bitrate) as it goes"
)]
struct Args {
    /// rtsp:// URL (credentials as rtsp://user:pass@host/...).
    #[arg(value_parser = rtsp_url)]
    url: String,
    /// RTP transport.
    #[arg(long, value_parser = ["tcp", "udp"], default_value = "tcp")]
    transport: String,
    /// Record MP4 segments into this directory.
    #[arg(long)]
    record: Option<PathBuf>,
    /// Segment length in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    segment_s: u64,
    /// Stop after this many seconds (0: until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    seconds: u64,
    /// Statistics period in milliseconds.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(100..))]
    interval_ms: u64,
}

fn main() {
    let Args {
        url,
        transport,
        record,
        segment_s,
        seconds,
        interval_ms,
    } = <Args as clap::Parser>::parse();
    init().expect("GStreamer");
    signals::install();

    let pipeline = gst::Pipeline::new();
    let src = gst::ElementFactory::make("rtspsrc")
        .property("location", &url)
        .property("latency", 200u32)
        .build()
        .expect("rtspsrc");
    src.set_property_from_str("protocols", if transport == "udp" { "udp" } else { "tcp" });
    pipeline.add(&src).expect("add");
    let mux = record.as_ref().map(|dir| {
        std::fs::create_dir_all(dir).expect("record dir");
        let m = gst::ElementFactory::make("splitmuxsink")
            .property("max-size-time", segment_s.max(1) * 1_000_000_000)
            .build()
            .expect("splitmuxsink");
        let dir = dir.clone();
        m.connect("format-location", false, move |_| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let stamp = utc_stamp(now);
            let mut p = dir.join(format!("{stamp}.mp4"));
            let mut n = 1;
            while p.exists() && n < 1000 {
                p = dir.join(format!("{stamp}-{n}.mp4"));
                n += 1;
            }
            println!("rtsp-client: recording {}", p.display());
            Some(p.to_string_lossy().to_value())
        });
        pipeline.add(&m).expect("add");
        m
    });
    let stats: Arc<Mutex<Vec<(String, gst::Element)>>> = Arc::new(Mutex::new(Vec::new()));
    let weak = pipeline.downgrade();
    let st = stats.clone();
    src.connect_pad_added(move |_, pad| {
        let Some(p) = weak.upgrade() else { return };
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let enc = caps
            .structure(0)
            .and_then(|s| s.get::<String>("encoding-name").ok())
            .unwrap_or_default()
            .to_uppercase();
        let Some((depay, mp4, video)) = chain_for(&enc) else {
            eprintln!("rtsp-client: ignoring {enc}");
            let sink = gst::ElementFactory::make("fakesink")
                .build()
                .expect("fakesink");
            let _ = p.add(&sink);
            let _ = sink.sync_state_with_parent();
            let _ = pad.link(&sink.static_pad("sink").expect("pad"));
            return;
        };
        let tail = if mux.is_some() {
            format!("{mp4} ! queue")
        } else {
            "fakesink sync=false".to_string()
        };
        let Ok(chain) = gst::parse::bin_from_description(
            &format!("rtcpstats name=stats interval={interval_ms} ! {depay} ! {tail}"),
            true,
        ) else {
            return;
        };
        let _ = p.add(&chain);
        if let Some(s) = chain.by_name("stats") {
            lock(&st).push((enc.clone(), s));
        }
        if let Some(out) = chain.static_pad("src") {
            // The muxer needs timestamps: drop what comes before rtspsrc has them.
            out.add_probe(gst::PadProbeType::BUFFER, |_, info| match info.buffer() {
                Some(b) if b.pts().is_none() => gst::PadProbeReturn::Drop,
                _ => gst::PadProbeReturn::Ok,
            });
        }
        if let (Some(m), Some(out)) = (&mux, chain.static_pad("src"))
            && let Some(sinkpad) = m.request_pad_simple(if video { "video" } else { "audio_%u" })
        {
            let _ = out.link(&sinkpad);
        }
        let _ = chain.sync_state_with_parent();
        if let Some(sink) = chain.static_pad("sink") {
            let _ = pad.link(&sink);
        }
        println!("rtsp-client: stream {enc}");
    });
    if pipeline.set_state(gst::State::Playing).is_err() {
        eprintln!("rtsp-client: cannot start");
        std::process::exit(1);
    }
    let bus = pipeline.bus().expect("bus");
    let start = Instant::now();
    let mut next = start + Duration::from_millis(interval_ms.max(100));
    let mut failed = false;
    signals::wait(|| {
        if let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error, gst::MessageType::Eos]) {
            match msg.view() {
                gst::MessageView::Error(e) => {
                    eprintln!("rtsp-client: error: {} ({:?})", e.error(), e.debug());
                    failed = true;
                }
                _ => println!("rtsp-client: end of stream"),
            }
            return true;
        }
        if Instant::now() >= next {
            next += Duration::from_millis(interval_ms.max(100));
            for (enc, el) in lock(&stats).iter() {
                let Some(s) = el.property::<Option<gst::Structure>>("stats") else {
                    continue;
                };
                let Ok(sources) = s.get::<gst::Array>("sources") else {
                    continue;
                };
                for src in sources
                    .iter()
                    .filter_map(|v| v.get::<gst::Structure>().ok())
                {
                    let n = |k: &str| {
                        src.get::<u64>(k)
                            .map(|v| v as f64)
                            .or_else(|_| src.get::<u32>(k).map(f64::from))
                            .or_else(|_| src.get::<i32>(k).map(f64::from))
                            .unwrap_or(0.0)
                    };
                    println!(
                        "rtsp-client: {enc:5} ssrc {:08x} packets {} lost {} jitter {:.2} ms bitrate {:.0} kbit/s",
                        src.get::<u32>("ssrc").unwrap_or(0),
                        n("packets-received"),
                        n("packets-lost"),
                        n("jitter-ns") / 1e6,
                        n("bitrate") / 1000.0
                    );
                }
            }
        }
        seconds > 0 && start.elapsed() >= Duration::from_secs(seconds)
    });
    // EOS finalizes the last MP4 segment.
    pipeline.send_event(gst::event::Eos::new());
    let _ = bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(5),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    let _ = pipeline.set_state(gst::State::Null);
    std::process::exit(i32::from(failed));
}

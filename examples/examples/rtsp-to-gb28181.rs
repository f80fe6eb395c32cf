//! Republishes any RTSP camera as a GB28181 device: `rtspsrc → depay → parse → psmux →
//! gb28181sink`, audio included (G.711 and AAC pass through), no transcoding. The device
//! registers with the platform and streams when INVITEd.
//!
//! `cargo run --release --example rtsp-to-gb28181 -- rtsp://camera/stream --server 127.0.0.1:5060
//!  [--device-id 34020000001320000099] [--server-id 34020000002000000001] [--password 12345678]
//!  [--transport tcp|udp] [--seconds N]`

use gst::prelude::*;
use gst_ipcam_gateway::cli::{gb_id, rtsp_url, server_addr};
use gst_ipcam_gateway::gateway::init;
use gst_ipcam_gateway::signals;
use std::time::{Duration, Instant};

/// (depayloader and parser, is video) by RTP encoding name.
fn chain_for(encoding: &str) -> Option<(&'static str, bool)> {
    Some(match encoding {
        "H264" => (
            "rtph264depay ! h264parse config-interval=-1 ! video/x-h264,stream-format=byte-stream,alignment=au",
            true,
        ),
        "H265" => (
            "rtph265depay ! h265parse config-interval=-1 ! video/x-h265,stream-format=byte-stream,alignment=au",
            true,
        ),
        "PCMA" => ("rtppcmadepay", false),
        "PCMU" => ("rtppcmudepay", false),
        "MPEG4-GENERIC" => (
            "rtpmp4gdepay ! aacparse ! audio/mpeg,stream-format=adts",
            false,
        ),
        _ => return None,
    })
}

/// Republishes an RTSP camera as a GB28181 device.
#[derive(clap::Parser, Debug)]
#[command(
    name = "rtsp-to-gb28181",
    version,
    about = "Republishes an RTSP camera as a GB28181 device"
)]
struct Args {
    /// rtsp:// URL of the camera (credentials as rtsp://user:pass@host/...).
    #[arg(value_parser = rtsp_url)]
    url: String,
    /// The GB28181 platform, IP:PORT.
    #[arg(long, default_value = "127.0.0.1:5060", value_parser = server_addr)]
    server: (String, u16),
    /// The 20-digit ID this device registers as.
    #[arg(long, default_value = "34020000001320000099", value_parser = gb_id)]
    device_id: String,
    /// The platform's 20-digit ID.
    #[arg(long, default_value = "34020000002000000001", value_parser = gb_id)]
    server_id: String,
    /// Password the device registers with.
    #[arg(long, default_value = "12345678")]
    password: String,
    /// RTP transport from the camera.
    #[arg(long, value_parser = ["tcp", "udp"], default_value = "tcp")]
    transport: String,
    /// Stop after this many seconds (0: until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    seconds: u64,
}

fn main() {
    let Args {
        url,
        server: (ip, port),
        device_id,
        server_id,
        password,
        transport,
        seconds,
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
    let mux = gst::ElementFactory::make("psmux").build().expect("psmux");
    let sink = gst::ElementFactory::make("gb28181sink")
        .property("server-ip", &ip)
        .property("server-port", u32::from(port))
        .property("server-id", &server_id)
        .property("device-id", &device_id)
        .property("password", &password)
        .property("device-name", format!("RTSP {url}"))
        .build()
        .expect("gb28181sink");
    pipeline.add_many([&src, &mux, &sink]).expect("add");
    mux.link(&sink).expect("link");
    let weak = pipeline.downgrade();
    let mux_weak = mux.downgrade();
    src.connect_pad_added(move |_, pad| {
        let (Some(p), Some(mux)) = (weak.upgrade(), mux_weak.upgrade()) else {
            return;
        };
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let enc = caps
            .structure(0)
            .and_then(|s| s.get::<String>("encoding-name").ok())
            .unwrap_or_default()
            .to_uppercase();
        let desc = match chain_for(&enc) {
            Some((d, _)) => format!("{d} ! queue"),
            None => {
                eprintln!("rtsp-to-gb28181: ignoring {enc}");
                "fakesink".to_string()
            }
        };
        let Ok(chain) = gst::parse::bin_from_description(&desc, true) else {
            return;
        };
        let _ = p.add(&chain);
        if let Some(out) = chain.static_pad("src")
            && let Some(sinkpad) = mux.request_pad_simple("sink_%u")
        {
            let _ = out.link(&sinkpad);
        }
        let _ = chain.sync_state_with_parent();
        if let Some(sinkpad) = chain.static_pad("sink") {
            let _ = pad.link(&sinkpad);
        }
        println!("rtsp-to-gb28181: stream {enc}");
    });
    if pipeline.set_state(gst::State::Playing).is_err() {
        eprintln!("rtsp-to-gb28181: cannot start");
        std::process::exit(1);
    }
    println!("rtsp-to-gb28181: {url} as device {device_id} on {ip}:{port}");
    let bus = pipeline.bus().expect("bus");
    let start = Instant::now();
    let mut failed = false;
    signals::wait(|| {
        while let Some(msg) = bus.pop_filtered(&[
            gst::MessageType::Error,
            gst::MessageType::Eos,
            gst::MessageType::Element,
        ]) {
            match msg.view() {
                gst::MessageView::Error(e) => {
                    eprintln!("rtsp-to-gb28181: error: {} ({:?})", e.error(), e.debug());
                    failed = true;
                    return true;
                }
                gst::MessageView::Eos(_) => return true,
                gst::MessageView::Element(e) => {
                    if let Some(s) = e.structure()
                        && s.name().starts_with("gb28181-")
                    {
                        println!("rtsp-to-gb28181: {s}");
                    }
                }
                _ => {}
            }
        }
        seconds > 0 && start.elapsed() >= Duration::from_secs(seconds)
    });
    // EOS: the sink ends its session (BYE) and unregisters.
    pipeline.send_event(gst::event::Eos::new());
    let _ = bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(3),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    let _ = pipeline.set_state(gst::State::Null);
    std::process::exit(i32::from(failed));
}

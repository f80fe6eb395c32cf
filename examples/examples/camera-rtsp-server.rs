//! A GB28181 camera RTSP server on stock gst-rtsp-server: cameras register with the process's
//! GB28181 SIP endpoint (opened at start, before anyone watches), every registered device is
//! mounted at `rtsp://host:port/<device-id>`, the first viewer makes `gb28181src` INVITE the
//! camera and the last one leaving ends the session (BYE). The mount is a plain media-factory
//! launch line, the pattern any gst-rtsp-server application can use:
//!
//! ```text
//! ( gb28181src device-id=D channel-id=D ! psdemux name=d d.video_e0 ! queue ! h264parse
//!   ! rtph264pay name=pay0 pt=96 )
//! ```
//!
//! What makes it work: the SIP endpoint opens when the first `gb28181src` goes to READY and
//! is shared by every `gb28181src` of the process with the same address and port, so a
//! `gb28181src` held in READY ("keeper") keeps it up and reports registrations on its bus.
//!
//! `cargo run --example camera-rtsp-server -- --sip-port 5060 --rtsp-port 8554` (`--help`).
//! No access control: it listens on 127.0.0.1 unless told; the gateway is the product.

use clap::Parser;
use gst::glib;
use gst::prelude::*;
use gst_ipcam_gateway::signals;
use gst_rtsp_server::prelude::*;
use std::collections::HashSet;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "camera-rtsp-server",
    version,
    about = "GB28181 cameras as RTSP mounts on stock gst-rtsp-server"
)]
struct Args {
    /// Address of the SIP endpoint and of the RTSP server.
    #[arg(long, default_value = "127.0.0.1")]
    address: String,
    /// SIP port cameras register to (0: any free port, printed).
    #[arg(long, default_value_t = 5060)]
    sip_port: u16,
    /// RTSP port (0: any free port, printed).
    #[arg(long, default_value_t = 8554)]
    rtsp_port: u16,
    /// The platform's 20-digit ID.
    #[arg(long, default_value = "34020000002000000001")]
    server_id: String,
    /// Password the cameras register with.
    #[arg(long, default_value = "12345678")]
    password: String,
    /// Video codec of the cameras.
    #[arg(long, value_parser = ["h264", "h265"], default_value = "h264")]
    codec: String,
}

/// The media-factory launch line for one camera (video only: a camera without audio would
/// otherwise never finish preparing).
/// `sip-address`/`sip-port` are the keeper's as given (0 included): elements share the
/// endpoint whose key they name.
fn launch_line(a: &Args, device: &str) -> String {
    let (parse, pay) = match a.codec.as_str() {
        "h265" => ("h265parse", "rtph265pay"),
        _ => ("h264parse", "rtph264pay"),
    };
    format!(
        "( gb28181src sip-address={} sip-port={} server-id={} password={} \
         device-id={device} channel-id={device} ! psdemux name=d d.video_e0 ! queue \
         ! {parse} ! {pay} name=pay0 pt=96 config-interval=-1 )",
        a.address, a.sip_port, a.server_id, a.password
    )
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("camera-rtsp-server: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), String> {
    gst::init().map_err(|e| e.to_string())?;
    gstgb28181::plugin_register_static().map_err(|e| e.to_string())?;
    gstmpegps::plugin_register_static().map_err(|e| e.to_string())?;

    // The keeper: opens the SIP endpoint now and reports registrations on its bus.
    let keeper = gst::parse::launch(&format!(
        "gb28181src name=keeper sip-address={} sip-port={} server-id={} password={} \
         device-id={} ! fakesink",
        args.address, args.sip_port, args.server_id, args.password, args.server_id
    ))
    .map_err(|e| e.to_string())?
    .downcast::<gst::Pipeline>()
    .map_err(|_| "not a pipeline")?;
    keeper
        .set_state(gst::State::Ready)
        .map_err(|_| format!("SIP endpoint on {}:{}", args.address, args.sip_port))?;
    let sip_port = keeper
        .by_name("keeper")
        .ok_or("no keeper")?
        .property::<u32>("sip-port");

    let main_loop = glib::MainLoop::new(None, false);
    let server = gst_rtsp_server::RTSPServer::new();
    server.set_address(&args.address);
    server.set_service(&args.rtsp_port.to_string());
    let mounts = server.mount_points().ok_or("no mount points")?;
    server
        .attach(None)
        .map_err(|e| format!("RTSP server on port {}: {e}", args.rtsp_port))?;
    let rtsp_port = server.bound_port();
    println!(
        "[camera-rtsp-server] SIP {}:{sip_port}, server id {}, RTSP port {rtsp_port}",
        args.address, args.server_id
    );

    let bus = keeper.bus().ok_or("no bus")?;
    let mounted = std::cell::RefCell::new(HashSet::<String>::new());
    let host = args.address.clone();
    let a = args.clone();
    let _watch = bus
        .add_watch_local(move |_, msg| {
            if let gst::MessageView::Element(e) = msg.view()
                && let Some(s) = e.structure()
            {
                let device = s.get::<String>("device-id").unwrap_or_default();
                match s.name().as_str() {
                    "gb28181-device-registered" if mounted.borrow_mut().insert(device.clone()) => {
                        let factory = gst_rtsp_server::RTSPMediaFactory::new();
                        factory.set_launch(&launch_line(&a, &device));
                        // One camera session for all viewers; BYE after the last one.
                        factory.set_shared(true);
                        mounts.add_factory(&format!("/{device}"), factory);
                        println!(
                            "[camera-rtsp-server] device {device} registered: \
                             rtsp://{host}:{rtsp_port}/{device}"
                        );
                    }
                    "gb28181-device-unregistered" if mounted.borrow_mut().remove(&device) => {
                        mounts.remove_factory(&format!("/{device}"));
                        println!("[camera-rtsp-server] device {device} unregistered");
                    }
                    _ => {}
                }
            }
            glib::ControlFlow::Continue
        })
        .map_err(|e| e.to_string())?;

    // Ctrl-C / SIGTERM: stop cleanly (viewers disconnected, BYE to cameras).
    signals::install();
    let ml = main_loop.clone();
    glib::timeout_add_local(std::time::Duration::from_millis(100), move || {
        if signals::stop_requested() {
            ml.quit();
            return glib::ControlFlow::Break;
        }
        glib::ControlFlow::Continue
    });
    main_loop.run();
    server.client_filter(Some(&mut |_, _| gst_rtsp_server::RTSPFilterResult::Remove));
    let _ = keeper.set_state(gst::State::Null);
    println!("[camera-rtsp-server] stopped");
    Ok(())
}

//! Helpers shared by the integration tests: plugin registration, paths to test data and
//! to external tools used as independent oracles (ffmpeg, ffprobe, tshark).

use gst::prelude::*;
use std::path::PathBuf;
use std::sync::Once;

/// Registers every gst-ipcam plugin statically, once per process.
pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        gst::init().expect("gst::init");
        gstmpegps::plugin_register_static().expect("register mpegps");
        gstrtspinterleaved::plugin_register_static().expect("register rtspinterleaved");
        gstrtcpstats::plugin_register_static().expect("register rtcpstats");
    });
}

/// The project root (the workspace directory).
pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests crate has a parent")
        .to_path_buf()
}

/// `../shared/testdata` next to the project, as the brief lays it out.
pub fn shared_testdata() -> PathBuf {
    project_root().join("../shared/testdata")
}

/// A fresh scratch directory under the target dir for one test.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = project_root().join("target/test-scratch").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// A port on 127.0.0.1 that was free a moment ago (bound to 0 and released).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("bind udp")
        .port()
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("bind tcp")
        .port()
}

/// What a pipeline posted while it ran.
#[derive(Debug, Default)]
pub struct BusLog {
    pub eos: bool,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

/// Runs `pipeline` (already PLAYING) until EOS, an error or `timeout`, collecting
/// errors and warnings. Never blocks longer than `timeout`.
pub fn wait_for_eos(pipeline: &gst::Pipeline, timeout: std::time::Duration) -> BusLog {
    let bus = pipeline.bus().expect("pipeline bus");
    let deadline = std::time::Instant::now() + timeout;
    let mut log = BusLog::default();
    loop {
        let now = std::time::Instant::now();
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

/// Parses and starts a pipeline description.
pub fn start_pipeline(description: &str) -> gst::Pipeline {
    let pipeline = gst::parse::launch(description)
        .unwrap_or_else(|e| panic!("parse {description}: {e}"))
        .downcast::<gst::Pipeline>()
        .expect("a pipeline");
    pipeline
        .set_state(gst::State::Playing)
        .unwrap_or_else(|e| panic!("start {description}: {e:?}"));
    pipeline
}

/// Counts the buffers reaching the appsink `name` in `pipeline`, with their PTS.
pub fn count_appsink(
    pipeline: &gst::Pipeline,
    name: &str,
) -> std::sync::Arc<std::sync::Mutex<Vec<Option<gst::ClockTime>>>> {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = pipeline
        .by_name(name)
        .unwrap_or_else(|| panic!("no element {name}"))
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

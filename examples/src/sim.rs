//! Simulated GB28181 cameras: a few seconds of H.264 or H.265 video and G.711 A-law audio are
//! encoded once into memory ([`Clip::encode`]), then every [`SimCamera`] loops that clip through
//! `appsrc ! psmux ! gb28181sink` with timestamps that keep counting, so a camera costs no
//! encoding, only muxing and sending. The sink registers with the platform like a real camera
//! and streams when INVITEd.

use gst::prelude::*;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One encoded access unit or audio frame.
#[derive(Clone)]
struct Frame {
    pts: gst::ClockTime,
    duration: gst::ClockTime,
    buffer: gst::Buffer,
}

/// An encoded clip held in memory.
pub struct Clip {
    video_caps: gst::Caps,
    video: Vec<Frame>,
    audio: Vec<Frame>,
    /// Loop length.
    length: gst::ClockTime,
}

const FPS: u32 = 25;

fn collect(sink: &gst_app::AppSink, out: Arc<Mutex<Vec<Frame>>>) {
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |s| {
                let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                if let Some(b) = sample.buffer_owned() {
                    let f = Frame {
                        pts: b.pts().unwrap_or(gst::ClockTime::ZERO),
                        duration: b.duration().unwrap_or(gst::ClockTime::ZERO),
                        buffer: b,
                    };
                    out.lock().unwrap_or_else(|e| e.into_inner()).push(f);
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
}

impl Clip {
    /// Encodes `seconds` (whole seconds, one key frame a second) of a moving test pattern and
    /// a tone.
    pub fn encode(
        codec: &str,
        width: u32,
        height: u32,
        bitrate_kbps: u32,
        seconds: u32,
    ) -> Result<Clip, String> {
        let frames = seconds.max(1) * FPS;
        // GW_SIM_PATTERN=snow makes the encoder use its whole bitrate (benchmarks).
        let pattern = std::env::var("GW_SIM_PATTERN")
            .ok()
            .filter(|p| p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
            .unwrap_or_else(|| "ball".into());
        let enc = match codec {
            "h265" => format!(
                "x265enc tune=zerolatency speed-preset=ultrafast key-int-max={FPS} bitrate={bitrate_kbps} \
                 ! h265parse config-interval=-1 ! video/x-h265,stream-format=byte-stream,alignment=au"
            ),
            _ => format!(
                "x264enc tune=zerolatency speed-preset=ultrafast key-int-max={FPS} bitrate={bitrate_kbps} \
                 ! video/x-h264,profile=baseline ! h264parse config-interval=-1 \
                 ! video/x-h264,stream-format=byte-stream,alignment=au"
            ),
        };
        let desc = format!(
            "videotestsrc num-buffers={frames} pattern={pattern} \
             ! video/x-raw,width={width},height={height},framerate={FPS}/1 ! {enc} \
             ! appsink name=v sync=false \
             audiotestsrc num-buffers={frames} samplesperbuffer={spb} wave=sine freq=440 \
             ! audio/x-raw,rate=8000,channels=1 ! alawenc ! appsink name=a sync=false",
            spb = 8000 / FPS,
        );
        let pipeline = gst::parse::launch(&desc)
            .map_err(|e| format!("encoder pipeline: {e}"))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| "not a pipeline".to_string())?;
        let video = Arc::new(Mutex::new(Vec::new()));
        let audio = Arc::new(Mutex::new(Vec::new()));
        let vsink = pipeline
            .by_name("v")
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
            .ok_or("no video appsink")?;
        let asink = pipeline
            .by_name("a")
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
            .ok_or("no audio appsink")?;
        collect(&vsink, video.clone());
        collect(&asink, audio.clone());
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| format!("encoder: {e}"))?;
        let bus = pipeline.bus().ok_or("no bus")?;
        let msg = bus.timed_pop_filtered(
            gst::ClockTime::from_seconds(60),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        );
        let caps = vsink.sink_pads().first().and_then(|p| p.current_caps());
        let _ = pipeline.set_state(gst::State::Null);
        match msg.as_ref().map(|m| m.view()) {
            Some(gst::MessageView::Eos(_)) => {}
            Some(gst::MessageView::Error(e)) => return Err(format!("encoder: {}", e.error())),
            _ => return Err("encoder: timeout".into()),
        }
        let video = std::mem::take(&mut *video.lock().unwrap_or_else(|e| e.into_inner()));
        let audio = std::mem::take(&mut *audio.lock().unwrap_or_else(|e| e.into_inner()));
        if video.is_empty() {
            return Err("encoder produced no video".into());
        }
        // Encoders start at an offset (x264enc: 1000 h): every stream starts at 0.
        let rebase = |mut v: Vec<Frame>| {
            let base = v
                .iter()
                .map(|f| f.pts)
                .min()
                .unwrap_or(gst::ClockTime::ZERO);
            for f in &mut v {
                f.pts = f.pts.saturating_sub(base);
            }
            v
        };
        let video = rebase(video);
        let audio = rebase(audio);
        let length = gst::ClockTime::SECOND * u64::from(frames) / u64::from(FPS);
        Ok(Clip {
            video_caps: caps.ok_or("no video caps")?,
            video,
            audio,
            length,
        })
    }

    /// Bytes per second of the clip (video + audio).
    pub fn bitrate_bps(&self) -> u64 {
        let bytes: usize = self
            .video
            .iter()
            .chain(self.audio.iter())
            .map(|f| f.buffer.size())
            .sum();
        (bytes as u64 * 8 * 1_000_000_000) / self.length.nseconds().max(1)
    }
}

/// Feeds `frames` into `src` forever, timestamps continuing across loops.
fn feed(src: &gst_app::AppSrc, frames: Vec<Frame>, length: gst::ClockTime) {
    let next = Mutex::new(0usize);
    src.set_callbacks(
        gst_app::AppSrcCallbacks::builder()
            .need_data(move |src, _| {
                if frames.is_empty() {
                    let _ = src.end_of_stream();
                    return;
                }
                let mut n = next.lock().unwrap_or_else(|e| e.into_inner());
                // A few frames per call keeps the callback rate low.
                for _ in 0..4 {
                    let i = *n % frames.len();
                    let round = (*n / frames.len()) as u64;
                    let f = &frames[i];
                    let mut b = f.buffer.copy();
                    {
                        let b = b.make_mut();
                        b.set_pts(f.pts + length * round);
                        b.set_dts(gst::ClockTime::NONE);
                        b.set_duration(f.duration);
                        if round > 0 {
                            b.unset_flags(gst::BufferFlags::DISCONT);
                        }
                    }
                    *n += 1;
                    if src.push_buffer(b).is_err() {
                        return;
                    }
                }
            })
            .build(),
    );
}

/// Settings of one simulated camera.
#[derive(Debug, Clone)]
pub struct SimSettings {
    pub server_ip: String,
    pub server_port: u16,
    pub server_id: String,
    pub device_id: String,
    pub password: String,
    pub audio: bool,
}

/// A running simulated camera.
pub struct SimCamera {
    pub device_id: String,
    pipeline: gst::Pipeline,
    sink: gst::Element,
}

impl SimCamera {
    pub fn start(clip: &Clip, s: &SimSettings) -> Result<SimCamera, String> {
        let pipeline = gst::Pipeline::with_name(&format!("camera-{}", s.device_id));
        let mk = |f: &str| {
            gst::ElementFactory::make(f)
                .build()
                .map_err(|e| format!("{f}: {e}"))
        };
        let vsrc = gst_app::AppSrc::builder()
            .caps(&clip.video_caps)
            .format(gst::Format::Time)
            .max_bytes(4 * 1024 * 1024)
            .build();
        let mux = mk("psmux")?;
        let sink = gst::ElementFactory::make("gb28181sink")
            .property("server-ip", &s.server_ip)
            .property("server-port", u32::from(s.server_port))
            .property("server-id", &s.server_id)
            .property("device-id", &s.device_id)
            .property("password", &s.password)
            .property("keepalive-interval", 20_000u32)
            .property("device-name", format!("Simulated camera {}", s.device_id))
            .build()
            .map_err(|e| format!("gb28181sink: {e}"))?;
        let vq = mk("queue")?;
        // Paced like a real camera: one frame when its time comes (the appsrc is not live and
        // runs ahead; psmux would then send a second of frames in one burst).
        let vsync = mk("clocksync")?;
        pipeline
            .add_many([vsrc.upcast_ref(), &vq, &vsync, &mux, &sink])
            .map_err(|e| e.to_string())?;
        gst::Element::link_many([vsrc.upcast_ref(), &vq, &vsync, &mux, &sink])
            .map_err(|e| e.to_string())?;
        feed(&vsrc, clip.video.clone(), clip.length);
        if s.audio && !clip.audio.is_empty() {
            let asrc = gst_app::AppSrc::builder()
                .caps(
                    &gst::Caps::builder("audio/x-alaw")
                        .field("rate", 8000i32)
                        .field("channels", 1i32)
                        .build(),
                )
                .format(gst::Format::Time)
                .max_bytes(256 * 1024)
                .build();
            let aq = mk("queue")?;
            let async_ = mk("clocksync")?;
            pipeline
                .add_many([asrc.upcast_ref(), &aq, &async_])
                .map_err(|e| e.to_string())?;
            gst::Element::link_many([asrc.upcast_ref(), &aq, &async_, &mux])
                .map_err(|e| e.to_string())?;
            feed(&asrc, clip.audio.clone(), clip.length);
        }
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| format!("camera {}: {e}", s.device_id))?;
        Ok(SimCamera {
            device_id: s.device_id.clone(),
            pipeline,
            sink,
        })
    }

    /// The sink's `stats` (registered, streaming, frames).
    pub fn stats(&self) -> Option<gst::Structure> {
        self.sink.property::<Option<gst::Structure>>("stats")
    }

    pub fn is_streaming(&self) -> bool {
        self.stats()
            .and_then(|s| s.get::<bool>("streaming").ok())
            .unwrap_or(false)
    }

    pub fn is_registered(&self) -> bool {
        self.stats()
            .and_then(|s| s.get::<bool>("registered").ok())
            .unwrap_or(false)
    }

    pub fn pipeline(&self) -> &gst::Pipeline {
        &self.pipeline
    }

    /// Stops the camera: EOS lets the sink end its session (BYE) and unregister.
    pub fn stop(&self) {
        self.pipeline.send_event(gst::event::Eos::new());
        if let Some(bus) = self.pipeline.bus() {
            let _ = bus.timed_pop_filtered(
                gst::ClockTime::from_mseconds(500),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            );
        }
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Stops many cameras at once: EOS to all (each sink sends BYE and unregisters), then waits
/// (bounded) and tears them down.
pub fn stop_all(cams: &[SimCamera]) {
    for c in cams {
        c.pipeline.send_event(gst::event::Eos::new());
    }
    let end = std::time::Instant::now() + Duration::from_millis(1500);
    for c in cams {
        if let Some(bus) = c.pipeline.bus() {
            let left = end.saturating_duration_since(std::time::Instant::now());
            let _ = bus.timed_pop_filtered(
                gst::ClockTime::from_nseconds(left.as_nanos() as u64),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            );
        }
    }
    for c in cams {
        let _ = c.pipeline.set_state(gst::State::Null);
    }
}

impl Drop for SimCamera {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Waits until `f` is true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

//! Simulated GB28181 cameras: a few seconds of H.264 or H.265 video and G.711 A-law audio are
//! encoded once into memory ([`Clip::encode`]), then every [`SimCamera`] loops that clip through
//! `appsrc ! psmux ! gb28181sink` with timestamps that keep counting, so a camera costs no
//! encoding, only muxing and sending. The sink registers with the platform like a real camera
//! and streams when INVITEd.
//!
//! Playback control as a recorder does it ([`Pace`]): the clip's timeline is the recording
//! (content time 0 = the start of the INVITE's range); MANSRTSP `Scale` makes frames leave
//! at content time divided by the scale, with their content timestamps unchanged (a camera
//! sends faster, it does not rewrite its recording); `Range: npt=<s>-` jumps to the key
//! frame at or before that position; `PAUSE` holds the frames until the next `PLAY`.

use gst::prelude::*;
use std::sync::{Arc, Condvar, Mutex};
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
    video_caps: Option<gst::Caps>,
    audio_caps: Option<gst::Caps>,
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
    /// a G.711 A-law tone.
    pub fn encode(
        codec: &str,
        width: u32,
        height: u32,
        bitrate_kbps: u32,
        seconds: u32,
    ) -> Result<Clip, String> {
        Clip::encode_with(
            Some(codec),
            Some("alaw"),
            width,
            height,
            bitrate_kbps,
            seconds,
        )
    }

    /// Like [`Clip::encode`] for any camera: video `h264`, `h265` or none, audio `alaw`,
    /// `mulaw`, `aac` or none.
    pub fn encode_with(
        video_codec: Option<&str>,
        audio_codec: Option<&str>,
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
        let enc = match video_codec {
            None => None,
            Some("h265") => Some(format!(
                "x265enc tune=zerolatency speed-preset=ultrafast key-int-max={FPS} bitrate={bitrate_kbps} \
                 ! h265parse config-interval=-1 ! video/x-h265,stream-format=byte-stream,alignment=au"
            )),
            Some("h264") => Some(format!(
                "x264enc tune=zerolatency speed-preset=ultrafast key-int-max={FPS} bitrate={bitrate_kbps} \
                 ! video/x-h264,profile=baseline ! h264parse config-interval=-1 \
                 ! video/x-h264,stream-format=byte-stream,alignment=au"
            )),
            Some(other) => return Err(format!("video codec {other}: h264 or h265")),
        };
        let aenc = match audio_codec {
            None => None,
            Some("alaw") => Some((8000, "alawenc")),
            Some("mulaw") => Some((8000, "mulawenc")),
            Some("aac") => Some((
                16000,
                "avenc_aac bitrate=32000 ! aacparse ! audio/mpeg,stream-format=adts",
            )),
            Some(other) => return Err(format!("audio codec {other}: alaw, mulaw or aac")),
        };
        if enc.is_none() && aenc.is_none() {
            return Err("a camera needs video or audio".into());
        }
        let mut parts = Vec::new();
        if let Some(enc) = &enc {
            parts.push(format!(
                "videotestsrc num-buffers={frames} pattern={pattern} \
                 ! video/x-raw,width={width},height={height},framerate={FPS}/1 ! {enc} \
                 ! appsink name=v sync=false"
            ));
        }
        if let Some((rate, aenc)) = aenc {
            parts.push(format!(
                "audiotestsrc num-buffers={frames} samplesperbuffer={spb} wave=sine freq=440 \
                 ! audio/x-raw,rate={rate},channels=1 ! {aenc} ! appsink name=a sync=false",
                spb = rate / FPS,
            ));
        }
        let desc = parts.join(" ");
        let pipeline = gst::parse::launch(&desc)
            .map_err(|e| format!("encoder pipeline: {e}"))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| "not a pipeline".to_string())?;
        let video = Arc::new(Mutex::new(Vec::new()));
        let audio = Arc::new(Mutex::new(Vec::new()));
        let sink = |name: &str| {
            pipeline
                .by_name(name)
                .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        };
        let vsink = sink("v");
        let asink = sink("a");
        if let Some(v) = &vsink {
            collect(v, video.clone());
        }
        if let Some(a) = &asink {
            collect(a, audio.clone());
        }
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| format!("encoder: {e}"))?;
        let bus = pipeline.bus().ok_or("no bus")?;
        let msg = bus.timed_pop_filtered(
            gst::ClockTime::from_seconds(60),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        );
        let caps_of = |s: &Option<gst_app::AppSink>| {
            s.as_ref()
                .and_then(|s| s.sink_pads().first().and_then(|p| p.current_caps()))
        };
        let (video_caps, audio_caps) = (caps_of(&vsink), caps_of(&asink));
        let _ = pipeline.set_state(gst::State::Null);
        match msg.as_ref().map(|m| m.view()) {
            Some(gst::MessageView::Eos(_)) => {}
            Some(gst::MessageView::Error(e)) => return Err(format!("encoder: {}", e.error())),
            _ => return Err("encoder: timeout".into()),
        }
        let video = std::mem::take(&mut *video.lock().unwrap_or_else(|e| e.into_inner()));
        let audio = std::mem::take(&mut *audio.lock().unwrap_or_else(|e| e.into_inner()));
        if enc.is_some() && (video.is_empty() || video_caps.is_none()) {
            return Err("encoder produced no video".into());
        }
        if asink.is_some() && (audio.is_empty() || audio_caps.is_none()) {
            return Err("encoder produced no audio".into());
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
        let length = gst::ClockTime::SECOND * u64::from(frames) / u64::from(FPS);
        // Frames past the clip's length (an AAC encoder's last, padded frame) would come after
        // the first frame of the next loop: timestamps going back at every loop.
        let video = rebase(video);
        let mut audio = rebase(audio);
        audio.retain(|f| f.pts < length);
        Ok(Clip {
            video_caps,
            audio_caps,
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

/// One stream of a clip: its caps, frames and loop length.
type Part = (gst::Caps, Vec<Frame>, gst::ClockTime);

/// Feeds `parts` into `src`, each once and the last one forever, timestamps continuing
/// across parts and loops; at a part whose caps differ, the new caps go first (a camera
/// reconfigured to another codec or size).
fn feed(src: &gst_app::AppSrc, parts: Vec<Part>, pace: Arc<Pace>) {
    // (part, frame in part, time at which the part's current loop starts)
    let next = Mutex::new((0usize, 0usize, gst::ClockTime::ZERO));
    let mut generation = 0;
    src.set_callbacks(
        gst_app::AppSrcCallbacks::builder()
            .need_data(move |src, _| {
                let mut n = next.lock().unwrap_or_else(|e| e.into_inner());
                let (g, seek_to) = pace.generation();
                if g != generation {
                    generation = g;
                    if let Some(at) = seek_position(&parts, seek_to) {
                        *n = at;
                    }
                }
                // A few frames per call keeps the callback rate low.
                for _ in 0..4 {
                    let (part, i, base) = *n;
                    let Some((caps, frames, length)) = parts.get(part) else {
                        let _ = src.end_of_stream();
                        return;
                    };
                    if frames.is_empty() {
                        let _ = src.end_of_stream();
                        return;
                    }
                    if i == 0 && src.caps().as_ref() != Some(caps) {
                        src.set_caps(Some(caps));
                    }
                    let f = &frames[i];
                    let mut b = f.buffer.copy();
                    {
                        let b = b.make_mut();
                        b.set_pts(f.pts + base);
                        b.set_dts(gst::ClockTime::NONE);
                        b.set_duration(f.duration);
                        // Tells the pacer which seek the frame belongs to.
                        b.set_offset(generation);
                        if base > gst::ClockTime::ZERO {
                            b.unset_flags(gst::BufferFlags::DISCONT);
                        }
                    }
                    let may_end =
                        (part as u64) < pace.clips_done.load(std::sync::atomic::Ordering::SeqCst);
                    *n = if i + 1 < frames.len() {
                        (part, i + 1, base)
                    } else if part + 1 < parts.len() && may_end {
                        (part + 1, 0, base + *length)
                    } else {
                        (part, 0, base + *length)
                    };
                    if src.push_buffer(b).is_err() {
                        return;
                    }
                }
            })
            .build(),
    );
}

/// Where the feed of `parts` goes on for content time `to`: the last part (the looping one;
/// the earlier ones play once), at its frame at or before `to` in the loop that holds it,
/// a key frame for video.
fn seek_position(parts: &[Part], to: gst::ClockTime) -> Option<(usize, usize, gst::ClockTime)> {
    let part = parts.len().checked_sub(1)?;
    let (_, frames, length) = &parts[part];
    let length = length.nseconds().max(1);
    let base = to.nseconds() / length * length;
    let within = to.nseconds() - base;
    let i = frames
        .iter()
        .enumerate()
        .filter(|(_, f)| {
            f.pts.nseconds() <= within && !f.buffer.flags().contains(gst::BufferFlags::DELTA_UNIT)
        })
        .map(|(i, _)| i)
        .next_back()
        .unwrap_or(0);
    Some((part, i, gst::ClockTime::from_nseconds(base)))
}

/// Longest a frame is held: anything due later is taken as a new start.
const MAX_HOLD_NS: f64 = 5e9;

/// The pacing of a simulated camera's streams, shared by them (they stay in sync): when each
/// frame (by its content time) leaves, at the scale the platform asked for.
pub struct Pace {
    state: Mutex<PaceState>,
    wake: Condvar,
    /// Clips of a sequence that may end (the next one starts after them); a clip not allowed
    /// to end loops. `u64::MAX`: each plays once ([`SimCamera::start_sequence`]).
    clips_done: std::sync::atomic::AtomicU64,
}

struct PaceState {
    scale: f64,
    /// (content ns, running time ns) that map to each other; set by the first frame.
    anchor: Option<(u64, u64)>,
    paused: bool,
    /// The pipeline is going down: nothing waits any more.
    stopping: bool,
    /// Bumped by each seek (frames of an older one are dropped) and the position asked for.
    generation: u64,
    seek_to: gst::ClockTime,
}

impl Default for PaceState {
    fn default() -> Self {
        PaceState {
            scale: 1.0,
            anchor: None,
            paused: false,
            stopping: false,
            generation: 0,
            seek_to: gst::ClockTime::ZERO,
        }
    }
}

impl Default for Pace {
    fn default() -> Self {
        Pace {
            state: Mutex::default(),
            wake: Condvar::new(),
            clips_done: std::sync::atomic::AtomicU64::new(u64::MAX),
        }
    }
}

impl PaceState {
    /// Content time reached at running time `now`.
    fn position(&self, now: u64) -> Option<u64> {
        let (c, r) = self.anchor?;
        Some(c + (now.saturating_sub(r) as f64 * self.scale) as u64)
    }
}

impl Pace {
    fn lock(&self) -> std::sync::MutexGuard<'_, PaceState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn generation(&self) -> (u64, gst::ClockTime) {
        let s = self.lock();
        (s.generation, s.seek_to)
    }

    /// A MANSRTSP request the sink passed on (`gb28181-playback-control`) at running time
    /// `now`: PLAY with scale and/or position, or PAUSE.
    fn control(&self, method: &str, scale: Option<f64>, npt: Option<f64>, now: u64) {
        let mut s = self.lock();
        let position = s.position(now);
        match method {
            "PAUSE" => {
                if !s.paused {
                    s.anchor = position.map(|p| (p, now));
                    s.paused = true;
                }
            }
            _ => {
                // Paused: the position stays where the pause left it.
                let from = if s.paused {
                    s.anchor.map(|a| a.0)
                } else {
                    position
                };
                s.anchor = from.map(|p| (p, now));
                s.paused = false;
                if let Some(x) = scale {
                    s.scale = x;
                }
                if let Some(t) = npt {
                    let to = (t * 1e9) as u64;
                    s.generation += 1;
                    s.seek_to = gst::ClockTime::from_nseconds(to);
                    s.anchor = Some((to, now));
                }
            }
        }
        self.wake.notify_all();
    }

    fn stop(&self) {
        self.lock().stopping = true;
        self.wake.notify_all();
    }

    /// Holds a frame of content time `content` (seek `generation`) until it is due on
    /// `element`'s clock; false: drop it (an older seek, or the camera is stopping).
    fn wait(&self, element: &gst::Element, content: u64, generation: u64) -> bool {
        // Before PLAYING (preroll) there is no base time to wait on: the frame goes.
        let (Some(clock), Some(base)) = (element.clock(), element.base_time()) else {
            return true;
        };
        if element.current_state() != gst::State::Playing {
            return true;
        }
        let mut s = self.lock();
        while s.paused && !s.stopping {
            s = self
                .wake
                .wait_timeout(s, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        // Stopping: what is still queued is not sent in a burst ahead of the EOS.
        if s.stopping || generation != s.generation {
            return false;
        }
        let now = clock.time().saturating_sub(base).nseconds();
        let (c, r) = *s.anchor.get_or_insert((content, now));
        let mut due = r as f64 + (content as f64 - c as f64) / s.scale;
        if due > now as f64 + MAX_HOLD_NS {
            // Not a frame of this timeline (the clip looped back, a new base time): start
            // again from it.
            s.anchor = Some((content, now));
            due = now as f64;
        }
        drop(s);
        if due > now as f64 {
            let id = clock.new_single_shot_id(base + gst::ClockTime::from_nseconds(due as u64));
            let _ = id.wait();
        }
        true
    }
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

/// How a simulated camera talks SIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipOptions {
    /// Milliseconds between its keepalives.
    pub keepalive_ms: u32,
    /// SIP over TCP (one connection to the platform) instead of UDP.
    pub tcp: bool,
}

impl Default for SipOptions {
    fn default() -> Self {
        SipOptions {
            keepalive_ms: 20_000,
            tcp: false,
        }
    }
}

/// A running simulated camera.
pub struct SimCamera {
    pub device_id: String,
    pipeline: gst::Pipeline,
    sink: gst::Element,
    pace: Arc<Pace>,
}

impl SimCamera {
    pub fn start(clip: &Clip, s: &SimSettings) -> Result<SimCamera, String> {
        SimCamera::start_sequence(&[clip], s)
    }

    /// A camera that plays `clips` one after the other (each once, the last one in a loop)
    /// in one session: a camera reconfigured mid-session to another codec or picture size.
    /// Every clip must have the streams of the first one.
    pub fn start_sequence(clips: &[&Clip], s: &SimSettings) -> Result<SimCamera, String> {
        SimCamera::start_with_records(clips, s, "")
    }

    /// Like [`SimCamera::start_sequence`], but each clip but the last loops until
    /// [`SimCamera::next_clip`] lets it end: the test decides when the camera changes.
    pub fn start_stepped(clips: &[&Clip], s: &SimSettings) -> Result<SimCamera, String> {
        let cam = SimCamera::start_with_records(clips, s, "")?;
        cam.pace
            .clips_done
            .store(0, std::sync::atomic::Ordering::SeqCst);
        Ok(cam)
    }

    /// Lets the clip now looping ([`SimCamera::start_stepped`]) end at its end: the next
    /// one follows.
    pub fn next_clip(&self) {
        self.pace
            .clips_done
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// [`SimCamera::start_sequence`] with recordings the camera lists in RecordInfo answers
    /// (gb28181sink's `records`: `start/end;...`, times `yyyy-MM-ddTHH:mm:ss`).
    pub fn start_with_records(
        clips: &[&Clip],
        s: &SimSettings,
        records: &str,
    ) -> Result<SimCamera, String> {
        SimCamera::start_full(clips, s, records, &SipOptions::default())
    }

    /// [`SimCamera::start`] with its SIP behaviour chosen ([`SipOptions`]).
    pub fn start_with_sip(
        clip: &Clip,
        s: &SimSettings,
        sip: &SipOptions,
    ) -> Result<SimCamera, String> {
        SimCamera::start_full(&[clip], s, "", sip)
    }

    fn start_full(
        clips: &[&Clip],
        s: &SimSettings,
        records: &str,
        sip: &SipOptions,
    ) -> Result<SimCamera, String> {
        let pipeline = gst::Pipeline::with_name(&format!("camera-{}", s.device_id));
        let mk = |f: &str| {
            gst::ElementFactory::make(f)
                .build()
                .map_err(|e| format!("{f}: {e}"))
        };
        let mux = mk("psmux")?;
        let sink = gst::ElementFactory::make("gb28181sink")
            .property("server-ip", &s.server_ip)
            .property("server-port", u32::from(s.server_port))
            .property("server-id", &s.server_id)
            .property("device-id", &s.device_id)
            .property("password", &s.password)
            .property("keepalive-interval", sip.keepalive_ms)
            .property_from_str("sip-transport", if sip.tcp { "tcp" } else { "udp" })
            .property("device-name", format!("Simulated camera {}", s.device_id))
            .property("records", records)
            // Paced before the mux ([`Pace`]): the content timestamps are not the send times.
            .property("sync", false)
            .build()
            .map_err(|e| format!("gb28181sink: {e}"))?;
        pipeline
            .add_many([&mux, &sink])
            .map_err(|e| e.to_string())?;
        mux.link(&sink).map_err(|e| e.to_string())?;
        let pace = add_paced_sources(&pipeline, &mux, clips, s.audio)?;
        follow_playback_control(&pipeline, &pace);
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| format!("camera {}: {e}", s.device_id))?;
        Ok(SimCamera {
            device_id: s.device_id.clone(),
            pipeline,
            sink,
            pace,
        })
    }

    /// A camera that encodes live (H.264) and draws its capture time into every picture
    /// ([`draw_time_code`]): the wall clock in ms, when the frame goes into the encoder.
    /// Latency tests read it back from the decoded picture ([`read_time_code`] tells how).
    pub fn start_time_coded(
        s: &SimSettings,
        width: u32,
        height: u32,
        bitrate_kbps: u32,
    ) -> Result<SimCamera, String> {
        let audio = if s.audio {
            " audiotestsrc is-live=true wave=sine freq=440 samplesperbuffer=320 \
             ! audio/x-raw,rate=8000,channels=1 ! alawenc ! queue ! m."
        } else {
            ""
        };
        let desc = format!(
            "videotestsrc is-live=true pattern=smpte \
             ! video/x-raw,format=I420,width={width},height={height},framerate={FPS}/1 \
             ! identity name=stamp ! x264enc tune=zerolatency speed-preset=ultrafast \
               key-int-max={FPS} bitrate={bitrate_kbps} ! video/x-h264,profile=baseline \
             ! h264parse config-interval=-1 ! video/x-h264,stream-format=byte-stream,alignment=au \
             ! queue ! psmux name=m ! gb28181sink name=sink{audio}"
        );
        let pipeline = gst::parse::launch(&desc)
            .map_err(|e| format!("time-coded camera: {e}"))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| "not a pipeline".to_string())?;
        let sink = pipeline.by_name("sink").ok_or("no sink")?;
        sink.set_property("server-ip", &s.server_ip);
        sink.set_property("server-port", u32::from(s.server_port));
        sink.set_property("server-id", &s.server_id);
        sink.set_property("device-id", &s.device_id);
        sink.set_property("password", &s.password);
        sink.set_property("keepalive-interval", SipOptions::default().keepalive_ms);
        sink.set_property("device-name", format!("Simulated camera {}", s.device_id));
        let stamp = pipeline
            .by_name("stamp")
            .and_then(|e| e.static_pad("src"))
            .ok_or("no stamp pad")?;
        let (w, h) = (width as usize, height as usize);
        stamp.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(gst::PadProbeData::Buffer(b)) = &mut info.data {
                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                let b = b.make_mut();
                if let Ok(mut map) = b.map_writable() {
                    draw_time_code(map.as_mut_slice(), w, h, now_ms);
                }
            }
            gst::PadProbeReturn::Ok
        });
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| format!("camera {}: {e}", s.device_id))?;
        Ok(SimCamera {
            device_id: s.device_id.clone(),
            pipeline,
            sink,
            pace: Arc::default(),
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

    /// The camera's gb28181sink (its input's timestamps are the recording's content time).
    pub fn sink(&self) -> &gst::Element {
        &self.sink
    }

    /// Stops the camera: EOS lets the sink end its session (BYE) and unregister.
    pub fn stop(&self) {
        self.pace.stop();
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

/// `appsrc ! queue` per stream of `clips` (each once, the last one in a loop) into `mux`,
/// each frame held at the queue's output until its time comes ([`Pace`]), like a real
/// camera's.
fn add_paced_sources(
    pipeline: &gst::Pipeline,
    mux: &gst::Element,
    clips: &[&Clip],
    audio: bool,
) -> Result<Arc<Pace>, String> {
    let Some(clip) = clips.first() else {
        return Err("no clip".into());
    };
    let parts = |video: bool| -> Result<Vec<Part>, String> {
        clips
            .iter()
            .map(|c| {
                let (caps, frames) = if video {
                    (c.video_caps.clone(), &c.video)
                } else {
                    (c.audio_caps.clone(), &c.audio)
                };
                caps.map(|caps| (caps, frames.clone(), c.length))
                    .ok_or_else(|| "every clip needs the streams of the first".to_string())
            })
            .collect()
    };
    let mk = |f: &str| {
        gst::ElementFactory::make(f)
            .build()
            .map_err(|e| format!("{f}: {e}"))
    };
    // Each stream paced like a real camera: one frame when its time comes (the appsrc is
    // not live and runs ahead; psmux would then send a second of frames in one burst).
    let pace = Arc::new(Pace::default());
    let streams = [
        (clip.video_caps.as_ref(), true, 4 * 1024 * 1024),
        (
            clip.audio_caps.as_ref().filter(|_| audio),
            false,
            256 * 1024,
        ),
    ];
    for (caps, video, max_bytes) in streams {
        let Some(caps) = caps else { continue };
        let parts = parts(video)?;
        let src = gst_app::AppSrc::builder()
            .caps(caps)
            .format(gst::Format::Time)
            .max_bytes(max_bytes)
            .build();
        let q = mk("queue")?;
        pipeline
            .add_many([src.upcast_ref(), &q])
            .map_err(|e| e.to_string())?;
        gst::Element::link_many([src.upcast_ref(), &q, mux]).map_err(|e| e.to_string())?;
        let out = q.static_pad("src").ok_or("queue without src pad")?;
        let (p, el) = (pace.clone(), q.clone());
        out.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            let Some(gst::PadProbeData::Buffer(b)) = &info.data else {
                return gst::PadProbeReturn::Ok;
            };
            let content = b.pts().map(|t| t.nseconds()).unwrap_or(0);
            if p.wait(&el, content, b.offset()) {
                gst::PadProbeReturn::Ok
            } else {
                gst::PadProbeReturn::Drop
            }
        });
        feed(&src, parts, pace.clone());
    }
    Ok(pace)
}

/// Hands the sink's `gb28181-playback-control` messages to `pace` as they are posted (they
/// stay on the bus for whoever reads it).
fn follow_playback_control(pipeline: &gst::Pipeline, pace: &Arc<Pace>) {
    let Some(bus) = pipeline.bus() else { return };
    let pace = Arc::downgrade(pace);
    let weak = pipeline.downgrade();
    bus.set_sync_handler(move |_, msg| {
        if let gst::MessageView::Element(e) = msg.view()
            && let Some(s) = e.structure()
            && s.name() == "gb28181-playback-control"
            && let (Some(pace), Some(pipeline)) = (pace.upgrade(), weak.upgrade())
        {
            let now = pipeline
                .clock()
                .zip(pipeline.base_time())
                .map(|(c, b)| c.time().saturating_sub(b).nseconds())
                .unwrap_or(0);
            pace.control(
                s.get::<&str>("method").unwrap_or("PLAY"),
                s.get::<f64>("scale").ok(),
                s.get::<f64>("npt").ok(),
                now,
            );
        }
        gst::BusSyncReply::Pass
    });
}

/// Side of one block of the time code, in pixels.
pub const TIME_CODE_BLOCK: usize = 16;
/// Blocks per row of the time code (32 bits in 4 rows).
pub const TIME_CODE_COLUMNS: usize = 8;
pub const TIME_CODE_BITS: usize = 32;

/// Draws the low 32 bits of `ms` into the top-left corner of an I420 picture (`w`x`h`, no
/// row padding): bit 31 first, row by row, 8 blocks of 16x16 a row, white = 1, black = 0
/// (grey chroma). A picture too small for it is left alone.
pub fn draw_time_code(frame: &mut [u8], w: usize, h: usize, ms: u64) {
    let b = TIME_CODE_BLOCK;
    let rows = TIME_CODE_BITS / TIME_CODE_COLUMNS;
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    if w < TIME_CODE_COLUMNS * b || h < rows * b || frame.len() < w * h + 2 * cw * ch {
        return;
    }
    let code = ms as u32;
    for bit in 0..TIME_CODE_BITS {
        let on = code >> (TIME_CODE_BITS - 1 - bit) & 1 == 1;
        let (bx, by) = ((bit % TIME_CODE_COLUMNS) * b, (bit / TIME_CODE_COLUMNS) * b);
        for y in by..by + b {
            frame[y * w + bx..y * w + bx + b].fill(if on { 235 } else { 16 });
        }
        for plane in 0..2 {
            let base = w * h + plane * cw * ch;
            for y in by / 2..(by + b) / 2 {
                frame[base + y * cw + bx / 2..base + y * cw + (bx + b) / 2].fill(128);
            }
        }
    }
}

/// Reads a time code back from the luma of a picture (`luma(x, y)`): the centre of each
/// block, above mid grey = 1.
pub fn read_time_code(luma: impl Fn(usize, usize) -> u8) -> u32 {
    let b = TIME_CODE_BLOCK;
    (0..TIME_CODE_BITS).fold(0u32, |code, bit| {
        let (x, y) = (
            (bit % TIME_CODE_COLUMNS) * b + b / 2,
            (bit / TIME_CODE_COLUMNS) * b + b / 2,
        );
        code << 1 | u32::from(luma(x, y) > 128)
    })
}

/// Paced PS over RTP from a clip to a UDP address, without SIP: what a camera sends once a
/// platform opened an RTP port for it (e.g. ZLMediaKit's `openRtpServer`), for benchmarks.
pub struct RtpPsSender {
    pipeline: gst::Pipeline,
}

impl RtpPsSender {
    pub fn start(
        clip: &Clip,
        dest: std::net::SocketAddr,
        ssrc: u32,
        audio: bool,
    ) -> Result<Self, String> {
        let pipeline = gst::Pipeline::with_name(&format!("rtp-ps-{dest}"));
        let mux = gst::ElementFactory::make("psmux")
            .build()
            .map_err(|e| format!("psmux: {e}"))?;
        let pay = gst::ElementFactory::make("rtppspay")
            .property("ssrc", ssrc)
            .build()
            .map_err(|e| format!("rtppspay: {e}"))?;
        let sink = gst::ElementFactory::make("udpsink")
            .property("host", dest.ip().to_string())
            .property("port", i32::from(dest.port()))
            .property("sync", false)
            .property("async", false)
            .build()
            .map_err(|e| format!("udpsink: {e}"))?;
        pipeline
            .add_many([&mux, &pay, &sink])
            .map_err(|e| e.to_string())?;
        gst::Element::link_many([&mux, &pay, &sink]).map_err(|e| e.to_string())?;
        add_paced_sources(&pipeline, &mux, &[clip], audio)?;
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| format!("sender to {dest}: {e}"))?;
        Ok(RtpPsSender { pipeline })
    }
}

impl Drop for RtpPsSender {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Stops many cameras at once: EOS to all (each sink sends BYE and unregisters), then waits
/// (bounded) and tears them down.
pub fn stop_all(cams: &[SimCamera]) {
    for c in cams {
        c.pace.stop();
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
        self.pace.stop();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_code_reads_back() {
        let (w, h) = (320, 240);
        let mut f = vec![0u8; w * h * 3 / 2];
        for ms in [0u64, 1, 1_795_732_825_125, u64::from(u32::MAX)] {
            draw_time_code(&mut f, w, h, ms);
            assert_eq!(read_time_code(|x, y| f[y * w + x]), ms as u32);
        }
        // Too small a picture is left alone.
        let mut small = vec![7u8; 64 * 48 * 3 / 2];
        draw_time_code(&mut small, 64, 48, 5);
        assert!(small.iter().all(|&v| v == 7));
    }
}

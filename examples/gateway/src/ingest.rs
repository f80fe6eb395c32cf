//! The camera side of one channel: `gb28181src ! psdemux`, each elementary stream parsed
//! (`h264parse`/`h265parse`/`aacparse`, G.711 as is) into an appsink, and fanned out to any
//! number of subscribers (`appsrc`s of RTSP medias, HLS/recording). One ingest = one INVITE;
//! it stops (BYE) when its last subscriber leaves.
//!
//! Decoupling the camera from gst-rtsp-server this way keeps the RTSP media static
//! (`appsrc ! rtph264pay name=pay0 ...`, built once the streams are known) instead of relying
//! on dynamic payloaders, and lets HLS/recording share the session.
//!
//! New viewers start clean: the ingest keeps the latest GOP (the frames since the last video
//! key frame, audio included) and a viewer's appsrcs get it first, then the live frames, with
//! the camera's timestamps shifted so that the cached key frame is at the start of the
//! viewer's pipeline: the first picture decodes at once and timestamps stay continuous (no
//! P-frames without their key frame, no DTS going back). The viewer runs behind live by at
//! most the age of the cached GOP.
//!
//! Limits: subscribers are appsrcs with bounded queues ([`SUBSCRIBER_MAX_BYTES`], oldest data
//! dropped when a subscriber is slow); at most [`MAX_SUBSCRIBERS`] per channel; the GOP cache
//! holds at most [`GOP_MAX_BYTES`] and [`GOP_MAX_FRAMES`] (a longer GOP is not cached: viewers
//! then start at the next key frame).

use crate::factory::CAT;
use gst::prelude::*;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

pub const SUBSCRIBER_MAX_BYTES: u64 = 8 * 1024 * 1024;
pub const MAX_SUBSCRIBERS: usize = 1024;
/// After video is known, how long to wait for audio before declaring the streams.
pub const AUDIO_WAIT: Duration = Duration::from_millis(1500);
pub const GOP_MAX_BYTES: usize = 16 * 1024 * 1024;
/// Video and audio frames (10 s of 25 fps video with 50 audio frames a second).
pub const GOP_MAX_FRAMES: usize = 750;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Video,
    Audio,
}

/// How a subscriber's buffers are timed.
enum Timing {
    /// The camera's timing on the clock (HLS, recording): starts at a video key frame.
    Camera,
    /// A viewer: starts with the cached GOP, timestamps shifted by the group's offset.
    Viewer(Arc<ViewerGroup>),
}

/// The appsrcs of one viewer's media share one time offset (audio and video stay in sync).
#[derive(Default)]
pub struct ViewerGroup {
    /// Added to a frame's clock time to get the viewer pipeline's running time (ns).
    offset_ns: Mutex<Option<i64>>,
    has_video: bool,
}

struct Subscriber {
    id: u64,
    kind: Kind,
    src: gst_app::AppSrc,
    /// Receiving data (video subscribers start at a key frame).
    started: bool,
    timing: Timing,
}

#[derive(Default)]
struct State {
    video_caps: Option<gst::Caps>,
    audio_caps: Option<gst::Caps>,
    video_since: Option<Instant>,
    first_data: Option<Instant>,
    subscribers: Vec<Subscriber>,
    next_id: u64,
    /// Users that are not subscribers yet (a media being built).
    holds: u32,
    failed: Option<String>,
    stopped: bool,
    /// Frames since the last video key frame (that key frame first), with their clock
    /// times; empty when there is no key frame yet or the GOP outgrew the limits.
    gop: Vec<(Kind, gst::Buffer, u64)>,
    gop_bytes: usize,
    /// Arrival (gb28181src timestamp) to fan-out, since the last [`Ingest::take_latency`].
    lat_sum_ns: u64,
    lat_count: u64,
    lat_max_ns: u64,
}

/// A running ingest.
pub struct Ingest {
    pub channel: String,
    pipeline: gst::Pipeline,
    src: gst::Element,
    state: Mutex<State>,
    cond: Condvar,
    /// gb28181src's stats as last read by [`refresh_stats`](Self::refresh_stats): the
    /// property takes the element's own lock, so it is never read with gateway locks held.
    stats: Mutex<Option<gst::Structure>>,
}

/// The launch fragment after the demuxer for a stream's caps; None = not used.
fn parser_for(caps: &gst::CapsRef) -> Option<(Kind, &'static str)> {
    let s = caps.structure(0)?;
    Some(match s.name().as_str() {
        "video/x-h264" => (
            Kind::Video,
            "h264parse config-interval=-1 ! video/x-h264,stream-format=byte-stream,alignment=au",
        ),
        "video/x-h265" => (
            Kind::Video,
            "h265parse config-interval=-1 ! video/x-h265,stream-format=byte-stream,alignment=au",
        ),
        "audio/x-alaw" | "audio/x-mulaw" => (Kind::Audio, "identity"),
        "audio/mpeg" if s.get::<i32>("mpegversion").ok() != Some(1) => {
            // Raw AAC with codec_data: what rtpmp4gpay and mp4mux take (mpegtsmux too).
            (Kind::Audio, "aacparse ! audio/mpeg,stream-format=raw")
        }
        _ => return None,
    })
}

/// The payloader for the caps an ingest publishes.
pub fn payloader_for(caps: &gst::CapsRef, pt: u32) -> Option<String> {
    let s = caps.structure(0)?;
    Some(match s.name().as_str() {
        "video/x-h264" => format!("rtph264pay pt={pt}"),
        "video/x-h265" => format!("rtph265pay config-interval=-1 pt={pt}"),
        "audio/x-alaw" => "rtppcmapay pt=8".into(),
        "audio/x-mulaw" => "rtppcmupay pt=0".into(),
        "audio/mpeg" => format!("rtpmp4gpay pt={pt}"),
        _ => return None,
    })
}

impl Ingest {
    /// Starts the camera session (INVITE happens as the pipeline starts).
    pub fn start(
        channel: &str,
        src_properties: &[(String, String)],
    ) -> Result<Arc<Ingest>, String> {
        let pipeline = gst::Pipeline::with_name(&format!("ingest-{channel}"));
        let src = gst::ElementFactory::make("gb28181src")
            .name("src")
            .build()
            .map_err(|e| format!("gb28181src: {e}"))?;
        for (k, v) in src_properties {
            if src.find_property(k).is_some() {
                src.set_property_from_str(k, v);
            }
        }
        let demux = gst::ElementFactory::make("psdemux")
            .build()
            .map_err(|e| format!("psdemux: {e}"))?;
        pipeline
            .add_many([&src, &demux])
            .map_err(|e| e.to_string())?;
        src.link(&demux).map_err(|e| e.to_string())?;
        let ingest = Arc::new(Ingest {
            channel: channel.to_string(),
            pipeline: pipeline.clone(),
            src,
            state: Mutex::new(State::default()),
            cond: Condvar::new(),
            stats: Mutex::new(None),
        });
        let weak = Arc::downgrade(&ingest);
        demux.connect_pad_added(move |_, pad| {
            if let Some(i) = weak.upgrade() {
                i.on_pad(pad);
            }
        });
        // Errors (camera gone, refused INVITE, stream timeout) end the ingest.
        let weak = Arc::downgrade(&ingest);
        let bus = pipeline.bus().ok_or("no bus")?;
        std::thread::Builder::new()
            .name(format!("ingest-bus-{channel}"))
            .spawn(move || watch_bus(bus, weak))
            .map_err(|e| e.to_string())?;
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| format!("ingest {channel}: {e}"))?;
        Ok(ingest)
    }

    fn on_pad(self: &Arc<Self>, pad: &gst::Pad) {
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let Some((kind, parse)) = parser_for(&caps) else {
            gst::info!(
                CAT,
                "{}: ignoring stream {} ({caps})",
                self.channel,
                pad.name()
            );
            return;
        };
        {
            let st = lock(&self.state);
            let known = match kind {
                Kind::Video => st.video_caps.is_some(),
                Kind::Audio => st.audio_caps.is_some(),
            };
            if known {
                return;
            }
        }
        let desc = format!(
            "queue leaky=downstream max-size-buffers=0 max-size-bytes=0 max-size-time=2000000000 ! {parse} ! appsink name=sink sync=false emit-signals=false max-buffers=0"
        );
        let Ok(chain) = gst::parse::bin_from_description(&desc, true) else {
            return;
        };
        let Some(sink) = chain
            .by_name("sink")
            .and_then(|s| s.downcast::<gst_app::AppSink>().ok())
        else {
            return;
        };
        let weak: Weak<Ingest> = Arc::downgrade(self);
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    if let Some(i) = weak.upgrade() {
                        i.on_sample(kind, &sample);
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        if self.pipeline.add(&chain).is_err() {
            return;
        }
        let _ = chain.sync_state_with_parent();
        if let Some(sinkpad) = chain.static_pad("sink") {
            let _ = pad.link(&sinkpad);
        }
        gst::info!(CAT, "{}: stream {} ({caps})", self.channel, pad.name());
    }

    fn on_sample(&self, kind: Kind, sample: &gst::Sample) {
        let (Some(buffer), Some(caps)) = (sample.buffer_owned(), sample.caps_owned()) else {
            return;
        };
        let lat = buffer
            .pts()
            .zip(self.pipeline.base_time())
            .zip(self.pipeline.clock().map(|c| c.time()))
            .map(|((p, b), now)| now.saturating_sub(p + b).nseconds());
        // The buffer's time on the (shared, system) clock.
        let Some(abs) = buffer
            .pts()
            .zip(self.pipeline.base_time())
            .map(|(p, b)| (p + b).nseconds())
        else {
            return;
        };
        let key = kind == Kind::Video && !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
        let mut st = lock(&self.state);
        if let Some(l) = lat {
            st.lat_sum_ns += l;
            st.lat_count += 1;
            st.lat_max_ns = st.lat_max_ns.max(l);
        }
        st.first_data.get_or_insert_with(Instant::now);
        let changed = match kind {
            Kind::Video => st.video_caps.as_ref() != Some(&caps),
            Kind::Audio => st.audio_caps.as_ref() != Some(&caps),
        };
        if changed {
            match kind {
                Kind::Video => {
                    st.video_caps = Some(caps.clone());
                    st.video_since.get_or_insert_with(Instant::now);
                }
                Kind::Audio => st.audio_caps = Some(caps.clone()),
            }
            self.cond.notify_all();
        }
        cache_frame(&mut st, kind, &buffer, abs, key);
        let State {
            subscribers, gop, ..
        } = &mut *st;
        for s in subscribers.iter_mut().filter(|s| s.kind == kind) {
            match &s.timing {
                Timing::Camera => {
                    if kind == Kind::Video && !s.started && !key {
                        continue;
                    }
                    s.started = true;
                    push_at(&s.src, &buffer, abs, None);
                }
                Timing::Viewer(group) => {
                    if s.started {
                        let offset = *lock(&group.offset_ns);
                        push_at(&s.src, &buffer, abs, offset);
                        continue;
                    }
                    // Not started: begin with the cached GOP (which ends with this frame)
                    // once the viewer's appsrc accepts data; audio waits for the video.
                    if s.src.current_state() < gst::State::Paused {
                        continue;
                    }
                    let mut offset = lock(&group.offset_ns);
                    if offset.is_none() {
                        if group.has_video && kind == Kind::Audio {
                            continue;
                        }
                        let first = match gop.first() {
                            Some((Kind::Video, _, t)) => *t,
                            _ if group.has_video => continue,
                            _ => abs,
                        };
                        // The cached key frame is at running time 0: the viewer's pipeline
                        // starts running right after it prerolled on that frame.
                        *offset = Some(-(first as i64));
                    }
                    let off = *offset;
                    drop(offset);
                    let cached: Vec<_> = gop.iter().filter(|(k, _, _)| *k == kind).collect();
                    gst::debug!(
                        CAT,
                        "{}: viewer {} starts with {} cached {kind:?} frames",
                        self.channel,
                        s.id,
                        cached.len()
                    );
                    if cached.is_empty() {
                        push_at(&s.src, &buffer, abs, off);
                    } else {
                        for (_, b, t) in cached {
                            push_at(&s.src, b, *t, off);
                        }
                    }
                    s.started = true;
                }
            }
        }
    }

    /// Waits (bounded) until the streams are known: video, plus audio if it comes within
    /// [`AUDIO_WAIT`]; or audio alone after a few seconds of data.
    pub fn wait_streams(
        &self,
        timeout: Duration,
    ) -> Result<(Option<gst::Caps>, Option<gst::Caps>), String> {
        let end = Instant::now() + timeout;
        let mut st = lock(&self.state);
        loop {
            if let Some(e) = &st.failed {
                return Err(e.clone());
            }
            // Stopped while the caller got it (its last user left meanwhile): its streams
            // would never flow again.
            if st.stopped {
                return Err(format!("{}: ingest stopped", self.channel));
            }
            let now = Instant::now();
            let video_done = st
                .video_since
                .is_some_and(|t| st.audio_caps.is_some() || now.duration_since(t) >= AUDIO_WAIT);
            let audio_only = st.video_caps.is_none()
                && st.audio_caps.is_some()
                && st
                    .first_data
                    .is_some_and(|t| now.duration_since(t) >= Duration::from_secs(4));
            if video_done || audio_only {
                return Ok((st.video_caps.clone(), st.audio_caps.clone()));
            }
            if now >= end {
                return Err(format!("{}: no media within {timeout:?}", self.channel));
            }
            let wait = (end - now).min(Duration::from_millis(100));
            st = self
                .cond
                .wait_timeout(st, wait)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    /// Keeps the ingest alive while a user is being set up.
    pub fn hold(&self) {
        lock(&self.state).holds += 1;
    }

    pub fn release(&self) {
        let mut st = lock(&self.state);
        st.holds = st.holds.saturating_sub(1);
    }

    /// Feeds a viewer's appsrcs (one per kind, one media): they start with the cached GOP,
    /// in sync. Returns the subscription ids for [`unsubscribe`](Self::unsubscribe).
    pub fn subscribe_viewer(&self, srcs: &[(Kind, gst_app::AppSrc)]) -> Vec<u64> {
        let group = Arc::new(ViewerGroup {
            offset_ns: Mutex::new(None),
            has_video: srcs.iter().any(|(k, _)| *k == Kind::Video),
        });
        srcs.iter()
            .filter_map(|(kind, src)| self.add(*kind, src, Timing::Viewer(group.clone())))
            .collect()
    }

    /// Feeds `src` with the stream of `kind` in the camera's timing (HLS, recording), from
    /// the next video key frame; `keep_timing == false` makes it a viewer of its own.
    pub fn subscribe_with(
        &self,
        kind: Kind,
        src: &gst_app::AppSrc,
        keep_timing: bool,
    ) -> Option<u64> {
        if keep_timing {
            self.add(kind, src, Timing::Camera)
        } else {
            self.subscribe_viewer(&[(kind, src.clone())]).pop()
        }
    }

    fn add(&self, kind: Kind, src: &gst_app::AppSrc, timing: Timing) -> Option<u64> {
        src.set_max_bytes(SUBSCRIBER_MAX_BYTES);
        src.set_leaky_type(gst_app::AppLeakyType::Downstream);
        let mut st = lock(&self.state);
        if st.subscribers.len() >= MAX_SUBSCRIBERS || st.stopped {
            return None;
        }
        st.next_id += 1;
        let id = st.next_id;
        gst::debug!(CAT, "{}: subscriber {id} ({kind:?})", self.channel);
        st.subscribers.push(Subscriber {
            id,
            kind,
            src: src.clone(),
            started: false,
            timing,
        });
        Some(id)
    }

    /// Removes a subscriber; true when nobody uses the ingest any more.
    pub fn unsubscribe(&self, id: u64) -> bool {
        let mut st = lock(&self.state);
        st.subscribers.retain(|s| s.id != id);
        st.subscribers.is_empty() && st.holds == 0
    }

    pub fn is_unused(&self) -> bool {
        let st = lock(&self.state);
        st.subscribers.is_empty() && st.holds == 0
    }

    pub fn is_failed(&self) -> bool {
        let st = lock(&self.state);
        st.failed.is_some() || st.stopped
    }

    /// Blocks until the ingest fails or stops (true) or `timeout` passes (false).
    pub fn wait_failed(&self, timeout: Duration) -> bool {
        let st = lock(&self.state);
        let (st, _) = self
            .cond
            .wait_timeout_while(st, timeout, |st| st.failed.is_none() && !st.stopped)
            .unwrap_or_else(|e| e.into_inner());
        st.failed.is_some() || st.stopped
    }

    /// (average, maximum) time in ms from a frame's arrival in gb28181src to its hand-over to
    /// the subscribers since the last call.
    pub fn take_latency(&self) -> Option<(f64, f64)> {
        let mut st = lock(&self.state);
        if st.lat_count == 0 {
            return None;
        }
        let r = (
            st.lat_sum_ns as f64 / st.lat_count as f64 / 1e6,
            st.lat_max_ns as f64 / 1e6,
        );
        st.lat_sum_ns = 0;
        st.lat_count = 0;
        st.lat_max_ns = 0;
        Some(r)
    }

    /// gb28181src's statistics as last refreshed (never blocks).
    pub fn src_stats(&self) -> Option<gst::Structure> {
        lock(&self.stats).clone()
    }

    /// Reads gb28181src's `stats` property (may block while the element is busy: call it
    /// without holding other locks).
    pub fn refresh_stats(&self) {
        let s = self.src.property::<Option<gst::Structure>>("stats");
        if s.is_some() {
            *lock(&self.stats) = s;
        }
    }

    /// Stops the pipeline (gb28181src sends BYE) and ends every subscriber's stream.
    pub fn stop(&self) {
        let subs = {
            let mut st = lock(&self.state);
            st.stopped = true;
            self.cond.notify_all();
            std::mem::take(&mut st.subscribers)
        };
        let _ = self.pipeline.set_state(gst::State::Null);
        for s in subs {
            let _ = s.src.end_of_stream();
        }
        gst::info!(CAT, "{}: ingest stopped", self.channel);
    }

    fn fail(&self, why: String) {
        let subs = {
            let mut st = lock(&self.state);
            st.failed = Some(why);
            self.cond.notify_all();
            std::mem::take(&mut st.subscribers)
        };
        for s in subs {
            let _ = s.src.end_of_stream();
        }
    }
}

/// Adds a frame to the GOP cache: a video key frame starts it again; frames before the
/// first key frame, or past the limits, are not cached (the cache is dropped).
fn cache_frame(st: &mut State, kind: Kind, buffer: &gst::Buffer, abs: u64, key: bool) {
    if key {
        st.gop.clear();
        st.gop_bytes = 0;
    } else if st.gop.is_empty() {
        return;
    }
    if st.gop.len() >= GOP_MAX_FRAMES || st.gop_bytes + buffer.size() > GOP_MAX_BYTES {
        st.gop.clear();
        st.gop_bytes = 0;
        return;
    }
    st.gop_bytes += buffer.size();
    st.gop.push((kind, buffer.clone(), abs));
}

/// Pushes `buffer` (clock time `abs`) into `src`: shifted by `offset` for viewers, or at the
/// same instant in `src`'s running time (camera timing). Frames that would fall before the
/// pipeline's start are not pushed.
fn push_at(src: &gst_app::AppSrc, buffer: &gst::Buffer, abs: u64, offset: Option<i64>) {
    let pts = match offset {
        Some(off) => u64::try_from(abs as i64 + off).ok(),
        None => src
            .base_time()
            .and_then(|base| abs.checked_sub(base.nseconds())),
    };
    let Some(pts) = pts else { return };
    let mut b = buffer.clone();
    {
        let b = b.make_mut();
        b.set_dts(gst::ClockTime::NONE);
        b.set_pts(gst::ClockTime::from_nseconds(pts));
    }
    let _ = src.push_buffer(b);
}

impl Drop for Ingest {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn watch_bus(bus: gst::Bus, weak: Weak<Ingest>) {
    loop {
        let msg = bus.timed_pop_filtered(
            gst::ClockTime::from_mseconds(200),
            &[gst::MessageType::Error, gst::MessageType::Eos],
        );
        let Some(ingest) = weak.upgrade() else { return };
        if lock(&ingest.state).stopped {
            return;
        }
        let Some(msg) = msg else { continue };
        let why = match msg.view() {
            gst::MessageView::Error(e) => format!("{}", e.error()),
            _ => "end of stream (BYE)".to_string(),
        };
        eprintln!("[gateway] channel {}: {why}", ingest.channel);
        ingest.fail(why);
        return;
    }
}

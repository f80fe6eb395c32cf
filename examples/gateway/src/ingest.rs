//! The source side of one path: an [`IngestSource`] (a GB28181 camera's `gb28181src !
//! psdemux`, or any element whose pads carry elementary streams: a pulled RTSP camera, a
//! publisher), each elementary stream parsed (`h264parse`/`h265parse`/`aacparse`, G.711 as
//! is) into an appsink, and fanned out to any number of subscribers (`appsrc`s of RTSP
//! medias, HLS/recording). For a camera, one ingest = one INVITE; it stops (BYE) when its
//! last subscriber leaves.
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
//! The camera's codecs are followed live: when a stream's caps change (a camera reconfigured
//! from H.264 to H.265, or to another picture size), the demuxer's pad gets a new parser
//! before the next frame ([`Route`]), the GOP cache restarts, viewers of a codec they cannot
//! take get end-of-stream (their clients reconnect and get the new codec) while a size change
//! just updates their caps, and the stream [`generation`](Ingest::generation) moves on so
//! that HLS/recording start new files.
//!
//! A viewer that finds no key frame to start with, or only an old one, makes the ingest ask
//! the camera for one ([`KeyFrameRequests`], rate-limited per channel).
//!
//! Limits: subscribers are appsrcs with bounded queues ([`SUBSCRIBER_MAX_BYTES`], oldest data
//! dropped when a subscriber is slow); at most [`MAX_SUBSCRIBERS`] per channel; the GOP cache
//! holds at most [`GOP_MAX_BYTES`] and [`GOP_MAX_FRAMES`] (a longer GOP is not cached: viewers
//! then start at the next key frame).

use crate::factory::CAT;
use gst::prelude::*;
use gst_ipcam_common::sync::lock;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

pub const SUBSCRIBER_MAX_BYTES: u64 = 8 * 1024 * 1024;
pub const MAX_SUBSCRIBERS: usize = 1024;
/// After video is known, how long to wait for audio before declaring the streams.
pub const AUDIO_WAIT: Duration = Duration::from_millis(1500);
pub const GOP_MAX_BYTES: usize = 16 * 1024 * 1024;
/// Video and audio frames (10 s of 25 fps video with 50 audio frames a second).
pub const GOP_MAX_FRAMES: usize = 750;

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
    /// The caps `src` was built with or last given.
    caps: Option<gst::Caps>,
    /// Receiving data (video subscribers start at a key frame).
    started: bool,
    timing: Timing,
}

/// A subscriber fed with the frames' bytes in the ingest's thread (the direct RTSP path),
/// called with the ingest's lock held: it never blocks.
pub trait FrameSink: Send + Sync {
    /// A frame of `kind` (an Annex B access unit, or an audio frame) at clock time `time_ns`.
    /// False: this sink is done and is dropped.
    fn frame(&self, kind: Kind, data: &[u8], time_ns: u64, key: bool) -> bool;
    /// The stream of `kind` changed; false: this sink cannot follow and is dropped.
    fn caps_changed(&self, kind: Kind, change: CapsChange) -> bool;
    /// The ingest stopped or failed: no more frames.
    fn end(&self);
}

impl State {
    fn unused(&self) -> bool {
        self.subscribers.is_empty() && self.direct.is_empty() && self.holds == 0
    }
}

#[derive(Default)]
struct State {
    video_caps: Option<gst::Caps>,
    audio_caps: Option<gst::Caps>,
    video_since: Option<Instant>,
    first_data: Option<Instant>,
    subscribers: Vec<Subscriber>,
    /// Direct subscribers ([`FrameSink`]).
    direct: Vec<(u64, Arc<dyn FrameSink>)>,
    next_id: u64,
    /// Users that are not subscribers yet (a media being built).
    holds: u32,
    failed: Option<String>,
    stopped: bool,
    /// Frames since the last video key frame (that key frame first), with their clock
    /// times; empty when there is no key frame yet or the GOP outgrew the limits.
    gop: Vec<(Kind, gst::Buffer, u64)>,
    gop_bytes: usize,
    /// Arrival (the source's timestamp) to fan-out, since the last [`Ingest::take_latency`].
    lat_sum_ns: u64,
    lat_count: u64,
    lat_max_ns: u64,
    /// Caps changes of the streams seen so far.
    generation: u64,
    /// Arrival of the latest video key frame.
    last_key: Option<Instant>,
    last_key_request: Option<Instant>,
    key_requests: u64,
    /// Clock time of the previous frame of each kind (for frames without timestamps).
    last_video_ns: Option<u64>,
    last_audio_ns: Option<u64>,
}

/// How to ask the camera for a key frame (the gateway's SIP endpoint), and when.
pub struct KeyFrameRequests {
    /// A key frame older than this (or none) makes a new viewer ask; also the shortest
    /// interval between two requests.
    pub after: Duration,
    pub send: Box<dyn Fn() -> Result<(), String> + Send + Sync>,
}

/// Whether to ask the camera for a key frame now: a subscriber waits for one, or the latest
/// one is older than `after`; and the previous request is at least `after` (and 1 s) old.
pub fn key_frame_due(
    now: Instant,
    last_key: Option<Instant>,
    waiting: bool,
    last_request: Option<Instant>,
    after: Duration,
) -> bool {
    if last_request
        .is_some_and(|t| now.saturating_duration_since(t) < after.max(Duration::from_secs(1)))
    {
        return false;
    }
    waiting || last_key.is_none_or(|t| now.saturating_duration_since(t) >= after)
}

/// How a stream's caps changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapsChange {
    Same,
    /// Same codec and size (profile, level, codec data): the subscribers' caps are updated.
    Params,
    /// Same codec, another picture size, sample rate or channel count.
    Size,
    /// Another codec: its payloader/muxer cannot take it.
    Codec,
}

pub fn caps_change(old: &gst::CapsRef, new: &gst::CapsRef) -> CapsChange {
    if old == new {
        return CapsChange::Same;
    }
    let (Some(a), Some(b)) = (old.structure(0), new.structure(0)) else {
        return CapsChange::Codec;
    };
    let int = |s: &gst::StructureRef, f: &str| s.get::<i32>(f).ok();
    if a.name() != b.name() || int(a, "mpegversion") != int(b, "mpegversion") {
        return CapsChange::Codec;
    }
    if ["width", "height", "rate", "channels"]
        .iter()
        .any(|f| int(a, f) != int(b, f))
    {
        return CapsChange::Size;
    }
    CapsChange::Params
}

/// The parser chain a demuxer pad is linked to; replaced when the pad's caps need another.
struct Route {
    kind: Kind,
    /// The parser of `chain` (None: a stream we don't use, into a fakesink).
    parse: Option<&'static str>,
    chain: Option<gst::Bin>,
}

/// What [`Ingest::wait_streams`] found.
pub struct Streams {
    pub video: Option<gst::Caps>,
    pub audio: Option<gst::Caps>,
    /// [`Ingest::generation`] of these caps.
    pub generation: u64,
}

/// Where an ingest's elementary streams come from.
pub struct IngestSource {
    /// Added to the ingest's pipeline and linked in this order (a source that links
    /// dynamically inside, like `rtspsrc` to depayloaders, is one bin that adds ghost pads).
    pub elements: Vec<gst::Element>,
    /// The element (one of `elements`) whose src pads, sometimes or always, carry the
    /// elementary streams (H.264/H.265 in any stream format, AAC, G.711); a pad's stream is
    /// taken when its caps are known.
    pub streams_from: gst::Element,
    /// The element asked for statistics (its `stats` structure property, when it has one)
    /// and for control ([`Ingest::source`]): gb28181src for a camera.
    pub control: gst::Element,
}

impl IngestSource {
    /// A GB28181 camera: `gb28181src ! psdemux`, gb28181src with `src_properties` (the
    /// ones it does not have are ignored). The INVITE happens as the pipeline starts.
    pub fn gb28181(src_properties: &[(String, String)]) -> Result<IngestSource, String> {
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
        Ok(IngestSource {
            elements: vec![src.clone(), demux.clone()],
            streams_from: demux,
            control: src,
        })
    }
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
    key_frames: Mutex<Option<KeyFrameRequests>>,
    started_at: Instant,
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
    /// Starts a GB28181 camera session (INVITE happens as the pipeline starts).
    pub fn start(
        channel: &str,
        src_properties: &[(String, String)],
    ) -> Result<Arc<Ingest>, String> {
        Self::start_source(channel, IngestSource::gb28181(src_properties)?)
    }

    /// Starts an ingest of `source`'s streams for path `channel`.
    pub fn start_source(channel: &str, source: IngestSource) -> Result<Arc<Ingest>, String> {
        let pipeline = gst::Pipeline::with_name(&format!("ingest-{channel}"));
        pipeline
            .add_many(&source.elements)
            .map_err(|e| e.to_string())?;
        gst::Element::link_many(&source.elements).map_err(|e| format!("{channel}: {e}"))?;
        let (src, demux) = (source.control, source.streams_from);
        let ingest = Arc::new(Ingest {
            channel: channel.to_string(),
            pipeline: pipeline.clone(),
            src,
            state: Mutex::new(State::default()),
            cond: Condvar::new(),
            stats: Mutex::new(None),
            key_frames: Mutex::new(None),
            started_at: Instant::now(),
        });
        let weak = Arc::downgrade(&ingest);
        demux.connect_pad_added(move |_, pad| {
            if let Some(i) = weak.upgrade() {
                i.on_pad(pad);
            }
        });
        for pad in demux.src_pads() {
            ingest.on_pad(&pad);
        }
        // Errors (camera gone, refused INVITE, stream timeout) end the ingest, handled in the
        // thread that posts them: no thread per channel polling the bus.
        let weak = Arc::downgrade(&ingest);
        let bus = pipeline.bus().ok_or("no bus")?;
        bus.set_sync_handler(move |_, msg| {
            on_bus_message(&weak, msg);
            gst::BusSyncReply::Drop
        });
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| format!("ingest {channel}: {e}"))?;
        Ok(ingest)
    }

    fn on_pad(self: &Arc<Self>, pad: &gst::Pad) {
        let Some(caps) = pad.current_caps() else {
            // Taken when its caps come (an always pad, or a pad added before its caps).
            let weak: Weak<Ingest> = Arc::downgrade(self);
            pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |pad, info| {
                let Some(gst::PadProbeData::Event(e)) = &info.data else {
                    return gst::PadProbeReturn::Ok;
                };
                if e.type_() != gst::EventType::Caps {
                    return gst::PadProbeReturn::Ok;
                }
                if let (Some(i), gst::EventView::Caps(c)) = (weak.upgrade(), e.view()) {
                    let caps = c.caps_owned();
                    // Sticky: once the probe is gone the caps event goes on to the chain
                    // linked here.
                    i.take_stream(pad, caps);
                }
                gst::PadProbeReturn::Remove
            });
            return;
        };
        self.take_stream(pad, caps);
    }

    fn take_stream(self: &Arc<Self>, pad: &gst::Pad, caps: gst::Caps) {
        let Some((kind, _)) = parser_for(&caps) else {
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
        let route = Arc::new(Mutex::new(Route {
            kind,
            parse: None,
            chain: None,
        }));
        self.reroute(pad, &mut lock(&route), &caps);
        // Caps that need another parser are held back here: the chain is replaced before the
        // next buffer (below), and the pad then sends stream-start, caps and segment to the
        // new chain in order.
        let r = route.clone();
        pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
            if let Some(gst::PadProbeData::Event(e)) = &info.data
                && let gst::EventView::Caps(c) = e.view()
            {
                let route = lock(&r);
                if parser_for(c.caps())
                    .filter(|(k, _)| *k == route.kind)
                    .map(|(_, p)| p)
                    != route.parse
                {
                    // Handled (not Drop: a dropped sticky event ends in a CRITICAL in
                    // GStreamer 1.22's push path); the relink re-sends it.
                    return gst::PadProbeReturn::Handled;
                }
            }
            gst::PadProbeReturn::Ok
        });
        let weak: Weak<Ingest> = Arc::downgrade(self);
        pad.add_probe(
            gst::PadProbeType::BLOCK | gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
            move |pad, _| {
                let caps = pad
                    .sticky_event::<gst::event::Caps>(0)
                    .map(|c| c.caps_owned());
                if let (Some(i), Some(caps)) = (weak.upgrade(), caps) {
                    i.reroute(pad, &mut lock(&route), &caps);
                }
                gst::PadProbeReturn::Pass
            },
        );
    }

    /// Links `pad` to a parser chain for `caps` unless its chain already has that parser
    /// (runs in the pad's streaming thread, before a buffer, or at pad-added).
    fn reroute(self: &Arc<Self>, pad: &gst::Pad, route: &mut Route, caps: &gst::CapsRef) {
        let kind = route.kind;
        let parse = parser_for(caps).filter(|(k, _)| *k == kind).map(|(_, p)| p);
        if route.chain.is_some() && parse == route.parse {
            return;
        }
        if let Some(old) = route.chain.take() {
            gst::info!(
                CAT,
                "{}: stream {} is now {caps}: new parser",
                self.channel,
                pad.name()
            );
            if let Some(sinkpad) = old.static_pad("sink") {
                let _ = pad.unlink(&sinkpad);
            }
            let _ = old.set_state(gst::State::Null);
            let _ = self.pipeline.remove(&old);
        }
        // No queue: the source is live and the appsink never prerolls (async=false: a sink
        // added to the playing pipeline would otherwise make it preroll again, and with one
        // streaming thread for every stream of the demuxer that deadlocks), and handing the
        // frames to the subscribers never blocks (their appsrcs queue, bounded and leaky). So
        // demuxing, parsing and the hand-over run in the source's thread: one thread hand-off
        // less per frame and two threads less per channel.
        let desc = match parse {
            Some(parse) => format!(
                "{parse} ! appsink name=sink sync=false async=false emit-signals=false max-buffers=0"
            ),
            None => "fakesink sync=false async=false".to_string(),
        };
        let Ok(chain) = gst::parse::bin_from_description(&desc, true) else {
            return;
        };
        if let Some(sink) = chain
            .by_name("sink")
            .and_then(|s| s.downcast::<gst_app::AppSink>().ok())
        {
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
        }
        if self.pipeline.add(&chain).is_err() {
            return;
        }
        let _ = chain.sync_state_with_parent();
        if let Some(sinkpad) = chain.static_pad("sink") {
            let _ = pad.link(&sinkpad);
        }
        route.parse = parse;
        route.chain = Some(chain);
        gst::info!(CAT, "{}: stream {} ({caps})", self.channel, pad.name());
    }

    fn on_sample(&self, kind: Kind, sample: &gst::Sample) {
        let (Some(buffer), Some(caps)) = (sample.buffer_owned(), sample.caps_owned()) else {
            return;
        };
        // Muxers write a PTS only every so often (ffmpeg: once per pack, so small frames and
        // even key frames come without): then the parser's DTS, else the previous frame's.
        let ts = buffer.pts().or(buffer.dts());
        let lat = ts
            .zip(self.pipeline.base_time())
            .zip(self.pipeline.clock().map(|c| c.time()))
            .map(|((p, b), now)| now.saturating_sub(p + b).nseconds());
        let key = is_key_frame(kind, &buffer);
        let mut st = lock(&self.state);
        let last = match kind {
            Kind::Video => &mut st.last_video_ns,
            Kind::Audio => &mut st.last_audio_ns,
        };
        // The buffer's time on the (shared, system) clock.
        let Some(abs) = ts
            .zip(self.pipeline.base_time())
            .map(|(p, b)| (p + b).nseconds())
            .or(*last)
        else {
            return;
        };
        // Audio a little behind the previous frame (an encoder's padded last frame, jitter):
        // muxers (HLS, MP4, FLV) stop on timestamps going back, so it is dropped. A large step
        // back is a new time line (a camera that restarted) and passes.
        if kind == Kind::Audio && last.is_some_and(|l| abs < l && l - abs < AUDIO_BACK_STEP_NS) {
            gst::debug!(
                CAT,
                "{}: audio frame {} ns behind the previous one dropped",
                self.channel,
                last.unwrap_or(abs) - abs
            );
            return;
        }
        *last = Some(abs);
        if let Some(l) = lat {
            st.lat_sum_ns += l;
            st.lat_count += 1;
            st.lat_max_ns = st.lat_max_ns.max(l);
        }
        st.first_data.get_or_insert_with(Instant::now);
        if key {
            st.last_key = Some(Instant::now());
        }
        let known = match kind {
            Kind::Video => &mut st.video_caps,
            Kind::Audio => &mut st.audio_caps,
        };
        if known.as_ref() != Some(&caps) {
            let old = known.replace(caps.clone());
            if let Some(old) = old {
                let change = caps_change(&old, &caps);
                eprintln!(
                    "[gateway] channel {}: the camera's {kind:?} changed ({change:?}): {} -> {}",
                    self.channel,
                    caps_summary(&old),
                    caps_summary(&caps)
                );
                st.generation += 1;
                st.direct.retain(|(_, d)| {
                    let keep = d.caps_changed(kind, change);
                    if !keep {
                        d.end();
                    }
                    keep
                });
                // Frames of the old format never start a new viewer.
                match kind {
                    Kind::Video => {
                        st.gop.clear();
                        st.gop_bytes = 0;
                    }
                    Kind::Audio => {
                        st.gop.retain(|(k, _, _)| *k == Kind::Video);
                        st.gop_bytes = st.gop.iter().map(|(_, b, _)| b.size()).sum();
                    }
                }
            }
            if kind == Kind::Video {
                st.video_since.get_or_insert_with(Instant::now);
            }
            self.cond.notify_all();
        }
        cache_frame(&mut st, kind, &buffer, abs, key);
        if !st.direct.is_empty()
            && let Ok(map) = buffer.map_readable()
        {
            st.direct.retain(|(_, d)| d.frame(kind, &map, abs, key));
        }
        let State {
            subscribers, gop, ..
        } = &mut *st;
        let mut ended = Vec::new();
        for s in subscribers.iter_mut().filter(|s| s.kind == kind) {
            if s.caps.as_ref() != Some(&caps) {
                let change = s
                    .caps
                    .as_ref()
                    .map_or(CapsChange::Params, |c| caps_change(c, &caps));
                match (&s.timing, change) {
                    // A viewer's payloader follows a new size in band.
                    (Timing::Viewer(_), CapsChange::Params | CapsChange::Size) => {
                        s.src.set_caps(Some(&caps));
                        s.caps = Some(caps.clone());
                    }
                    // Another codec, or a muxer (HLS, MP4): this subscriber ends; clients
                    // come back to a media of the new codec, outputs start new files.
                    _ => {
                        ended.push(s.id);
                        let _ = s.src.end_of_stream();
                        continue;
                    }
                }
            }
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
        if !ended.is_empty() {
            subscribers.retain(|s| !ended.contains(&s.id));
        }
        // Video subscribers still waiting for their first key frame (no GOP cached).
        let waiting = kind == Kind::Video
            && !key
            && gop.is_empty()
            && subscribers
                .iter()
                .any(|s| s.kind == Kind::Video && !s.started);
        drop(st);
        if waiting {
            self.request_key_frame(true);
        }
    }

    /// Asks the camera for a key frame if [`key_frame_due`] says so (never with the state
    /// lock held: it sends a SIP MESSAGE).
    fn request_key_frame(&self, waiting: bool) {
        let kf = lock(&self.key_frames);
        let Some(kf) = kf.as_ref().filter(|k| !k.after.is_zero()) else {
            return;
        };
        let now = Instant::now();
        {
            let mut st = lock(&self.state);
            if !key_frame_due(now, st.last_key, waiting, st.last_key_request, kf.after) {
                return;
            }
            st.last_key_request = Some(now);
            st.key_requests += 1;
        }
        match (kf.send)() {
            Ok(()) => gst::info!(
                CAT,
                "{}: asked the camera for a key frame ({})",
                self.channel,
                if waiting {
                    "a viewer waits for one"
                } else {
                    "the cached one is old"
                }
            ),
            Err(e) => gst::warning!(CAT, "{}: key frame request: {e}", self.channel),
        }
    }

    /// A viewer asks for a key frame (a WebRTC peer's PLI/FIR): sent to the camera at most
    /// once per key frame request interval, however many viewers ask how often.
    pub fn viewer_wants_key_frame(&self) {
        self.request_key_frame(true);
    }

    /// Sets how this ingest asks its camera for key frames.
    pub fn set_key_frame_requests(&self, k: KeyFrameRequests) {
        *lock(&self.key_frames) = Some(k);
    }

    /// Key frame requests sent to the camera so far.
    pub fn key_frame_requests(&self) -> u64 {
        lock(&self.state).key_requests
    }

    /// Caps changes of the camera's streams so far.
    pub fn generation(&self) -> u64 {
        lock(&self.state).generation
    }

    /// Waits (bounded) until the streams are known: video, plus audio if it comes within
    /// [`AUDIO_WAIT`]; or audio alone after a few seconds of data. A camera whose video is
    /// not known after the key frame interval (a long GOP: the parser waits for a key frame)
    /// is asked for a key frame.
    pub fn wait_streams(&self, timeout: Duration) -> Result<Streams, String> {
        let end = Instant::now() + timeout;
        loop {
            let mut st = lock(&self.state);
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
                return Ok(Streams {
                    video: st.video_caps.clone(),
                    audio: st.audio_caps.clone(),
                    generation: st.generation,
                });
            }
            if now >= end {
                return Err(format!("{}: no media within {timeout:?}", self.channel));
            }
            let ask = st.video_caps.is_none() && self.key_frame_wait_over(now);
            let wait = (end - now).min(Duration::from_millis(100));
            if ask {
                drop(st);
                self.request_key_frame(true);
                st = lock(&self.state);
            }
            drop(
                self.cond
                    .wait_timeout(st, wait)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0),
            );
        }
    }

    /// The ingest has run for longer than the key frame request interval.
    fn key_frame_wait_over(&self, now: Instant) -> bool {
        let after = lock(&self.key_frames).as_ref().map(|k| k.after);
        after.is_some_and(|a| !a.is_zero() && now.duration_since(self.started_at) >= a)
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
        let ids = srcs
            .iter()
            .filter_map(|(kind, src)| self.add(*kind, src, Timing::Viewer(group.clone())))
            .collect();
        if group.has_video {
            self.request_key_frame(false);
        }
        ids
    }

    /// Feeds `src` with the stream of `kind` in the camera's timing (HLS, recording), from
    /// the next video key frame. It ends (end-of-stream) when the stream's caps change.
    pub fn subscribe_camera(&self, kind: Kind, src: &gst_app::AppSrc) -> Option<u64> {
        self.add(kind, src, Timing::Camera)
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
            caps: src.caps(),
            started: false,
            timing,
        });
        Some(id)
    }

    /// Feeds `sink` in the ingest's thread: first the cached GOP (when `gop`; the sink
    /// decides where it can start), then every frame. None when the ingest is full or
    /// stopped.
    pub fn subscribe_direct(&self, sink: Arc<dyn FrameSink>, gop: bool) -> Option<u64> {
        let mut st = lock(&self.state);
        if st.subscribers.len() + st.direct.len() >= MAX_SUBSCRIBERS || st.stopped {
            return None;
        }
        st.next_id += 1;
        let id = st.next_id;
        let mut alive = true;
        if gop {
            for (kind, b, t) in &st.gop {
                let key = is_key_frame(*kind, b);
                if let Ok(map) = b.map_readable()
                    && !sink.frame(*kind, &map, *t, key)
                {
                    alive = false;
                    break;
                }
            }
        }
        gst::debug!(CAT, "{}: direct subscriber {id}", self.channel);
        if alive {
            st.direct.push((id, sink));
        }
        let ask = st.video_caps.is_some();
        drop(st);
        if ask {
            self.request_key_frame(false);
        }
        Some(id)
    }

    /// The ingest pipeline clock's time now (the frames' clock times are on it).
    pub fn clock_time(&self) -> Option<u64> {
        self.pipeline.clock().map(|c| c.time().nseconds())
    }

    /// The cached key frame (the first frame of the cached GOP), if any.
    pub fn key_frame(&self) -> Option<gst::Buffer> {
        match lock(&self.state).gop.first() {
            Some((Kind::Video, b, _)) => Some(b.clone()),
            _ => None,
        }
    }

    /// Removes a subscriber; true when nobody uses the ingest any more.
    pub fn unsubscribe(&self, id: u64) -> bool {
        let mut st = lock(&self.state);
        st.subscribers.retain(|s| s.id != id);
        st.direct.retain(|(d, _)| *d != id);
        st.unused()
    }

    pub fn is_unused(&self) -> bool {
        lock(&self.state).unused()
    }

    /// Marks the ingest stopped if nobody uses it or it failed, in one step with
    /// [`hold`](Self::hold) and subscribing: a user that holds it first keeps it running,
    /// one that holds it after sees it failed ([`is_failed`](Self::is_failed)) and starts
    /// another. True when it is to be stopped ([`stop`](Self::stop) does the rest).
    pub fn retire_if_unused(&self) -> bool {
        let mut st = lock(&self.state);
        if st.failed.is_some() || st.stopped || st.unused() {
            st.stopped = true;
            self.cond.notify_all();
            true
        } else {
            false
        }
    }

    pub fn is_failed(&self) -> bool {
        let st = lock(&self.state);
        st.failed.is_some() || st.stopped
    }

    /// Blocks until the ingest fails or stops, or its streams change from `generation`
    /// (true), or `timeout` passes (false).
    pub fn wait_failed_or_changed(&self, generation: u64, timeout: Duration) -> bool {
        let st = lock(&self.state);
        let (st, _) = self
            .cond
            .wait_timeout_while(st, timeout, |st| {
                st.failed.is_none() && !st.stopped && st.generation == generation
            })
            .unwrap_or_else(|e| e.into_inner());
        st.failed.is_some() || st.stopped || st.generation != generation
    }

    /// (average, maximum) time in ms from a frame's arrival in the source to its hand-over to
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

    /// The source's statistics (gb28181src's) as last refreshed (never blocks).
    pub fn src_stats(&self) -> Option<gst::Structure> {
        lock(&self.stats).clone()
    }

    /// Reads the source's `stats` property (may block while the element is busy: call it
    /// without holding other locks); nothing for a source without one.
    pub fn refresh_stats(&self) {
        if self
            .src
            .find_property("stats")
            .is_none_or(|p| p.value_type() != gst::Structure::static_type())
        {
            return;
        }
        let s = self.src.property::<Option<gst::Structure>>("stats");
        if s.is_some() {
            *lock(&self.stats) = s;
        }
    }

    /// The source's control element (a camera's gb28181src: playback control signals).
    pub fn source(&self) -> &gst::Element {
        &self.src
    }

    /// Stops the pipeline (gb28181src sends BYE) and ends every subscriber's stream.
    pub fn stop(&self) {
        let (subs, direct) = {
            let mut st = lock(&self.state);
            st.stopped = true;
            self.cond.notify_all();
            (
                std::mem::take(&mut st.subscribers),
                std::mem::take(&mut st.direct),
            )
        };
        let _ = self.pipeline.set_state(gst::State::Null);
        for s in subs {
            let _ = s.src.end_of_stream();
        }
        for (_, d) in direct {
            d.end();
        }
        gst::info!(CAT, "{}: ingest stopped", self.channel);
    }

    fn fail(&self, why: String) {
        let (subs, direct) = {
            let mut st = lock(&self.state);
            st.failed = Some(why);
            self.cond.notify_all();
            (
                std::mem::take(&mut st.subscribers),
                std::mem::take(&mut st.direct),
            )
        };
        for s in subs {
            let _ = s.src.end_of_stream();
        }
        for (_, d) in direct {
            d.end();
        }
    }
}

/// `video/x-h265 320x240` for logs.
fn caps_summary(caps: &gst::CapsRef) -> String {
    let Some(s) = caps.structure(0) else {
        return "none".into();
    };
    let int = |f: &str| s.get::<i32>(f).ok();
    match (int("width"), int("height"), int("rate")) {
        (Some(w), Some(h), _) => format!("{} {w}x{h}", s.name()),
        (_, _, Some(r)) => format!("{} {r} Hz", s.name()),
        _ => s.name().to_string(),
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

/// A video frame that starts a picture group (audio frames never are).
fn is_key_frame(kind: Kind, buffer: &gst::BufferRef) -> bool {
    kind == Kind::Video && !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT)
}

/// Steps back in audio time below this are dropped frames, above it a new time line.
const AUDIO_BACK_STEP_NS: u64 = 1_000_000_000;

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

fn on_bus_message(weak: &Weak<Ingest>, msg: &gst::Message) {
    let why = match msg.view() {
        gst::MessageView::Error(e) => format!("{}", e.error()),
        gst::MessageView::Eos(_) => "end of stream (BYE)".to_string(),
        _ => return,
    };
    let Some(ingest) = weak.upgrade() else { return };
    let done = {
        let st = lock(&ingest.state);
        st.stopped || st.failed.is_some()
    };
    if !done {
        eprintln!("[gateway] channel {}: {why}", ingest.channel);
        ingest.fail(why);
    }
    // The last reference must not be dropped here: dropping stops the pipeline, which
    // cannot be done from one of its streaming threads.
    if Arc::strong_count(&ingest) == 1 {
        let _ = std::thread::Builder::new()
            .name("ingest-drop".into())
            .spawn(move || drop(ingest));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_changes() {
        gst::init().unwrap();
        let c = |s: &str| s.parse::<gst::Caps>().unwrap();
        let h264 = c("video/x-h264,width=160,height=120,profile=baseline");
        assert_eq!(caps_change(&h264, &h264), CapsChange::Same);
        assert_eq!(
            caps_change(&h264, &c("video/x-h264,width=160,height=120,profile=main")),
            CapsChange::Params
        );
        assert_eq!(
            caps_change(
                &h264,
                &c("video/x-h264,width=320,height=240,profile=baseline")
            ),
            CapsChange::Size
        );
        assert_eq!(
            caps_change(&h264, &c("video/x-h265,width=160,height=120")),
            CapsChange::Codec
        );
        assert_eq!(
            caps_change(
                &c("audio/mpeg,mpegversion=4,rate=16000"),
                &c("audio/mpeg,mpegversion=1,rate=16000")
            ),
            CapsChange::Codec
        );
        assert_eq!(
            caps_change(&c("audio/x-alaw,rate=8000"), &c("audio/x-alaw,rate=16000")),
            CapsChange::Size
        );
    }

    /// An ingest of `bin`, whose queues named in `pads` become its stream pads.
    fn ingest_of(name: &str, bin: gst::Bin, pads: &[&str]) -> Arc<Ingest> {
        for q in pads {
            let pad = bin.by_name(q).unwrap().static_pad("src").unwrap();
            let ghost = gst::GhostPad::builder_with_target(&pad)
                .unwrap()
                .name(*q)
                .build();
            bin.add_pad(&ghost).unwrap();
        }
        let bin = bin.upcast::<gst::Element>();
        Ingest::start_source(
            name,
            IngestSource {
                elements: vec![bin.clone()],
                streams_from: bin.clone(),
                control: bin,
            },
        )
        .unwrap()
    }

    /// An ingest whose source is an appsrc of A-law (no camera), and that appsrc.
    fn alaw_ingest(name: &str) -> (Arc<Ingest>, gst_app::AppSrc) {
        gst::init().unwrap();
        let bin = gst::parse::bin_from_description(
            "appsrc name=cam format=time is-live=true \
             caps=audio/x-alaw,rate=8000,channels=1 ! queue name=a",
            false,
        )
        .unwrap();
        let cam = bin
            .by_name("cam")
            .unwrap()
            .downcast::<gst_app::AppSrc>()
            .unwrap();
        (ingest_of(name, bin, &["a"]), cam)
    }

    /// A subscriber's pipeline: `appsrc name=src caps=<caps> ! appsink name=sink`.
    fn subscriber_pipeline(caps: &gst::Caps) -> (gst::Pipeline, gst_app::AppSrc, gst_app::AppSink) {
        let p = gst::parse::launch(
            "appsrc name=src format=time is-live=true ! appsink name=sink sync=false",
        )
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let src = p
            .by_name("src")
            .unwrap()
            .downcast::<gst_app::AppSrc>()
            .unwrap();
        src.set_caps(Some(caps));
        let sink = p
            .by_name("sink")
            .unwrap()
            .downcast::<gst_app::AppSink>()
            .unwrap();
        (p, src, sink)
    }

    fn alaw_caps() -> gst::Caps {
        gst::Caps::builder("audio/x-alaw")
            .field("rate", 8000)
            .field("channels", 1)
            .build()
    }

    /// The last reader leaving and a new one arriving at the same moment: whichever comes
    /// first decides, in one step. Held first: the ingest is not retired. Retired first:
    /// the new reader's hold finds it failed (and starts another) and cannot subscribe.
    #[test]
    fn retiring_an_unused_ingest_is_atomic_with_a_hold() {
        let (held, _) = alaw_ingest("held-first");
        held.hold();
        assert!(!held.retire_if_unused(), "a held ingest stays");
        assert!(!held.is_failed());
        held.release();
        assert!(held.retire_if_unused(), "unused once released");
        held.stop();

        let (retired, _) = alaw_ingest("retired-first");
        assert!(retired.retire_if_unused());
        retired.hold();
        assert!(retired.is_failed(), "the late user sees it going away");
        let (_p, src, _) = subscriber_pipeline(&alaw_caps());
        assert!(
            retired.subscribe_viewer(&[(Kind::Audio, src)]).is_empty(),
            "no subscription to a retired ingest"
        );
        retired.release();
        retired.stop();
    }

    /// Audio a little behind the previous frame (an AAC encoder's padded last frame at a
    /// clip's loop, jitter) is dropped: HLS and MP4 muxers stop on timestamps going back.
    #[test]
    fn audio_stepping_back_is_dropped() {
        let (ingest, cam) = alaw_ingest("stepping");
        let (out, src, sink) = subscriber_pipeline(&alaw_caps());
        out.set_state(gst::State::Playing).unwrap();
        assert!(ingest.subscribe_camera(Kind::Audio, &src).is_some());
        for ms in [1000u64, 1020, 1040, 1060, 1050, 1080, 1100] {
            let mut b = gst::Buffer::from_mut_slice(vec![0xD5u8; 160]);
            b.get_mut()
                .unwrap()
                .set_pts(gst::ClockTime::from_mseconds(ms));
            cam.push_buffer(b).unwrap();
        }
        let mut pts = Vec::new();
        while pts.len() < 6 {
            let s = sink
                .try_pull_sample(gst::ClockTime::from_seconds(10))
                .expect("a frame within 10 s");
            pts.push(s.buffer().unwrap().pts().unwrap().mseconds());
        }
        let steps: Vec<u64> = pts.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
        assert_eq!(steps, vec![20, 20, 20, 20, 20], "{pts:?}");
        out.set_state(gst::State::Null).unwrap();
        ingest.stop();
    }

    /// Any element whose pads carry elementary streams feeds an ingest: here a bin whose
    /// always pads give H.264 in AVC form (as a publisher's or an RTSP camera's depayloader
    /// does) and A-law; a viewer gets byte-stream H.264 starting with a key frame.
    #[test]
    fn any_source_of_elementary_streams_feeds_viewers() {
        gst::init().unwrap();
        let bin = gst::parse::bin_from_description(
            "videotestsrc is-live=true ! video/x-raw,width=160,height=120,framerate=25/1 \
             ! x264enc tune=zerolatency key-int-max=10 ! h264parse \
             ! video/x-h264,stream-format=avc ! queue name=v \
             audiotestsrc is-live=true ! alawenc ! queue name=a",
            false,
        )
        .unwrap();
        let ingest = ingest_of("generic", bin, &["v", "a"]);
        let streams = ingest.wait_streams(Duration::from_secs(20)).unwrap();
        let video = streams.video.expect("video");
        let v = video.structure(0).unwrap();
        assert_eq!(v.name(), "video/x-h264");
        assert_eq!(v.get::<&str>("stream-format").unwrap(), "byte-stream");
        assert_eq!(
            streams.audio.expect("audio").structure(0).unwrap().name(),
            "audio/x-alaw"
        );
        // No stats property on a plain bin: nothing read, nothing panics.
        ingest.refresh_stats();
        assert!(ingest.src_stats().is_none());

        let (viewer, src, sink) = subscriber_pipeline(&video);
        viewer.set_state(gst::State::Playing).unwrap();
        let ids = ingest.subscribe_viewer(&[(Kind::Video, src)]);
        assert_eq!(ids.len(), 1);
        let mut frames = 0;
        while frames < 20 {
            let sample = sink
                .try_pull_sample(gst::ClockTime::from_seconds(10))
                .expect("a frame within 10 s");
            let b = sample.buffer().unwrap();
            if frames == 0 {
                assert!(
                    !b.flags().contains(gst::BufferFlags::DELTA_UNIT),
                    "starts with a key frame"
                );
                let map = b.map_readable().unwrap();
                assert!(map.starts_with(&[0, 0, 0, 1]) || map.starts_with(&[0, 0, 1]));
            }
            frames += 1;
        }
        viewer.set_state(gst::State::Null).unwrap();
        ingest.stop();
    }

    #[test]
    fn key_frame_requests_are_due_and_rate_limited() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let after = s(2);
        // No key frame seen yet, or a viewer waits: ask.
        assert!(key_frame_due(t0, None, false, None, after));
        assert!(key_frame_due(t0 + s(1), Some(t0), true, None, after));
        // A fresh key frame and nobody waiting: don't.
        assert!(!key_frame_due(t0 + s(1), Some(t0), false, None, after));
        // An old one: ask.
        assert!(key_frame_due(t0 + s(3), Some(t0), false, None, after));
        // At most once per `after` (and at least 1 s apart).
        assert!(!key_frame_due(
            t0 + s(3),
            Some(t0),
            true,
            Some(t0 + s(2)),
            after
        ));
        assert!(key_frame_due(
            t0 + s(4),
            Some(t0),
            true,
            Some(t0 + s(2)),
            after
        ));
        let zero = Duration::ZERO;
        assert!(!key_frame_due(
            t0 + s(3),
            None,
            true,
            Some(t0 + Duration::from_millis(2500)),
            zero
        ));
    }
}

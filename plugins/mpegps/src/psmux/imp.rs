//! `psmux`: MPEG-2 Program Stream muxer as GB28181 cameras write it.
//!
//! Thin glue around [`crate::mux::PsWriter`]: the aggregator picks the pad whose next buffer
//! has the earliest running time (DTS, else PTS), the writer plans the PS headers, and the
//! output buffer is assembled from one header memory plus shared sub-memories of the input
//! buffer, so elementary stream bytes are never copied (unless a frame would need more than
//! [`MAX_MEMORIES`] memories, see there).

use gst_ipcam_common::sync::lock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::prelude::*;

use crate::mux::{Frame, Packet, Piece, PsWriter, StartGate, WriterConfig, headers, ns_to_90k};
use crate::ps::Codec;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "psmux",
        gst::DebugColorFlags::empty(),
        Some("MPEG-2 Program Stream muxer"),
    )
});

/// A GstBuffer holds at most 16 memories; beyond that GStreamer merges them (a copy per
/// append). Frames needing more pieces (more than 8 PES packets, i.e. > ~520 KB with the
/// default PES size) are written with a single copy into one memory instead.
const MAX_MEMORIES: usize = 16;

const DEFAULT_PES_PAYLOAD_SIZE: u32 = headers::PES_PAYLOAD_MAX as u32;
const DEFAULT_MUX_RATE: u32 = 0;
const DEFAULT_PSM_INTERVAL_MS: u32 = 1000;
const DEFAULT_TIMESTAMP_OFFSET: u64 = gst::ClockTime::SECOND.nseconds();
/// Most output buffers muxed per `aggregate()` call and pushed as one list.
const MAX_BATCH: usize = 64;

const DEFAULT_NON_LIVE_QUEUE: u64 = gst::ClockTime::SECOND.nseconds();

#[derive(Debug, Clone, Copy)]
struct Settings {
    pes_payload_size: u32,
    mux_rate: u32,
    psm_interval_ms: u32,
    timestamp_offset: u64,
    non_live_queue: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            pes_payload_size: DEFAULT_PES_PAYLOAD_SIZE,
            mux_rate: DEFAULT_MUX_RATE,
            psm_interval_ms: DEFAULT_PSM_INTERVAL_MS,
            timestamp_offset: DEFAULT_TIMESTAMP_OFFSET,
            non_live_queue: DEFAULT_NON_LIVE_QUEUE,
        }
    }
}

impl Settings {
    fn writer_config(&self) -> WriterConfig {
        WriterConfig {
            pes_payload_size: self.pes_payload_size as usize,
            mux_rate: self.mux_rate,
            psm_interval: self.psm_interval_ms as u64 * 90,
        }
    }
}

/// A sink pad's key in the state: its address (asking a pad its name allocates a copy; the
/// direct path looks its pad up for every frame). Entries go when the pad is released.
type PadKey = usize;

fn key(pad: &impl IsA<gst::Pad>) -> PadKey {
    pad.as_ref().as_ptr() as PadKey
}

#[derive(Debug)]
struct PadStream {
    /// The pad's name, for the stats.
    name: String,
    stream_id: u8,
    codec: Codec,
    buffers: u64,
    bytes: u64,
}

#[derive(Debug)]
struct State {
    writer: PsWriter,
    /// With a video stream, the output starts at its first key frame.
    gate: StartGate,
    pads: HashMap<PadKey, PadStream>,
    buffers_out: u64,
    bytes_out: u64,
    psm_count: u64,
    copied_frames: u64,
    /// Whether the direct path's checks passed and nothing that could change them (an
    /// event on a sink pad, a pad requested or released, a state change) came since.
    direct_ready: bool,
    /// Whether the live-ness of the pipeline was looked at (first aggregate).
    mode_checked: bool,
    /// Set when `non-live-queue` raised the aggregator latency (restored on stop).
    raised_latency: bool,
    /// Per sink pad: serialized events received and not yet handled by the aggregator
    /// thread (see [`PsMux::direct_allowed`]).
    queued_events: HashMap<PadKey, u32>,
    /// An event was handled by the aggregator's thread and may still be at the head of its
    /// queue: GstAggregator pops it only after `sink_event` returned, so a buffer queued
    /// behind it is not poppable yet and the next buffer must not overtake it on the direct
    /// path. Cleared by `aggregate()`, which that thread calls once the events ahead of a
    /// buffer are gone.
    event_in_flight: bool,
    /// Whether upstream of the (single) sink pad is live, asked once per run: the
    /// aggregator's own `latency()` is only known once the pipeline's latency is set.
    upstream_live: Option<bool>,
}

impl State {
    /// Exactly one sink pad, with no serialized event waiting in (or still leaving) the
    /// aggregator's queue.
    fn one_idle_pad(&self) -> bool {
        self.queued_events.len() == 1
            && self.queued_events.values().all(|n| *n == 0)
            && !self.event_in_flight
    }
}

impl Default for State {
    fn default() -> Self {
        State {
            writer: PsWriter::new(Settings::default().writer_config()),
            gate: StartGate::new(),
            pads: HashMap::new(),
            buffers_out: 0,
            bytes_out: 0,
            psm_count: 0,
            copied_frames: 0,
            direct_ready: false,
            mode_checked: false,
            raised_latency: false,
            queued_events: HashMap::new(),
            event_in_flight: false,
            upstream_live: None,
        }
    }
}

#[derive(Default)]
pub struct PsMux {
    settings: Mutex<Settings>,
    state: Mutex<State>,
    /// Held while muxing and pushing, by `aggregate()` and by the direct path, so output
    /// keeps the input order whichever thread pushes.
    push_lock: Mutex<()>,
    /// Input buffers muxed on the direct path (see [`PsMux::direct_allowed`]), since start.
    direct_buffers: AtomicU64,
}

fn codec_from_caps(caps: &gst::CapsRef) -> Option<Codec> {
    let s = caps.structure(0)?;
    let mpegversion = || s.get::<i32>("mpegversion").ok();
    Some(match s.name().as_str() {
        "video/x-h264" => Codec::H264,
        "video/x-h265" => Codec::H265,
        "video/mpeg" if mpegversion() == Some(4) => Codec::Mpeg4Video,
        "audio/mpeg" if matches!(mpegversion(), Some(2) | Some(4)) => Codec::Aac,
        "audio/x-alaw" => Codec::G711Alaw,
        "audio/x-mulaw" => Codec::G711Mulaw,
        _ => return None,
    })
}

fn src_caps() -> gst::Caps {
    gst::Caps::builder("video/mpeg")
        .field("systemstream", true)
        .field("mpegversion", 2i32)
        .build()
}

/// Signed running time of `ts` in nanoseconds.
fn running_time_ns(
    segment: Option<&gst::FormattedSegment<gst::ClockTime>>,
    ts: Option<gst::ClockTime>,
) -> Option<i64> {
    let ts = ts?;
    let Some(segment) = segment else {
        return Some(ts.nseconds() as i64);
    };
    match segment.to_running_time_full(ts)? {
        gst::Signed::Positive(t) => Some(t.nseconds().min(i64::MAX as u64) as i64),
        gst::Signed::Negative(t) => Some(-(t.nseconds().min(i64::MAX as u64) as i64)),
    }
}

fn non_negative(ns: Option<i64>) -> Option<gst::ClockTime> {
    ns.filter(|t| *t >= 0)
        .map(|t| gst::ClockTime::from_nseconds(t as u64))
}

impl PsMux {
    /// Assembles the output buffer: header sub-memories interleaved with shared
    /// sub-memories of `input`. Timestamps, duration and flags are left for the caller.
    fn build_buffer(
        &self,
        packet: Packet,
        input: gst::Buffer,
    ) -> Result<(gst::Buffer, bool), gst::FlowError> {
        if packet.pieces.len() > MAX_MEMORIES {
            let map = input.map_readable().map_err(|_| {
                gst::error!(CAT, imp = self, "Can't map input buffer");
                gst::FlowError::Error
            })?;
            let data = packet.to_contiguous(&map).ok_or(gst::FlowError::Error)?;
            return Ok((gst::Buffer::from_mut_slice(data), true));
        }
        let headers_len = packet.headers.len();
        let headers = gst::Memory::from_slice(packet.headers);
        if let [Piece::Header(h), Piece::Payload(p)] = packet.pieces.as_slice()
            && h.start == 0
            && h.end == headers_len
            && p.start == 0
            && p.end == input.size()
        {
            // The usual frame, one PES: the input buffer becomes the output, its memories
            // kept and the headers put in front (no new buffer, no shared sub-memory). What
            // described the elementary stream (flags, offsets, metas) does not describe the
            // PS: it goes.
            let mut out = input;
            let m = out.make_mut();
            m.insert_memory(0, headers);
            m.unset_flags(m.flags());
            m.set_offset(u64::MAX /* GST_BUFFER_OFFSET_NONE */);
            m.set_offset_end(u64::MAX /* GST_BUFFER_OFFSET_NONE */);
            m.foreach_meta_mut(|_| {
                std::ops::ControlFlow::Continue(gst::buffer::BufferMetaForeachAction::Remove)
            });
            return Ok((out, false));
        }
        let mut out = gst::Buffer::new();
        {
            let out_mut = out.make_mut();
            for piece in packet.pieces {
                match piece {
                    Piece::Header(r) if r.start == 0 && r.end == headers_len => {
                        out_mut.append_memory(headers.clone())
                    }
                    Piece::Header(r) => out_mut.append_memory(headers.share(r)),
                    Piece::Payload(r) if input.n_memory() == 1 => {
                        out_mut.append_memory(input.peek_memory(0).share(r))
                    }
                    Piece::Payload(r) => {
                        let region = input
                            .copy_region(gst::BufferCopyFlags::MEMORY, r)
                            .map_err(|_| gst::FlowError::Error)?;
                        for mem in region.iter_memories_owned() {
                            out_mut.append_memory(mem);
                        }
                    }
                }
            }
        }
        Ok((out, false))
    }

    fn stats(&self) -> gst::Structure {
        let state = lock(&self.state);
        let mut pads: Vec<_> = state.pads.iter().collect();
        pads.sort_by_key(|(_, p)| p.stream_id);
        let streams = gst::Array::new(pads.into_iter().map(|(_, p)| {
            gst::Structure::builder("stream")
                .field("pad", p.name.as_str())
                .field("stream-id", p.stream_id as u32)
                .field("codec", p.codec.name())
                .field("stream-type", p.codec.stream_type() as u32)
                .field("buffers", p.buffers)
                .field("bytes", p.bytes)
                .build()
                .to_send_value()
        }));
        gst::Structure::builder("application/x-psmux-stats")
            .field("buffers", state.buffers_out)
            .field("bytes", state.bytes_out)
            .field("psm-count", state.psm_count)
            .field("copied-frames", state.copied_frames)
            .field(
                "direct-buffers",
                self.direct_buffers.load(Ordering::Relaxed),
            )
            .field("dropped-before-start", state.gate.dropped)
            .field("streams", streams)
            .build()
    }

    fn handle_caps(&self, pad: &gst_base::AggregatorPad, caps: &gst::CapsRef) -> bool {
        let Some(codec) = codec_from_caps(caps) else {
            gst::element_imp_error!(
                self,
                gst::StreamError::Format,
                ["Unsupported caps {} on {}", caps, pad.name()]
            );
            return false;
        };
        let mut state = lock(&self.state);
        let name = pad.name().to_string();
        let id = match state.pads.get(&key(pad)).map(|p| p.stream_id) {
            Some(old_id) => state.writer.change_codec(old_id, codec),
            None => state.writer.add_stream(codec),
        };
        let Some(stream_id) = id else {
            drop(state);
            gst::element_imp_error!(
                self,
                gst::StreamError::Mux,
                ["No free stream id for {} on {}", codec.name(), pad.name()]
            );
            return false;
        };
        gst::info!(
            CAT,
            imp = self,
            "{}: {} as stream 0x{:02X} (stream type 0x{:02X})",
            name,
            codec.name(),
            stream_id,
            codec.stream_type()
        );
        let entry = state.pads.entry(key(pad)).or_insert(PadStream {
            name,
            stream_id,
            codec,
            buffers: 0,
            bytes: 0,
        });
        entry.stream_id = stream_id;
        entry.codec = codec;
        true
    }

    /// On the first aggregate of a non-live run, deepens the sink pad queues (see the
    /// `non-live-queue` property). `latency()` is `None` when upstream is not live.
    fn check_mode(&self) {
        let queue = lock(&self.settings).non_live_queue;
        {
            let mut state = lock(&self.state);
            if state.mode_checked {
                return;
            }
            state.mode_checked = true;
        }
        let obj = self.obj();
        let user_latency = obj.property::<u64>("latency");
        if queue == 0 || obj.latency().is_some() || user_latency != 0 {
            return;
        }
        gst::debug!(CAT, imp = self, "Not live: sink pads may queue {queue} ns");
        obj.set_property("latency", queue);
        lock(&self.state).raised_latency = true;
    }

    /// Finds the sink pad whose queued buffer comes first. `Err` tells the aggregator to
    /// wait (a pad without data that may still get some, outside a live timeout) or EOS.
    fn next_pad(&self, timeout: bool) -> Result<gst_base::AggregatorPad, gst::FlowError> {
        let mut best: Option<(gst_base::AggregatorPad, Option<i64>)> = None;
        let mut all_eos = true;
        for pad in self.obj().sink_pads() {
            let Ok(pad) = pad.downcast::<gst_base::AggregatorPad>() else {
                continue;
            };
            match pad.peek_buffer() {
                Some(buffer) => {
                    all_eos = false;
                    let segment = pad.segment().downcast::<gst::ClockTime>().ok();
                    let rt = running_time_ns(segment.as_ref(), buffer.dts_or_pts());
                    if best.as_ref().is_none_or(|(_, best_rt)| rt < *best_rt) {
                        best = Some((pad, rt));
                    }
                }
                None if pad.is_eos() => {}
                None => {
                    all_eos = false;
                    if !timeout {
                        return Err(gst_base::AGGREGATOR_FLOW_NEED_DATA);
                    }
                }
            }
        }
        match best {
            Some((pad, _)) => Ok(pad),
            None if all_eos => Err(gst::FlowError::Eos),
            None => Err(gst_base::AGGREGATOR_FLOW_NEED_DATA),
        }
    }
}

#[glib::object_subclass]
impl ObjectSubclass for PsMux {
    const NAME: &'static str = "GstIpcamPsMux";
    type Type = super::PsMux;
    type ParentType = gst_base::Aggregator;
}

impl ObjectImpl for PsMux {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecUInt::builder("pes-payload-size")
                    .nick("PES payload size")
                    .blurb("Largest elementary stream payload per PES packet; larger frames are split over several PES packets (65522 keeps the 16-bit PES length valid with PTS and DTS)")
                    .minimum(32)
                    .maximum(headers::PES_PAYLOAD_MAX as u32)
                    .default_value(DEFAULT_PES_PAYLOAD_SIZE)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("mux-rate")
                    .nick("Mux rate")
                    .blurb("program_mux_rate written in pack headers, in bytes per second (0 = measured from the output)")
                    .default_value(DEFAULT_MUX_RATE)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("psm-interval")
                    .nick("PSM interval")
                    .blurb("With no video stream, repeat system header and PSM at least every this many milliseconds (0 = only when streams change); with video they precede every key frame")
                    .default_value(DEFAULT_PSM_INTERVAL_MS)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt64::builder("timestamp-offset")
                    .nick("Timestamp offset")
                    .blurb("Nanoseconds added to the running time before conversion to 90 kHz SCR/PTS/DTS, so DTS stays positive with B-frames")
                    .default_value(DEFAULT_TIMESTAMP_OFFSET)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("non-live-queue")
                    .nick("Non-live queue")
                    .blurb("In non-live pipelines, when the latency property is 0, let each sink pad queue up to this many nanoseconds of data (through the aggregator latency, which delays nothing when not live) so upstream and the muxer thread don't hand over one buffer at a time (0 = off)")
                    .default_value(DEFAULT_NON_LIVE_QUEUE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb("Output buffers and bytes, PSMs written, frames that needed a copy, input buffers muxed on the direct path (one sink pad, not live: no aggregator thread hand-off), frames dropped before the first video key frame, and per stream: pad, stream id, codec, buffers, bytes")
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut settings = lock(&self.settings);
        match pspec.name() {
            "pes-payload-size" => settings.pes_payload_size = value.get().expect("type checked"),
            "mux-rate" => settings.mux_rate = value.get().expect("type checked"),
            "psm-interval" => settings.psm_interval_ms = value.get().expect("type checked"),
            "timestamp-offset" => settings.timestamp_offset = value.get().expect("type checked"),
            "non-live-queue" => settings.non_live_queue = value.get().expect("type checked"),
            _ => unimplemented!(),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let settings = *lock(&self.settings);
        match pspec.name() {
            "pes-payload-size" => settings.pes_payload_size.to_value(),
            "mux-rate" => settings.mux_rate.to_value(),
            "psm-interval" => settings.psm_interval_ms.to_value(),
            "timestamp-offset" => settings.timestamp_offset.to_value(),
            "non-live-queue" => settings.non_live_queue.to_value(),
            "stats" => self.stats().to_value(),
            _ => unimplemented!(),
        }
    }
}

impl GstObjectImpl for PsMux {}

impl ElementImpl for PsMux {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "MPEG-2 Program Stream muxer (GB28181)",
                "Codec/Muxer",
                "Muxes H.264, H.265, MPEG-4 video, AAC and G.711 into an MPEG-2 Program Stream as GB28181 cameras write it: one buffer per video access unit or audio frame, zero copy",
                "gst-ipcam developers",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let sink_caps = gst::Caps::builder_full()
                .structure(
                    gst::Structure::builder("video/x-h264")
                        .field("stream-format", "byte-stream")
                        .field("alignment", "au")
                        .build(),
                )
                .structure(
                    gst::Structure::builder("video/x-h265")
                        .field("stream-format", "byte-stream")
                        .field("alignment", "au")
                        .build(),
                )
                .structure(
                    gst::Structure::builder("video/mpeg")
                        .field("mpegversion", 4i32)
                        .field("systemstream", false)
                        .build(),
                )
                .structure(
                    gst::Structure::builder("audio/mpeg")
                        .field("mpegversion", gst::List::new([2i32, 4i32]))
                        .field("stream-format", "adts")
                        .build(),
                )
                .structure(gst::Structure::new_empty("audio/x-alaw"))
                .structure(gst::Structure::new_empty("audio/x-mulaw"))
                .build();
            let sink = gst::PadTemplate::with_gtype(
                "sink_%u",
                gst::PadDirection::Sink,
                gst::PadPresence::Request,
                &sink_caps,
                gst_base::AggregatorPad::static_type(),
            )
            .expect("sink pad template");
            let src = gst::PadTemplate::with_gtype(
                "src",
                gst::PadDirection::Src,
                gst::PadPresence::Always,
                &src_caps(),
                gst_base::AggregatorPad::static_type(),
            )
            .expect("src pad template");
            vec![src, sink]
        });
        TEMPLATES.as_ref()
    }

    fn request_new_pad(
        &self,
        templ: &gst::PadTemplate,
        name: Option<&str>,
        caps: Option<&gst::Caps>,
    ) -> Option<gst::Pad> {
        let pad = self.parent_request_new_pad(templ, name, caps)?;
        {
            let mut state = lock(&self.state);
            state.queued_events.insert(key(&pad), 0);
            state.direct_ready = false;
        }
        pad.add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
            |pad, info| {
                let Some(mux) = pad.parent().and_then(|p| p.downcast::<super::PsMux>().ok()) else {
                    return gst::PadProbeReturn::Ok;
                };
                mux.imp().sink_probe(pad, info)
            },
        );
        Some(pad)
    }

    fn release_pad(&self, pad: &gst::Pad) {
        {
            let mut state = lock(&self.state);
            state.direct_ready = false;
            state.queued_events.remove(&key(pad));
            if let Some(p) = state.pads.remove(&key(pad)) {
                gst::info!(CAT, imp = self, "Released stream 0x{:02X}", p.stream_id);
                state.writer.remove_stream(p.stream_id);
            }
        }
        self.parent_release_pad(pad);
    }
}

impl AggregatorImpl for PsMux {
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let config = lock(&self.settings).writer_config();
        let mut state = lock(&self.state);
        // Streams of pads that already have caps stay; counters and timing restart.
        let mut old_pads: Vec<_> = std::mem::take(&mut state.pads).into_iter().collect();
        old_pads.sort_by_key(|(_, p)| p.stream_id);
        let mut writer = PsWriter::new(config);
        let mut pads = HashMap::new();
        for (k, p) in old_pads {
            if let Some(stream_id) = writer.add_stream(p.codec) {
                let stream = PadStream {
                    name: p.name,
                    stream_id,
                    codec: p.codec,
                    buffers: 0,
                    bytes: 0,
                };
                pads.insert(k, stream);
            }
        }
        // Every requested pad keeps its entry: the direct path counts them.
        let queued_events = std::mem::take(&mut state.queued_events)
            .into_keys()
            .map(|k| (k, 0))
            .collect();
        *state = State {
            writer,
            pads,
            queued_events,
            ..State::default()
        };
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        let raised = {
            let mut state = lock(&self.state);
            state.writer.reset();
            state.gate.reset();
            state.mode_checked = false;
            state.direct_ready = false;
            std::mem::take(&mut state.raised_latency)
        };
        if raised {
            self.obj().set_property("latency", 0u64);
        }
        Ok(())
    }

    fn flush(&self) -> Result<gst::FlowSuccess, gst::FlowError> {
        {
            let mut state = lock(&self.state);
            state.writer.reset();
            state.gate.reset();
            state.direct_ready = false;
        }
        self.parent_flush()
    }

    fn sink_event(&self, pad: &gst_base::AggregatorPad, event: gst::Event) -> bool {
        if event.is_serialized() && event.type_() != gst::EventType::FlushStop {
            let mut state = lock(&self.state);
            if let Some(n) = state.queued_events.get_mut(&key(pad)) {
                *n = n.saturating_sub(1);
            }
            state.event_in_flight = true;
        }
        if let gst::EventView::Caps(c) = event.view()
            && !self.handle_caps(pad, c.caps())
        {
            return false;
        }
        self.parent_sink_event(pad, event)
    }

    fn update_src_caps(&self, _caps: &gst::Caps) -> Result<gst::Caps, gst::FlowError> {
        Ok(src_caps())
    }

    fn next_time(&self) -> Option<gst::ClockTime> {
        self.obj().simple_get_next_time()
    }

    fn aggregate(&self, timeout: bool) -> Result<gst::FlowSuccess, gst::FlowError> {
        self.check_mode();
        let _push = lock(&self.push_lock);
        // The events ahead of the buffers this call takes have left the queue.
        lock(&self.state).event_in_flight = false;
        // Mux every buffer already queued (up to MAX_BATCH) and push them as one list: the
        // aggregator's thread hand-off then costs once per batch instead of once per frame.
        let mut list: Option<gst::BufferList> = None;
        let mut first = true;
        loop {
            let pad = match self.next_pad(timeout) {
                Ok(pad) => pad,
                Err(err) if first => return Err(err),
                Err(_) => break,
            };
            first = false;
            let Some(buffer) = pad.pop_buffer() else {
                break;
            };
            if let Some(out) = self.mux_buffer(&pad, buffer)? {
                list.get_or_insert_with(|| gst::BufferList::new_sized(MAX_BATCH))
                    .get_mut()
                    .expect("list owned here")
                    .add(out);
            }
            if list.as_ref().is_some_and(|l| l.len() >= MAX_BATCH) {
                break;
            }
        }
        match list {
            Some(list) if list.len() == 1 => {
                let out = list.get(0).expect("one buffer").to_owned();
                self.obj().finish_buffer(out)
            }
            Some(list) => self.obj().finish_buffer_list(list),
            None => Ok(gst::FlowSuccess::Ok),
        }
    }
}

impl PsMux {
    /// Sink pad probe: counts serialized events on their way into the aggregator's queue,
    /// and takes buffers the direct way when [`Self::direct_allowed`] allows.
    fn sink_probe(&self, pad: &gst::Pad, info: &mut gst::PadProbeInfo) -> gst::PadProbeReturn {
        match &info.data {
            Some(gst::PadProbeData::Event(ev)) => {
                let mut state = lock(&self.state);
                state.direct_ready = false;
                if ev.type_() == gst::EventType::StreamStart {
                    // Perhaps another upstream: its live-ness is asked again.
                    state.upstream_live = None;
                }
                let Some(n) = state.queued_events.get_mut(&key(pad)) else {
                    return gst::PadProbeReturn::Ok;
                };
                match ev.type_() {
                    // Flushing empties the aggregator's queue without handling its events.
                    gst::EventType::FlushStop => *n = 0,
                    _ if ev.is_serialized() => *n += 1,
                    _ => {}
                }
                gst::PadProbeReturn::Ok
            }
            Some(gst::PadProbeData::Buffer(_)) => {
                let Ok(aggpad) = pad.clone().downcast::<gst_base::AggregatorPad>() else {
                    return gst::PadProbeReturn::Ok;
                };
                let _push = lock(&self.push_lock);
                if !self.direct_allowed(&aggpad) {
                    return gst::PadProbeReturn::Ok;
                }
                let Some(buffer) = info.take_buffer() else {
                    return gst::PadProbeReturn::Ok;
                };
                // Buffers the aggregator queued before (while the pipeline started) go
                // first; only buffers are left in its queue (no unhandled event).
                let mut res = Ok(gst::FlowSuccess::Ok);
                let mut direct = 1;
                while res.is_ok()
                    && let Some(queued) = aggpad.pop_buffer()
                {
                    direct += 1;
                    res = self.mux_and_push(&aggpad, queued);
                }
                info.flow_res = res.and_then(|_| self.mux_and_push(&aggpad, buffer));
                self.direct_buffers.fetch_add(direct, Ordering::Relaxed);
                gst::PadProbeReturn::Handled
            }
            _ => gst::PadProbeReturn::Ok,
        }
    }

    fn mux_and_push(
        &self,
        pad: &gst_base::AggregatorPad,
        buffer: gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        match self.mux_buffer(pad, buffer)? {
            Some(out) => self.obj().finish_buffer(out),
            None => Ok(gst::FlowSuccess::Ok),
        }
    }

    /// The direct path: with a single sink pad in a non-live pipeline, a buffer is muxed and
    /// pushed from the upstream thread that brings it, skipping the aggregator's queue and
    /// thread hand-off (two context switches a frame). Only when no event is waiting in the
    /// aggregator's queue for that pad (caps and segment are applied; buffers queued before
    /// are muxed first), the aggregator has already pushed its stream-start, caps and
    /// segment downstream, and its thread is not muxing (the caller holds `push_lock`).
    /// Anything else takes the aggregator's path.
    fn direct_allowed(&self, pad: &gst_base::AggregatorPad) -> bool {
        // One entry per requested sink pad: exactly one pad, with no unhandled event.
        let known = {
            let state = lock(&self.state);
            if state.direct_ready {
                return true;
            }
            if !state.one_idle_pad() {
                return false;
            }
            state.upstream_live
        };
        let obj = self.obj();
        if obj.latency().is_some() || pad.is_eos() {
            return false;
        }
        let live = known.unwrap_or_else(|| {
            let mut q = gst::query::Latency::new();
            // No answer: treated as live (the aggregator's path is always correct).
            let live = !pad.peer_query(&mut q) || q.result().0;
            lock(&self.state).upstream_live = Some(live);
            live
        });
        if live {
            return false;
        }
        let src = obj.src_pad();
        let ready = src.sticky_event::<gst::event::Segment>(0).is_some() && src.has_current_caps();
        if ready {
            // Until the next event, request, release or state change (they clear it): all of
            // the above only change through one of them.
            let mut state = lock(&self.state);
            if state.one_idle_pad() {
                state.direct_ready = true;
            }
        }
        ready
    }

    /// Whether a video stream exists or is coming: a pad with video caps, or a pad without
    /// caps yet whose upstream offers video (an encoder that has not output its first frame).
    fn video_expected(&self) -> bool {
        let known: Vec<PadKey> = {
            let state = lock(&self.state);
            if state.pads.values().any(|p| p.codec.is_video()) {
                return true;
            }
            state.pads.keys().copied().collect()
        };
        self.obj()
            .sink_pads()
            .iter()
            .filter(|p| !known.contains(&key(*p)))
            .any(|p| {
                p.peer_query_caps(None)
                    .iter()
                    .any(|s| s.name().starts_with("video/"))
            })
    }

    /// Muxes one input buffer of `pad` into one output buffer (`None` for empty GAP buffers).
    fn mux_buffer(
        &self,
        pad: &gst_base::AggregatorPad,
        buffer: gst::Buffer,
    ) -> Result<Option<gst::Buffer>, gst::FlowError> {
        if buffer.size() == 0 {
            // GAP events reach aggregate() as empty GAP buffers: nothing to mux.
            gst::log!(CAT, imp = self, "Skipping empty buffer on {}", pad.name());
            return Ok(None);
        }
        let segment = pad.segment().downcast::<gst::ClockTime>().ok();
        // Without a PTS (some encoders only set DTS on frames that aren't reordered) the
        // DTS is the best presentation time there is.
        let dts_rt = running_time_ns(segment.as_ref(), buffer.dts());
        let pts_rt = running_time_ns(segment.as_ref(), buffer.pts()).or(dts_rt);
        let settings = *lock(&self.settings);

        let (packet, codec) = {
            let mut state = lock(&self.state);
            // Asked only until the output started (it queries the pads' peers).
            let video_expected = !state.gate.is_started() && {
                drop(state);
                let expected = self.video_expected();
                state = lock(&self.state);
                expected
            };
            state.writer.set_config(settings.writer_config());
            let Some(stream) = state.pads.get_mut(&key(pad)) else {
                drop(state);
                gst::element_imp_error!(
                    self,
                    gst::CoreError::Negotiation,
                    ["Buffer without caps on {}", pad.name()]
                );
                return Err(gst::FlowError::NotNegotiated);
            };
            stream.buffers += 1;
            stream.bytes += buffer.size() as u64;
            let codec = stream.codec;
            let frame = Frame {
                stream_id: stream.stream_id,
                len: buffer.size(),
                pts: pts_rt.map(|t| ns_to_90k(t, settings.timestamp_offset)),
                dts: dts_rt.map(|t| ns_to_90k(t, settings.timestamp_offset)),
                key: codec.is_video() && !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
            };
            if !state.gate.admit(
                codec.is_video(),
                frame.key,
                video_expected,
                frame.dts.or(frame.pts),
            ) {
                gst::log!(
                    CAT,
                    imp = self,
                    "{} frame on {} before the first video key frame: dropped",
                    codec.name(),
                    pad.name()
                );
                return Ok(None);
            }
            let packet = state.writer.write_frame(&frame).map_err(|err| {
                gst::error!(CAT, imp = self, "{err}");
                gst::FlowError::Error
            })?;
            state.buffers_out += 1;
            state.bytes_out += packet.len() as u64;
            state.psm_count += packet.with_psm as u64;
            (packet, codec)
        };

        gst::trace!(
            CAT,
            imp = self,
            "{} frame of {} bytes from {}: {} PES, psm {}, scr {}",
            codec.name(),
            buffer.size(),
            pad.name(),
            packet.pes_count,
            packet.with_psm,
            packet.scr
        );
        let (duration, flags) = (buffer.duration(), buffer.flags());
        let (mut out, copied) = self.build_buffer(packet, buffer)?;
        if copied {
            lock(&self.state).copied_frames += 1;
            gst::debug!(
                CAT,
                imp = self,
                "Frame needed more than {MAX_MEMORIES} memories: copied"
            );
        }
        {
            let out = out.make_mut();
            out.set_pts(non_negative(pts_rt));
            out.set_dts(non_negative(dts_rt));
            out.set_duration(duration);
            if codec.is_video() && flags.contains(gst::BufferFlags::DELTA_UNIT) {
                out.set_flags(gst::BufferFlags::DELTA_UNIT);
            }
            if flags.contains(gst::BufferFlags::DISCONT) {
                out.set_flags(gst::BufferFlags::DISCONT);
            }
        }
        Ok(Some(out))
    }
}

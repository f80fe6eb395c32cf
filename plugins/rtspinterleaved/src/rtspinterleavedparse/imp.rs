//! Element glue: input buffers → core [`Demuxer`] → sometimes pads per channel.

use gst_ipcam_common::sync::lock;
use std::collections::BTreeMap;
use std::sync::{LazyLock, Mutex, MutexGuard};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use super::TimestampMode;
use crate::interleaved::{
    ArrivalTimes, DEFAULT_MAX_TEXT_SIZE, Data, Demuxer, MessageKind, Output, PacketKind, RtpClock,
    RtspMessage, StreamCaps, static_payload_caps,
};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "rtspinterleavedparse",
        gst::DebugColorFlags::empty(),
        Some("RTSP interleaved (RTSP over TCP) parser"),
    )
});

#[derive(Debug, Clone)]
struct Settings {
    mode: TimestampMode,
    caps: Option<gst::Caps>,
    max_rtsp_message_size: u32,
    post_messages: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            mode: TimestampMode::Auto,
            caps: None,
            max_rtsp_message_size: DEFAULT_MAX_TEXT_SIZE as u32,
            post_messages: true,
        }
    }
}

type StreamKey = (PacketKind, u8);

struct Stream {
    pad: gst::Pad,
    clock: Option<RtpClock>,
    discont: bool,
    packets: u64,
}

struct State {
    demux: Demuxer,
    streams: BTreeMap<StreamKey, Stream>,
    flow: gst_base::UniqueFlowCombiner,
    upstream_segment: Option<gst::FormattedSegment<gst::ClockTime>>,
    /// Decided on the first buffer (mode auto: whether buffers carry times).
    use_upstream_times: Option<bool>,
    group_id: gst::GroupId,
    /// Highest running time output in rtp-time mode (ns); streams appearing later start here.
    max_running_time: u64,
    /// Upstream mode: input times made complete and monotonic.
    arrival: ArrivalTimes,
    outputs: Vec<Output>,
    warned_no_clock: bool,
}

impl Default for State {
    fn default() -> Self {
        State {
            demux: Demuxer::default(),
            streams: BTreeMap::new(),
            flow: gst_base::UniqueFlowCombiner::new(),
            upstream_segment: None,
            use_upstream_times: None,
            group_id: gst::GroupId::next(),
            max_running_time: 0,
            arrival: ArrivalTimes::default(),
            outputs: Vec::new(),
            warned_no_clock: false,
        }
    }
}

/// See [`RtspInterleavedParse::arrival_now`].
#[derive(Debug, Clone, Copy, Default)]
struct ElementNow {
    running: Option<u64>,
    absolute: Option<u64>,
}

/// Sets a new buffer's time and flags.
fn stamp(b: &mut gst::Buffer, pts: Option<gst::ClockTime>, flags: gst::BufferFlags) {
    let r = b.get_mut().expect("new buffer is writable");
    r.set_pts(pts);
    r.set_flags(flags);
}

/// A pad to create, with what the core knew when its first packet arrived.
struct NewStream {
    key: StreamKey,
    sdp: Option<StreamCaps>,
    payload_type: Option<u8>,
}

pub struct RtspInterleavedParse {
    sinkpad: gst::Pad,
    settings: Mutex<Settings>,
    state: Mutex<State>,
}

fn stream_caps_to_caps(s: &StreamCaps) -> gst::Caps {
    let mut b = gst::Structure::builder("application/x-rtp")
        .field("media", s.media.as_str())
        .field("payload", s.payload as i32);
    if s.clock_rate > 0 {
        b = b.field("clock-rate", s.clock_rate as i32);
    }
    if !s.encoding_name.is_empty() {
        b = b.field("encoding-name", s.encoding_name.as_str());
    }
    if let Some(p) = &s.encoding_params {
        b = b.field("encoding-params", p.as_str());
    }
    for (k, v) in &s.fmtp {
        b = b.field(k.as_str(), v.as_str());
    }
    gst::Caps::builder_full().structure(b.build()).build()
}

fn message_structure(m: &RtspMessage) -> gst::Structure {
    let mut b = gst::Structure::builder("rtsp-message");
    match &m.kind {
        MessageKind::Request { method, uri } => {
            b = b.field("kind", "request").field("method", method.as_str());
            if let Some(uri) = uri {
                b = b.field("uri", uri.as_str());
            }
        }
        MessageKind::Response { status, reason } => {
            b = b
                .field("kind", "response")
                .field("status", *status as u32)
                .field("reason", reason.as_str());
        }
    }
    if let Some(cseq) = m.cseq {
        b = b.field("cseq", cseq);
    }
    let mut headers = gst::Structure::new_empty("headers");
    for (name, value) in &m.headers {
        headers.set(name.to_ascii_lowercase().as_str(), value.as_str());
    }
    b.field("headers", headers)
        .field("body", String::from_utf8_lossy(&m.body).as_ref())
        .build()
}

impl RtspInterleavedParse {
    fn lock_state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn settings(&self) -> Settings {
        lock(&self.settings).clone()
    }

    fn stats(&self) -> gst::Structure {
        let state = self.lock_state();
        let s = state.demux.stats();
        let channels: Vec<glib::SendValue> = s
            .channels
            .iter()
            .enumerate()
            .filter(|(_, c)| c.frames > 0)
            .map(|(i, c)| {
                gst::Structure::builder("channel")
                    .field("channel", i as u32)
                    .field("frames", c.frames)
                    .field("bytes", c.bytes)
                    .build()
                    .to_send_value()
            })
            .collect();
        gst::Structure::builder("application/x-rtsp-interleaved-stats")
            .field("frames", s.frames)
            .field("bytes", s.bytes)
            .field("rtp-packets", s.rtp_packets)
            .field("rtcp-packets", s.rtcp_packets)
            .field("rtsp-messages", s.rtsp_messages)
            .field("resyncs", s.resyncs)
            .field("skipped-bytes", s.skipped_bytes)
            .field("zero-length-frames", s.zero_length_frames)
            .field("unknown-channel-frames", s.unknown_channel_frames)
            .field("timestamp-corrections", state.arrival.corrections())
            .field("channels", gst::Array::from_values(channels))
            .build()
    }

    /// Caps of a new RTP pad: the DESCRIBE SDP, else the application (`request-caps`), else
    /// the `caps` property, else what the static payload type tells.
    fn caps_for(&self, new: &NewStream, settings: &Settings) -> gst::Caps {
        let (kind, channel) = new.key;
        if kind == PacketKind::Rtcp {
            return gst::Caps::new_empty_simple("application/x-rtcp");
        }
        if let Some(sdp) = &new.sdp {
            return stream_caps_to_caps(sdp);
        }
        let requested = self
            .obj()
            .emit_by_name::<Option<gst::Caps>>("request-caps", &[&(channel as u32)]);
        let with_payload = |caps: gst::Caps| {
            let mut caps = caps;
            if let Some(pt) = new.payload_type
                && let Some(s) = caps.make_mut().structure_mut(0)
                && !s.has_field("payload")
            {
                s.set("payload", pt as i32);
            }
            caps
        };
        if let Some(caps) = requested.filter(|c| c.is_fixed()) {
            return with_payload(caps);
        }
        if let Some(caps) = settings.caps.clone().filter(|c| !c.is_empty()) {
            return with_payload(caps);
        }
        if let Some(s) = new.payload_type.and_then(static_payload_caps) {
            return stream_caps_to_caps(&s);
        }
        let mut b = gst::Caps::builder("application/x-rtp");
        if let Some(pt) = new.payload_type {
            b = b.field("payload", pt as i32);
        }
        b.build()
    }

    fn create_streams(&self, new_streams: Vec<NewStream>) {
        let settings = self.settings();
        for new in new_streams {
            let (kind, channel) = new.key;
            let caps = self.caps_for(&new, &settings);
            let clock_rate = caps
                .structure(0)
                .and_then(|s| s.get::<i32>("clock-rate").ok())
                .filter(|r| *r > 0);
            let (templ_name, name) = match kind {
                PacketKind::Rtp => ("rtp_%u", format!("rtp_{channel}")),
                PacketKind::Rtcp => ("rtcp_%u", format!("rtcp_{channel}")),
            };
            let obj = self.obj();
            let Some(templ) = obj.pad_template(templ_name) else {
                continue;
            };
            let pad = gst::Pad::builder_from_template(&templ)
                .name(name.as_str())
                .build();
            let (segment, group_id) = {
                let state = self.lock_state();
                let segment = match (state.use_upstream_times, &state.upstream_segment) {
                    (Some(true), Some(seg)) => seg.clone(),
                    _ => gst::FormattedSegment::<gst::ClockTime>::new(),
                };
                (segment, state.group_id)
            };
            gst::info!(CAT, imp = self, "New pad {name} with caps {caps}");
            let _ = pad.set_active(true);
            let stream_id = pad.create_stream_id(&*obj, Some(name.as_str()));
            pad.push_event(
                gst::event::StreamStart::builder(&stream_id)
                    .group_id(group_id)
                    .build(),
            );
            pad.push_event(gst::event::Caps::new(&caps));
            pad.push_event(gst::event::Segment::new(&segment));
            if let Err(err) = obj.add_pad(&pad) {
                gst::warning!(CAT, imp = self, "Could not add pad {name}: {err}");
                continue;
            }
            let mut state = self.lock_state();
            let start = state.max_running_time;
            state.flow.add_pad(&pad);
            state.streams.insert(
                new.key,
                Stream {
                    pad,
                    clock: clock_rate.and_then(|r| RtpClock::new(r as u32, start)),
                    discont: true,
                    packets: 0,
                },
            );
        }
    }

    /// Turns the core's outputs into buffer lists per pad (and bus messages) and pushes them.
    fn handle_outputs<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
        input: Option<&gst::Buffer>,
        input_bytes: &[u8],
        now: ElementNow,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        // Pads first: that needs the lock released (signal, add_pad).
        let mut new_streams: Vec<NewStream> = Vec::new();
        for out in &state.outputs {
            if let Output::Packet {
                kind,
                channel,
                data,
                ..
            } = out
            {
                let key = (*kind, *channel);
                if state.streams.contains_key(&key) || new_streams.iter().any(|n| n.key == key) {
                    continue;
                }
                let bytes = data.bytes(input_bytes);
                new_streams.push(NewStream {
                    key,
                    sdp: state.demux.session().stream_for_channel(*channel).cloned(),
                    payload_type: (*kind == PacketKind::Rtp)
                        .then(|| bytes.get(1).map(|b| b & 0x7f))
                        .flatten(),
                });
            }
        }
        if !new_streams.is_empty() {
            drop(state);
            self.create_streams(new_streams);
            state = self.lock_state();
        }

        let use_upstream = state.use_upstream_times.unwrap_or(false);
        let has_packets = state
            .outputs
            .iter()
            .any(|o| matches!(o, Output::Packet { .. }));
        let input_pts = if use_upstream && has_packets {
            let pts = input.and_then(|b| b.pts()).map(|t| t.nseconds());
            let out = state.arrival.next(pts, now.running, now.absolute);
            if out != pts {
                gst::debug!(
                    CAT,
                    imp = self,
                    "Input time {pts:?} is no arrival time (running time {:?}, clock {:?}): using {out:?}",
                    now.running,
                    now.absolute
                );
            }
            out.map(gst::ClockTime::from_nseconds)
        } else {
            None
        };
        let mut outputs = std::mem::take(&mut state.outputs);
        // One list per pad, in order of first packet; a chunk rarely feeds more than a few.
        let mut lists: Vec<(StreamKey, gst::Pad, gst::BufferList)> = Vec::new();
        let mut messages = Vec::new();
        // The input's single memory, shared per packet without going through
        // gst_buffer_copy_region (its general path costs more than the packet itself).
        let input_mem = input
            .filter(|b| b.n_memory() == 1)
            .map(|b| b.peek_memory(0));
        for out in outputs.drain(..) {
            match out {
                Output::Packet {
                    kind,
                    channel,
                    data,
                    ..
                } => {
                    let key = (kind, channel);
                    let rtp_ts = (kind == PacketKind::Rtp)
                        .then(|| {
                            data.bytes(input_bytes)
                                .get(4..8)
                                .map(|t| u32::from_be_bytes([t[0], t[1], t[2], t[3]]))
                        })
                        .flatten();
                    let max_rt = state.max_running_time;
                    let Some(stream) = state.streams.get_mut(&key) else {
                        continue;
                    };
                    let pts = if use_upstream {
                        input_pts
                    } else {
                        match (&mut stream.clock, rtp_ts) {
                            (Some(clock), Some(ts)) => Some(clock.running_time(ts)),
                            // RTCP, or RTP without a known clock rate.
                            _ => (kind == PacketKind::Rtcp).then_some(max_rt),
                        }
                        .map(gst::ClockTime::from_nseconds)
                    };
                    let flags = match std::mem::take(&mut stream.discont) {
                        true => gst::BufferFlags::DISCONT,
                        false => gst::BufferFlags::empty(),
                    };
                    // Each buffer is made writable once (the check is an atomic operation,
                    // and there is one buffer per packet).
                    let buffer = match (data, input) {
                        (Data::Input(range), Some(_))
                            if input_mem.is_some_and(|m| range.end <= m.size()) =>
                        {
                            let mem = input_mem.expect("checked").share(range);
                            let mut b = gst::Buffer::new();
                            let r = b.get_mut().expect("new buffer is writable");
                            r.append_memory(mem);
                            r.set_pts(pts);
                            r.set_flags(flags);
                            b
                        }
                        (Data::Input(range), Some(input)) => {
                            match input.copy_region(gst::BufferCopyFlags::MEMORY, range) {
                                Ok(mut b) => {
                                    stamp(&mut b, pts, flags);
                                    b
                                }
                                Err(_) => continue,
                            }
                        }
                        (Data::Input(_), None) => continue,
                        (Data::Owned(v), _) => {
                            let mut b = gst::Buffer::from_mut_slice(v);
                            stamp(&mut b, pts, flags);
                            b
                        }
                    };
                    stream.packets += 1;
                    let no_clock =
                        !use_upstream && kind == PacketKind::Rtp && stream.clock.is_none();
                    let pad = match lists.iter().any(|(k, ..)| *k == key) {
                        true => None,
                        false => Some(stream.pad.clone()),
                    };
                    if let Some(pts) = pts
                        && !use_upstream
                    {
                        state.max_running_time = state.max_running_time.max(pts.nseconds());
                    }
                    if no_clock && !state.warned_no_clock {
                        state.warned_no_clock = true;
                        gst::warning!(
                            CAT,
                            imp = self,
                            "No clock-rate for channel {channel}: packets go out without times"
                        );
                    }
                    match pad {
                        Some(pad) => {
                            let mut list = gst::BufferList::new_sized(64);
                            list.get_mut().expect("new list is writable").add(buffer);
                            lists.push((key, pad, list));
                        }
                        None => {
                            if let Some((.., list)) = lists.iter_mut().find(|(k, ..)| *k == key) {
                                list.get_mut().expect("list owned here").add(buffer);
                            }
                        }
                    }
                }
                Output::Message(m) => messages.push(m),
                // Not a DISCONT: garbage between frames loses no packet, and depayloaders
                // see real losses in the sequence numbers (a DISCONT would make them drop
                // the frame being reassembled).
                Output::Resync => {
                    gst::debug!(CAT, imp = self, "Lost sync, skipping to the next frame");
                }
            }
        }
        state.outputs = outputs;
        drop(state);

        if !messages.is_empty() && self.settings().post_messages {
            let obj = self.obj();
            for m in messages {
                gst::debug!(
                    CAT,
                    imp = self,
                    "RTSP message {:?} CSeq {:?}",
                    m.kind,
                    m.cseq
                );
                let _ = obj.post_message(
                    gst::message::Element::builder(message_structure(&m))
                        .src(&*obj)
                        .build(),
                );
            }
        }

        let mut result = Ok(gst::FlowSuccess::Ok);
        for (_, pad, list) in lists {
            let res = if list.len() == 1 {
                let buffer = list.get_owned(0).expect("one buffer");
                drop(list);
                pad.push(buffer)
            } else {
                pad.push_list(list)
            };
            let combined = self.lock_state().flow.update_pad_flow(&pad, res);
            if let Err(err) = combined {
                result = Err(err);
            }
        }
        result
    }

    fn sink_chain(
        &self,
        _pad: &gst::Pad,
        buffer: gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let decided = self.lock_state().use_upstream_times;
        // Arrival times are only used with upstream times; asking the clock costs more
        // than parsing a chunk.
        let now = match decided {
            Some(false) => ElementNow::default(),
            _ => self.arrival_now(),
        };
        // Decided outside the lock: the latency query goes upstream.
        let auto_upstream = decided.is_none() && self.upstream_has_times();
        let mut state = self.lock_state();
        if state.use_upstream_times.is_none() {
            let upstream = match self.settings().mode {
                TimestampMode::Upstream => true,
                TimestampMode::RtpTime => false,
                TimestampMode::Auto => auto_upstream,
            };
            gst::info!(
                CAT,
                imp = self,
                "Timestamps from {}",
                if upstream { "upstream" } else { "RTP times" }
            );
            state.use_upstream_times = Some(upstream);
            // Live input: no waiting for the byte after a frame (latency).
            state.demux.set_strict(!upstream);
        }
        if buffer.flags().contains(gst::BufferFlags::DISCONT) && state.demux.pending_bytes() > 0 {
            gst::debug!(CAT, imp = self, "Discontinuity, dropping held bytes");
            let mut outputs = std::mem::take(&mut state.outputs);
            let dropped = state.demux.finish(&mut outputs);
            outputs.clear();
            state.outputs = outputs;
            gst::debug!(CAT, imp = self, "Dropped {dropped} bytes");
            for s in state.streams.values_mut() {
                s.discont = true;
            }
        }
        let map = buffer.map_readable().map_err(|_| {
            gst::element_imp_error!(self, gst::CoreError::Failed, ["Failed to map buffer"]);
            gst::FlowError::Error
        })?;
        let mut outputs = std::mem::take(&mut state.outputs);
        outputs.clear();
        state.demux.push(&map, &mut outputs);
        state.outputs = outputs;
        self.handle_outputs(state, Some(&buffer), &map, now)
    }

    /// The element's running time (its start time while not PLAYING: 0 on a fresh pipeline)
    /// and clock time now, to tell arrival times stamped while the pipeline starts.
    fn arrival_now(&self) -> ElementNow {
        let obj = self.obj();
        let running = if obj.current_state() == gst::State::Playing {
            // PLAYING implies the base time is set (the bin sets it before the state).
            obj.current_running_time()
        } else {
            obj.start_time()
        };
        ElementNow {
            running: running.map(|t| t.nseconds()),
            absolute: obj.current_clock_time().map(|t| t.nseconds()),
        }
    }

    /// Mode auto: live upstream or a time segment carry arrival times worth keeping; byte
    /// streams (files, appsrc; basesrc stamps only their first buffer) do not.
    fn upstream_has_times(&self) -> bool {
        let time_segment = self.lock_state().upstream_segment.is_some();
        let mut q = gst::query::Latency::new();
        let live = self.sinkpad.peer_query(&mut q) && q.result().0;
        time_segment || live
    }

    fn drain_at_eos(&self) {
        // Before the state lock: it takes the object lock.
        let now = self.arrival_now();
        let mut state = self.lock_state();
        let mut outputs = std::mem::take(&mut state.outputs);
        outputs.clear();
        let dropped = state.demux.finish(&mut outputs);
        state.outputs = outputs;
        if dropped > 0 {
            gst::warning!(
                CAT,
                imp = self,
                "Dropped {dropped} bytes of a truncated item at EOS"
            );
        }
        let _ = self.handle_outputs(state, None, &[], now);
    }

    fn src_pads(&self) -> Vec<gst::Pad> {
        self.lock_state()
            .streams
            .values()
            .map(|s| s.pad.clone())
            .collect()
    }

    fn sink_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        use gst::EventView;
        gst::log!(CAT, obj = pad, "Handling event {event:?}");
        match event.view() {
            EventView::Caps(_) | EventView::StreamStart(_) => true,
            EventView::Segment(e) => {
                // Byte segments (filesrc) are ours to replace with time ones.
                if let Ok(seg) = e.segment().clone().downcast::<gst::ClockTime>() {
                    let forward = {
                        let mut state = self.lock_state();
                        state.upstream_segment = Some(seg.clone());
                        state.use_upstream_times == Some(true)
                    };
                    if forward {
                        for p in self.src_pads() {
                            p.push_event(gst::event::Segment::new(&seg));
                        }
                    }
                }
                true
            }
            EventView::Eos(_) => {
                self.drain_at_eos();
                let pads = self.src_pads();
                if pads.is_empty() {
                    gst::element_imp_error!(
                        self,
                        gst::StreamError::Demux,
                        ["No RTP or RTCP frames found in the stream"]
                    );
                }
                for p in pads {
                    p.push_event(event.clone());
                }
                true
            }
            EventView::FlushStop(_) => {
                {
                    let mut state = self.lock_state();
                    let mut outputs = Vec::new();
                    state.demux.finish(&mut outputs);
                    state.flow.reset();
                    state.arrival.reset();
                    for s in state.streams.values_mut() {
                        s.discont = true;
                    }
                }
                gst::Pad::event_default(pad, Some(&*self.obj()), event)
            }
            _ => gst::Pad::event_default(pad, Some(&*self.obj()), event),
        }
    }

    fn reset(&self) {
        let max = self.settings().max_rtsp_message_size as usize;
        let pads: Vec<gst::Pad> = {
            let mut state = self.lock_state();
            let pads = state.streams.values().map(|s| s.pad.clone()).collect();
            *state = State {
                demux: Demuxer::new(max),
                ..State::default()
            };
            pads
        };
        let obj = self.obj();
        for pad in pads {
            let _ = pad.set_active(false);
            let _ = obj.remove_pad(&pad);
        }
    }
}

#[glib::object_subclass]
impl ObjectSubclass for RtspInterleavedParse {
    const NAME: &'static str = "GstIpcamRtspInterleavedParse";
    type Type = super::RtspInterleavedParse;
    type ParentType = gst::Element;

    fn with_class(klass: &Self::Class) -> Self {
        let templ = klass.pad_template("sink").expect("sink template");
        let sinkpad = gst::Pad::builder_from_template(&templ)
            .chain_function(|pad, parent, buffer| {
                RtspInterleavedParse::catch_panic_pad_function(
                    parent,
                    || Err(gst::FlowError::Error),
                    |imp| imp.sink_chain(pad, buffer),
                )
            })
            .event_function(|pad, parent, event| {
                RtspInterleavedParse::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.sink_event(pad, event),
                )
            })
            .build();
        RtspInterleavedParse {
            sinkpad,
            settings: Mutex::new(Settings::default()),
            state: Mutex::new(State::default()),
        }
    }
}

impl ObjectImpl for RtspInterleavedParse {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPS: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecEnum::builder_with_default("mode", TimestampMode::Auto)
                    .nick("Timestamp mode")
                    .blurb(
                        "Output times: upstream (arrival) times, running time from RTP \
                         timestamps (to remux a dump at its real speed), or auto (upstream for live \
                         input or time segments)",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Caps>("caps")
                    .nick("Caps")
                    .blurb(
                        "Default application/x-rtp caps for channels the stream's SDP does \
                         not describe (payload is filled in from the packets)",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("max-rtsp-message-size")
                    .nick("Max RTSP message size")
                    .blurb("Largest RTSP message (headers and body) accepted; longer text is skipped as garbage")
                    .minimum(256)
                    .maximum(16 * 1024 * 1024)
                    .default_value(DEFAULT_MAX_TEXT_SIZE as u32)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("post-messages")
                    .nick("Post messages")
                    .blurb("Post an rtsp-message element message for every RTSP request and response")
                    .default_value(true)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb("Frames, bytes, RTSP messages, resyncs, skipped bytes, per-channel counts")
                    .read_only()
                    .build(),
            ]
        });
        PROPS.as_ref()
    }

    fn signals() -> &'static [glib::subclass::Signal] {
        static SIGNALS: LazyLock<Vec<glib::subclass::Signal>> = LazyLock::new(|| {
            vec![
                glib::subclass::Signal::builder("request-caps")
                    .param_types([u32::static_type()])
                    .return_type::<Option<gst::Caps>>()
                    .build(),
            ]
        });
        SIGNALS.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut settings = lock(&self.settings);
        match pspec.name() {
            "mode" => settings.mode = value.get().expect("type checked upstream"),
            "caps" => settings.caps = value.get().expect("type checked upstream"),
            "max-rtsp-message-size" => {
                settings.max_rtsp_message_size = value.get().expect("type checked upstream")
            }
            "post-messages" => settings.post_messages = value.get().expect("type checked upstream"),
            _ => unimplemented!(),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        match pspec.name() {
            "stats" => self.stats().to_value(),
            name => {
                let settings = self.settings();
                match name {
                    "mode" => settings.mode.to_value(),
                    "caps" => settings.caps.to_value(),
                    "max-rtsp-message-size" => settings.max_rtsp_message_size.to_value(),
                    "post-messages" => settings.post_messages.to_value(),
                    _ => unimplemented!(),
                }
            }
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        self.obj()
            .add_pad(&self.sinkpad)
            .expect("adding the sink pad");
    }
}

impl GstObjectImpl for RtspInterleavedParse {}

impl ElementImpl for RtspInterleavedParse {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "RTSP interleaved parser",
                "Codec/Demuxer/Network/RTP",
                "Extracts RTP and RTCP from the bytes of an RTSP-over-TCP session ($-framed \
                 interleaved data), with caps from the session's SDP",
                "gst-ipcam developers",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            vec![
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &gst::Caps::new_any(),
                )
                .expect("sink template"),
                gst::PadTemplate::new(
                    "rtp_%u",
                    gst::PadDirection::Src,
                    gst::PadPresence::Sometimes,
                    &gst::Caps::new_empty_simple("application/x-rtp"),
                )
                .expect("rtp template"),
                gst::PadTemplate::new(
                    "rtcp_%u",
                    gst::PadDirection::Src,
                    gst::PadPresence::Sometimes,
                    &gst::Caps::new_empty_simple("application/x-rtcp"),
                )
                .expect("rtcp template"),
            ]
        });
        TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        if transition == gst::StateChange::ReadyToPaused {
            self.reset();
        }
        let ret = self.parent_change_state(transition)?;
        if transition == gst::StateChange::PausedToReady {
            self.reset();
        }
        Ok(ret)
    }
}

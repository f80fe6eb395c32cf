//! The `psdemux` element: thin glue around [`crate::demux::Demuxer`].

use std::collections::VecDeque;
use std::sync::{LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use super::output::{build_buffer, caps_for};
use crate::demux::{self, AudioInfo, Demuxer, Event, Frame, scan};
use crate::ps::{self, Codec};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "psdemux",
        gst::DebugColorFlags::empty(),
        Some("MPEG-PS demuxer for IP cameras"),
    )
});

const DEFAULT_MAX_FRAME_SIZE: u32 = 8 * 1024 * 1024;
/// Bytes pulled per iteration in pull mode.
const PULL_CHUNK: u32 = 512 * 1024;
/// Bytes scanned at the start/end of a file for timestamps, and per bisection probe.
const SCAN_CHUNK: u32 = 256 * 1024;

#[derive(Debug, Clone)]
struct Settings {
    max_frame_size: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
        }
    }
}

struct OutStream {
    stream_id: u8,
    pad: gst::Pad,
    need_segment: bool,
    need_discont: bool,
    /// Stream time this pad is known to be covered up to (last buffer or GAP pushed).
    covered_until: Option<gst::ClockTime>,
}

/// A stream silent for this long while others advance gets a GAP event, so sinks behind
/// a PSM-announced stream that never carries data (cameras list audio they don't send)
/// still preroll and downstream aggregators don't wait for it.
const SPARSE_GAP: gst::ClockTime = gst::ClockTime::from_seconds(1);
/// The streams seen in this much stream time are taken as all there are (for flow
/// combining: until then, no linked pad yet is not an error).
const DISCOVERY: gst::ClockTime = gst::ClockTime::from_seconds(2);

/// Facts about the file in pull mode.
#[derive(Debug, Clone, Copy, Default)]
struct PullInfo {
    size: u64,
    offset: u64,
    /// Raw 33-bit PTS of the file start.
    first_pts: Option<u64>,
    duration: Option<gst::ClockTime>,
    eos_sent: bool,
}

struct State {
    core: Demuxer,
    /// Input buffers still referenced, keyed by absolute offset (ascending).
    inputs: VecDeque<(u64, gst::Buffer)>,
    streams: Vec<OutStream>,
    group_id: gst::GroupId,
    frame_aligned: bool,
    /// Unwrapped 90 kHz time mapped to `base_time`.
    base_ts: Option<u64>,
    base_time: gst::ClockTime,
    upstream_segment: gst::Segment,
    segment: gst::FormattedSegment<gst::ClockTime>,
    segment_seqnum: Option<gst::Seqnum>,
    pull: Option<PullInfo>,
    /// After a seek: frames whose data starts before this absolute offset are not pushed
    /// (the pack we restart at may precede the key frame we seeked to).
    skip_until: u64,
    /// Highest PTS pushed since the last segment, for POSITION queries.
    position: Option<gst::ClockTime>,
    /// PTS of the first frame, while the set of streams is still being discovered.
    first_pts: Option<gst::ClockTime>,
    /// The set of streams is known ([`DISCOVERY`] of stream time went by; a PSM is not
    /// enough: encoders send audio-only PSMs before their first video frame): from then on,
    /// all pads NOT_LINKED stops the element, as with every demuxer.
    streams_known: bool,
    events: Vec<Event>,
}

impl Default for State {
    fn default() -> Self {
        State {
            core: Demuxer::new(demux::Config::default()),
            inputs: VecDeque::new(),
            streams: Vec::new(),
            group_id: gst::GroupId::next(),
            frame_aligned: false,
            base_ts: None,
            base_time: gst::ClockTime::ZERO,
            upstream_segment: gst::Segment::new(),
            segment: gst::FormattedSegment::new(),
            segment_seqnum: None,
            pull: None,
            skip_until: 0,
            position: None,
            first_pts: None,
            streams_known: false,
            events: Vec::new(),
        }
    }
}

/// What to do on the pads once the state lock is released.
enum Action {
    AddPad(gst::Pad, Vec<gst::Event>),
    Event(gst::Pad, gst::Event),
    Push(gst::Pad, gst::Buffer),
}

pub struct PsDemux {
    sinkpad: gst::Pad,
    settings: Mutex<Settings>,
    state: Mutex<State>,
    flow_combiner: Mutex<gst_base::UniqueFlowCombiner>,
}

fn ticks_to_time(ticks: u64) -> gst::ClockTime {
    gst::ClockTime::from_nseconds(
        ticks
            .mul_div_floor(1_000_000_000, ps::PTS_CLOCK)
            .unwrap_or(u64::MAX / 2),
    )
}

use gst::prelude::MulDiv;

impl PsDemux {
    fn stats_structure(&self) -> gst::Structure {
        let st = self.state.lock().unwrap().core.stats();
        let streams: Vec<glib::SendValue> = st
            .streams
            .iter()
            .map(|s| {
                gst::Structure::builder("stream")
                    .field("stream-id", s.stream_id as u32)
                    .field("codec", s.codec.map(|c| c.name()).unwrap_or("unknown"))
                    .field("frames", s.frames)
                    .field("bytes", s.bytes)
                    .field("dropped-bytes", s.dropped_bytes)
                    .build()
                    .to_send_value()
            })
            .collect();
        gst::Structure::builder("application/x-psdemux-stats")
            .field("packs", st.packs)
            .field("pes-packets", st.pes_packets)
            .field("bytes", st.bytes)
            .field("resyncs", st.resyncs)
            .field("streams", gst::Array::from_values(streams))
            .build()
    }

    fn pad_name(stream_id: u8) -> String {
        if ps::is_video_stream_id(stream_id) {
            format!("video_{stream_id:02x}")
        } else {
            format!("audio_{stream_id:02x}")
        }
    }

    fn segment_event(state: &State) -> gst::Event {
        let mut b = gst::event::Segment::builder(&state.segment);
        if let Some(s) = state.segment_seqnum {
            b = b.seqnum(s);
        }
        b.build()
    }

    /// Converts core events into pad actions. Called with the state lock held.
    fn handle_events(&self, state: &mut State, actions: &mut Vec<Action>) {
        let events = std::mem::take(&mut state.events);
        for ev in &events {
            match ev {
                Event::StreamAdded {
                    stream_id,
                    codec,
                    audio,
                } => {
                    let caps = caps_for(*codec, *audio);
                    if let Some(s) = state.streams.iter().find(|s| s.stream_id == *stream_id) {
                        actions.push(Action::Event(s.pad.clone(), gst::event::Caps::new(&caps)));
                        continue;
                    }
                    gst::info!(CAT, imp = self, "new stream 0x{stream_id:02x}: {caps}");
                    let name = Self::pad_name(*stream_id);
                    let templ = self
                        .obj()
                        .class()
                        .pad_template(if ps::is_video_stream_id(*stream_id) {
                            "video_%02x"
                        } else {
                            "audio_%02x"
                        })
                        .unwrap();
                    let pad = gst::Pad::builder_from_template(&templ)
                        .name(name.as_str())
                        .query_function(|pad, parent, query| {
                            PsDemux::catch_panic_pad_function(
                                parent,
                                || false,
                                |imp| imp.src_query(pad, query),
                            )
                        })
                        .event_function(|pad, parent, event| {
                            PsDemux::catch_panic_pad_function(
                                parent,
                                || false,
                                |imp| imp.src_event(pad, event),
                            )
                        })
                        .build();
                    let stream_id_str = pad.create_stream_id(&*self.obj(), Some(name.as_str()));
                    let sticky = vec![
                        gst::event::StreamStart::builder(&stream_id_str)
                            .group_id(state.group_id)
                            .build(),
                        gst::event::Caps::new(&caps),
                        Self::segment_event(state),
                    ];
                    state.streams.push(OutStream {
                        stream_id: *stream_id,
                        pad: pad.clone(),
                        need_segment: false,
                        need_discont: true,
                        covered_until: None,
                    });
                    actions.push(Action::AddPad(pad, sticky));
                }
                Event::StreamChanged {
                    stream_id,
                    codec,
                    audio,
                } => {
                    if let Some(s) = state.streams.iter().find(|s| s.stream_id == *stream_id) {
                        let caps = caps_for(*codec, *audio);
                        gst::info!(CAT, imp = self, "stream 0x{stream_id:02x} now {caps}");
                        actions.push(Action::Event(s.pad.clone(), gst::event::Caps::new(&caps)));
                    }
                }
                Event::Frame(f) => self.handle_frame(state, f, actions),
                Event::Dropped {
                    stream_id,
                    bytes,
                    reason,
                } => {
                    if *reason == demux::DropReason::TooLarge {
                        gst::element_imp_warning!(
                            self,
                            gst::StreamError::Demux,
                            [
                                "Dropped a {bytes}-byte frame of stream 0x{stream_id:02x}: larger than max-frame-size"
                            ]
                        );
                    } else {
                        gst::debug!(
                            CAT,
                            imp = self,
                            "dropped {bytes} bytes of stream 0x{stream_id:02x}: {reason:?}"
                        );
                    }
                }
                Event::Resync { offset } => {
                    gst::debug!(CAT, imp = self, "lost sync at offset {offset}, resyncing");
                }
            }
        }
        state.events = events;
        state.events.clear();
    }

    fn handle_frame(&self, state: &mut State, f: &Frame, actions: &mut Vec<Action>) {
        let Some(idx) = state
            .streams
            .iter()
            .position(|s| s.stream_id == f.stream_id)
        else {
            return;
        };
        let Some(mut buffer) = build_buffer(&state.inputs, &f.ranges, f.size) else {
            gst::warning!(CAT, imp = self, "frame data no longer available");
            return;
        };
        let ts0 = f.dts.or(f.pts);
        if state.base_ts.is_none() {
            state.base_ts = ts0;
        }
        let base_ts = state.base_ts.unwrap_or(0);
        let to_time = |t: u64| state.base_time + ticks_to_time(t.saturating_sub(base_ts));
        let pts = f.pts.map(to_time);
        let dts = f.dts.map(to_time);
        if let Some(p) = pts
            && state.position.is_none_or(|pos| p > pos)
        {
            state.position = Some(p);
        }
        if let Some(p) = pts
            && !state.streams_known
        {
            let first = *state.first_pts.get_or_insert(p);
            state.streams_known = p.saturating_sub(first) >= DISCOVERY;
        }
        let s = &mut state.streams[idx];
        {
            let b = buffer.make_mut();
            b.set_pts(pts);
            b.set_dts(dts);
            if !f.key {
                b.set_flags(gst::BufferFlags::DELTA_UNIT);
            }
            if f.discont || s.need_discont {
                b.set_flags(gst::BufferFlags::DISCONT);
            }
        }
        s.need_discont = false;
        if let Some(p) = pts {
            s.covered_until = Some(s.covered_until.map_or(p, |c| c.max(p)));
        }
        if s.need_segment {
            s.need_segment = false;
            let pad = s.pad.clone();
            actions.push(Action::Event(pad, Self::segment_event(state)));
        }
        if let Some(now) = pts {
            self.fill_sparse_streams(state, idx, now, actions);
        }
        let s = &state.streams[idx];
        gst::trace!(
            CAT,
            imp = self,
            "stream 0x{:02x}: {} bytes pts {:?} key {}",
            f.stream_id,
            f.size,
            pts,
            f.key
        );
        actions.push(Action::Push(s.pad.clone(), buffer));
    }

    /// Sends GAP events on the streams (other than `current`) that have been silent for
    /// more than [`SPARSE_GAP`] of stream time before `now`.
    fn fill_sparse_streams(
        &self,
        state: &mut State,
        current: usize,
        now: gst::ClockTime,
        actions: &mut Vec<Action>,
    ) {
        let start = state.segment.start().unwrap_or(gst::ClockTime::ZERO);
        for i in 0..state.streams.len() {
            if i == current {
                continue;
            }
            // A stream is silent from the first moment it is looked at, not from the segment
            // start: a live source's first data comes at a running time well past 0 (the
            // camera was INVITEd), and a GAP before the first data of a stream that is about
            // to carry it reaches the payloader before its caps (an RTSP media then prerolls
            // without caps and cannot make its SDP).
            let Some(covered) = state.streams[i].covered_until else {
                state.streams[i].covered_until = Some(now.max(start));
                continue;
            };
            let from = covered.max(start);
            if now <= from + SPARSE_GAP {
                continue;
            }
            let until = now - SPARSE_GAP / 2;
            if state.streams[i].need_segment {
                state.streams[i].need_segment = false;
                actions.push(Action::Event(
                    state.streams[i].pad.clone(),
                    Self::segment_event(state),
                ));
            }
            let s = &mut state.streams[i];
            gst::trace!(
                CAT,
                imp = self,
                "stream 0x{:02x}: gap {} - {}",
                s.stream_id,
                from,
                until
            );
            actions.push(Action::Event(
                s.pad.clone(),
                gst::event::Gap::builder(from)
                    .duration(until - from)
                    .build(),
            ));
            s.covered_until = Some(until);
        }
    }

    /// Runs pad actions; `streams_known` tells whether all pads NOT_LINKED may stop the
    /// element yet (before that, a stream that is not linked must not stop the one that will
    /// be: a camera's audio often comes before the first PSM and the video pad).
    fn run_actions(
        &self,
        actions: Vec<Action>,
        streams_known: bool,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let mut ret = Ok(gst::FlowSuccess::Ok);
        // A pad added after the last push has not failed yet: it may be linked.
        let mut added_since_push = false;
        for a in actions {
            match a {
                Action::AddPad(pad, sticky) => {
                    added_since_push = true;
                    pad.set_active(true).ok();
                    for ev in sticky {
                        pad.push_event(ev);
                    }
                    self.flow_combiner.lock().unwrap().add_pad(&pad);
                    if self.obj().add_pad(&pad).is_err() {
                        gst::warning!(CAT, imp = self, "could not add pad {}", pad.name());
                    }
                }
                Action::Event(pad, ev) => {
                    pad.push_event(ev);
                }
                Action::Push(pad, buffer) => {
                    added_since_push = false;
                    let res = pad.push(buffer);
                    ret = self
                        .flow_combiner
                        .lock()
                        .unwrap()
                        .update_pad_flow(&pad, res);
                    if ret == Err(gst::FlowError::NotLinked) && !streams_known {
                        gst::debug!(CAT, imp = self, "no pad linked yet, still discovering");
                        ret = Ok(gst::FlowSuccess::Ok);
                    }
                    if let Err(e) = ret
                        && e != gst::FlowError::NotLinked
                    {
                        gst::debug!(CAT, imp = self, "flow {e:?} on {}", pad.name());
                    }
                }
            }
        }
        if ret == Err(gst::FlowError::NotLinked) && added_since_push {
            ret = Ok(gst::FlowSuccess::Ok);
        }
        ret
    }

    /// Feeds one input buffer through the core and pushes what comes out.
    fn process_buffer(&self, buffer: gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        let mut actions = Vec::new();
        let streams_known = {
            let mut state = self.state.lock().unwrap();
            let state = &mut *state;
            let mut events = std::mem::take(&mut state.events);
            // In pull mode we choose the offsets ourselves; DISCONT there means nothing was lost.
            if buffer.flags().contains(gst::BufferFlags::DISCONT)
                && state.pull.is_none()
                && state.core.offset() > 0
            {
                gst::debug!(CAT, imp = self, "discont input: resync");
                state.core.discont(&mut events);
            }
            if state.base_ts.is_none()
                && state.pull.is_none()
                && let Some(pts) = buffer.pts()
            {
                // Live: map the first PS timestamp to the running time of its input buffer.
                let rt = state
                    .upstream_segment
                    .downcast_ref::<gst::ClockTime>()
                    .and_then(|s| s.to_running_time(pts));
                state.base_time = rt.unwrap_or(pts);
            }
            let offset = state.core.offset();
            state.inputs.push_back((offset, buffer.clone()));
            {
                let Ok(map) = buffer.map_readable() else {
                    gst::element_imp_error!(
                        self,
                        gst::StreamError::Failed,
                        ["Unreadable input buffer"]
                    );
                    return Err(gst::FlowError::Error);
                };
                state.core.push(&map, &mut events);
            }
            if state.frame_aligned {
                state.core.end_of_unit(&mut events);
            }
            state.events = events;
            self.handle_events(state, &mut actions);
            let oldest = state.core.oldest_needed_offset();
            while let Some((o, b)) = state.inputs.front() {
                if o + b.size() as u64 <= oldest {
                    state.inputs.pop_front();
                } else {
                    break;
                }
            }
            state.streams_known
        };
        self.run_actions(actions, streams_known)
    }

    fn drain(&self) -> Result<gst::FlowSuccess, gst::FlowError> {
        let mut actions = Vec::new();
        {
            let mut state = self.state.lock().unwrap();
            let state = &mut *state;
            let mut events = std::mem::take(&mut state.events);
            state.core.finish(&mut events);
            state.events = events;
            self.handle_events(state, &mut actions);
            state.inputs.clear();
        }
        self.run_actions(actions, true)
    }

    fn push_to_all(&self, event: gst::Event) -> bool {
        let pads: Vec<gst::Pad> = self
            .state
            .lock()
            .unwrap()
            .streams
            .iter()
            .map(|s| s.pad.clone())
            .collect();
        let mut ok = true;
        for p in pads {
            ok &= p.push_event(event.clone());
        }
        ok
    }

    fn send_eos(&self) {
        let (no_pads, seqnum) = {
            let state = self.state.lock().unwrap();
            (state.streams.is_empty(), state.segment_seqnum)
        };
        if no_pads {
            gst::element_imp_error!(
                self,
                gst::StreamError::Demux,
                ["No streams found in the PS data"]
            );
        }
        let mut b = gst::event::Eos::builder();
        if let Some(s) = seqnum {
            b = b.seqnum(s);
        }
        self.push_to_all(b.build());
    }

    fn reset_stream(&self, state: &mut State, offset: u64, at_start_code: bool) {
        state.core.reset_at(offset, at_start_code);
        state.inputs.clear();
        state.skip_until = 0;
        state.position = None;
        for s in &mut state.streams {
            s.need_segment = true;
            s.need_discont = true;
            s.covered_until = None;
        }
        self.flow_combiner.lock().unwrap().reset();
    }

    fn sink_chain(&self, buffer: gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        self.process_buffer(buffer)
    }

    fn sink_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        use gst::EventView;
        gst::log!(CAT, obj = pad, "event {event:?}");
        match event.view() {
            EventView::Caps(c) => {
                let aligned = c
                    .caps()
                    .structure(0)
                    .and_then(|s| s.get::<&str>("alignment").ok())
                    == Some("frame");
                self.state.lock().unwrap().frame_aligned = aligned;
                gst::debug!(CAT, imp = self, "frame-aligned input: {aligned}");
                true
            }
            EventView::Segment(s) => {
                let mut state = self.state.lock().unwrap();
                state.upstream_segment = s.segment().clone();
                state.segment_seqnum = Some(event.seqnum());
                true
            }
            EventView::StreamStart(_) => true,
            EventView::Eos(_) => {
                let _ = self.drain();
                self.send_eos();
                true
            }
            EventView::FlushStart(_) => self.push_to_all(event.clone()),
            EventView::FlushStop(_) => {
                {
                    let mut state = self.state.lock().unwrap();
                    let off = state.core.offset();
                    self.reset_stream(&mut state, off, false);
                }
                self.push_to_all(event.clone())
            }
            _ => {
                if event.is_serialized() || event.type_() == gst::EventType::Tag {
                    self.push_to_all(event)
                } else {
                    gst::Pad::event_default(pad, Some(&*self.obj()), event)
                }
            }
        }
    }

    fn src_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        use gst::QueryViewMut;
        match query.view_mut() {
            QueryViewMut::Duration(q) if q.format() == gst::Format::Time => {
                let d = self.state.lock().unwrap().pull.and_then(|p| p.duration);
                if let Some(d) = d {
                    q.set(d);
                    true
                } else {
                    self.sinkpad.peer_query(q.query_mut())
                }
            }
            QueryViewMut::Position(q) if q.format() == gst::Format::Time => {
                let state = self.state.lock().unwrap();
                let pos = state
                    .position
                    .and_then(|p| state.segment.to_stream_time(p))
                    .or(state.position);
                drop(state);
                if let Some(p) = pos {
                    q.set(p);
                    true
                } else {
                    gst::Pad::query_default(pad, Some(&*self.obj()), query)
                }
            }
            QueryViewMut::Seeking(q) => {
                let d = self.state.lock().unwrap().pull.and_then(|p| p.duration);
                if q.format() == gst::Format::Time
                    && let Some(d) = d
                {
                    q.set(true, gst::ClockTime::ZERO, d);
                    true
                } else if self.sinkpad.peer_query(q.query_mut()) {
                    true
                } else {
                    q.set(
                        false,
                        gst::GenericFormattedValue::none_for_format(q.format()),
                        gst::GenericFormattedValue::none_for_format(q.format()),
                    );
                    true
                }
            }
            _ => gst::Pad::query_default(pad, Some(&*self.obj()), query),
        }
    }

    fn src_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        if let gst::EventView::Seek(s) = event.view()
            && self.state.lock().unwrap().pull.is_some()
        {
            let (rate, flags, start_type, start, _, _) = s.get();
            if let gst::GenericFormattedValue::Time(start) = start
                && rate > 0.0
            {
                let start = if start_type == gst::SeekType::Set {
                    start.unwrap_or(gst::ClockTime::ZERO)
                } else {
                    gst::ClockTime::ZERO
                };
                return self.seek(start, flags, event.seqnum());
            }
            gst::debug!(CAT, imp = self, "unsupported seek {event:?}");
            return false;
        }
        gst::Pad::event_default(pad, Some(&*self.obj()), event)
    }

    // ---- pull mode ----

    fn pull_chunk(&self, offset: u64, size: u32) -> Option<gst::Buffer> {
        self.sinkpad.pull_range(offset, size).ok()
    }

    /// Time of the first PTS at or after `offset` (relative to the file start).
    fn probe_time_at(&self, offset: u64, first_pts: u64) -> Option<(gst::ClockTime, u64)> {
        let buf = self.pull_chunk(offset, SCAN_CHUNK)?;
        let map = buf.map_readable().ok()?;
        let f = scan::first_pts(&map)?;
        let d = scan::pts_diff(first_pts, f.pts).max(0) as u64;
        Some((ticks_to_time(d), offset + f.pos as u64))
    }

    fn pull_setup(&self) {
        let size = self
            .sinkpad
            .peer_query_duration::<gst::format::Bytes>()
            .map(|b| *b)
            .unwrap_or(0);
        let mut info = PullInfo {
            size,
            ..Default::default()
        };
        if let Some(buf) = self.pull_chunk(0, SCAN_CHUNK)
            && let Ok(map) = buf.map_readable()
            && let Some(f) = scan::first_pts(&map)
        {
            let first = f
                .dts
                .map(|d| {
                    if scan::pts_diff(d, f.pts) > 0 {
                        d
                    } else {
                        f.pts
                    }
                })
                .unwrap_or(f.pts);
            info.first_pts = Some(first);
            if size > 0 {
                let start = size.saturating_sub(SCAN_CHUNK as u64);
                if let Some(end) = self.pull_chunk(start, SCAN_CHUNK)
                    && let Ok(map) = end.map_readable()
                    && let Some(l) = scan::last_pts(&map)
                {
                    let d = scan::pts_diff(first, l.pts).max(0) as u64;
                    info.duration = Some(ticks_to_time(d));
                }
            }
        }
        gst::debug!(CAT, imp = self, "pull mode: {info:?}");
        let mut state = self.state.lock().unwrap();
        if let Some(first) = info.first_pts {
            state.base_ts = Some(first + ps::PTS_MODULO);
        }
        state.base_time = gst::ClockTime::ZERO;
        let mut seg = gst::FormattedSegment::<gst::ClockTime>::new();
        seg.set_duration(info.duration);
        state.segment = seg;
        state.pull = Some(info);
    }

    fn pull_loop(&self) {
        let (offset, size) = {
            let state = self.state.lock().unwrap();
            let Some(p) = state.pull else { return };
            if p.eos_sent {
                drop(state);
                let _ = self.sinkpad.pause_task();
                return;
            }
            (p.offset, p.size)
        };
        let res = if size > 0 && offset >= size {
            Err(gst::FlowError::Eos)
        } else {
            self.sinkpad.pull_range(offset, PULL_CHUNK)
        };
        let ret = match res {
            Ok(buf) if buf.size() > 0 => {
                if let Some(p) = self.state.lock().unwrap().pull.as_mut() {
                    p.offset += buf.size() as u64;
                }
                self.process_buffer(buf)
            }
            Ok(_) => Err(gst::FlowError::Eos),
            Err(e) => Err(e),
        };
        match ret {
            Ok(_) => {}
            Err(gst::FlowError::Eos) => {
                let _ = self.drain();
                self.send_eos();
                if let Some(p) = self.state.lock().unwrap().pull.as_mut() {
                    p.eos_sent = true;
                }
                let _ = self.sinkpad.pause_task();
            }
            Err(gst::FlowError::Flushing) => {
                let _ = self.sinkpad.pause_task();
            }
            Err(e) => {
                if e != gst::FlowError::Flushing {
                    gst::element_imp_error!(
                        self,
                        gst::StreamError::Failed,
                        ["Streaming stopped, reason {e:?}"]
                    );
                    self.send_eos();
                }
                let _ = self.sinkpad.pause_task();
            }
        }
    }

    fn start_task(&self) -> Result<(), gst::LoggableError> {
        let obj = self.obj().downgrade();
        self.sinkpad
            .start_task(move || {
                if let Some(obj) = obj.upgrade() {
                    obj.imp().pull_loop();
                }
            })
            .map_err(|e| gst::loggable_error!(CAT, "failed to start task: {e}"))
    }

    /// Flushing TIME seek in pull mode: bisect on timestamps, restart at a pack start.
    fn seek(&self, target: gst::ClockTime, flags: gst::SeekFlags, seqnum: gst::Seqnum) -> bool {
        let flush = flags.contains(gst::SeekFlags::FLUSH);
        gst::debug!(CAT, imp = self, "seek to {target} flags {flags:?}");
        if flush {
            self.push_to_all(gst::event::FlushStart::builder().seqnum(seqnum).build());
        }
        let _ = self.sinkpad.pause_task();
        let _stream_lock = self.sinkpad.stream_lock();
        let Some(info) = self.state.lock().unwrap().pull else {
            return false;
        };
        let first = info.first_pts.unwrap_or(0);
        // Bisection: the last offset whose first timestamp is <= target.
        let (mut lo, mut hi) = (0u64, info.size);
        let mut best = 0u64;
        for _ in 0..48 {
            if hi <= lo + SCAN_CHUNK as u64 / 4 {
                break;
            }
            let mid = lo + (hi - lo) / 2;
            match self.probe_time_at(mid, first) {
                Some((t, pos)) if t <= target => {
                    best = pos;
                    lo = mid;
                }
                Some(_) => hi = mid,
                None => hi = mid,
            }
        }
        // Restart at the pack header before the key frame at or before the chosen PES.
        let codec = self
            .state
            .lock()
            .unwrap()
            .core
            .stats()
            .streams
            .iter()
            .find(|s| ps::is_video_stream_id(s.stream_id))
            .and_then(|s| s.codec);
        let mut start = best;
        let mut key_time = None;
        let mut skip_until = 0;
        let mut at_start_code = false;
        // Look a little past the chosen PES too: a key frame right at the target counts.
        let mut end = (best + SCAN_CHUNK as u64 / 2).min(info.size.max(best + 4));
        for _ in 0..32 {
            let from = end.saturating_sub(SCAN_CHUNK as u64);
            let Some(buf) = self.pull_chunk(from, (end - from) as u32 + 64) else {
                break;
            };
            let Ok(map) = buf.map_readable() else { break };
            let before = (end - from) as usize;
            gst::debug!(
                CAT,
                imp = self,
                "seek: best {best}, looking for a key frame in {from}..{end}"
            );
            let key = codec.and_then(|c| {
                scan::last_key_pes(&map, c, |pts| {
                    ticks_to_time(scan::pts_diff(first, pts).max(0) as u64) <= target
                })
            });
            if let Some((key_pos, pts)) = key {
                // Restart right at the key frame's PES (packs can be far apart).
                start = from + key_pos as u64;
                at_start_code = true;
                skip_until = start;
                key_time = Some(ticks_to_time(scan::pts_diff(first, pts).max(0) as u64));
                break;
            }
            if codec.is_none()
                && let Some(pack) = scan::last_pack_before(&map, before.min(map.len()))
            {
                start = from + pack as u64;
                break;
            }
            if from == 0 {
                break;
            }
            end = from + 4;
        }
        let seg_start = match key_time {
            Some(k) if flags.contains(gst::SeekFlags::KEY_UNIT) => k,
            _ => target,
        };
        gst::debug!(
            CAT,
            imp = self,
            "seek: restarting at byte {start}, key frame at {key_time:?}"
        );
        if flush {
            self.push_to_all(gst::event::FlushStop::builder(true).seqnum(seqnum).build());
        }
        {
            let mut state = self.state.lock().unwrap();
            self.reset_stream(&mut state, start, at_start_code);
            state.skip_until = skip_until;
            let mut seg = gst::FormattedSegment::<gst::ClockTime>::new();
            seg.set_start(seg_start);
            seg.set_time(seg_start);
            seg.set_position(seg_start);
            seg.set_duration(info.duration);
            state.segment = seg;
            state.segment_seqnum = Some(seqnum);
            if let Some(p) = state.pull.as_mut() {
                p.offset = start;
                p.eos_sent = false;
            }
        }
        drop(_stream_lock);
        self.start_task().is_ok()
    }

    fn sink_activate(&self, pad: &gst::Pad) -> Result<(), gst::LoggableError> {
        let mut query = gst::query::Scheduling::new();
        let pull = pad.peer_query(&mut query)
            && query
                .has_scheduling_mode_with_flags(gst::PadMode::Pull, gst::SchedulingFlags::SEEKABLE);
        let mode = if pull {
            gst::PadMode::Pull
        } else {
            gst::PadMode::Push
        };
        gst::debug!(CAT, imp = self, "activating in {mode:?} mode");
        pad.activate_mode(mode, true)?;
        Ok(())
    }

    fn sink_activate_mode(
        &self,
        mode: gst::PadMode,
        active: bool,
    ) -> Result<(), gst::LoggableError> {
        if mode != gst::PadMode::Pull {
            return Ok(());
        }
        if active {
            self.pull_setup();
            self.start_task()
        } else {
            self.sinkpad
                .stop_task()
                .map_err(|e| gst::loggable_error!(CAT, "failed to stop task: {e}"))
        }
    }
}

#[glib::object_subclass]
impl ObjectSubclass for PsDemux {
    const NAME: &'static str = "GstIpcamPsDemux";
    type Type = super::PsDemux;
    type ParentType = gst::Element;

    fn with_class(klass: &Self::Class) -> Self {
        let templ = klass.pad_template("sink").unwrap();
        let sinkpad = gst::Pad::builder_from_template(&templ)
            .chain_function(|_pad, parent, buffer| {
                PsDemux::catch_panic_pad_function(
                    parent,
                    || Err(gst::FlowError::Error),
                    |imp| imp.sink_chain(buffer),
                )
            })
            .event_function(|pad, parent, event| {
                PsDemux::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.sink_event(pad, event),
                )
            })
            .activate_function(|pad, parent| {
                PsDemux::catch_panic_pad_function(
                    parent,
                    || Err(gst::loggable_error!(CAT, "panic in activate")),
                    |imp| imp.sink_activate(pad),
                )
            })
            .activatemode_function(|_pad, parent, mode, active| {
                PsDemux::catch_panic_pad_function(
                    parent,
                    || Err(gst::loggable_error!(CAT, "panic in activate_mode")),
                    |imp| imp.sink_activate_mode(mode, active),
                )
            })
            .build();
        PsDemux {
            sinkpad,
            settings: Mutex::new(Settings::default()),
            state: Mutex::new(State::default()),
            flow_combiner: Mutex::new(gst_base::UniqueFlowCombiner::new()),
        }
    }
}

impl ObjectImpl for PsDemux {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPS: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecUInt::builder("max-frame-size")
                    .nick("Maximum frame size")
                    .blurb("Frames (access units) larger than this many bytes are dropped with a warning; bounds memory")
                    .minimum(1024)
                    .default_value(DEFAULT_MAX_FRAME_SIZE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb("packs, pes-packets, bytes, resyncs and per stream codec, frames, bytes, dropped-bytes")
                    .read_only()
                    .build(),
            ]
        });
        PROPS.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        if pspec.name() == "max-frame-size" {
            let v = value.get::<u32>().expect("type checked upstream");
            self.settings.lock().unwrap().max_frame_size = v;
            self.state.lock().unwrap().core.set_config(demux::Config {
                max_frame_size: v as usize,
            });
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        match pspec.name() {
            "max-frame-size" => self.settings.lock().unwrap().max_frame_size.to_value(),
            "stats" => self.stats_structure().to_value(),
            _ => unimplemented!(),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        self.obj().add_pad(&self.sinkpad).unwrap();
    }
}

impl GstObjectImpl for PsDemux {}

impl ElementImpl for PsDemux {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "MPEG-PS demuxer for IP cameras",
                "Codec/Demuxer",
                "Demuxes MPEG program streams as GB28181 cameras write them (H.264/H.265/MPEG-4/SVAC, \
                 AAC/G.711/G.722.1/G.723.1/G.729) into complete access units",
                "gst-ipcam developers",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let sink_caps = gst::Caps::builder("video/mpeg")
                .field("systemstream", true)
                .field("mpegversion", gst::List::new([1i32, 2i32]))
                .build();
            let mut video = gst::Caps::new_empty();
            let mut audio = gst::Caps::new_empty();
            for codec in [
                Codec::H264,
                Codec::H265,
                Codec::Mpeg1Video,
                Codec::Mpeg2Video,
                Codec::Mpeg4Video,
                Codec::SvacVideo,
            ] {
                video.merge(caps_for(codec, AudioInfo::default()));
            }
            for codec in [
                Codec::Aac,
                Codec::MpegAudio,
                Codec::G711Alaw,
                Codec::G711Mulaw,
                Codec::G7221,
                Codec::G7231,
                Codec::G729,
                Codec::SvacAudio,
            ] {
                let c = caps_for(codec, AudioInfo::default());
                let name = c
                    .structure(0)
                    .map(|s| s.name().to_string())
                    .unwrap_or_default();
                audio.merge(gst::Caps::new_empty_simple(name));
            }
            vec![
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &sink_caps,
                )
                .unwrap(),
                gst::PadTemplate::new(
                    "video_%02x",
                    gst::PadDirection::Src,
                    gst::PadPresence::Sometimes,
                    &video,
                )
                .unwrap(),
                gst::PadTemplate::new(
                    "audio_%02x",
                    gst::PadDirection::Src,
                    gst::PadPresence::Sometimes,
                    &audio,
                )
                .unwrap(),
            ]
        });
        TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        if transition == gst::StateChange::ReadyToPaused {
            let max = self.settings.lock().unwrap().max_frame_size as usize;
            let mut state = self.state.lock().unwrap();
            *state = State::default();
            state.core.set_config(demux::Config {
                max_frame_size: max,
            });
            self.flow_combiner.lock().unwrap().reset();
        }
        let ret = self.parent_change_state(transition)?;
        if transition == gst::StateChange::PausedToReady {
            let pads: Vec<gst::Pad> = {
                let mut state = self.state.lock().unwrap();
                let pads = state.streams.drain(..).map(|s| s.pad).collect();
                *state = State::default();
                pads
            };
            let mut fc = self.flow_combiner.lock().unwrap();
            for p in pads {
                fc.remove_pad(&p);
                let _ = self.obj().remove_pad(&p);
            }
        }
        Ok(ret)
    }
}

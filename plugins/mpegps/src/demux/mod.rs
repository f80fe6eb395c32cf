//! GStreamer-free MPEG-PS demultiplexer core.
//!
//! The caller feeds bytes in order with [`Demuxer::push`]; every byte gets an absolute stream
//! offset (the count of bytes pushed before it, or the offset given to [`Demuxer::reset_at`]).
//! The core emits [`Event`]s; frames carry absolute byte ranges of their payload, so the caller
//! can build output buffers from the input memory without copying. Only header bytes that
//! straddle two pushes are copied (into a small bridge buffer, at most [`MAX_BRIDGE`] bytes).
//!
//! Limits (bounded memory): an access unit larger than `max_frame_size` is dropped; a video
//! access unit is force-completed once the input has moved [`Config::max_span`] bytes past its
//! start; the bridge buffer holds at most one PS header (≤ 64 KiB PSM) plus one push step;
//! per access unit the first [`HEAD_MAX`] bytes are copied for key-frame detection.

mod fuzz;
pub mod headers;
pub mod probe;
pub mod scan;

pub use fuzz::fuzz_one;

#[cfg(test)]
mod tests;

use crate::ps::{self, Codec};
use headers::{Parse, PsmEntry};

/// Bytes of an access unit's start kept for key-frame detection.
pub const HEAD_MAX: usize = 2048;
/// Upper bound of the bridge buffer (one PSM of maximal length plus one step).
pub const MAX_BRIDGE: usize = 65_542 + BRIDGE_STEP;
const BRIDGE_STEP: usize = 4096;
/// Payload bytes a PES header waits for so that codec/AU-start probes can look at them.
const MIN_PROBE: usize = 64;
/// Payload bytes remembered per stream to find start codes cut by PES boundaries.
const TAIL: usize = 8;
/// PES with PTS starting exactly at an AU start, in a row, before a stream is trusted aligned.
const ALIGNED_RUN: u32 = 16;
const NUM_STREAMS: usize = 0x30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Larger access units are dropped.
    pub max_frame_size: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_frame_size: 8 * 1024 * 1024,
        }
    }
}

impl Config {
    /// How far the input may move past the start of a pending video AU before it is completed.
    pub fn max_span(&self) -> u64 {
        self.max_frame_size as u64 * 2 + 4 * 1024 * 1024
    }
}

/// A payload byte range at an absolute stream offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub offset: u64,
    pub len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AudioInfo {
    pub rate: Option<u32>,
    pub channels: Option<u32>,
}

/// A complete elementary-stream unit: a video access unit or an audio PES payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub stream_id: u8,
    pub codec: Codec,
    pub ranges: Vec<Range>,
    pub size: usize,
    /// Unwrapped 90 kHz timestamps (continuous across the 2^33 wrap; they start one wrap
    /// period above zero so small backward steps stay positive).
    pub pts: Option<u64>,
    pub dts: Option<u64>,
    pub key: bool,
    /// Data was lost on this stream before this frame.
    pub discont: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Larger than `max_frame_size`.
    TooLarge,
    /// Its start or middle was lost.
    Partial,
    /// Video after a loss, until the next key frame.
    WaitingForKeyFrame,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A stream appeared (from a PSM or its first data).
    StreamAdded {
        stream_id: u8,
        codec: Codec,
        audio: AudioInfo,
    },
    /// A known stream changed codec (new PSM, or its payload says otherwise).
    StreamChanged {
        stream_id: u8,
        codec: Codec,
        audio: AudioInfo,
    },
    Frame(Frame),
    Dropped {
        stream_id: u8,
        bytes: usize,
        reason: DropReason,
    },
    /// Garbage or loss: the parser lost sync and looks for the next pack header.
    Resync {
        offset: u64,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamStats {
    pub stream_id: u8,
    pub codec: Option<Codec>,
    pub frames: u64,
    pub bytes: u64,
    pub dropped_bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub packs: u64,
    pub pes_packets: u64,
    pub bytes: u64,
    pub resyncs: u64,
    pub streams: Vec<StreamStats>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Looking for a pack start code (start, or after garbage/loss).
    Sync,
    /// Expecting a start code right here.
    Expect,
    /// Inside a PES or skipped packet with a known length (`sid` 0: skip).
    Payload { sid: u8, remaining: u64 },
    /// Inside a PES with length 0: runs to the next system start code.
    Unbounded { sid: u8 },
}

#[derive(Debug, Default)]
struct Au {
    ranges: Vec<Range>,
    size: usize,
    pts: Option<u64>,
    dts: Option<u64>,
    head: Vec<u8>,
    clean: bool,
    oversize: bool,
    dropped: usize,
    first_offset: u64,
    codec: Option<Codec>,
}

#[derive(Debug)]
struct Stream {
    id: u8,
    psm_codec: Option<Codec>,
    payload_codec: Option<Codec>,
    announced: Option<(Codec, AudioInfo)>,
    /// Scan every payload for AU starts (muxers that do not align PES to AUs, and every new
    /// stream until [`ALIGNED_RUN`] PES with a PTS in a row started exactly at an AU).
    unaligned: bool,
    aligned_run: u32,
    /// The current PES carried a PTS and none of its payload was scanned yet.
    pes_fresh: bool,
    need_key: bool,
    discont: bool,
    au: Option<Au>,
    /// Absolute offsets where new AUs start inside the current PES, with their timestamps.
    splits: Vec<(u64, Option<u64>, Option<u64>, Codec)>,
    /// Timestamps of a PES whose AU start was not visible yet (unaligned muxers).
    pending_ts: Option<(u64, Option<u64>)>,
    /// Last payload bytes of this stream (a start code can straddle two PES) and the absolute
    /// offset just after them.
    tail: [u8; TAIL],
    /// Start codes before this absolute offset were already looked at.
    scanned_to: u64,
    tail_len: usize,
    tail_end: u64,
    /// Picture data seen since the last AU start (unaligned streams).
    in_vcl: bool,
    stats: StreamStats,
}

impl Stream {
    fn new(id: u8) -> Self {
        Stream {
            id,
            psm_codec: None,
            payload_codec: None,
            announced: None,
            unaligned: ps::is_video_stream_id(id),
            aligned_run: 0,
            pes_fresh: false,
            need_key: ps::is_video_stream_id(id),
            discont: false,
            au: None,
            splits: Vec::new(),
            pending_ts: None,
            tail: [0; TAIL],
            scanned_to: 0,
            tail_len: 0,
            tail_end: 0,
            in_vcl: true,
            stats: StreamStats {
                stream_id: id,
                ..Default::default()
            },
        }
    }

    fn is_video(&self) -> bool {
        ps::is_video_stream_id(self.id)
    }

    fn codec(&self) -> Codec {
        self.payload_codec
            .or(self.psm_codec)
            .unwrap_or(if self.is_video() {
                Codec::H264
            } else {
                Codec::G711Alaw
            })
    }
}

pub struct Demuxer {
    cfg: Config,
    state: State,
    /// Absolute offset of the next byte to be pushed.
    offset: u64,
    bridge: Vec<u8>,
    bridge_offset: u64,
    streams: Vec<Option<Stream>>,
    last_ts: Option<u64>,
    stats: Stats,
    psm_scratch: Vec<PsmEntry>,
    split_scratch: Vec<usize>,
}

fn stream_index(sid: u8) -> Option<usize> {
    (ps::is_audio_stream_id(sid) || ps::is_video_stream_id(sid)).then(|| (sid - 0xC0) as usize)
}

impl Demuxer {
    pub fn new(cfg: Config) -> Self {
        Demuxer {
            cfg,
            state: State::Sync,
            offset: 0,
            bridge: Vec::new(),
            bridge_offset: 0,
            streams: (0..NUM_STREAMS).map(|_| None).collect(),
            last_ts: None,
            stats: Stats::default(),
            psm_scratch: Vec::new(),
            split_scratch: Vec::new(),
        }
    }

    pub fn set_config(&mut self, cfg: Config) {
        self.cfg = cfg;
    }

    /// Absolute offset of the next byte to push.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Lowest absolute offset a future frame may still reference: input before it can be freed.
    pub fn oldest_needed_offset(&self) -> u64 {
        let mut oldest = if self.bridge.is_empty() {
            self.offset
        } else {
            self.bridge_offset
        };
        for s in self.streams.iter().flatten() {
            if let Some(r) = s.au.as_ref().and_then(|au| au.ranges.first()) {
                oldest = oldest.min(r.offset);
            }
        }
        oldest
    }

    pub fn stats(&self) -> Stats {
        let mut st = self.stats.clone();
        st.streams = self
            .streams
            .iter()
            .flatten()
            .map(|s| s.stats.clone())
            .collect();
        st
    }

    /// Feeds the next bytes of the stream.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<Event>) {
        self.stats.bytes += data.len() as u64;
        let mut fed = 0;
        // First finish what straddles the previous push, copying as little as possible.
        while !self.bridge.is_empty() && fed < data.len() {
            let take = (data.len() - fed).min(BRIDGE_STEP);
            self.bridge.extend_from_slice(&data[fed..fed + take]);
            fed += take;
            let bridge = std::mem::take(&mut self.bridge);
            let n = self.parse(&bridge, self.bridge_offset, out);
            self.bridge = bridge;
            self.bridge.drain(..n);
            self.bridge_offset += n as u64;
            if self.bridge.len() <= take {
                // Everything left comes from `data`: continue there without copying.
                fed -= self.bridge.len();
                self.bridge.clear();
            } else if self.bridge.len() > MAX_BRIDGE {
                // Cannot happen with valid lengths; keep memory bounded regardless.
                self.bridge.clear();
                self.lose_sync(self.offset + fed as u64, out);
            }
        }
        if self.bridge.is_empty() && fed < data.len() {
            let base = self.offset + fed as u64;
            let n = self.parse(&data[fed..], base, out);
            self.bridge.extend_from_slice(&data[fed + n..]);
            self.bridge_offset = base + n as u64;
        }
        self.offset += data.len() as u64;
        self.flush_stalled(out);
    }

    /// Upstream lost data before the next push: drop partial frames, resync on a pack.
    pub fn discont(&mut self, out: &mut Vec<Event>) {
        self.bridge.clear();
        self.lose_sync(self.offset, out);
        self.state = State::Sync;
    }

    /// The input so far ended on a PS frame boundary (`alignment=frame`): complete the
    /// pending access units now instead of waiting for the next PTS.
    pub fn end_of_unit(&mut self, out: &mut Vec<Event>) {
        if let State::Unbounded { sid } = self.state {
            let bridge = std::mem::take(&mut self.bridge);
            self.payload(sid, self.bridge_offset, &bridge, out);
            self.bridge_offset += bridge.len() as u64;
            self.end_pes(sid, out);
            self.state = State::Expect;
        }
        let busy = match self.state {
            State::Payload { sid, .. } => sid,
            _ => 0,
        };
        for i in 0..NUM_STREAMS {
            let is_video = self.streams[i].as_ref().is_some_and(|s| s.is_video());
            if is_video && busy != 0xC0 + i as u8 {
                self.complete_au(i, out);
            }
        }
    }

    /// End of stream: push what is pending (a truncated last video AU included), drop the rest.
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        self.end_of_unit(out);
        for i in 0..NUM_STREAMS {
            let Some(s) = self.streams[i].as_mut() else {
                continue;
            };
            s.splits.clear();
            if s.is_video() {
                self.complete_au(i, out);
            } else {
                self.drop_au(i, DropReason::Partial, out);
            }
        }
        self.bridge.clear();
        self.state = State::Sync;
    }

    /// Restart parsing at absolute `offset` (after a seek or flush): pending data is dropped,
    /// video waits for a key frame, streams stay known.
    /// `at_start_code`: the caller knows a start code begins there (seek to a found PES);
    /// otherwise the next pack header is searched.
    pub fn reset_at(&mut self, offset: u64, at_start_code: bool) {
        self.bridge.clear();
        self.state = if at_start_code {
            State::Expect
        } else {
            State::Sync
        };
        self.offset = offset;
        // last_ts is kept: timestamps after a seek stay on the same unwrapped time line.
        for s in self.streams.iter_mut().flatten() {
            s.au = None;
            s.splits.clear();
            s.need_key = s.is_video();
            s.discont = true;
        }
    }

    fn unwrap_ts(&mut self, ts: u64) -> u64 {
        let ext = match self.last_ts {
            None => ts + ps::PTS_MODULO,
            Some(last) => {
                let diff = ts.wrapping_sub(last) & (ps::PTS_MODULO - 1);
                if diff >= ps::PTS_MODULO / 2 {
                    last.saturating_sub(ps::PTS_MODULO - diff)
                } else {
                    last + diff
                }
            }
        };
        self.last_ts = Some(ext);
        ext
    }

    fn lose_sync(&mut self, at: u64, out: &mut Vec<Event>) {
        self.stats.resyncs += 1;
        out.push(Event::Resync { offset: at });
        for i in 0..NUM_STREAMS {
            if let Some(s) = self.streams[i].as_mut() {
                s.splits.clear();
                s.discont = true;
                if s.is_video() {
                    s.need_key = true;
                }
                self.drop_au(i, DropReason::Partial, out);
            }
        }
        self.state = State::Sync;
    }

    /// Parses a contiguous window starting at absolute offset `base`; returns the bytes consumed.
    fn parse(&mut self, win: &[u8], base: u64, out: &mut Vec<Event>) -> usize {
        let mut pos = 0;
        loop {
            match self.state {
                State::Payload { sid, remaining } => {
                    let avail = win.len() - pos;
                    if avail == 0 {
                        return pos;
                    }
                    let take = (remaining.min(avail as u64)) as usize;
                    if sid != 0 {
                        self.payload(sid, base + pos as u64, &win[pos..pos + take], out);
                    }
                    pos += take;
                    let remaining = remaining - take as u64;
                    if remaining == 0 {
                        if sid != 0 {
                            self.end_pes(sid, out);
                        }
                        self.state = State::Expect;
                    } else {
                        self.state = State::Payload { sid, remaining };
                        return pos;
                    }
                }
                State::Unbounded { sid } => {
                    let mut i = pos;
                    let (end, found) = loop {
                        match probe::find_start_code(win, i) {
                            Some(sc) if sc + 3 < win.len() => {
                                if win[sc + 3] >= ps::PROGRAM_END {
                                    break (sc, true);
                                }
                                i = sc + 3;
                            }
                            Some(sc) => break (sc, false),
                            None => break (win.len().saturating_sub(3).max(pos), false),
                        }
                    };
                    if end > pos {
                        self.payload(sid, base + pos as u64, &win[pos..end], out);
                    }
                    pos = end;
                    if !found {
                        return pos;
                    }
                    self.end_pes(sid, out);
                    self.state = State::Expect;
                }
                State::Sync | State::Expect => {
                    let rest = &win[pos..];
                    if rest.len() < 4 {
                        return pos;
                    }
                    let is_sc = rest[0] == 0 && rest[1] == 0 && rest[2] == 1;
                    let code = rest[3];
                    let acceptable = is_sc
                        && if self.state == State::Sync {
                            code == ps::PACK_START
                        } else {
                            code >= ps::PROGRAM_END
                        };
                    if !acceptable {
                        if self.state == State::Expect {
                            self.lose_sync(base + pos as u64, out);
                        }
                        // Skip to the next pack start code.
                        let mut i = pos + 1;
                        loop {
                            match probe::find_start_code(win, i) {
                                Some(sc) if sc + 3 < win.len() => {
                                    if win[sc + 3] == ps::PACK_START {
                                        pos = sc;
                                        break;
                                    }
                                    i = sc + 1;
                                }
                                Some(sc) => return sc,
                                None => return win.len().saturating_sub(3).max(pos),
                            }
                        }
                        continue;
                    }
                    match self.parse_header(rest, base + pos as u64, out) {
                        Parse::Ok(n) => pos += n,
                        Parse::Incomplete => return pos,
                        Parse::Invalid => {
                            self.lose_sync(base + pos as u64, out);
                            pos += 4;
                        }
                    }
                }
            }
        }
    }

    /// Parses the system/PES header at `rest[0]` (a start code); sets the next state.
    fn parse_header(&mut self, rest: &[u8], at: u64, out: &mut Vec<Event>) -> Parse<usize> {
        let code = rest[3];
        match code {
            ps::PACK_START => {
                let r = headers::pack_header_len(rest);
                if let Parse::Ok(_) = r {
                    self.stats.packs += 1;
                    self.state = State::Expect;
                }
                r
            }
            ps::PROGRAM_END => {
                self.state = State::Expect;
                Parse::Ok(4)
            }
            _ => {
                let Some(len) = rest.get(4..6) else {
                    return Parse::Incomplete;
                };
                let len = u16::from_be_bytes([len[0], len[1]]) as usize;
                if code == ps::PSM {
                    let Some(body) = rest.get(6..6 + len) else {
                        return Parse::Incomplete;
                    };
                    self.handle_psm(body, out);
                    self.state = State::Expect;
                    return Parse::Ok(6 + len);
                }
                if stream_index(code).is_none() {
                    // System header, private streams, padding, directory, ...: skip by length.
                    self.state = if len == 0 {
                        State::Expect
                    } else {
                        State::Payload {
                            sid: 0,
                            remaining: len as u64,
                        }
                    };
                    return Parse::Ok(6);
                }
                let h = match headers::parse_pes_header(rest) {
                    Parse::Ok(h) => h,
                    Parse::Incomplete => return Parse::Incomplete,
                    Parse::Invalid => return Parse::Invalid,
                };
                // Make sure the probes see enough of the payload (bridged if needed).
                let want = h.header_len + h.payload_len.unwrap_or(0).min(MIN_PROBE);
                if rest.len() < want {
                    return Parse::Incomplete;
                }
                self.stats.pes_packets += 1;
                let payload_start = at + h.header_len as u64;
                let avail = &rest[h.header_len.min(rest.len())..];
                let first = match h.payload_len {
                    Some(n) => &avail[..n.min(avail.len())],
                    None => avail,
                };
                self.pes_start(
                    code,
                    h.pts,
                    h.dts,
                    payload_start,
                    first,
                    h.payload_len.unwrap_or(usize::MAX),
                    out,
                );
                self.state = match h.payload_len {
                    Some(0) => {
                        self.end_pes(code, out);
                        State::Expect
                    }
                    Some(n) => State::Payload {
                        sid: code,
                        remaining: n as u64,
                    },
                    None => State::Unbounded { sid: code },
                };
                Parse::Ok(h.header_len)
            }
        }
    }

    fn stream_mut(&mut self, idx: usize) -> &mut Stream {
        self.streams[idx].get_or_insert_with(|| Stream::new(0xC0 + idx as u8))
    }

    fn announce(&mut self, idx: usize, audio: AudioInfo, out: &mut Vec<Event>) {
        let s = self.stream_mut(idx);
        let codec = s.codec();
        let audio = match s.announced {
            // Keep what earlier data told us about the audio when nothing new is known.
            Some((c, a)) if c == codec && audio == AudioInfo::default() => a,
            _ => audio,
        };
        if s.announced == Some((codec, audio)) {
            return;
        }
        let stream_id = s.id;
        s.stats.codec = Some(codec);
        let ev = if s.announced.is_none() {
            Event::StreamAdded {
                stream_id,
                codec,
                audio,
            }
        } else {
            Event::StreamChanged {
                stream_id,
                codec,
                audio,
            }
        };
        s.announced = Some((codec, audio));
        out.push(ev);
    }

    fn handle_psm(&mut self, body: &[u8], out: &mut Vec<Event>) {
        let mut entries = std::mem::take(&mut self.psm_scratch);
        headers::parse_psm(body, &mut entries);
        for e in &entries {
            let (Some(idx), Some(codec)) = (stream_index(e.stream_id), e.codec) else {
                continue;
            };
            if codec.is_video() != ps::is_video_stream_id(e.stream_id) {
                continue;
            }
            let s = self.stream_mut(idx);
            if s.psm_codec != Some(codec) {
                s.psm_codec = Some(codec);
                s.payload_codec = None;
            }
            self.announce(idx, AudioInfo::default(), out);
        }
        self.psm_scratch = entries;
    }

    /// Decides the stream's codec from its PSM entry and what the payload looks like.
    fn resolve_codec(&mut self, idx: usize, first: &[u8], out: &mut Vec<Event>) -> Codec {
        let s = self.stream_mut(idx);
        if s.is_video() {
            if let Some(c) = probe::probe_video(first)
                && !(c == Codec::Mpeg2Video && s.psm_codec == Some(Codec::Mpeg1Video))
            {
                s.payload_codec = Some(c);
            }
        } else {
            match probe::probe_audio(first) {
                Some(Codec::Aac) => s.payload_codec = Some(Codec::Aac),
                Some(c) if matches!(s.psm_codec, None | Some(Codec::MpegAudio)) => {
                    s.payload_codec = Some(c)
                }
                _ => {}
            }
        }
        let codec = s.codec();
        let audio = match probe::parse_adts(first) {
            Some(a) if codec == Codec::Aac => AudioInfo {
                rate: Some(a.rate),
                channels: Some(a.channels),
            },
            _ => AudioInfo::default(),
        };
        self.announce(idx, audio, out);
        codec
    }

    #[allow(clippy::too_many_arguments)]
    fn pes_start(
        &mut self,
        sid: u8,
        pts: Option<u64>,
        dts: Option<u64>,
        payload_offset: u64,
        first: &[u8],
        payload_len_hint: usize,
        out: &mut Vec<Event>,
    ) {
        let Some(idx) = stream_index(sid) else {
            return;
        };
        let pts = pts.map(|t| self.unwrap_ts(t));
        let dts = dts.map(|t| self.unwrap_ts(t));
        let is_video = ps::is_video_stream_id(sid);
        if !is_video {
            self.complete_au(idx, out);
            let codec = self.resolve_codec(idx, first, out);
            let s = self.stream_mut(idx);
            s.au = Some(Au {
                pts,
                dts,
                clean: true,
                first_offset: payload_offset,
                codec: Some(codec),
                ..Default::default()
            });
            return;
        }
        let s = self.stream_mut(idx);
        // Some muxers (mpegpsmux) repeat the AU's PTS on every PES of a large frame.
        let repeated = pts.is_some()
            && (s
                .au
                .as_ref()
                .is_some_and(|au| au.pts == pts && au.dts == dts)
                || s.pending_ts
                    .is_some_and(|(p, d)| Some(p) == pts && d == dts));
        let pts = if repeated { None } else { pts };
        if !s.unaligned && pts.is_none() {
            return; // continuation of the current AU
        }
        let codec = if pts.is_some() {
            self.resolve_codec(idx, first, out)
        } else {
            let s = self.stream_mut(idx);
            s.au.as_ref()
                .and_then(|au| au.codec)
                .unwrap_or_else(|| s.codec())
        };
        let mut starts = std::mem::take(&mut self.split_scratch);
        starts.clear();
        let s = self.stream_mut(idx);
        if !s.unaligned {
            probe::au_starts(
                codec,
                &first[..first.len().min(probe::PROBE_LIMIT)],
                &mut starts,
            );
            if starts.first() == Some(&0) || first.len() < MIN_PROBE.min(payload_len_hint) {
                s.splits.clear();
                s.splits.push((payload_offset, pts, dts, codec));
                self.split_scratch = starts;
                return;
            }
            // The muxer does not align PES to access units (ffmpeg): from now on scan every
            // payload of this stream for AU starts.
            s.unaligned = true;
            s.aligned_run = 0;
            s.in_vcl = true;
            s.tail_len = 0;
            starts.clear();
        }
        if let Some(p) = pts {
            s.pending_ts = Some((p, dts));
            s.pes_fresh = true;
        }
        self.split_scratch = starts;
    }

    /// Scan mode: finds AU starts in a chunk of payload and queues the splits.
    fn scan_splits(&mut self, idx: usize, offset: u64, data: &[u8], out: &mut Vec<Event>) {
        let mut starts = std::mem::take(&mut self.split_scratch);
        starts.clear();
        let s = self.stream_mut(idx);
        let codec = s.codec();
        if s.au.is_none() {
            // Whatever came before is not part of any AU we keep. A provisional AU holds the
            // bytes from the PES with the PTS on, so that a start code cut by a chunk boundary
            // is still found; it is discarded if it ends up empty (or kept if it is a whole AU).
            s.in_vcl = true;
            if let Some((p, d)) = s.pending_ts {
                s.au = Some(Au {
                    pts: Some(p),
                    dts: d,
                    clean: true,
                    first_offset: offset,
                    codec: Some(codec),
                    ..Default::default()
                });
                s.tail_len = 0;
                s.tail_end = offset;
            }
        }
        // Start codes straddling the previous chunk and this one (or whose NAL header was cut).
        let contiguous =
            s.au.as_ref()
                .and_then(|au| au.ranges.last())
                .is_some_and(|r| r.offset + r.len as u64 == s.tail_end);
        let tail_len = if contiguous { s.tail_len } else { 0 };
        let tail_start = s.tail_end - tail_len as u64;
        let mut pre_split = None;
        if tail_len > 0 {
            let mut small = [0u8; 2 * TAIL];
            small[..tail_len].copy_from_slice(&s.tail[..tail_len]);
            let n = data.len().min(TAIL);
            small[tail_len..tail_len + n].copy_from_slice(&data[..n]);
            let from = s.scanned_to.saturating_sub(tail_start).min(tail_len as u64) as usize;
            if let Some(last) = probe::au_scan(
                codec,
                &small[..tail_len + n],
                &mut s.in_vcl,
                from..tail_len,
                &mut starts,
            ) {
                s.scanned_to = tail_start + last as u64 + 1;
            }
            if let Some(&st) = starts.first() {
                pre_split = Some(tail_len - st);
            }
            starts.clear();
        }
        if let Some(last) = probe::au_scan(codec, data, &mut s.in_vcl, 0..usize::MAX, &mut starts) {
            s.scanned_to = offset + last as u64 + 1;
        }
        if pre_split.is_none()
            && starts.first() == Some(&0)
            && data.starts_with(&[0, 0, 1])
            && tail_len > 0
            && s.tail[tail_len - 1] == 0
        {
            // The leading zero of a 4-byte start code sits in the previous chunk.
            pre_split = Some(1);
            starts.remove(0);
        }
        if std::mem::take(&mut s.pes_fresh) {
            // Trust the muxer to align PES to AUs after enough evidence: skip the scans then.
            if pre_split.is_none() && starts.first().is_some_and(|&st| st <= 1) {
                s.aligned_run += 1;
                if s.aligned_run >= ALIGNED_RUN {
                    s.unaligned = false;
                }
            } else {
                s.aligned_run = 0;
            }
        }
        let take_ts = |s: &mut Stream| match s.pending_ts.take() {
            Some((p, d)) => (Some(p), d),
            None => (None, None),
        };
        if let Some(k) = pre_split {
            let (p, d) = take_ts(s);
            self.split_before(idx, k, p, d, codec, out);
        }
        let s = self.stream_mut(idx);
        for &st in starts.iter() {
            let (p, d) = take_ts(s);
            s.splits.push((offset + st as u64, p, d, codec));
        }
        s.splits.reverse();
        self.split_scratch = starts;
    }

    /// Starts a new AU with the last `k` payload bytes already given to the current one.
    fn split_before(
        &mut self,
        idx: usize,
        k: usize,
        pts: Option<u64>,
        dts: Option<u64>,
        codec: Codec,
        out: &mut Vec<Event>,
    ) {
        let s = self.stream_mut(idx);
        let head = s.tail[s.tail_len - k..s.tail_len].to_vec();
        let mut moved = Vec::new();
        if let Some(au) = s.au.as_mut()
            && !au.oversize
            && au.size >= k
        {
            let mut left = k;
            while left > 0 {
                let Some(r) = au.ranges.last_mut() else { break };
                let n = left.min(r.len);
                r.len -= n;
                moved.push(Range {
                    offset: r.offset + r.len as u64,
                    len: n,
                });
                if r.len == 0 {
                    au.ranges.pop();
                }
                left -= n;
            }
            au.size -= k - left;
            moved.reverse();
        }
        self.complete_au(idx, out);
        let size = moved.iter().map(|r| r.len).sum();
        let first_offset = moved.first().map_or(self.offset, |r| r.offset);
        let s = self.stream_mut(idx);
        s.au = Some(Au {
            ranges: moved,
            size,
            pts,
            dts,
            head: if size == k { head } else { Vec::new() },
            clean: true,
            first_offset,
            codec: Some(codec),
            ..Default::default()
        });
    }

    fn payload(&mut self, sid: u8, mut offset: u64, mut data: &[u8], out: &mut Vec<Event>) {
        let Some(idx) = stream_index(sid) else {
            return;
        };
        if ps::is_video_stream_id(sid) && !data.is_empty() && self.stream_mut(idx).unaligned {
            self.scan_splits(idx, offset, data, out);
        }
        loop {
            let s = self.stream_mut(idx);
            let end = offset + data.len() as u64;
            match s.splits.last().copied() {
                Some((at, pts, dts, codec)) if at < end => {
                    let cut = (at.saturating_sub(offset)) as usize;
                    self.au_append(idx, offset, &data[..cut], out);
                    self.complete_au(idx, out);
                    let s = self.stream_mut(idx);
                    s.splits.pop();
                    s.au = Some(Au {
                        pts,
                        dts,
                        clean: true,
                        first_offset: at,
                        codec: Some(codec),
                        ..Default::default()
                    });
                    offset += cut as u64;
                    data = &data[cut..];
                }
                _ => {
                    self.au_append(idx, offset, data, out);
                    return;
                }
            }
        }
    }

    fn au_append(&mut self, idx: usize, offset: u64, data: &[u8], out: &mut Vec<Event>) {
        if data.is_empty() {
            return;
        }
        let max = self.cfg.max_frame_size;
        let s = self.stream_mut(idx);
        if data.len() >= TAIL {
            s.tail.copy_from_slice(&data[data.len() - TAIL..]);
            s.tail_len = TAIL;
        } else {
            let keep = if s.tail_end == offset {
                (TAIL - data.len()).min(s.tail_len)
            } else {
                0
            };
            let mut t = [0u8; TAIL];
            t[..keep].copy_from_slice(&s.tail[s.tail_len - keep..s.tail_len]);
            t[keep..keep + data.len()].copy_from_slice(data);
            s.tail = t;
            s.tail_len = keep + data.len();
        }
        s.tail_end = offset + data.len() as u64;
        let Some(au) = s.au.as_mut() else {
            // No AU start seen (after loss or at stream start): nothing to attach to.
            s.stats.dropped_bytes += data.len() as u64;
            return;
        };
        if au.oversize || au.size + data.len() > max {
            au.oversize = true;
            au.dropped += au.size + data.len();
            au.size = 0;
            au.ranges.clear();
            let _ = out;
            return;
        }
        match au.ranges.last_mut() {
            Some(r) if r.offset + r.len as u64 == offset => r.len += data.len(),
            _ => au.ranges.push(Range {
                offset,
                len: data.len(),
            }),
        }
        au.size += data.len();
        if au.head.len() < HEAD_MAX {
            let n = (HEAD_MAX - au.head.len()).min(data.len());
            au.head.extend_from_slice(&data[..n]);
        }
    }

    fn end_pes(&mut self, sid: u8, out: &mut Vec<Event>) {
        let Some(idx) = stream_index(sid) else {
            return;
        };
        if !ps::is_video_stream_id(sid) {
            self.complete_au(idx, out);
        }
        if let Some(s) = self.streams[idx].as_mut() {
            s.splits.clear();
        }
    }

    fn drop_au(&mut self, idx: usize, reason: DropReason, out: &mut Vec<Event>) {
        let Some(s) = self.streams[idx].as_mut() else {
            return;
        };
        let Some(au) = s.au.take() else {
            return;
        };
        let bytes = au.size + au.dropped;
        s.stats.dropped_bytes += bytes as u64;
        if s.is_video() && reason != DropReason::WaitingForKeyFrame {
            s.need_key = true;
        }
        if bytes > 0 {
            out.push(Event::Dropped {
                stream_id: s.id,
                bytes,
                reason,
            });
        }
    }

    fn complete_au(&mut self, idx: usize, out: &mut Vec<Event>) {
        let Some(s) = self.streams[idx].as_mut() else {
            return;
        };
        let Some(au) = s.au.as_ref() else {
            return;
        };
        if au.oversize {
            self.drop_au(idx, DropReason::TooLarge, out);
            return;
        }
        if !au.clean {
            self.drop_au(idx, DropReason::Partial, out);
            return;
        }
        if au.size == 0 {
            s.au = None;
            return;
        }
        let codec = au.codec.unwrap_or_else(|| s.codec());
        let key = probe::is_key_frame(codec, &au.head);
        if s.is_video() && s.need_key && !key {
            self.drop_au(idx, DropReason::WaitingForKeyFrame, out);
            return;
        }
        let Some(au) = s.au.take() else {
            return;
        };
        if key {
            s.need_key = false;
        }
        s.stats.frames += 1;
        s.stats.bytes += au.size as u64;
        let discont = std::mem::take(&mut s.discont);
        out.push(Event::Frame(Frame {
            stream_id: s.id,
            codec,
            ranges: au.ranges,
            size: au.size,
            pts: au.pts,
            dts: au.dts,
            key,
            discont,
        }));
    }

    /// Completes video AUs the input has moved far past (a stream that stopped), so that the
    /// caller never has to keep more than `max_span` bytes of input.
    fn flush_stalled(&mut self, out: &mut Vec<Event>) {
        let limit = self.cfg.max_span();
        for i in 0..NUM_STREAMS {
            let stalled = self.streams[i].as_ref().is_some_and(|s| {
                s.au.as_ref()
                    .is_some_and(|au| self.offset.saturating_sub(au.first_offset) > limit)
            });
            if stalled {
                self.complete_au(i, out);
            }
        }
    }
}

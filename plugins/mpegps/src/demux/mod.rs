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

mod assemble;
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
    /// Audio whose codec only the program stream map can tell (G.711 A-law or µ-law), before
    /// the first map: see [`AUDIO_PSM_WAIT_PES`].
    WaitingForPsm,
}

/// Audio PES a stream whose codec neither a PSM nor its payload tells may wait for the
/// first PSM (dropped meanwhile) before it is announced with the GB28181 default (G.711
/// A-law): muxers write the map with their key frames, and audio often comes first, so
/// announcing the default at once means announcing A-law, then µ-law a moment later.
/// 250 PES is 5 s of 20 ms packets; the wait also ends with a video key frame without a map
/// (a muxer that writes none).
pub const AUDIO_PSM_WAIT_PES: u32 = 250;

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
    /// A likely codec from the NAL syntax, when neither the PSM nor a confident probe said.
    guessed_codec: Option<Codec>,
    announced: Option<(Codec, AudioInfo)>,
    /// Audio PES dropped while waiting for the first PSM ([`AUDIO_PSM_WAIT_PES`]).
    waited_for_psm: u32,
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
            guessed_codec: None,
            announced: None,
            waited_for_psm: 0,
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
            .or(self.guessed_codec)
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
    /// A program stream map was seen, or a video key frame came without one: audio of an
    /// unknown codec no longer waits for a map.
    map_known: bool,
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
            map_known: false,
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
}

//! Byte-level framing of an RTSP-over-TCP stream: `$` frames and RTSP text messages, with
//! resynchronisation after garbage.
//!
//! Input arrives in arbitrary chunks. Items lying wholly inside the current chunk are
//! reported as ranges of it (so the caller can share the input memory); items split across
//! chunks are assembled in a carry-over buffer and reported as owned bytes. The carry-over
//! buffer never grows beyond two `$` frames and a few look-ahead bytes (about 128 KiB, when
//! telling a truncated frame from the one it swallowed) or the maximum RTSP message size
//! plus one 4 KiB read chunk, whichever is larger.

use std::ops::Range;

use super::message::RtspMessage;

/// Largest possible `$` frame: 4 header bytes and a 16-bit length.
pub const MAX_FRAME_SIZE: usize = 4 + u16::MAX as usize;
/// Default bound for one RTSP message (headers and body).
pub const DEFAULT_MAX_TEXT_SIZE: usize = 64 * 1024;
/// How much input is moved into the carry-over buffer at a time while an RTSP message of
/// unknown length is incomplete.
const TEXT_CHUNK: usize = 4096;

/// Known RTSP methods (RFC 2326 and RFC 7826) and the response prefix; text anywhere else is
/// treated as garbage.
const TEXT_PREFIXES: &[&[u8]] = &[
    b"RTSP/",
    b"OPTIONS ",
    b"DESCRIBE ",
    b"SETUP ",
    b"PLAY ",
    b"PAUSE ",
    b"TEARDOWN ",
    b"ANNOUNCE ",
    b"RECORD ",
    b"REDIRECT ",
    b"GET_PARAMETER ",
    b"SET_PARAMETER ",
    b"PLAY_NOTIFY ",
];

/// Bytes of an item: either a range of the chunk passed to [`Framer::next`] or bytes
/// assembled from several chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    Input(Range<usize>),
    Owned(Vec<u8>),
}

impl Data {
    /// The item's bytes, given the chunk they may refer to.
    pub fn bytes<'a>(&'a self, input: &'a [u8]) -> &'a [u8] {
        match self {
            Data::Input(r) => input.get(r.clone()).unwrap_or(&[]),
            Data::Owned(v) => v,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Data::Input(r) => r.len(),
            Data::Owned(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One framing event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A `$` frame with a non-empty RTP/RTCP (version 2) payload; `data` excludes the
    /// 4-byte header.
    Frame { channel: u8, data: Data },
    /// A `$` frame of length zero (sent by some servers as keepalive); carries nothing.
    ZeroLengthFrame { channel: u8 },
    /// A complete RTSP request or response.
    Message(Box<RtspMessage>),
    /// The stream lost sync (garbage, bogus frame header); bytes are being skipped.
    Resync,
}

enum Step {
    /// The item at the start needs this many bytes in total (None: unknown, more text).
    Need(Option<usize>),
    /// Skip this many garbage bytes.
    Skip(usize),
    Frame {
        len: usize,
        channel: u8,
    },
    ZeroLength {
        channel: u8,
    },
    Message {
        len: usize,
        msg: Box<RtspMessage>,
    },
}

/// The `$`/RTSP framing state machine.
#[derive(Debug)]
pub struct Framer {
    carry: Vec<u8>,
    carry_pos: usize,
    in_pos: usize,
    resyncing: bool,
    pending_resync_event: bool,
    strict: bool,
    at_eos: bool,
    /// Channels announced by SETUP or seen in accepted frames.
    known: [bool; 256],
    /// Payload type of the last RTP packet per channel (NO_PT: none yet).
    last_pt: [u8; 256],
    /// Sequence number of the last RTP packet per channel (valid with `last_pt`).
    last_seq: [u16; 256],
    have_mapping: bool,
    max_text: usize,
    /// Times sync was lost.
    pub resyncs: u64,
    /// Bytes skipped as garbage (including bogus frames and truncated trailing data).
    pub skipped_bytes: u64,
}

impl Default for Framer {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_TEXT_SIZE)
    }
}

const NO_PT: u8 = 0xff;

enum Inside {
    No,
    Yes,
    /// Total bytes needed from the frame start to decide.
    NeedMore(usize),
}

/// Bytes looked at after a frame to confirm that another item follows.
const LOOKAHEAD: usize = 16;

/// How far after a channel's last sequence number a packet found inside a frame may be to
/// count as that stream's next one (packets lost in between included).
const SEQ_WINDOW: u16 = 256;

/// Up to LOOKAHEAD bytes from `at` in `avail` continued by `peek`.
fn following<'b>(avail: &[u8], peek: &[u8], at: usize, buf: &'b mut [u8; LOOKAHEAD]) -> &'b [u8] {
    let mut n = 0;
    // `peek` continues `avail`: a position past `avail` is read from `peek`.
    let (a, p) = match avail.get(at..) {
        Some(a) => (a, peek),
        None => (&[][..], peek.get(at - avail.len()..).unwrap_or(&[])),
    };
    for &b in a.iter().chain(p).take(LOOKAHEAD) {
        buf[n] = b;
        n += 1;
    }
    &buf[..n]
}

/// Whether the RTCP packets' length fields (RFC 3550 §6.4: 32-bit words minus one) add up
/// to exactly `payload`.
fn rtcp_lengths_tile(payload: &[u8]) -> bool {
    let mut off = 0;
    while off < payload.len() {
        let Some(l) = payload.get(off + 2..off + 4) else {
            return false;
        };
        off += (usize::from(u16::from_be_bytes([l[0], l[1]])) + 1) * 4;
    }
    off == payload.len()
}

fn is_candidate(b: u8) -> bool {
    b == b'$' || TEXT_PREFIXES.iter().any(|p| p[0] == b)
}

/// Whether `avail` starts like an RTSP message: Some(true) yes, Some(false) no, None: too
/// short to tell.
fn text_prefix(avail: &[u8]) -> Option<bool> {
    let mut undecided = false;
    for p in TEXT_PREFIXES {
        if avail.len() >= p.len() {
            if avail.starts_with(p) {
                return Some(true);
            }
        } else if p.starts_with(avail) {
            undecided = true;
        }
    }
    if undecided { None } else { Some(false) }
}

impl Framer {
    pub fn new(max_text: usize) -> Self {
        Framer {
            carry: Vec::new(),
            carry_pos: 0,
            in_pos: 0,
            resyncing: false,
            pending_resync_event: false,
            strict: true,
            at_eos: false,
            known: [false; 256],
            last_pt: [NO_PT; 256],
            last_seq: [0; 256],
            have_mapping: false,
            max_text: max_text.clamp(256, 16 * 1024 * 1024),
            resyncs: 0,
            skipped_bytes: 0,
        }
    }

    /// Marks a channel as set up (by a SETUP exchange); resync only accepts such channels
    /// from then on.
    pub fn set_channel_known(&mut self, channel: u8) {
        self.known[channel as usize] = true;
        self.have_mapping = true;
    }

    /// Bytes held over from previous chunks.
    pub fn carry_len(&self) -> usize {
        self.carry.len() - self.carry_pos
    }

    /// With `strict` (the default) a frame is only accepted once the byte after it is seen
    /// and starts a frame or RTSP text, so truncated frames are told from good ones; without,
    /// a frame ending at the end of a chunk goes out at once (lower latency on live input).
    pub fn set_strict(&mut self, strict: bool) {
        self.strict = strict;
    }

    /// End of stream: items held for their look-ahead byte go out on the following calls
    /// to [`Framer::next`] (with an empty chunk); call [`Framer::discard_carry`] after.
    pub fn begin_eos(&mut self) {
        self.at_eos = true;
        self.in_pos = 0;
    }

    /// Drops held-over bytes (discontinuity, flush) and starts looking for sync again.
    /// Returns how many bytes were dropped.
    pub fn discard_carry(&mut self) -> usize {
        self.at_eos = false;
        let n = self.carry_len();
        self.carry.clear();
        self.carry_pos = 0;
        self.in_pos = 0;
        self.skipped_bytes += n as u64;
        n
    }

    /// Starts a new input chunk. Call [`Framer::next`] with the same chunk until it returns
    /// None; whatever is incomplete at the end is kept for the next chunk.
    pub fn begin(&mut self) {
        self.in_pos = 0;
    }

    fn plausible_channel(&self, channel: u8) -> bool {
        self.known[channel as usize] || (!self.have_mapping && channel < 32)
    }

    /// Whether `f` starts like a frame on a plausible channel (version-2 payload or zero
    /// length) or RTSP text; None when too short to tell. An RTP packet on a channel that
    /// carried RTP must continue its stream ([`Framer::continues_stream`]).
    fn next_item_plausible(&self, f: &[u8]) -> Option<bool> {
        match f.first()? {
            b'$' => {
                let h = f.get(..4)?;
                if !self.plausible_channel(h[1]) {
                    Some(false)
                } else if h[2] == 0 && h[3] == 0 {
                    Some(true)
                } else if f.get(4)? >> 6 != 2 {
                    Some(false)
                } else {
                    Some(self.continues_stream(f).unwrap_or(true))
                }
            }
            b if b.is_ascii_uppercase() => text_prefix(f),
            _ => Some(false),
        }
    }

    /// For `$` frame bytes `f` holding an RTP packet on a channel that carried RTP before:
    /// whether it continues that stream (same payload type, a sequence number shortly
    /// after). None: RTCP, no RTP on that channel yet, or too short to tell.
    fn continues_stream(&self, f: &[u8]) -> Option<bool> {
        let ch = usize::from(*f.get(1)?);
        let pt = *f.get(5)?;
        let q = f.get(6..8)?;
        if (192..=223).contains(&pt) || self.last_pt[ch] == NO_PT {
            return None;
        }
        let d = u16::from_be_bytes([q[0], q[1]]).wrapping_sub(self.last_seq[ch]);
        Some(pt & 0x7f == self.last_pt[ch] && (1..=SEQ_WINDOW).contains(&d))
    }

    fn lose_sync(&mut self) -> bool {
        if self.resyncing {
            false
        } else {
            self.resyncing = true;
            self.resyncs += 1;
            true
        }
    }

    /// Next item of the chunk `input` (the same chunk for every call since [`begin`]).
    ///
    /// [`begin`]: Framer::begin
    pub fn next(&mut self, input: &[u8]) -> Option<Event> {
        loop {
            if self.carry_len() > 0 {
                let peek_end = input.len().min(self.in_pos + LOOKAHEAD);
                let peek = input.get(self.in_pos..peek_end).unwrap_or(&[]);
                // parse_at needs &mut self for its counters; lend it the buffer.
                let carry = std::mem::take(&mut self.carry);
                let step = self.parse_at(&carry[self.carry_pos..], peek);
                self.carry = carry;
                match step {
                    Step::Need(_) if self.at_eos => {
                        // Nothing more comes: the item waiting for more is none. Its bytes
                        // are looked at again from the next candidate, so that a header
                        // look-alike whose length reaches past the end does not swallow the
                        // frames after it.
                        let n = self.garbage_at_carry();
                        self.skipped_bytes += n as u64;
                        self.advance_carry(n);
                        if self.resync_event_pending() {
                            return Some(Event::Resync);
                        }
                    }
                    Step::Need(n) => {
                        let rest = input.len().saturating_sub(self.in_pos);
                        if rest == 0 {
                            return None;
                        }
                        let have = self.carry_len();
                        let want = match n {
                            Some(total) => total.saturating_sub(have).max(1),
                            None => TEXT_CHUNK,
                        }
                        .min(rest);
                        self.carry
                            .extend_from_slice(&input[self.in_pos..self.in_pos + want]);
                        self.in_pos += want;
                    }
                    Step::Skip(n) => {
                        let n = n.min(self.carry_len());
                        self.skipped_bytes += n as u64;
                        self.advance_carry(n);
                        if self.resync_event_pending() {
                            return Some(Event::Resync);
                        }
                    }
                    Step::Frame { len, channel } => {
                        let start = self.carry_pos + 4;
                        let end = self.carry_pos + len;
                        let data = Data::Owned(self.carry[start..end].to_vec());
                        self.advance_carry(len);
                        return Some(Event::Frame { channel, data });
                    }
                    Step::ZeroLength { channel } => {
                        self.advance_carry(4);
                        return Some(Event::ZeroLengthFrame { channel });
                    }
                    Step::Message { len, msg } => {
                        self.advance_carry(len);
                        return Some(Event::Message(msg));
                    }
                }
            } else {
                let avail = input.get(self.in_pos..).unwrap_or(&[]);
                if avail.is_empty() {
                    return None;
                }
                match self.parse_at(avail, &[]) {
                    Step::Need(_) => {
                        // Bounded: an incomplete item is shorter than MAX_FRAME_SIZE or
                        // max_text (parse_at skips longer ones).
                        self.carry.clear();
                        self.carry_pos = 0;
                        self.carry.extend_from_slice(avail);
                        self.in_pos = input.len();
                        return None;
                    }
                    Step::Skip(n) => {
                        let n = n.min(avail.len());
                        self.skipped_bytes += n as u64;
                        self.in_pos += n;
                        if self.resync_event_pending() {
                            return Some(Event::Resync);
                        }
                    }
                    Step::Frame { len, channel } => {
                        let start = self.in_pos + 4;
                        self.in_pos += len;
                        return Some(Event::Frame {
                            channel,
                            data: Data::Input(start..self.in_pos),
                        });
                    }
                    Step::ZeroLength { channel } => {
                        self.in_pos += 4;
                        return Some(Event::ZeroLengthFrame { channel });
                    }
                    Step::Message { len, msg } => {
                        self.in_pos += len;
                        return Some(Event::Message(msg));
                    }
                }
            }
        }
    }

    fn advance_carry(&mut self, n: usize) {
        self.carry_pos += n;
        if self.carry_pos >= self.carry.len() {
            self.carry.clear();
            self.carry_pos = 0;
        } else if self.carry_pos >= MAX_FRAME_SIZE {
            // Keep the buffer bounded when it never empties completely.
            self.carry.drain(..self.carry_pos);
            self.carry_pos = 0;
        }
    }

    /// Bytes allocated for held-over data (for tests of the memory bound).
    pub fn carry_capacity_used(&self) -> usize {
        self.carry.len()
    }

    // Set by lose_sync, consumed by the next Skip so that Resync is reported once per loss.
    fn resync_event_pending(&mut self) -> bool {
        std::mem::take(&mut self.pending_resync_event)
    }

    /// Decides what the bytes at the start of `avail` are. `peek`: bytes following `avail`
    /// (a few, if known).
    fn parse_at(&mut self, avail: &[u8], peek: &[u8]) -> Step {
        let Some(&first) = avail.first() else {
            return Step::Need(Some(1));
        };
        if first == b'$' {
            return self.parse_frame(avail, peek);
        }
        match text_prefix(avail) {
            None => return Step::Need(None),
            Some(false) => return self.garbage(avail),
            Some(true) => {}
        }
        match rtsp_types::Message::<&[u8]>::parse(avail) {
            Ok((rtsp_types::Message::Data(_), _)) | Err(rtsp_types::ParseError::Error) => {
                self.garbage(avail)
            }
            Ok((msg, len)) => {
                let Some(msg) = RtspMessage::from_rtsp(&msg) else {
                    return self.garbage(avail);
                };
                self.resyncing = false;
                Step::Message {
                    len,
                    msg: Box::new(msg),
                }
            }
            Err(rtsp_types::ParseError::Incomplete(_)) => {
                if avail.len() >= self.max_text {
                    self.garbage(avail)
                } else {
                    Step::Need(None)
                }
            }
        }
    }

    /// [`Framer::garbage`] over the carry-over bytes: how many to skip.
    fn garbage_at_carry(&mut self) -> usize {
        let carry = std::mem::take(&mut self.carry);
        let step = self.garbage(&carry[self.carry_pos..]);
        self.carry = carry;
        match step {
            Step::Skip(n) => n.min(self.carry_len()),
            _ => self.carry_len(),
        }
    }

    fn garbage(&mut self, avail: &[u8]) -> Step {
        if self.lose_sync() {
            self.pending_resync_event = true;
        }
        let n = avail
            .iter()
            .skip(1)
            .position(|&b| is_candidate(b))
            .map_or(avail.len(), |p| p + 1);
        Step::Skip(n)
    }

    /// Whether the end of a frame must be confirmed by the byte after it before the frame
    /// is accepted (robust against truncated frames; costs latency on live input).
    fn wait_for_lookahead(&self) -> bool {
        self.strict && !self.at_eos
    }

    /// Whether a frame starts inside the frame at the start of `avail` (of `total` bytes):
    /// the mark of a frame that is no frame (garbage that looks like one) or a truncated one
    /// whose header swallowed the start of the next.
    ///
    /// The next packet of a known RTP stream ([`Framer::continues_stream`]) counts when it
    /// reaches past the end, or anywhere with `anywhere`. With `weak`, so does any plausible
    /// frame reaching past the end and followed by a frame or RTSP text.
    fn frame_starts_inside(
        &self,
        avail: &[u8],
        peek: &[u8],
        total: usize,
        weak: bool,
        anywhere: bool,
    ) -> Inside {
        let end = total.min(avail.len());
        for j in 4..end {
            let Some(h) = avail.get(j..j + 6) else {
                break;
            };
            let len = u16::from_be_bytes([h[2], h[3]]) as usize;
            let rtcp = (192..=223).contains(&h[5]);
            let plausible = h[0] == b'$'
                && self.plausible_channel(h[1])
                && h[4] >> 6 == 2
                && len >= if rtcp { 4 } else { 12 };
            if !plausible {
                continue;
            }
            let reaches_past = j + 4 + len > total;
            // (Checking the payload type alone, one frame in several thousand that garbage
            // follows was taken for a truncated one: its payload held such a header.)
            if (reaches_past || anywhere)
                && avail
                    .get(j..j + 8)
                    .is_some_and(|f| self.continues_stream(f) == Some(true))
            {
                return Inside::Yes;
            }
            if !weak || !reaches_past {
                continue;
            }
            let e = j + 4 + len;
            let mut buf = [0u8; LOOKAHEAD];
            match self.next_item_plausible(following(avail, peek, e, &mut buf)) {
                Some(true) => return Inside::Yes,
                Some(false) => continue,
                // The stream ends before: nothing can show a packet starts here.
                None if self.at_eos => continue,
                None if self.wait_for_lookahead() => return Inside::NeedMore(e + LOOKAHEAD),
                // Live: no waiting; a plausible header is taken for a packet.
                None => return Inside::Yes,
            }
        }
        Inside::No
    }

    fn parse_frame(&mut self, avail: &[u8], peek: &[u8]) -> Step {
        if avail.len() < 4 {
            return Step::Need(Some(4));
        }
        let channel = avail[1];
        let len = u16::from_be_bytes([avail[2], avail[3]]) as usize;
        let total = 4 + len;
        if len == 0 {
            if self.resyncing {
                return self.garbage(avail);
            }
            let mut buf = [0u8; LOOKAHEAD];
            if self
                .next_item_plausible(following(avail, peek, 4, &mut buf))
                .is_none()
                && self.wait_for_lookahead()
            {
                return Step::Need(Some(4 + LOOKAHEAD));
            }
            return Step::ZeroLength { channel };
        }
        if avail.len() < 5 {
            return Step::Need(Some(5));
        }
        if avail[4] >> 6 != 2 {
            return self.garbage(avail);
        }
        if self.resyncing {
            if !self.plausible_channel(channel) || len < 4 {
                return self.garbage(avail);
            }
            if avail.len() < 6 {
                return Step::Need(Some(6));
            }
            let is_rtcp = (192..=223).contains(&avail[5]);
            let pt = avail[5] & 0x7f;
            let last_pt = self.last_pt[channel as usize];
            // After garbage, RTP must also carry the payload type the channel had.
            if !is_rtcp && (len < 12 || (last_pt != NO_PT && pt != last_pt)) {
                return self.garbage(avail);
            }
        }
        if avail.len() < total {
            return Step::Need(Some(total));
        }
        let mut buf = [0u8; LOOKAHEAD];
        let next = following(avail, peek, total, &mut buf);
        // This frame, or the frame after it, does not continue a known RTP stream (RTCP, a
        // channel without RTP so far, a jump): a weaker sign than the next packet of a
        // known stream starting inside this frame.
        let proven = self.continues_stream(avail) == Some(true);
        let unproven = !proven
            || (next.first() == Some(&b'$')
                && next.get(2..4).is_some_and(|l| l != [0, 0])
                && self.continues_stream(next) != Some(true));
        match self.next_item_plausible(next) {
            None if self.wait_for_lookahead() => return Step::Need(Some(total + LOOKAHEAD)),
            Some(true)
                if unproven
                    && matches!(
                        self.frame_starts_inside(avail, peek, total, false, true),
                        Inside::Yes
                    ) =>
            {
                return self.garbage(avail);
            }
            // Not followed by a frame or RTSP text: either garbage follows a good frame, or
            // this frame is a truncated one whose header swallowed the start of the next.
            // An RTCP compound packet's length fields tile it exactly: one that doesn't is
            // a truncated frame that swallowed part of the next, even when garbage follows.
            Some(false)
                if avail.get(5).is_some_and(|b| (192..=223).contains(b))
                    && !rtcp_lengths_tile(&avail[4..total]) =>
            {
                return self.garbage(avail);
            }
            // A frame continuing its stream is only taken for truncated when the next
            // packet of a stream starts inside it.
            Some(false) => match self.frame_starts_inside(avail, peek, total, !proven, !proven) {
                Inside::Yes => return self.garbage(avail),
                Inside::NeedMore(n) => return Step::Need(Some(n)),
                // Garbage follows this frame; keep the frame.
                Inside::No => {}
            },
            _ => {}
        }
        self.resyncing = false;
        self.known[channel as usize] = true;
        if let Some(&b) = avail.get(5)
            && !(192..=223).contains(&b)
            && let Some(q) = avail.get(6..8)
        {
            self.last_pt[channel as usize] = b & 0x7f;
            self.last_seq[channel as usize] = u16::from_be_bytes([q[0], q[1]]);
        }
        Step::Frame {
            len: total,
            channel,
        }
    }
}

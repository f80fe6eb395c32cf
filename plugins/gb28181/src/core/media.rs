//! Media transport helpers for PS over RTP: the TCP deframer (RFC 4571 2-byte length, or
//! RTSP-style `$ channel len` framing, detected per packet), RFC 4571 framing for senders,
//! taking a peer's TCP connection ([`accept_from`]), and the sender lock (expected SSRC from
//! the SDP answer, else the first sender's address and SSRC).
//!
//! Limits: at most [`MAX_STREAM_BUFFER`] bytes buffered by the deframer; a frame header that
//! doesn't look like RTP makes it resync byte by byte (bounded by the buffer).

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::time::Instant;

/// Largest RTP packet over TCP (the length field is 16 bits).
pub const MAX_RTP_PACKET: usize = 65_535;
/// Bytes the deframer keeps at most while waiting for a packet to complete.
pub const MAX_STREAM_BUFFER: usize = 2 * (MAX_RTP_PACKET + 4);

/// Whether `data` starts like an RTP version 2 packet.
fn looks_like_rtp(data: &[u8]) -> bool {
    data.first().is_some_and(|b| b >> 6 == 2)
}

/// Splits a TCP byte stream into RTP packets.
#[derive(Debug, Default)]
pub struct TcpDeframer {
    buf: Vec<u8>,
    /// Bytes skipped while resynchronising.
    pub skipped: u64,
}

impl TcpDeframer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Adds bytes and returns the complete packets found.
    pub fn push(&mut self, data: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut pos = 0;
        // Process without accumulating more than the bound.
        for chunk in data.chunks(MAX_STREAM_BUFFER / 2) {
            self.buf.extend_from_slice(chunk);
            loop {
                let avail = &self.buf[pos..];
                if avail.len() < 4 {
                    break;
                }
                // `$` framing: 0x24, channel, 2-byte length. RFC 4571: 2-byte length then RTP.
                let dollar_len = usize::from(u16::from_be_bytes([avail[2], avail[3]]));
                if avail[0] == b'$' && dollar_len >= 12 && avail.get(4).is_none_or(|b| b >> 6 == 2)
                {
                    if avail.len() < 4 + dollar_len {
                        break;
                    }
                    let pkt = &avail[4..4 + dollar_len];
                    // Even channels carry RTP; odd ones RTCP (ignored).
                    if avail[1].is_multiple_of(2) && looks_like_rtp(pkt) {
                        out.push(pkt.to_vec());
                    }
                    pos += 4 + dollar_len;
                    continue;
                }
                let len = usize::from(u16::from_be_bytes([avail[0], avail[1]]));
                if len >= 12 && looks_like_rtp(&avail[2..]) {
                    if avail.len() < 2 + len {
                        break;
                    }
                    out.push(avail[2..2 + len].to_vec());
                    pos += 2 + len;
                    continue;
                }
                // Not a frame start: skip one byte (private headers, garbage).
                pos += 1;
                self.skipped += 1;
            }
            self.buf.drain(..pos);
            pos = 0;
        }
        out
    }
}

/// RFC 4571 framing of one packet.
pub fn frame_rfc4571(packet: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(packet.len()).ok()?;
    let mut v = Vec::with_capacity(packet.len() + 2);
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(packet);
    Some(v)
}

/// The poll token [`accept_from`] registers its listener with (a caller's own tokens, such
/// as a waker's, must differ).
pub const ACCEPT_TOKEN: mio::Token = mio::Token(0);

/// The first connection to `listener` from `from`'s IP (connections from anywhere else are
/// closed at once), asleep in `poll` until one comes. Ends with `TimedOut` when `deadline`
/// passes, or `Interrupted` when a wake-up of `poll` (a caller's waker) finds `stop` true.
pub fn accept_from(
    poll: &mut mio::Poll,
    listener: TcpListener,
    from: IpAddr,
    deadline: Option<Instant>,
    stop: &dyn Fn() -> bool,
) -> io::Result<mio::net::TcpStream> {
    listener.set_nonblocking(true)?;
    let mut l = mio::net::TcpListener::from_std(listener);
    poll.registry()
        .register(&mut l, ACCEPT_TOKEN, mio::Interest::READABLE)?;
    let mut events = mio::Events::with_capacity(4);
    loop {
        loop {
            match l.accept() {
                Ok((s, peer)) if peer.ip().to_canonical() == from.to_canonical() => return Ok(s),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if left.is_some_and(|l| l.is_zero()) {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the peer did not connect",
            ));
        }
        match poll.poll(&mut events, left) {
            Err(e) if e.kind() != io::ErrorKind::Interrupted => return Err(e),
            _ if stop() => return Err(io::Error::new(io::ErrorKind::Interrupted, "stopped")),
            _ => {}
        }
    }
}

/// How a call's media sender is checked against what the device answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SsrcPolicy {
    /// By dialog (the default, what devices need): the answered SSRC from any address, or
    /// another SSRC from the device's own IP (devices that answer one SSRC and send another,
    /// lower platforms that rewrite it); once locked, an SSRC change from the same address
    /// is followed (encoder restarts) and counted.
    #[default]
    Dialog,
    /// Only the answered SSRC, from one address, for the whole call.
    Strict,
}

/// Which media packets are accepted: the first acceptable sender locks the address; packets
/// from any other address are dropped (counted in `dropped`).
#[derive(Debug, Clone, Default)]
pub struct SenderLock {
    /// SSRC from the SDP answer.
    pub expected_ssrc: Option<u32>,
    /// The device's signalling IP: a sender from it is the device whatever SSRC it uses.
    pub device_ip: Option<IpAddr>,
    pub policy: SsrcPolicy,
    locked: Option<(SocketAddr, u32)>,
    pub dropped: u64,
    /// The SSRC the device sends when it is not the one it answered.
    pub mismatch: Option<u32>,
    /// SSRC changes followed from the locked address.
    pub ssrc_changes: u64,
}

impl SenderLock {
    /// Strict when an SSRC is expected, else the first sender (tests, plain RTP).
    pub fn new(expected_ssrc: Option<u32>) -> Self {
        SenderLock {
            expected_ssrc,
            policy: SsrcPolicy::Strict,
            ..SenderLock::default()
        }
    }

    /// Checks by dialog: the answered SSRC, or any from `device_ip` (see [`SsrcPolicy`]).
    pub fn for_call(expected_ssrc: Option<u32>, device_ip: IpAddr, policy: SsrcPolicy) -> Self {
        SenderLock {
            expected_ssrc,
            device_ip: Some(device_ip),
            policy,
            ..SenderLock::default()
        }
    }

    /// Whether to accept a packet with `ssrc` from `from`.
    pub fn accept(&mut self, from: SocketAddr, ssrc: u32) -> bool {
        let ok = match self.locked {
            Some((addr, _)) if addr != from => false,
            Some((_, s)) if s == ssrc => true,
            Some(_) => {
                let follow = self.policy == SsrcPolicy::Dialog;
                if follow {
                    self.ssrc_changes += 1;
                    self.locked = Some((from, ssrc));
                    if self.expected_ssrc.is_some_and(|e| e != ssrc) {
                        self.mismatch = Some(ssrc);
                    }
                }
                follow
            }
            None => {
                let expected = self.expected_ssrc.is_none_or(|e| e == ssrc);
                let by_dialog = self.policy == SsrcPolicy::Dialog
                    && self.device_ip.is_some_and(|ip| ip == from.ip());
                if !expected && by_dialog {
                    self.mismatch = Some(ssrc);
                }
                if expected || by_dialog {
                    self.locked = Some((from, ssrc));
                }
                expected || by_dialog
            }
        };
        if !ok {
            self.dropped += 1;
        }
        ok
    }

    pub fn locked(&self) -> Option<(SocketAddr, u32)> {
        self.locked
    }
}

/// Puts UDP packets back in sequence order: holds up to `capacity` packets that arrived
/// ahead of a missing one, releasing them when the gap fills, when the hold is full (the
/// gap is then given up as loss) or on [`ReorderBuffer::flush`] (the caller flushes when
/// no packet came for a while). Late packets (behind what was released) and jumps of more
/// than [`MAX_SEQ_JUMP`] (sender restart) pass straight through.
#[derive(Debug)]
pub struct ReorderBuffer<T> {
    capacity: usize,
    next: Option<u16>,
    /// Held packets by distance from `next` (1..), sorted.
    held: Vec<(u16, T)>,
    pub reordered: u64,
}

/// A sequence jump this large is a sender restart, not reordering.
pub const MAX_SEQ_JUMP: u16 = 3000;

impl<T> ReorderBuffer<T> {
    pub fn new(capacity: usize) -> Self {
        ReorderBuffer {
            capacity: capacity.max(1),
            next: None,
            held: Vec::new(),
            reordered: 0,
        }
    }

    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Adds packet `seq`; returns the packets that can go on, in order.
    pub fn push(&mut self, seq: u16, packet: T) -> Vec<T> {
        let mut out = Vec::new();
        let Some(next) = self.next else {
            self.next = Some(seq.wrapping_add(1));
            out.push(packet);
            return out;
        };
        let ahead = seq.wrapping_sub(next);
        if ahead == 0 {
            self.next = Some(seq.wrapping_add(1));
            out.push(packet);
            self.release_consecutive(&mut out);
        } else if ahead >= 0x8000 {
            // Behind: late or duplicate; the depacketizer decides.
            out.push(packet);
        } else if ahead > MAX_SEQ_JUMP {
            out.extend(self.flush());
            self.next = Some(seq.wrapping_add(1));
            out.push(packet);
        } else {
            if !self.held.iter().any(|(s, _)| *s == seq) {
                let pos = self
                    .held
                    .iter()
                    .position(|(s, _)| s.wrapping_sub(next) > ahead)
                    .unwrap_or(self.held.len());
                self.held.insert(pos, (seq, packet));
                self.reordered += 1;
            }
            while self.held.len() > self.capacity {
                // Give up on the gap: continue from the lowest held packet.
                let (s, p) = self.held.remove(0);
                self.next = Some(s.wrapping_add(1));
                out.push(p);
                self.release_consecutive(&mut out);
            }
        }
        out
    }

    fn release_consecutive(&mut self, out: &mut Vec<T>) {
        while let Some(next) = self.next
            && self.held.first().is_some_and(|(s, _)| *s == next)
        {
            let (s, p) = self.held.remove(0);
            self.next = Some(s.wrapping_add(1));
            out.push(p);
        }
    }

    /// Releases everything held, in order (the gaps are loss).
    pub fn flush(&mut self) -> Vec<T> {
        if let Some((last, _)) = self.held.last() {
            self.next = Some(last.wrapping_add(1));
        }
        self.held.drain(..).map(|(_, p)| p).collect()
    }
}

/// Offsets of `00 00 01 x` start codes within the first `limit` bytes, with `x`.
fn start_codes(frame: &[u8], limit: usize) -> impl Iterator<Item = (usize, u8)> + '_ {
    let head = &frame[..frame.len().min(limit)];
    gst_ipcam_common::startcode::start_codes(head).filter_map(|(i, x)| Some((i, x?)))
}

/// How far into a PS frame key-frame NAL units are looked for (SPS/IDR come early).
const KEY_SCAN_LIMIT: usize = 16 * 1024;

/// Whether a PS frame carries the start of a video key frame: an H.264 SPS or IDR slice, or
/// an H.265 VPS, SPS, IDR_W_RADL or CRA NAL unit (for muxers that don't flag delta units).
pub fn is_key_frame(frame: &[u8]) -> bool {
    start_codes(frame, KEY_SCAN_LIMIT).any(|(_, b)| {
        b & 0x80 == 0 && (matches!(b & 0x1f, 5 | 7) || matches!(b, 0x26 | 0x2A | 0x40 | 0x42))
    })
}

/// Whether a PS frame has a Program Stream Map (what demuxers need to know the codecs).
pub fn has_psm(frame: &[u8]) -> bool {
    start_codes(frame, frame.len()).any(|(_, b)| b == 0xBC)
}

/// Whether a buffer holds only PS headers (pack header, system header, PSM) and no PES
/// packet of an elementary stream: some muxers (mpegpsmux) push those separately.
pub fn is_header_only(frame: &[u8]) -> bool {
    let mut codes = start_codes(frame, frame.len()).peekable();
    let Some((0, first)) = codes.peek().copied() else {
        return false;
    };
    matches!(first, 0xBA..=0xBC)
        && frame.len() <= 1024
        && !start_codes(frame, frame.len()).any(|(_, b)| (0xBD..=0xEF).contains(&b) && b != 0xBE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reorder_buffer() {
        let mut r = ReorderBuffer::new(4);
        assert_eq!(r.push(10, 10), vec![10]);
        assert_eq!(r.push(12, 12), Vec::<u16>::new());
        assert_eq!(r.push(11, 11), vec![11, 12]);
        // Duplicate and late packets pass through.
        assert_eq!(r.push(11, 11), vec![11]);
        // A gap that never fills is given up when the hold overflows.
        for s in 14..18 {
            assert!(r.push(s, s).is_empty());
        }
        assert_eq!(r.push(18, 18), vec![14, 15, 16, 17, 18]);
        // Wrap-around.
        let mut r = ReorderBuffer::new(8);
        r.push(65534, 0);
        assert!(r.push(0, 2).is_empty());
        assert_eq!(r.push(65535, 1), vec![1, 2]);
        // Sender restart.
        assert!(r.push(5, 5).is_empty());
        assert_eq!(r.push(10000, 9), vec![5, 9]);
        assert!(r.push(10002, 11).is_empty());
        assert_eq!(r.flush(), vec![11]);
        assert_eq!(r.push(10003, 12), vec![12]);
        assert_eq!(r.held(), 0);
    }

    #[test]
    fn ps_frame_kinds() {
        let pack = [0, 0, 1, 0xBA, 0x44, 0, 4, 0, 4, 1, 1, 0x89, 0xC3, 0xF8];
        let psm = [0, 0, 1, 0xBC, 0, 6, 0xE0, 0xFF, 0, 0, 0, 0];
        assert!(is_header_only(&pack));
        assert!(is_header_only(&psm));
        assert!(has_psm(&psm));
        let mut idr = pack.to_vec();
        idr.extend([0, 0, 1, 0xE0, 0, 20, 0x80, 0x80, 5, 0x21, 0, 1, 0, 1]);
        idr.extend([0, 0, 0, 1, 0x67, 0x42, 0, 0, 0, 1, 0x65, 0x88]);
        assert!(!is_header_only(&idr));
        assert!(is_key_frame(&idr));
        assert!(!has_psm(&idr));
        let mut p = pack.to_vec();
        p.extend([0, 0, 1, 0xE0, 0, 20, 0x80, 0x80, 5, 0x21, 0, 1, 0, 1]);
        p.extend([0, 0, 0, 1, 0x41, 0x9A, 0x22]);
        assert!(!is_key_frame(&p));
        // H.265 IDR_W_RADL
        assert!(is_key_frame(&[0, 0, 1, 0x26, 0x01]));
        assert!(!is_key_frame(&[0, 0, 1, 0x02, 0x01]));
    }

    fn rtp(seq: u16, len: usize) -> Vec<u8> {
        let mut p = vec![
            0x80,
            96,
            (seq >> 8) as u8,
            seq as u8,
            0,
            0,
            0,
            1,
            0,
            0,
            0,
            7,
        ];
        p.resize(len.max(12), 0xAB);
        p
    }

    #[test]
    fn rfc4571_split_anywhere() {
        let mut stream = Vec::new();
        for i in 0..5 {
            stream.extend(frame_rfc4571(&rtp(i, 100 + usize::from(i))).unwrap());
        }
        for cut in [1, 3, 7, 50, 200] {
            let mut d = TcpDeframer::new();
            let mut got = Vec::new();
            for c in stream.chunks(cut) {
                got.extend(d.push(c));
            }
            assert_eq!(got.len(), 5, "cut {cut}");
            assert_eq!(got[4], rtp(4, 104));
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn dollar_framing_and_garbage() {
        let mut stream = vec![0x11; 256]; // private header
        for i in 0..3u16 {
            let p = rtp(i, 60);
            stream.extend([b'$', 0, 0, 60]);
            stream.extend(&p);
            stream.extend([b'$', 1, 0, 12]);
            stream.extend([0x80, 200, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0]);
        }
        let mut d = TcpDeframer::new();
        let got = d.push(&stream);
        assert_eq!(got.len(), 3);
        assert_eq!(got[2], rtp(2, 60));
        assert!(d.skipped >= 256);
    }

    #[test]
    fn sender_lock() {
        let a: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:1001".parse().unwrap();
        let mut l = SenderLock::new(None);
        assert!(l.accept(a, 5));
        assert!(!l.accept(b, 5));
        assert!(!l.accept(a, 6));
        assert!(l.accept(a, 5));
        let mut l = SenderLock::new(Some(9));
        assert!(!l.accept(a, 5));
        assert!(l.accept(b, 9));
        assert_eq!(l.dropped, 1);
    }

    #[test]
    fn sender_lock_by_dialog() {
        let dev: SocketAddr = "10.0.0.5:15060".parse().unwrap();
        let stranger: SocketAddr = "10.0.0.66:15060".parse().unwrap();
        // Answered 9, sends 7 from the device's IP: followed, and said.
        let mut l = SenderLock::for_call(Some(9), dev.ip(), SsrcPolicy::Dialog);
        assert!(!l.accept(stranger, 7), "another IP with another SSRC");
        assert!(l.accept(dev, 7));
        assert_eq!(l.mismatch, Some(7));
        assert!(!l.accept(stranger, 7), "the lock is the address");
        // The encoder restarts with a new SSRC: followed from the same address only.
        assert!(l.accept(dev, 8));
        assert_eq!(l.ssrc_changes, 1);
        assert!(!l.accept("10.0.0.5:15061".parse().unwrap(), 8));
        assert_eq!(l.dropped, 3);
        // The answered SSRC from a relay (other IP) is still the call's.
        let mut l = SenderLock::for_call(Some(9), dev.ip(), SsrcPolicy::Dialog);
        assert!(l.accept(stranger, 9));
        assert_eq!(l.mismatch, None);
        // Strict: only the answered SSRC, no change followed.
        let mut l = SenderLock::for_call(Some(9), dev.ip(), SsrcPolicy::Strict);
        assert!(!l.accept(dev, 7));
        assert!(l.accept(dev, 9));
        assert!(!l.accept(dev, 8));
        assert_eq!((l.dropped, l.ssrc_changes, l.mismatch), (2, 0, None));
    }
}

//! Media transport helpers for PS over RTP: the TCP deframer (RFC 4571 2-byte length, or
//! RTSP-style `$ channel len` framing, detected per packet), RFC 4571 framing for senders, and
//! the sender lock (expected SSRC from the SDP answer, else the first sender's address and
//! SSRC).
//!
//! Limits: at most [`MAX_STREAM_BUFFER`] bytes buffered by the deframer; a frame header that
//! doesn't look like RTP makes it resync byte by byte (bounded by the buffer).

use std::net::SocketAddr;

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
                if avail[0] == b'$'
                    && dollar_len >= 12
                    && avail.get(4).is_none_or(|b| b >> 6 == 2)
                {
                    if avail.len() < 4 + dollar_len {
                        break;
                    }
                    let pkt = &avail[4..4 + dollar_len];
                    // Even channels carry RTP; odd ones RTCP (ignored).
                    if avail[1] % 2 == 0 && looks_like_rtp(pkt) {
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

/// Which media packets are accepted.
#[derive(Debug, Clone, Default)]
pub struct SenderLock {
    /// SSRC from the SDP answer.
    pub expected_ssrc: Option<u32>,
    locked: Option<(SocketAddr, u32)>,
    pub dropped: u64,
}

impl SenderLock {
    pub fn new(expected_ssrc: Option<u32>) -> Self {
        SenderLock {
            expected_ssrc,
            locked: None,
            dropped: 0,
        }
    }

    /// Whether to accept a packet with `ssrc` from `from`. The first accepted packet locks
    /// the address (and the SSRC, when none was expected).
    pub fn accept(&mut self, from: SocketAddr, ssrc: u32) -> bool {
        match self.locked {
            Some((addr, s)) => {
                let ok = addr == from && s == ssrc;
                if !ok {
                    self.dropped += 1;
                }
                ok
            }
            None => {
                if self.expected_ssrc.is_some_and(|e| e != ssrc) {
                    self.dropped += 1;
                    return false;
                }
                self.locked = Some((from, ssrc));
                true
            }
        }
    }

    pub fn locked(&self) -> Option<(SocketAddr, u32)> {
        self.locked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(seq: u16, len: usize) -> Vec<u8> {
        let mut p = vec![0x80, 96, (seq >> 8) as u8, seq as u8, 0, 0, 0, 1, 0, 0, 0, 7];
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
}

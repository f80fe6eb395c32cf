//! RTP packetizing for the direct RTSP path, written straight into RTSP interleaved frames
//! (`$`, channel, length, RTP packet): H.264 (RFC 6184: single NAL unit packets and FU-A),
//! H.265 (RFC 7798: single NAL unit packets and FUs), AAC (RFC 3640 AAC-hbr, one access unit
//! a packet, fragmented when larger) and G.711 (RFC 3551), and the RTCP sender report with
//! SDES CNAME that goes with each stream. GStreamer-free: bytes in, bytes out, time passed in.

use gst_ipcam_common::startcode::start_codes;

/// Largest RTP payload (a TCP interleaved frame could take 64 KiB, but clients' depayloaders
/// and any later UDP relay expect MTU-sized packets, as gst-rtsp-server sends).
pub const MAX_PAYLOAD: usize = 1400;
/// Largest interleaved frame body (the length field is 16 bits).
const MAX_FRAME: usize = u16::MAX as usize;

/// The codecs the direct path packetizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Codec {
    /// Annex B byte stream, one access unit per frame.
    H264,
    /// Annex B byte stream, one access unit per frame.
    H265,
    /// Raw AAC access units; `config` is the AudioSpecificConfig.
    Aac {
        rate: u32,
        channels: u32,
        config: Vec<u8>,
    },
    Pcma {
        rate: u32,
        channels: u32,
    },
    Pcmu {
        rate: u32,
        channels: u32,
    },
}

impl Codec {
    /// RTP clock rate.
    pub fn clock_rate(&self) -> u32 {
        match self {
            Codec::H264 | Codec::H265 => 90_000,
            Codec::Aac { rate, .. } | Codec::Pcma { rate, .. } | Codec::Pcmu { rate, .. } => {
                (*rate).max(1)
            }
        }
    }

    pub fn is_video(&self) -> bool {
        matches!(self, Codec::H264 | Codec::H265)
    }
}

/// One stream's packetizer: its own SSRC, sequence numbers and timestamps, counting what it
/// sent for the sender reports.
#[derive(Debug)]
pub struct Packetizer {
    codec: Codec,
    pt: u8,
    ssrc: u32,
    seq: u16,
    ts_base: u32,
    /// Stream time (ns) that maps to `ts_base`: the first frame's.
    origin_ns: Option<u64>,
    /// The interleaved channel of RTP (RTCP on the next one).
    channel: u8,
    packets: u32,
    octets: u32,
    /// RTP timestamp and stream time of the latest frame (for sender reports).
    last: Option<(u32, u64)>,
}

impl Packetizer {
    /// `seq` and `ts_base` are the first sequence number and RTP timestamp (random, RFC 3550).
    pub fn new(codec: Codec, pt: u8, ssrc: u32, seq: u16, ts_base: u32, channel: u8) -> Self {
        Packetizer {
            codec,
            pt,
            ssrc,
            seq,
            ts_base,
            origin_ns: None,
            channel,
            packets: 0,
            octets: 0,
            last: None,
        }
    }

    pub fn codec(&self) -> &Codec {
        &self.codec
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// The sequence number of the next packet.
    pub fn next_seq(&self) -> u16 {
        self.seq
    }

    /// The RTP timestamp of stream time `time_ns` (the first frame's time is `ts_base`).
    pub fn rtp_time(&self, time_ns: u64) -> u32 {
        let origin = self.origin_ns.unwrap_or(time_ns);
        let d = i128::from(time_ns) - i128::from(origin);
        let ticks = d * i128::from(self.codec.clock_rate()) / 1_000_000_000;
        self.ts_base.wrapping_add(ticks as u32)
    }

    /// Stream time `ns` maps to [`ts_base`](Self::ts_base) (streams of one reader share it).
    pub fn set_origin(&mut self, ns: u64) {
        self.origin_ns = Some(ns);
    }

    /// The RTP timestamp the first frame gets (for `RTP-Info`).
    pub fn ts_base(&self) -> u32 {
        self.ts_base
    }

    /// Appends the interleaved RTP packets of one frame (an access unit, or a chunk of
    /// G.711/AAC audio) at stream time `time_ns` to `out`; returns the packets written.
    pub fn frame(&mut self, data: &[u8], time_ns: u64, out: &mut Vec<u8>) -> usize {
        self.origin_ns.get_or_insert(time_ns);
        let ts = self.rtp_time(time_ns);
        self.last = Some((ts, time_ns));
        let before = self.packets;
        match self.codec {
            Codec::H264 => self.nal_units(data, ts, 1, out),
            Codec::H265 => self.nal_units(data, ts, 2, out),
            Codec::Aac { .. } => self.aac(data, ts, out),
            Codec::Pcma { channels, .. } | Codec::Pcmu { channels, .. } => {
                // One sample a byte per channel: split at MAX_PAYLOAD on whole sample frames.
                let step =
                    (MAX_PAYLOAD / channels.max(1) as usize).max(1) * channels.max(1) as usize;
                let mut offset = 0u32;
                for chunk in data.chunks(step) {
                    self.packet(ts.wrapping_add(offset), false, &[], chunk, out);
                    offset = offset.wrapping_add((chunk.len() / channels.max(1) as usize) as u32);
                }
            }
        }
        self.packets.wrapping_sub(before) as usize
    }

    /// NAL units of an Annex B access unit; `hdr` is the NAL header size (1 H.264, 2 H.265).
    fn nal_units(&mut self, data: &[u8], ts: u32, hdr: usize, out: &mut Vec<u8>) {
        let nals: Vec<&[u8]> = nal_units(data)
            .filter(|n| n.len() > hdr && !is_delimiter(n, hdr))
            .collect();
        let count = nals.len();
        for (i, nal) in nals.into_iter().enumerate() {
            let last = i + 1 == count;
            if nal.len() <= MAX_PAYLOAD {
                self.packet(ts, last, &[], nal, out);
                continue;
            }
            // Fragmentation units: the NAL header becomes the FU indicator (+ FU header).
            let (prefix, nal_type): ([u8; 3], u8) = if hdr == 1 {
                ([(nal[0] & 0xe0) | 28, 0, 0], nal[0] & 0x1f)
            } else {
                (
                    [(nal[0] & 0x81) | (49 << 1), nal[1], 0],
                    (nal[0] >> 1) & 0x3f,
                )
            };
            let body = &nal[hdr..];
            let piece = MAX_PAYLOAD - hdr - 1;
            let n = body.len().div_ceil(piece);
            for (k, chunk) in body.chunks(piece).enumerate() {
                let mut fu = 0u8;
                if k == 0 {
                    fu |= 0x80;
                }
                if k + 1 == n {
                    fu |= 0x40;
                }
                let mut head = prefix;
                head[hdr] = fu | nal_type;
                self.packet(ts, last && k + 1 == n, &head[..hdr + 1], chunk, out);
            }
        }
    }

    /// One AAC access unit (AAC-hbr: 16-bit AU-headers-length, 13-bit size + 3-bit index).
    fn aac(&mut self, au: &[u8], ts: u32, out: &mut Vec<u8>) {
        // Larger than the 13-bit size field: not AAC (8191 bytes is far above any frame).
        if au.is_empty() || au.len() > 0x1fff {
            return;
        }
        let size = (au.len() as u16) << 3;
        let head = [0x00, 0x10, (size >> 8) as u8, size as u8];
        let piece = MAX_PAYLOAD - head.len();
        let n = au.len().div_ceil(piece);
        for (k, chunk) in au.chunks(piece).enumerate() {
            self.packet(ts, k + 1 == n, &head, chunk, out);
        }
    }

    /// Appends one interleaved RTP packet: header, `head` then `body`.
    fn packet(&mut self, ts: u32, marker: bool, head: &[u8], body: &[u8], out: &mut Vec<u8>) {
        let len = 12 + head.len() + body.len();
        debug_assert!(len <= MAX_FRAME);
        out.reserve(4 + len);
        out.extend_from_slice(&[b'$', self.channel]);
        out.extend_from_slice(&(len as u16).to_be_bytes());
        out.extend_from_slice(&[0x80, (u8::from(marker) << 7) | (self.pt & 0x7f)]);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&ts.to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        out.extend_from_slice(head);
        out.extend_from_slice(body);
        self.seq = self.seq.wrapping_add(1);
        self.packets = self.packets.wrapping_add(1);
        self.octets = self.octets.wrapping_add((head.len() + body.len()) as u32);
    }

    /// Appends an interleaved RTCP sender report (+ SDES CNAME) on the RTCP channel, for wall
    /// time `ntp` (NTP format: seconds since 1900 << 32 | fraction) observed at stream time
    /// `now_ns`. Nothing before the first frame (no timestamp to relate yet).
    pub fn sender_report(&self, ntp: u64, now_ns: u64, cname: &str, out: &mut Vec<u8>) {
        let Some((last_ts, last_ns)) = self.last else {
            return;
        };
        let d = i128::from(now_ns) - i128::from(last_ns);
        let ts =
            last_ts.wrapping_add((d * i128::from(self.codec.clock_rate()) / 1_000_000_000) as u32);
        let cname = &cname.as_bytes()[..cname.len().min(255)];
        // SDES: SSRC, CNAME item (type, length, text), END, padded to 32 bits.
        let sdes_items = 4 + 2 + cname.len() + 1;
        let sdes_len = sdes_items.div_ceil(4) * 4;
        let total = 28 + 4 + sdes_len;
        out.extend_from_slice(&[b'$', self.channel.wrapping_add(1)]);
        out.extend_from_slice(&(total as u16).to_be_bytes());
        out.extend_from_slice(&[0x80, 200, 0, 6]);
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        out.extend_from_slice(&ntp.to_be_bytes());
        out.extend_from_slice(&ts.to_be_bytes());
        out.extend_from_slice(&self.packets.to_be_bytes());
        out.extend_from_slice(&self.octets.to_be_bytes());
        out.extend_from_slice(&[0x81, 202]);
        out.extend_from_slice(&((sdes_len / 4) as u16).to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        out.extend_from_slice(&[1, cname.len() as u8]);
        out.extend_from_slice(cname);
        out.resize(out.len() + sdes_len - (4 + 2 + cname.len()), 0);
    }
}

/// The NAL units of an Annex B byte stream, without their start codes (a stream without any
/// start code is taken as one NAL unit).
pub fn nal_units(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let starts: Vec<usize> = start_codes(data).map(|(p, _)| p).collect();
    let mut bounds = Vec::with_capacity(starts.len() + 1);
    if starts.is_empty() {
        bounds.push((0, data.len()));
    }
    for (i, &p) in starts.iter().enumerate() {
        let begin = p + 3;
        let mut end = starts.get(i + 1).copied().unwrap_or(data.len());
        // A 4-byte start code's leading zero (and trailing zeros) belong to no NAL unit.
        while end > begin && data[end - 1] == 0 && i + 1 < starts.len() {
            end -= 1;
        }
        bounds.push((begin.min(data.len()), end.max(begin.min(data.len()))));
    }
    bounds.into_iter().map(move |(b, e)| &data[b..e])
}

fn is_delimiter(nal: &[u8], hdr: usize) -> bool {
    if hdr == 1 {
        nal[0] & 0x1f == 9
    } else {
        (nal[0] >> 1) & 0x3f == 35
    }
}

/// The NTP timestamp (RFC 5905 format) of a time since the Unix epoch.
pub fn ntp_time(since_unix: std::time::Duration) -> u64 {
    const UNIX_TO_NTP: u64 = 2_208_988_800;
    let secs = since_unix.as_secs().wrapping_add(UNIX_TO_NTP);
    let frac = (u64::from(since_unix.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits interleaved frames back into (channel, packet).
    fn frames(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut v = Vec::new();
        while b.len() >= 4 {
            assert_eq!(b[0], b'$');
            let len = u16::from_be_bytes([b[2], b[3]]) as usize;
            v.push((b[1], b[4..4 + len].to_vec()));
            b = &b[4 + len..];
        }
        assert!(b.is_empty());
        v
    }

    #[test]
    fn small_h264_nal_units_go_one_a_packet_and_the_last_has_the_marker() {
        let mut p = Packetizer::new(Codec::H264, 96, 0x1234_5678, 100, 1000, 0);
        let au = [
            0, 0, 0, 1, 0x09, 0xf0, // AUD: dropped
            0, 0, 0, 1, 0x67, 1, 2, 3, // SPS
            0, 0, 1, 0x68, 4, // PPS
            0, 0, 1, 0x65, 5, 6, 7, // IDR
        ];
        let mut out = Vec::new();
        assert_eq!(p.frame(&au, 5_000_000_000, &mut out), 3);
        let f = frames(&out);
        assert_eq!(f.len(), 3);
        assert_eq!(&f[0].1[12..], &[0x67, 1, 2, 3]);
        assert_eq!(&f[1].1[12..], &[0x68, 4]);
        assert_eq!(&f[2].1[12..], &[0x65, 5, 6, 7]);
        for (i, (ch, pkt)) in f.iter().enumerate() {
            assert_eq!(*ch, 0);
            assert_eq!(pkt[0], 0x80);
            assert_eq!(pkt[1] & 0x7f, 96);
            assert_eq!(pkt[1] >> 7 == 1, i == 2, "marker on the last packet only");
            assert_eq!(u16::from_be_bytes([pkt[2], pkt[3]]), 100 + i as u16);
            assert_eq!(u32::from_be_bytes([pkt[4], pkt[5], pkt[6], pkt[7]]), 1000);
            assert_eq!(
                u32::from_be_bytes([pkt[8], pkt[9], pkt[10], pkt[11]]),
                0x1234_5678
            );
        }
        // 40 ms later: 3600 ticks of 90 kHz.
        out.clear();
        p.frame(&[0, 0, 1, 0x41, 9], 5_040_000_000, &mut out);
        let f = frames(&out);
        assert_eq!(u32::from_be_bytes(f[0].1[4..8].try_into().unwrap()), 4600);
    }

    #[test]
    fn a_large_h264_nal_unit_is_split_into_fu_a_that_rebuild_it() {
        let mut p = Packetizer::new(Codec::H264, 96, 1, 65535, 0, 2);
        let mut nal = vec![0x65];
        nal.extend((0..5000u32).map(|i| (i % 251) as u8));
        let mut au = vec![0, 0, 0, 1];
        au.extend_from_slice(&nal);
        let mut out = Vec::new();
        let n = p.frame(&au, 0, &mut out);
        let f = frames(&out);
        assert_eq!(n, f.len());
        assert!(f.len() >= 4);
        let mut rebuilt = Vec::new();
        for (i, (ch, pkt)) in f.iter().enumerate() {
            assert_eq!(*ch, 2);
            assert!(pkt.len() - 12 <= MAX_PAYLOAD);
            let (ind, fu) = (pkt[12], pkt[13]);
            assert_eq!(ind & 0x1f, 28);
            assert_eq!(ind & 0xe0, 0x60);
            assert_eq!(fu & 0x1f, 5);
            assert_eq!(fu & 0x80 != 0, i == 0, "start bit");
            assert_eq!(fu & 0x40 != 0, i + 1 == f.len(), "end bit");
            assert_eq!(pkt[1] >> 7 == 1, i + 1 == f.len(), "marker");
            if i == 0 {
                rebuilt.push(ind & 0xe0 | fu & 0x1f);
            }
            rebuilt.extend_from_slice(&pkt[14..]);
        }
        assert_eq!(rebuilt, nal);
        // Sequence numbers wrap.
        assert_eq!(u16::from_be_bytes([f[1].1[2], f[1].1[3]]), 0);
    }

    #[test]
    fn a_large_h265_nal_unit_is_split_into_fus_that_rebuild_it() {
        let mut p = Packetizer::new(Codec::H265, 97, 1, 0, 0, 0);
        // IDR_W_RADL (19): header 0x26 0x01; AUD (35) first, dropped.
        let mut nal = vec![0x26, 0x01];
        nal.extend((0..3000u32).map(|i| (i % 13) as u8 + 1));
        let mut au = vec![0, 0, 0, 1, 0x46, 0x01, 0x50];
        au.extend_from_slice(&[0, 0, 0, 1]);
        au.extend_from_slice(&nal);
        let mut out = Vec::new();
        p.frame(&au, 0, &mut out);
        let f = frames(&out);
        let mut rebuilt = Vec::new();
        for (i, (_, pkt)) in f.iter().enumerate() {
            assert_eq!((pkt[12] >> 1) & 0x3f, 49);
            assert_eq!(pkt[13], 0x01);
            let fu = pkt[14];
            assert_eq!(fu & 0x3f, 19);
            assert_eq!(fu & 0x80 != 0, i == 0);
            assert_eq!(fu & 0x40 != 0, i + 1 == f.len());
            if i == 0 {
                rebuilt.extend_from_slice(&[(pkt[12] & 0x81) | (19 << 1), pkt[13]]);
            }
            rebuilt.extend_from_slice(&pkt[15..]);
        }
        assert_eq!(rebuilt, nal);
    }

    #[test]
    fn aac_has_au_headers_and_g711_keeps_sample_timestamps() {
        let codec = Codec::Aac {
            rate: 44_100,
            channels: 2,
            config: vec![0x12, 0x10],
        };
        let mut p = Packetizer::new(codec, 97, 7, 0, 0, 2);
        let mut out = Vec::new();
        p.frame(&[0xaa; 300], 0, &mut out);
        let f = frames(&out);
        assert_eq!(f.len(), 1);
        assert_eq!(
            &f[0].1[12..16],
            &[0x00, 0x10, (300u16 << 3 >> 8) as u8, (300u16 << 3) as u8]
        );
        assert_eq!(f[0].1.len(), 12 + 4 + 300);
        assert_eq!(f[0].1[1], 0x80 | 97);

        let mut p = Packetizer::new(
            Codec::Pcma {
                rate: 8000,
                channels: 1,
            },
            8,
            7,
            0,
            0,
            2,
        );
        out.clear();
        p.frame(&[0xd5; 3000], 0, &mut out);
        let f = frames(&out);
        assert_eq!(f.len(), 3);
        let ts: Vec<u32> = f
            .iter()
            .map(|(_, k)| u32::from_be_bytes(k[4..8].try_into().unwrap()))
            .collect();
        assert_eq!(ts, vec![0, 1400, 2800]);
        assert_eq!(p.rtp_time(1_000_000_000), 8000);
    }

    #[test]
    fn sender_report_relates_wall_clock_and_rtp_time() {
        let mut p = Packetizer::new(Codec::H264, 96, 0xabcd, 0, 90_000, 0);
        let mut out = Vec::new();
        p.sender_report(1, 0, "x", &mut out);
        assert!(out.is_empty(), "nothing before the first frame");
        p.frame(&[0, 0, 1, 0x65, 1, 2, 3], 1_000_000_000, &mut out);
        out.clear();
        let ntp = ntp_time(std::time::Duration::from_secs(1_700_000_000));
        p.sender_report(ntp, 2_000_000_000, "gst-ipcam", &mut out);
        let f = frames(&out);
        assert_eq!(f.len(), 1);
        let (ch, sr) = &f[0];
        assert_eq!(*ch, 1);
        assert_eq!(sr[1], 200);
        assert_eq!(u64::from_be_bytes(sr[8..16].try_into().unwrap()), ntp);
        assert_eq!(u32::from_be_bytes(sr[16..20].try_into().unwrap()), 180_000);
        assert_eq!(
            u32::from_be_bytes(sr[20..24].try_into().unwrap()),
            1,
            "packets"
        );
        assert_eq!(
            u32::from_be_bytes(sr[24..28].try_into().unwrap()),
            4,
            "octets"
        );
        assert_eq!(sr[29], 202, "SDES follows");
        assert_eq!(sr.len() % 4, 0);
        let sdes_words = u16::from_be_bytes([sr[30], sr[31]]) as usize;
        assert_eq!(sr.len(), 28 + 4 + sdes_words * 4);
        assert_eq!(&sr[38..38 + 9], b"gst-ipcam");
    }

    #[test]
    fn nal_units_of_odd_streams() {
        let v: Vec<&[u8]> = nal_units(&[1, 2, 3]).collect();
        assert_eq!(v, vec![&[1u8, 2, 3][..]]);
        let v: Vec<&[u8]> = nal_units(&[0, 0, 1]).collect();
        assert_eq!(v, vec![&[0u8; 0][..]]);
        let v: Vec<&[u8]> = nal_units(&[0, 0, 1, 5, 0, 0, 0, 1, 6, 0]).collect();
        assert_eq!(v, vec![&[5u8][..], &[6u8, 0][..]]);
    }
}

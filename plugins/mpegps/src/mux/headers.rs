//! Byte-exact writers for the MPEG-2 Program Stream headers (ISO/IEC 13818-1 §2.5.3):
//! pack header, system header, program stream map (with its MPEG-2 CRC32) and PES header.
//! Each writer appends to a `Vec<u8>` so one allocation can hold all headers of a frame.

use crate::ps::{self, Codec};

/// Size of an MPEG-2 pack header without stuffing.
pub const PACK_HEADER_LEN: usize = 14;
/// Largest `PES_packet_length` value.
pub const PES_LENGTH_MAX: usize = 65535;
/// PES header bytes counted by `PES_packet_length` when PTS and DTS are both present
/// (flags 2 bytes, header data length 1, PTS 5, DTS 5).
pub const PES_EXT_MAX: usize = 3 + 10;
/// Largest PES payload that always fits the 16-bit length field.
pub const PES_PAYLOAD_MAX: usize = PES_LENGTH_MAX - PES_EXT_MAX;
/// `program_mux_rate` / `rate_bound` are 22-bit fields in units of 50 bytes/s.
pub const MUX_RATE_MAX: u32 = (1 << 22) - 1;

/// An elementary stream as listed in the system header and the PSM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamDesc {
    pub stream_id: u8,
    pub codec: Codec,
}

/// CRC-32/MPEG-2: polynomial 0x04C11DB7, initial value 0xFFFFFFFF, no reflection, no final xor.
pub fn crc32_mpeg2(data: &[u8]) -> u32 {
    static TABLE: std::sync::LazyLock<[u32; 256]> = std::sync::LazyLock::new(|| {
        let mut table = [0u32; 256];
        for (i, entry) in table.iter_mut().enumerate() {
            let mut crc = (i as u32) << 24;
            for _ in 0..8 {
                crc = if crc & 0x8000_0000 != 0 {
                    (crc << 1) ^ 0x04C1_1DB7
                } else {
                    crc << 1
                };
            }
            *entry = crc;
        }
        table
    });
    data.iter().fold(0xFFFF_FFFF, |crc, &b| {
        (crc << 8) ^ TABLE[(((crc >> 24) as u8) ^ b) as usize]
    })
}

/// Appends a 33-bit timestamp in the 5-byte PES layout: `prefix(4) ts[32..30] 1 ts[29..15] 1
/// ts[14..0] 1`. The prefix is `0b0010` (PTS only), `0b0011` (PTS with DTS) or `0b0001` (DTS).
pub fn write_timestamp(out: &mut Vec<u8>, prefix: u8, ts: u64) {
    let ts = ts % ps::PTS_MODULO;
    out.extend_from_slice(&[
        (prefix << 4) | (((ts >> 30) as u8 & 0x07) << 1) | 1,
        (ts >> 22) as u8,
        (((ts >> 15) as u8 & 0x7F) << 1) | 1,
        (ts >> 7) as u8,
        ((ts as u8 & 0x7F) << 1) | 1,
    ]);
}

/// Appends an MPEG-2 pack header (14 bytes, no stuffing). `scr` is the 90 kHz SCR base
/// (the 27 MHz extension is written as 0); `mux_rate` in units of 50 bytes/s.
pub fn write_pack_header(out: &mut Vec<u8>, scr: u64, mux_rate: u32) {
    let scr = scr % ps::PTS_MODULO;
    let rate = mux_rate.clamp(1, MUX_RATE_MAX);
    out.extend_from_slice(&[0, 0, 1, ps::PACK_START]);
    out.extend_from_slice(&[
        0x40 | (((scr >> 30) as u8 & 0x07) << 3) | 0x04 | ((scr >> 28) as u8 & 0x03),
        (scr >> 20) as u8,
        (((scr >> 15) as u8 & 0x1F) << 3) | 0x04 | ((scr >> 13) as u8 & 0x03),
        (scr >> 5) as u8,
        ((scr as u8 & 0x1F) << 3) | 0x04, // SCR extension bits 8..7 = 0
        0x01,                             // SCR extension bits 6..0 = 0, marker
        (rate >> 14) as u8,
        (rate >> 6) as u8,
        ((rate as u8 & 0x3F) << 2) | 0x03,
        0xF8, // reserved, pack_stuffing_length = 0
    ]);
}

/// P-STD buffer bound written in the system header: video 512 KiB (scale 1024), audio
/// 4 KiB (scale 128), enough for the frame sizes cameras produce.
fn pstd_bound(codec: Codec) -> [u8; 2] {
    if codec.is_video() {
        let size: u16 = 512; // × 1024 bytes
        [0xE0 | (size >> 8) as u8, size as u8]
    } else {
        let size: u16 = 32; // × 128 bytes
        [0xC0 | (size >> 8) as u8, size as u8]
    }
}

/// Appends a system header listing `streams`. `rate_bound` in units of 50 bytes/s.
pub fn write_system_header(out: &mut Vec<u8>, rate_bound: u32, streams: &[StreamDesc]) {
    let rate = rate_bound.clamp(1, MUX_RATE_MAX);
    let audio = streams
        .iter()
        .filter(|s| !s.codec.is_video())
        .count()
        .min(32) as u8;
    let video = streams
        .iter()
        .filter(|s| s.codec.is_video())
        .count()
        .min(16) as u8;
    let header_length = (6 + 3 * streams.len()) as u16;
    out.extend_from_slice(&[0, 0, 1, ps::SYSTEM_HEADER]);
    out.extend_from_slice(&header_length.to_be_bytes());
    out.extend_from_slice(&[
        0x80 | (rate >> 15) as u8,
        (rate >> 7) as u8,
        ((rate as u8 & 0x7F) << 1) | 1,
        audio << 2,   // fixed_flag 0, CSPS_flag 0
        0x20 | video, // audio lock 0, video lock 0, marker 1
        0x7F,         // packet_rate_restriction_flag 0, reserved
    ]);
    for s in streams {
        out.push(s.stream_id);
        out.extend_from_slice(&pstd_bound(s.codec));
    }
}

/// Appends a program stream map (no descriptors) ending with its CRC32.
pub fn write_psm(out: &mut Vec<u8>, version: u8, streams: &[StreamDesc]) {
    let start = out.len();
    let es_map_length = (4 * streams.len()) as u16;
    let psm_length = 10 + es_map_length;
    out.extend_from_slice(&[0, 0, 1, ps::PSM]);
    out.extend_from_slice(&psm_length.to_be_bytes());
    out.extend_from_slice(&[0x80 | 0x60 | (version & 0x1F), 0xFF, 0, 0]);
    out.extend_from_slice(&es_map_length.to_be_bytes());
    for s in streams {
        out.extend_from_slice(&[s.codec.stream_type(), s.stream_id, 0, 0]);
    }
    let crc = crc32_mpeg2(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// Appends a PES header for `payload_len` bytes of payload. `payload_len` must not exceed
/// [`PES_PAYLOAD_MAX`] (larger values are clamped in the length field; callers split first).
/// DTS is only written together with a PTS and when it differs from it.
pub fn write_pes_header(
    out: &mut Vec<u8>,
    stream_id: u8,
    payload_len: usize,
    pts: Option<u64>,
    dts: Option<u64>,
    aligned: bool,
) {
    let pts = pts.map(|t| t % ps::PTS_MODULO);
    let dts = match (pts, dts.map(|t| t % ps::PTS_MODULO)) {
        (Some(p), Some(d)) if p != d => Some(d),
        _ => None,
    };
    let (flags, data_len) = match (pts, dts) {
        (Some(_), Some(_)) => (0xC0, 10u8),
        (Some(_), None) => (0x80, 5),
        _ => (0x00, 0),
    };
    let pes_length = (3 + data_len as usize + payload_len).min(PES_LENGTH_MAX) as u16;
    out.extend_from_slice(&[0, 0, 1, stream_id]);
    out.extend_from_slice(&pes_length.to_be_bytes());
    out.extend_from_slice(&[0x80 | if aligned { 0x04 } else { 0 }, flags, data_len]);
    match (pts, dts) {
        (Some(p), Some(d)) => {
            write_timestamp(out, 0b0011, p);
            write_timestamp(out, 0b0001, d);
        }
        (Some(p), None) => write_timestamp(out, 0b0010, p),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `n` bits MSB first; independent of the writers above.
    struct Bits<'a> {
        data: &'a [u8],
        pos: usize,
    }

    impl Bits<'_> {
        fn read(&mut self, n: usize) -> u64 {
            let mut v = 0;
            for _ in 0..n {
                let bit = (self.data[self.pos / 8] >> (7 - self.pos % 8)) & 1;
                v = (v << 1) | bit as u64;
                self.pos += 1;
            }
            v
        }
    }

    #[test]
    fn crc32_mpeg2_check_value() {
        assert_eq!(crc32_mpeg2(b"123456789"), 0x0376_E6E7);
        assert_eq!(crc32_mpeg2(b""), 0xFFFF_FFFF);
    }

    #[test]
    fn pack_header_known_vector() {
        // FFmpeg's first pack header with SCR 0 and mux_rate 25200.
        let mut out = Vec::new();
        write_pack_header(&mut out, 0, 25200);
        assert_eq!(
            out,
            [
                0, 0, 1, 0xBA, 0x44, 0, 0x04, 0, 0x04, 0x01, 0x01, 0x89, 0xC3, 0xF8
            ]
        );
    }

    #[test]
    fn pack_header_fields() {
        for scr in [1u64, 0x1_2345_6789, (1 << 33) - 1, 90_000 * 3600] {
            let mut out = Vec::new();
            write_pack_header(&mut out, scr, 0x2A_5A5A);
            assert_eq!(out.len(), PACK_HEADER_LEN);
            let mut b = Bits {
                data: &out,
                pos: 32,
            };
            assert_eq!(b.read(2), 0b01);
            let mut v = b.read(3) << 30;
            assert_eq!(b.read(1), 1);
            v |= b.read(15) << 15;
            assert_eq!(b.read(1), 1);
            v |= b.read(15);
            assert_eq!(b.read(1), 1);
            assert_eq!(v, scr);
            assert_eq!(b.read(9), 0, "scr ext");
            assert_eq!(b.read(1), 1);
            assert_eq!(b.read(22), 0x2A_5A5A);
            assert_eq!(b.read(2), 0b11);
            assert_eq!(b.read(5), 0b11111);
            assert_eq!(b.read(3), 0, "stuffing");
        }
    }

    #[test]
    fn timestamp_encoding_and_wrap() {
        let mut out = Vec::new();
        write_timestamp(&mut out, 0b0010, 0);
        assert_eq!(out, [0x21, 0x00, 0x01, 0x00, 0x01]);
        for ts in [0u64, 1, 90_000, 0x1_FFFF_FFFF, 0x1_0000_8001] {
            let mut out = Vec::new();
            write_timestamp(&mut out, 0b0011, ts);
            let mut b = Bits { data: &out, pos: 0 };
            assert_eq!(b.read(4), 0b0011);
            let mut v = b.read(3) << 30;
            assert_eq!(b.read(1), 1);
            v |= b.read(15) << 15;
            assert_eq!(b.read(1), 1);
            v |= b.read(15);
            assert_eq!(b.read(1), 1);
            assert_eq!(v, ts);
        }
        // 2^33 + 5 wraps to 5.
        let (mut a, mut b) = (Vec::new(), Vec::new());
        write_timestamp(&mut a, 0b0010, (1 << 33) + 5);
        write_timestamp(&mut b, 0b0010, 5);
        assert_eq!(a, b);
    }

    #[test]
    fn system_header_layout() {
        let streams = [
            StreamDesc {
                stream_id: 0xE0,
                codec: Codec::H264,
            },
            StreamDesc {
                stream_id: 0xC0,
                codec: Codec::G711Alaw,
            },
        ];
        let mut out = Vec::new();
        write_system_header(&mut out, 50_000, &streams);
        assert_eq!(&out[..4], &[0, 0, 1, 0xBB]);
        let header_length = u16::from_be_bytes([out[4], out[5]]) as usize;
        assert_eq!(header_length, out.len() - 6);
        assert_eq!(header_length, 6 + 3 * 2);
        let mut b = Bits {
            data: &out,
            pos: 48,
        };
        assert_eq!(b.read(1), 1);
        assert_eq!(b.read(22), 50_000);
        assert_eq!(b.read(1), 1);
        assert_eq!(b.read(6), 1, "audio_bound");
        assert_eq!(b.read(2), 0);
        assert_eq!(b.read(2), 0, "locks");
        assert_eq!(b.read(1), 1);
        assert_eq!(b.read(5), 1, "video_bound");
        assert_eq!(b.read(1), 0);
        assert_eq!(b.read(7), 0x7F);
        assert_eq!(b.read(8), 0xE0);
        assert_eq!(b.read(2), 0b11);
        assert_eq!(b.read(1), 1, "video scale 1024");
        assert_eq!(b.read(13), 512);
        assert_eq!(b.read(8), 0xC0);
        assert_eq!(b.read(2), 0b11);
        assert_eq!(b.read(1), 0, "audio scale 128");
        assert_eq!(b.read(13), 32);
    }

    #[test]
    fn psm_layout_and_crc() {
        let streams = [
            StreamDesc {
                stream_id: 0xE0,
                codec: Codec::H265,
            },
            StreamDesc {
                stream_id: 0xC0,
                codec: Codec::Aac,
            },
        ];
        let mut out = Vec::new();
        write_psm(&mut out, 3, &streams);
        assert_eq!(
            &out[..out.len() - 4],
            &[
                0, 0, 1, 0xBC, 0, 18, // length = 10 + 4 * 2
                0xE3, 0xFF, // current_next 1, reserved 11, version 3; reserved, marker
                0, 0, // program_stream_info_length
                0, 8, // elementary_stream_map_length
                0x24, 0xE0, 0, 0, 0x0F, 0xC0, 0, 0,
            ]
        );
        assert_eq!(out.len(), 6 + 18);
        // The CRC over the whole section including the CRC is 0 for CRC-32/MPEG-2.
        assert_eq!(crc32_mpeg2(&out), 0);
    }

    #[test]
    fn pes_header_layouts() {
        let mut out = Vec::new();
        write_pes_header(&mut out, 0xE0, 1000, Some(90_000), Some(86_400), true);
        let mut expected = vec![0, 0, 1, 0xE0];
        expected.extend_from_slice(&(13u16 + 1000).to_be_bytes());
        expected.extend_from_slice(&[0x84, 0xC0, 10]);
        write_timestamp(&mut expected, 0b0011, 90_000);
        write_timestamp(&mut expected, 0b0001, 86_400);
        assert_eq!(out, expected);

        // DTS equal to PTS is left out.
        let mut out = Vec::new();
        write_pes_header(&mut out, 0xC0, 160, Some(7), Some(7), false);
        assert_eq!(&out[..9], &[0, 0, 1, 0xC0, 0, 168, 0x80, 0x80, 5]);
        assert_eq!(out.len(), 14);

        // Continuation PES: no timestamps.
        let mut out = Vec::new();
        write_pes_header(&mut out, 0xE1, PES_PAYLOAD_MAX, None, Some(1), false);
        assert_eq!(out, [0, 0, 1, 0xE1, 0xFF, 0xF5, 0x80, 0, 0]);
    }
}

//! The Program Stream writer: turns one frame (a video access unit or an audio buffer) into
//! a PS "frame" as cameras write it — pack header, system header + PSM when needed, then
//! PES packets split at the PES size limit — without touching the elementary stream bytes.
//!
//! The result is a [`Packet`]: the header bytes in one small allocation plus a list of
//! [`Piece`]s saying how header ranges and payload ranges interleave. The element turns
//! header ranges into shared sub-memories of one memory and payload ranges into
//! sub-memories of the input buffer (zero copy); tests use [`Packet::to_contiguous`].

use std::ops::Range;

use super::headers::{self, StreamDesc};
use crate::ps::{self, Codec};

/// Mux rate written until a rate can be measured (≈ 10 Mbit/s), in units of 50 bytes/s.
pub const DEFAULT_MUX_RATE_UNITS: u32 = 25_200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterConfig {
    /// Largest PES payload; clamped to `1..=PES_PAYLOAD_MAX`.
    pub pes_payload_size: usize,
    /// `program_mux_rate` in bytes/s, 0 = measured from the written bytes.
    pub mux_rate: u32,
    /// Without video streams, repeat the system header and PSM at least this often
    /// (90 kHz ticks; 0 = only when the stream set changes).
    pub psm_interval: u64,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            pes_payload_size: headers::PES_PAYLOAD_MAX,
            mux_rate: 0,
            psm_interval: ps::PTS_CLOCK,
        }
    }
}

/// One input frame. Timestamps in 90 kHz ticks (wrapped to 33 bits by the writer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub stream_id: u8,
    pub len: usize,
    pub pts: Option<u64>,
    pub dts: Option<u64>,
    /// A video key frame (ignored for audio).
    pub key: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// A range of [`Packet::headers`].
    Header(Range<usize>),
    /// A range of the frame's payload.
    Payload(Range<usize>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub headers: Vec<u8>,
    pub pieces: Vec<Piece>,
    /// Whether a system header and PSM precede the PES packets.
    pub with_psm: bool,
    pub scr: u64,
    /// Number of PES packets the frame was split into.
    pub pes_count: usize,
}

impl Packet {
    pub fn len(&self) -> usize {
        self.pieces
            .iter()
            .map(|p| match p {
                Piece::Header(r) | Piece::Payload(r) => r.len(),
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The packet as one byte vector; `None` if `payload` is shorter than the frame.
    pub fn to_contiguous(&self, payload: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(self.len());
        for piece in &self.pieces {
            match piece {
                Piece::Header(r) => out.extend_from_slice(self.headers.get(r.clone())?),
                Piece::Payload(r) => out.extend_from_slice(payload.get(r.clone())?),
            }
        }
        Some(out)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteError {
    UnknownStream(u8),
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::UnknownStream(id) => write!(f, "unknown stream id 0x{id:02X}"),
        }
    }
}

impl std::error::Error for WriteError {}

/// `a - b` in the 33-bit timestamp space, as a signed distance.
fn ts_diff(a: u64, b: u64) -> i64 {
    let d = a.wrapping_sub(b) % ps::PTS_MODULO;
    if d >= ps::PTS_MODULO / 2 {
        d as i64 - ps::PTS_MODULO as i64
    } else {
        d as i64
    }
}

/// Converts a signed running time in nanoseconds plus a constant offset into 33-bit 90 kHz
/// ticks (wrapped, never negative).
pub fn ns_to_90k(running_time_ns: i64, offset_ns: u64) -> u64 {
    let ns = running_time_ns as i128 + offset_ns as i128;
    let ticks = ns.div_euclid(100_000) * 9 + (ns.rem_euclid(100_000) * 9) / 100_000;
    ticks.rem_euclid(ps::PTS_MODULO as i128) as u64
}

#[derive(Debug)]
pub struct PsWriter {
    config: WriterConfig,
    streams: Vec<StreamDesc>,
    psm_version: u8,
    psm_pending: bool,
    last_scr: Option<u64>,
    last_psm: Option<u64>,
    first_scr: Option<u64>,
    bytes_written: u64,
}

impl PsWriter {
    pub fn new(config: WriterConfig) -> Self {
        PsWriter {
            config,
            streams: Vec::new(),
            psm_version: 0,
            psm_pending: true,
            last_scr: None,
            last_psm: None,
            first_scr: None,
            bytes_written: 0,
        }
    }

    pub fn set_config(&mut self, config: WriterConfig) {
        self.config = config;
    }

    pub fn streams(&self) -> &[StreamDesc] {
        &self.streams
    }

    /// Adds a stream with the lowest free id of its kind (0xE0.. video, 0xC0.. audio).
    /// `None` when all 16 video or 32 audio ids are taken.
    pub fn add_stream(&mut self, codec: Codec) -> Option<u8> {
        let range = if codec.is_video() {
            ps::VIDEO_STREAM_FIRST..=0xEF
        } else {
            ps::AUDIO_STREAM_FIRST..=0xDF
        };
        let id = range
            .into_iter()
            .find(|id| self.streams.iter().all(|s| s.stream_id != *id))?;
        self.streams.push(StreamDesc {
            stream_id: id,
            codec,
        });
        self.stream_set_changed();
        Some(id)
    }

    /// Changes a stream's codec (caps renegotiation). Returns the stream id to use from now
    /// on, which changes when the codec switches between audio and video.
    pub fn change_codec(&mut self, stream_id: u8, codec: Codec) -> Option<u8> {
        let pos = self.streams.iter().position(|s| s.stream_id == stream_id);
        match pos {
            Some(i) if self.streams[i].codec == codec => Some(stream_id),
            Some(i) if self.streams[i].codec.is_video() == codec.is_video() => {
                self.streams[i].codec = codec;
                self.stream_set_changed();
                Some(stream_id)
            }
            Some(i) => {
                self.streams.remove(i);
                self.add_stream(codec)
            }
            None => self.add_stream(codec),
        }
    }

    pub fn remove_stream(&mut self, stream_id: u8) {
        let before = self.streams.len();
        self.streams.retain(|s| s.stream_id != stream_id);
        if self.streams.len() != before {
            self.stream_set_changed();
        }
    }

    fn stream_set_changed(&mut self) {
        self.psm_version = (self.psm_version + 1) & 0x1F;
        self.psm_pending = true;
    }

    /// Forgets timing (after a flush); the next frame carries a PSM again.
    pub fn reset(&mut self) {
        self.psm_pending = true;
        self.last_scr = None;
        self.last_psm = None;
        self.first_scr = None;
        self.bytes_written = 0;
    }

    fn mux_rate_units(&self, scr: u64) -> u32 {
        if self.config.mux_rate > 0 {
            return (self.config.mux_rate / 50).clamp(1, headers::MUX_RATE_MAX);
        }
        let span = self.first_scr.map_or(0, |first| ts_diff(scr, first));
        if span < ps::PTS_CLOCK as i64 {
            return DEFAULT_MUX_RATE_UNITS;
        }
        let bytes_per_s = self.bytes_written as u128 * ps::PTS_CLOCK as u128 / span as u128;
        (bytes_per_s / 50).clamp(1, headers::MUX_RATE_MAX as u128) as u32
    }

    fn rate_bound_units(&self) -> u32 {
        if self.config.mux_rate > 0 {
            (self.config.mux_rate / 50).clamp(1, headers::MUX_RATE_MAX)
        } else {
            headers::MUX_RATE_MAX
        }
    }

    /// Writes the headers for one frame of `frame.len` payload bytes.
    pub fn write_frame(&mut self, frame: &Frame) -> Result<Packet, WriteError> {
        let codec = self
            .streams
            .iter()
            .find(|s| s.stream_id == frame.stream_id)
            .map(|s| s.codec)
            .ok_or(WriteError::UnknownStream(frame.stream_id))?;
        let pts = frame.pts.map(|t| t % ps::PTS_MODULO);
        let dts = frame.dts.map(|t| t % ps::PTS_MODULO);

        // SCR from the decoding time, never going backwards.
        let mut scr = dts.or(pts).or(self.last_scr).unwrap_or(0);
        if let Some(last) = self.last_scr
            && ts_diff(scr, last) < 0
        {
            scr = last;
        }
        self.last_scr = Some(scr);
        if self.first_scr.is_none() {
            self.first_scr = Some(scr);
        }

        let has_video = self.streams.iter().any(|s| s.codec.is_video());
        let interval_due = !has_video
            && self.config.psm_interval > 0
            && self
                .last_psm
                .is_none_or(|last| ts_diff(scr, last) >= self.config.psm_interval as i64);
        let with_psm = self.psm_pending || (codec.is_video() && frame.key) || interval_due;

        let max_payload = self
            .config
            .pes_payload_size
            .clamp(1, headers::PES_PAYLOAD_MAX);
        let pes_count = frame.len.div_ceil(max_payload).max(1);
        let mut headers = Vec::with_capacity(
            headers::PACK_HEADER_LEN
                + if with_psm {
                    32 + 7 * self.streams.len()
                } else {
                    0
                }
                + pes_count * 19,
        );
        headers::write_pack_header(&mut headers, scr, self.mux_rate_units(scr));
        if with_psm {
            headers::write_system_header(&mut headers, self.rate_bound_units(), &self.streams);
            headers::write_psm(&mut headers, self.psm_version, &self.streams);
            self.psm_pending = false;
            self.last_psm = Some(scr);
        }

        let mut pieces = Vec::with_capacity(2 * pes_count);
        let mut header_start = 0;
        let mut offset = 0;
        for i in 0..pes_count {
            let chunk = (frame.len - offset).min(max_payload);
            let (p, d) = if i == 0 { (pts, dts) } else { (None, None) };
            headers::write_pes_header(&mut headers, frame.stream_id, chunk, p, d, i == 0);
            pieces.push(Piece::Header(header_start..headers.len()));
            header_start = headers.len();
            if chunk > 0 {
                pieces.push(Piece::Payload(offset..offset + chunk));
            }
            offset += chunk;
        }

        let packet = Packet {
            headers,
            pieces,
            with_psm,
            scr,
            pes_count,
        };
        self.bytes_written = self.bytes_written.saturating_add(packet.len() as u64);
        Ok(packet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mux::headers::PES_PAYLOAD_MAX;

    fn writer(streams: &[Codec]) -> (PsWriter, Vec<u8>) {
        let mut w = PsWriter::new(WriterConfig::default());
        let ids = streams.iter().map(|c| w.add_stream(*c).unwrap()).collect();
        (w, ids)
    }

    /// Walks a contiguous packet: returns (start codes, PES payload bytes concatenated,
    /// PES lengths).
    fn walk(data: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<usize>) {
        let mut codes = Vec::new();
        let mut payload = Vec::new();
        let mut lens = Vec::new();
        let mut pos = 0;
        while pos < data.len() {
            assert_eq!(&data[pos..pos + 3], &[0, 0, 1], "start code at {pos}");
            let code = data[pos + 3];
            codes.push(code);
            match code {
                0xBA => {
                    assert_eq!(data[pos + 4] >> 6, 0b01, "MPEG-2 pack");
                    pos += 14 + (data[pos + 13] & 7) as usize;
                }
                _ => {
                    let len = u16::from_be_bytes([data[pos + 4], data[pos + 5]]) as usize;
                    if ps::is_video_stream_id(code) || ps::is_audio_stream_id(code) {
                        let hdr = 9 + data[pos + 8] as usize;
                        payload.extend_from_slice(&data[pos + hdr..pos + 6 + len]);
                        lens.push(len);
                    }
                    pos += 6 + len;
                }
            }
        }
        assert_eq!(pos, data.len());
        (codes, payload, lens)
    }

    #[test]
    fn stream_ids_are_allocated_per_kind() {
        let (mut w, ids) = writer(&[Codec::H264, Codec::G711Alaw, Codec::Aac, Codec::H265]);
        assert_eq!(ids, [0xE0, 0xC0, 0xC1, 0xE1]);
        w.remove_stream(0xC0);
        assert_eq!(w.add_stream(Codec::G711Mulaw), Some(0xC0));
        assert_eq!(w.change_codec(0xE1, Codec::Mpeg4Video), Some(0xE1));
        assert_eq!(w.change_codec(0xE1, Codec::Aac), Some(0xC2));
        for _ in 0..15 {
            w.add_stream(Codec::H264).unwrap();
        }
        assert_eq!(w.add_stream(Codec::H264), None);
    }

    #[test]
    fn key_frame_layout() {
        let (mut w, ids) = writer(&[Codec::H264, Codec::G711Alaw]);
        let payload: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let packet = w
            .write_frame(&Frame {
                stream_id: ids[0],
                len: payload.len(),
                pts: Some(93_600),
                dts: Some(90_000),
                key: true,
            })
            .unwrap();
        assert!(packet.with_psm);
        assert_eq!(packet.scr, 90_000);
        let data = packet.to_contiguous(&payload).unwrap();
        let (codes, es, _) = walk(&data);
        assert_eq!(codes, [0xBA, 0xBB, 0xBC, 0xE0]);
        assert_eq!(es, payload);
        // Zero copy plan: one header piece, one payload piece.
        assert_eq!(packet.pieces.len(), 2);
        assert_eq!(packet.pieces[1], Piece::Payload(0..1000));
    }

    #[test]
    fn delta_frames_and_audio_have_no_psm() {
        let (mut w, ids) = writer(&[Codec::H265, Codec::Aac]);
        let key = Frame {
            stream_id: ids[0],
            len: 10,
            pts: Some(0),
            dts: Some(0),
            key: true,
        };
        assert!(w.write_frame(&key).unwrap().with_psm);
        let delta = Frame {
            pts: Some(3600),
            dts: Some(3600),
            key: false,
            ..key
        };
        let p = w.write_frame(&delta).unwrap();
        assert!(!p.with_psm);
        let (codes, _, _) = walk(&p.to_contiguous(&[0; 10]).unwrap());
        assert_eq!(codes, [0xBA, 0xE0]);
        let audio = Frame {
            stream_id: ids[1],
            key: false,
            ..delta
        };
        let p = w.write_frame(&audio).unwrap();
        let (codes, _, _) = walk(&p.to_contiguous(&[0; 10]).unwrap());
        assert_eq!(codes, [0xBA, 0xC0]);
        // A new stream announces itself with the next frame.
        w.add_stream(Codec::G711Alaw);
        assert!(w.write_frame(&delta).unwrap().with_psm);
    }

    #[test]
    fn audio_only_repeats_psm() {
        let (mut w, ids) = writer(&[Codec::G711Mulaw]);
        let mut psms = 0;
        for i in 0..100u64 {
            let p = w
                .write_frame(&Frame {
                    stream_id: ids[0],
                    len: 160,
                    pts: Some(i * 1800),
                    dts: None,
                    key: false,
                })
                .unwrap();
            psms += p.with_psm as usize;
        }
        // 100 frames of 20 ms: at 0 s and at 1 s.
        assert_eq!(psms, 2);
    }

    #[test]
    fn pes_splitting() {
        for (len, max) in [
            (200_000usize, PES_PAYLOAD_MAX),
            (65_522, PES_PAYLOAD_MAX),
            (65_523, PES_PAYLOAD_MAX),
            (1000, 100),
            (0, 100),
        ] {
            let mut w = PsWriter::new(WriterConfig {
                pes_payload_size: max,
                ..WriterConfig::default()
            });
            let id = w.add_stream(Codec::H264).unwrap();
            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let p = w
                .write_frame(&Frame {
                    stream_id: id,
                    len,
                    pts: Some(1),
                    dts: Some(0),
                    key: false,
                })
                .unwrap();
            let data = p.to_contiguous(&payload).unwrap();
            let (codes, es, lens) = walk(&data);
            assert_eq!(es, payload, "len {len}");
            assert_eq!(p.pes_count, len.div_ceil(max).max(1));
            assert_eq!(lens.len(), p.pes_count);
            assert!(lens.iter().all(|l| *l <= 65535));
            assert_eq!(codes.iter().filter(|c| **c == 0xBA).count(), 1);
            // Only the first PES carries PTS/DTS.
            let first_pes = data.windows(4).position(|w| w == [0, 0, 1, 0xE0]).unwrap();
            assert_eq!(data[first_pes + 7], 0xC0);
            assert_eq!(data[first_pes + 6] & 0x04, 0x04, "data_alignment");
            if p.pes_count > 1 {
                let second = first_pes
                    + 4
                    + data[first_pes + 4..]
                        .windows(4)
                        .position(|w| w == [0, 0, 1, 0xE0])
                        .unwrap();
                assert_eq!(data[second + 7], 0x00);
            }
        }
    }

    #[test]
    fn scr_is_monotonic_and_wraps() {
        let (mut w, ids) = writer(&[Codec::H264]);
        let mut f = Frame {
            stream_id: ids[0],
            len: 1,
            pts: Some(ps::PTS_MODULO - 100),
            dts: Some(ps::PTS_MODULO - 100),
            key: true,
        };
        assert_eq!(w.write_frame(&f).unwrap().scr, ps::PTS_MODULO - 100);
        f.dts = Some(ps::PTS_MODULO + 50);
        f.pts = f.dts;
        assert_eq!(w.write_frame(&f).unwrap().scr, 50);
        f.dts = Some(10);
        assert_eq!(w.write_frame(&f).unwrap().scr, 50, "no going back");
    }

    #[test]
    fn running_time_to_90k() {
        assert_eq!(ns_to_90k(0, 0), 0);
        assert_eq!(ns_to_90k(1_000_000_000, 0), 90_000);
        assert_eq!(ns_to_90k(-40_000_000, 1_000_000_000), 86_400);
        assert_eq!(ns_to_90k(-1_000_000_000, 0), ps::PTS_MODULO - 90_000);
        // 2^33 ticks is about 26.5 hours: wraps.
        let wrap_ns = (ps::PTS_MODULO * 100_000).div_ceil(9) as i64;
        assert_eq!(ns_to_90k(wrap_ns + 1_000_000_000, 0), 90_000);
        assert_eq!(ns_to_90k(11_111, 0), 0);
        assert_eq!(ns_to_90k(11_112, 0), 1);
    }

    #[test]
    fn measured_mux_rate() {
        let (mut w, ids) = writer(&[Codec::H264]);
        let mut last = None;
        for i in 0..50u64 {
            let p = w
                .write_frame(&Frame {
                    stream_id: ids[0],
                    len: 10_000,
                    pts: Some(i * 3600),
                    dts: Some(i * 3600),
                    key: i % 25 == 0,
                })
                .unwrap();
            last = Some(p);
        }
        let p = last.unwrap();
        let rate = ((p.headers[10] as u32) << 14)
            | ((p.headers[11] as u32) << 6)
            | (p.headers[12] as u32 >> 2);
        // ≈ 250 kB/s = 5000 units.
        assert!((4900..=5300).contains(&rate), "{rate}");
    }
}

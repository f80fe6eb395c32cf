//! Elementary-stream sniffing: which codec a payload really carries, where an access unit
//! starts inside a PES payload, and whether an access unit is a key frame. All scans are
//! bounded to the first bytes of a payload or access unit.

use crate::ps::Codec;

/// How far into a payload codec probing and AU-start search look.
pub const PROBE_LIMIT: usize = 256;

pub use gst_ipcam_common::startcode::find_start_code;

/// Iterates over `(start_code_index, payload_index)` of NAL units / start codes in `data`.
fn start_codes(data: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
    gst_ipcam_common::startcode::start_codes(data).map(|(sc, _)| (sc, sc + 3))
}

fn h265_header_valid(b0: u8, b1: u8) -> bool {
    // forbidden_zero_bit 0, nuh_layer_id 0, nuh_temporal_id_plus1 != 0
    b0 & 0x81 == 0 && b1 & 0xF8 == 0 && b1 & 0x07 != 0
}

/// H.264 NAL headers that identify the codec with confidence: an SPS with a known profile,
/// or an access unit delimiter.
fn h264_confident(b0: u8, b1: Option<u8>) -> bool {
    let Some(b1) = b1 else { return false };
    match b0 {
        0x27 | 0x47 | 0x67 => matches!(
            b1,
            66 | 77 | 88 | 100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
        ),
        0x09 => b1 & 0x1F == 0x10,
        _ => false,
    }
}

/// Confident guess of a video codec from the start of a payload, or `None`.
pub fn probe_video(payload: &[u8]) -> Option<Codec> {
    let data = &payload[..payload.len().min(PROBE_LIMIT)];
    for (_, p) in start_codes(data) {
        let Some(&b0) = data.get(p) else { break };
        match b0 {
            0xB3 | 0xB8 => return Some(Codec::Mpeg2Video),
            0xB0 | 0xB6 => return Some(Codec::Mpeg4Video),
            _ => {}
        }
        let b1 = data.get(p + 1).copied();
        if let Some(b1) = b1
            && h265_header_valid(b0, b1)
            && matches!((b0 >> 1) & 0x3F, 32..=35)
        {
            return Some(Codec::H265);
        }
        if h264_confident(b0, b1) {
            return Some(Codec::H264);
        }
    }
    None
}

/// A likely video codec from the NAL header syntax of the first NAL unit, for payloads that
/// [`probe_video`] cannot tell with confidence (a stream joined mid-GOP starts with a
/// P-slice). Used only when neither a PSM nor a confident probe named the codec.
///
/// H.265 NAL headers are two bytes (forbidden bit 0, type, layer id 0, temporal id + 1 != 0):
/// slice and parameter-set types with `00..07` as second byte. Read as H.264, those first
/// bytes are types H.264 encoders do not write (data partitions, SEI with nal_ref_idc != 0,
/// type 0), and an H.264 slice that starts a picture has first_mb_in_slice 0, so its second
/// byte has the top bit set. MPEG-4 part 2 pictures and headers start with B0, B5 or B6.
pub fn guess_video(payload: &[u8]) -> Option<Codec> {
    let data = &payload[..payload.len().min(PROBE_LIMIT)];
    for (_, p) in start_codes(data) {
        let (Some(&b0), Some(&b1)) = (data.get(p), data.get(p + 1)) else {
            break;
        };
        if h265_header_valid(b0, b1) && matches!((b0 >> 1) & 0x3F, 0..=21 | 32..=40) {
            return Some(Codec::H265);
        }
        if b0 & 0x80 == 0 && matches!(b0 & 0x1F, 1 | 5 | 6..=9) {
            let ty = b0 & 0x1F;
            // SEI, AUD, SPS/PPS (nal_ref_idc as the spec requires), or a slice starting a picture.
            let plausible = match ty {
                6 | 9 => b0 & 0x60 == 0,
                7 | 8 => b0 & 0x60 != 0,
                _ => b1 & 0x80 != 0,
            };
            if plausible {
                return Some(Codec::H264);
            }
        }
        if matches!(b0, 0xB0 | 0xB5 | 0xB6) {
            return Some(Codec::Mpeg4Video);
        }
    }
    None
}

/// ADTS header facts (sync, layer 0, valid sampling index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdtsInfo {
    pub rate: u32,
    pub channels: u32,
}

const ADTS_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

pub fn parse_adts(data: &[u8]) -> Option<AdtsInfo> {
    if data.len() < 7 || data[0] != 0xFF || data[1] & 0xF6 != 0xF0 {
        return None;
    }
    let sf = ((data[2] >> 2) & 0x0F) as usize;
    let channels = (((data[2] & 1) << 2) | (data[3] >> 6)) as u32;
    let frame_len =
        (((data[3] & 3) as usize) << 11) | ((data[4] as usize) << 3) | (data[5] >> 5) as usize;
    if frame_len < 7 {
        return None;
    }
    Some(AdtsInfo {
        rate: *ADTS_RATES.get(sf)?,
        channels,
    })
}

fn is_mpeg_audio_sync(data: &[u8]) -> bool {
    data.len() >= 4
        && data[0] == 0xFF
        && data[1] & 0xE0 == 0xE0
        && (data[1] >> 1) & 3 != 0
        && (data[1] >> 3) & 3 != 1
        && data[2] >> 4 != 15
        && (data[2] >> 2) & 3 != 3
}

/// Confident guess of an audio codec from the start of a PES payload, or `None`.
pub fn probe_audio(payload: &[u8]) -> Option<Codec> {
    if parse_adts(payload).is_some() {
        Some(Codec::Aac)
    } else if is_mpeg_audio_sync(payload) {
        Some(Codec::MpegAudio)
    } else {
        None
    }
}

/// Does the NAL / start code at `p` (index of the byte after `00 00 01`) begin an access unit?
fn is_au_start(codec: Codec, data: &[u8], p: usize) -> Option<bool> {
    let b0 = *data.get(p)?;
    Some(match codec {
        Codec::H264 | Codec::SvacVideo => {
            let ty = b0 & 0x1F;
            match ty {
                6..=9 | 13..=15 => true,
                1 | 5 => *data.get(p + 1)? & 0x80 != 0, // first_mb_in_slice == 0
                _ => false,
            }
        }
        Codec::H265 => {
            let ty = (b0 >> 1) & 0x3F;
            match ty {
                32..=35 | 39 | 41..=44 => true,
                0..=31 => *data.get(p + 2)? & 0x80 != 0, // first_slice_segment_in_pic_flag
                _ => false,
            }
        }
        Codec::Mpeg1Video | Codec::Mpeg2Video => matches!(b0, 0x00 | 0xB3 | 0xB8),
        Codec::Mpeg4Video => matches!(b0, 0x00..=0x2F | 0xB0 | 0xB3 | 0xB6),
        _ => true,
    })
}

/// Where the access unit a PTS refers to starts in this PES payload: `Some(0)` for aligned
/// payloads (cameras, mpegpsmux), `Some(n)` when the payload begins with the tail of the
/// previous AU (ffmpeg), `None` when no AU start is visible in the scanned bytes. Also returns
/// the next AU starts after the first (several small frames in one PES).
pub fn au_starts(codec: Codec, payload: &[u8], out: &mut Vec<usize>) {
    out.clear();
    if !codec.is_video() || payload.len() < 4 {
        return;
    }
    // A payload that does not begin with a start code begins with the tail of the previous
    // AU's picture data.
    let aligned = payload.starts_with(&[0, 0, 1]) || payload.starts_with(&[0, 0, 0, 1]);
    if aligned {
        let sc = if payload[2] == 1 { 0 } else { 1 };
        if is_au_start(codec, payload, sc + 3) == Some(true) {
            out.push(0);
        }
    }
    let mut in_vcl = !aligned;
    au_scan(codec, payload, &mut in_vcl, 0..usize::MAX, out);
}

/// Appends to `out` where access units start in `data`, given whether picture data (VCL) was
/// seen since the last AU start; considers start codes beginning before `sc_limit` only.
pub fn au_scan(
    codec: Codec,
    data: &[u8],
    in_vcl: &mut bool,
    sc_range: std::ops::Range<usize>,
    out: &mut Vec<usize>,
) -> Option<usize> {
    let mut pos = sc_range.start;
    let mut last = None;
    while let Some(sc) = find_start_code(data, pos) {
        if sc >= sc_range.end || out.len() >= MAX_AUS_PER_PES {
            break;
        }
        pos = sc + 3;
        let Some(start) = is_au_start(codec, data, sc + 3) else {
            break;
        };
        last = Some(sc);
        if start && *in_vcl {
            let begin = if sc > 0 && data[sc - 1] == 0 {
                sc - 1
            } else {
                sc
            };
            out.push(begin);
            *in_vcl = false;
        }
        if is_vcl(codec, data[sc + 3]) {
            *in_vcl = true;
        }
    }
    last
}

/// Bound on how many access units one PES payload is split into.
pub const MAX_AUS_PER_PES: usize = 64;

fn is_vcl(codec: Codec, b0: u8) -> bool {
    match codec {
        Codec::H264 | Codec::SvacVideo => matches!(b0 & 0x1F, 1..=5),
        Codec::H265 => (b0 >> 1) & 0x3F < 32,
        Codec::Mpeg1Video | Codec::Mpeg2Video => (0x01..=0xAF).contains(&b0),
        Codec::Mpeg4Video => b0 == 0xB6,
        _ => false,
    }
}

/// Is the access unit starting with `head` a key frame? Scans only `head` (bounded).
pub fn is_key_frame(codec: Codec, head: &[u8]) -> bool {
    match codec {
        Codec::H264 => {
            start_codes(head).any(|(_, p)| head.get(p).is_some_and(|b| matches!(b & 0x1F, 5 | 7)))
        }
        Codec::H265 => start_codes(head).any(|(_, p)| {
            head.get(p)
                .is_some_and(|b| matches!((b >> 1) & 0x3F, 16..=21 | 32 | 33))
        }),
        Codec::Mpeg1Video | Codec::Mpeg2Video => {
            for (_, p) in start_codes(head) {
                match head.get(p) {
                    Some(0xB3 | 0xB8) => return true,
                    Some(0x00) => {
                        return head.get(p + 2).is_some_and(|b| (b >> 3) & 7 == 1);
                    }
                    _ => {}
                }
            }
            false
        }
        Codec::Mpeg4Video => {
            for (_, p) in start_codes(head) {
                match head.get(p) {
                    Some(0xB0 | 0xB3) | Some(0x20..=0x2F) => return true,
                    Some(0xB6) => return head.get(p + 1).is_some_and(|b| b >> 6 == 0),
                    _ => {}
                }
            }
            false
        }
        // SVAC and audio: no reliable in-band marker we can rely on; every unit is a sync point.
        _ => true,
    }
}

//! Timestamp scanning over arbitrary file chunks, for duration estimates and seeking by
//! bisection. Looks for PES headers (audio/video ids) carrying a PTS; bounded by the chunk.

use super::headers::{self, Parse};
use super::probe::find_start_code;
use crate::ps;

/// A PTS found in a chunk: position of its PES start code, stream id, 33-bit PTS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FoundPts {
    pub pos: usize,
    pub stream_id: u8,
    pub pts: u64,
    pub dts: Option<u64>,
}

/// Every PTS found in `data` (video first preference is left to the caller).
pub fn scan_pts(data: &[u8], mut f: impl FnMut(FoundPts) -> bool) {
    let mut i = 0;
    while let Some(sc) = find_start_code(data, i) {
        i = sc + 3;
        let Some(&id) = data.get(sc + 3) else { break };
        if !(ps::is_video_stream_id(id) || ps::is_audio_stream_id(id)) {
            continue;
        }
        if let Parse::Ok(h) = headers::parse_pes_header(&data[sc..])
            && let Some(pts) = h.pts
            && !f(FoundPts {
                pos: sc,
                stream_id: id,
                pts,
                dts: h.dts,
            })
        {
            break;
        }
    }
}

/// The first video PTS in `data` (or the first audio PTS if there is no video).
pub fn first_pts(data: &[u8]) -> Option<FoundPts> {
    let mut audio = None;
    let mut video = None;
    scan_pts(data, |f| {
        if ps::is_video_stream_id(f.stream_id) {
            video = Some(f);
            false
        } else {
            audio.get_or_insert(f);
            true
        }
    });
    video.or(audio)
}

/// The last video PTS in `data` (or the last audio PTS if there is no video).
pub fn last_pts(data: &[u8]) -> Option<FoundPts> {
    let mut audio = None;
    let mut video = None;
    scan_pts(data, |f| {
        if ps::is_video_stream_id(f.stream_id) {
            video = Some(f);
        } else {
            audio = Some(f);
        }
        true
    });
    video.or(audio)
}

/// Position of the first pack start code in `data`.
pub fn first_pack(data: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(sc) = find_start_code(data, i) {
        if data.get(sc + 3) == Some(&ps::PACK_START) {
            return Some(sc);
        }
        i = sc + 3;
    }
    None
}

/// `b - a` on the 33-bit PTS circle, as a signed tick count.
pub fn pts_diff(a: u64, b: u64) -> i64 {
    let d = b.wrapping_sub(a) & (ps::PTS_MODULO - 1);
    if d >= ps::PTS_MODULO / 2 {
        d as i64 - ps::PTS_MODULO as i64
    } else {
        d as i64
    }
}

/// The last video PES in `data` with an accepted PTS whose payload begins a key frame of
/// `codec`: `(position of its start code, PTS)`. Looks at most [`KEY_HEAD`] payload bytes.
pub fn last_key_pes(
    data: &[u8],
    codec: crate::ps::Codec,
    accept_pts: impl Fn(u64) -> bool,
) -> Option<(usize, u64)> {
    let mut found = None;
    scan_pts(data, |f| {
        if ps::is_video_stream_id(f.stream_id)
            && accept_pts(f.pts)
            && let Parse::Ok(h) = headers::parse_pes_header(&data[f.pos..])
        {
            let start = f.pos + h.header_len;
            let len = h.payload_len.unwrap_or(KEY_HEAD).min(KEY_HEAD);
            if let Some(head) = data.get(start..(start + len).min(data.len()))
                && super::probe::is_key_frame(codec, head)
            {
                found = Some((f.pos, f.pts));
            }
        }
        true
    });
    found
}

/// Payload bytes [`last_key_pes`] inspects.
pub const KEY_HEAD: usize = 2048;

/// Position of the last pack start code in `data` before `before`.
pub fn last_pack_before(data: &[u8], before: usize) -> Option<usize> {
    let mut last = None;
    let mut i = 0;
    while let Some(p) = first_pack(&data[i..]) {
        if i + p >= before {
            break;
        }
        last = Some(i + p);
        i += p + 4;
    }
    last
}

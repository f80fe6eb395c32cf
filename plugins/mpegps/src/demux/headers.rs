//! Parsing of PS headers (pack, PES, PSM) over byte slices. Every function checks bounds and
//! reports "need more bytes" (`Incomplete`) separately from "this is not valid" (`Invalid`).

use crate::ps::Codec;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parse<T> {
    Ok(T),
    /// More bytes are needed to decide.
    Incomplete,
    /// Not a valid header: resync.
    Invalid,
}

/// Reads a 33-bit PTS/DTS from its 5-byte encoding (marker bits are not checked: cameras get
/// them wrong and the value is still right).
pub fn read_timestamp(b: &[u8]) -> Option<u64> {
    let b = b.get(..5)?;
    Some(
        (((b[0] >> 1) & 0x07) as u64) << 30
            | (b[1] as u64) << 22
            | ((b[2] >> 1) as u64) << 15
            | (b[3] as u64) << 7
            | (b[4] >> 1) as u64,
    )
}

/// Size of the pack header starting at `data[0]` (`00 00 01 BA`), stuffing included.
/// A bare pack start code directly followed by another start code (vendor quirk) is 4 bytes.
pub fn pack_header_len(data: &[u8]) -> Parse<usize> {
    let Some(&b4) = data.get(4) else {
        return Parse::Incomplete;
    };
    if b4 == 0 {
        // `00 00 01 BA 00 00 01 xx`: an empty pack header.
        return match data.get(4..7) {
            None => Parse::Incomplete,
            Some([0, 0, 1]) => Parse::Ok(4),
            Some(_) => Parse::Invalid,
        };
    }
    if b4 >> 6 == 1 {
        // MPEG-2: 14 bytes + pack_stuffing_length (any byte values: vendors put data there).
        match data.get(13) {
            Some(&s) if data.len() >= 14 + (s & 7) as usize => Parse::Ok(14 + (s & 7) as usize),
            _ => Parse::Incomplete,
        }
    } else if b4 >> 4 == 2 {
        // MPEG-1 pack header.
        if data.len() < 12 {
            Parse::Incomplete
        } else {
            Parse::Ok(12)
        }
    } else {
        Parse::Invalid
    }
}

/// A parsed PES header (the part after `00 00 01 id len_hi len_lo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PesHeader {
    /// Bytes from the start code to the first payload byte.
    pub header_len: usize,
    /// Payload bytes, `None` for PES_packet_length 0 (unbounded video).
    pub payload_len: Option<usize>,
    pub pts: Option<u64>,
    pub dts: Option<u64>,
}

/// Parses the PES header at `data[0]` (stream ids with the optional header: audio/video).
pub fn parse_pes_header(data: &[u8]) -> Parse<PesHeader> {
    if data.len() < 7 {
        return Parse::Incomplete;
    }
    let pes_len = u16::from_be_bytes([data[4], data[5]]) as usize;
    let b6 = data[6];
    let (after_len, pts, dts) = if b6 & 0xC0 == 0x80 {
        // MPEG-2 PES header.
        if data.len() < 9 {
            return Parse::Incomplete;
        }
        let flags = data[7] >> 6;
        let hl = data[8] as usize;
        if data.len() < 9 + hl {
            return Parse::Incomplete;
        }
        let opt = &data[9..9 + hl];
        let pts = if flags & 2 != 0 {
            read_timestamp(opt)
        } else {
            None
        };
        let dts = if flags == 3 {
            opt.get(5..).and_then(read_timestamp)
        } else {
            None
        };
        (3 + hl, pts, dts)
    } else {
        // MPEG-1 PES header: stuffing, optional STD buffer, then PTS / PTS+DTS / 0x0F.
        let mut i = 6;
        let mut stuffing = 0;
        loop {
            let Some(&b) = data.get(i) else {
                return Parse::Incomplete;
            };
            if b != 0xFF {
                break;
            }
            stuffing += 1;
            if stuffing > 16 {
                return Parse::Invalid;
            }
            i += 1;
        }
        let Some(&b) = data.get(i) else {
            return Parse::Incomplete;
        };
        if b & 0xC0 == 0x40 {
            i += 2;
        }
        let Some(&b) = data.get(i) else {
            return Parse::Incomplete;
        };
        let (n, pts, dts) = match b >> 4 {
            2 => (5, data.get(i..i + 5).and_then(read_timestamp), None),
            3 => (
                10,
                data.get(i..i + 5).and_then(read_timestamp),
                data.get(i + 5..i + 10).and_then(read_timestamp),
            ),
            _ if b == 0x0F => (1, None, None),
            _ => return Parse::Invalid,
        };
        if data.len() < i + n {
            return Parse::Incomplete;
        }
        (i + n - 6, pts, dts)
    };
    let payload_len = if pes_len == 0 {
        None
    } else if after_len > pes_len {
        return Parse::Invalid;
    } else {
        Some(pes_len - after_len)
    };
    Parse::Ok(PesHeader {
        header_len: 6 + after_len,
        payload_len,
        pts,
        dts,
    })
}

/// One elementary stream listed in a program stream map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PsmEntry {
    pub stream_type: u8,
    pub stream_id: u8,
    /// The codec the entry means: the stream type, or a Hikvision audio descriptor's
    /// (tag 0x43, whose first two bytes carry the GB audio type, e.g. `00 90` for G.711 A-law,
    /// while the stream_type field says 0x0F).
    pub codec: Option<Codec>,
}

/// Parses a PSM body (the bytes after `00 00 01 BC len_hi len_lo`). Inner lengths are clamped
/// to the outer length; a bad PSM yields fewer entries, never an error.
pub fn parse_psm(body: &[u8], out: &mut Vec<PsmEntry>) {
    out.clear();
    let Some(info_len) = body.get(2..4) else {
        return;
    };
    let info_len = u16::from_be_bytes([info_len[0], info_len[1]]) as usize;
    let mut p = 4 + info_len;
    let Some(map_len) = body.get(p..p + 2) else {
        return;
    };
    let map_len = u16::from_be_bytes([map_len[0], map_len[1]]) as usize;
    p += 2;
    // The 4 CRC bytes end the PSM; clamp the map to what is really there.
    let end = (p + map_len).min(body.len().saturating_sub(4)).max(p);
    while p + 4 <= end && out.len() < 64 {
        let stream_type = body[p];
        let stream_id = body[p + 1];
        let il = u16::from_be_bytes([body[p + 2], body[p + 3]]) as usize;
        let desc = &body[p + 4..(p + 4 + il).min(end)];
        let mut codec = Codec::from_stream_type(stream_type);
        if crate::ps::is_audio_stream_id(stream_id)
            && let Some(hint) = hikvision_audio_hint(desc)
        {
            codec = Some(hint);
        }
        out.push(PsmEntry {
            stream_type,
            stream_id,
            codec,
        });
        p += 4 + il;
    }
}

fn hikvision_audio_hint(mut desc: &[u8]) -> Option<Codec> {
    while desc.len() >= 2 {
        let tag = desc[0];
        let len = desc[1] as usize;
        let body = desc.get(2..2 + len).unwrap_or(&desc[2..]);
        if tag == 0x43 && body.len() >= 2 && body[0] == 0 {
            let c = Codec::from_stream_type(body[1]).filter(|c| !c.is_video());
            if c.is_some() {
                return c;
            }
        }
        desc = desc.get(2 + len..).unwrap_or(&[]);
    }
    None
}

//! FLV framing between RTMP messages and GStreamer's flvdemux/flvmux: an RTMP audio, video
//! or data message is an FLV tag body with the same type and timestamp. GStreamer-free.

use super::session::MediaKind;

/// The FLV file header and PreviousTagSize0.
pub fn header(audio: bool, video: bool) -> Vec<u8> {
    let flags = u8::from(audio) << 2 | u8::from(video);
    vec![b'F', b'L', b'V', 1, flags, 0, 0, 0, 9, 0, 0, 0, 0]
}

/// One tag (with its PreviousTagSize) for a message; None when the payload does not fit an
/// FLV tag (24-bit size).
pub fn tag(kind: MediaKind, timestamp: u32, payload: &[u8]) -> Option<Vec<u8>> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|l| *l <= 0xFF_FFFF)?;
    let mut out = Vec::with_capacity(payload.len() + 15);
    out.push(kind.type_id());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(&timestamp.to_be_bytes()[1..]);
    out.push((timestamp >> 24) as u8);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(payload);
    out.extend_from_slice(&(len + 11).to_be_bytes());
    Some(out)
}

/// Reads tags back out of an FLV byte stream (flvmux's output, in any split).
pub struct TagReader {
    buf: Vec<u8>,
    header_done: bool,
    max_tag: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub kind: Option<MediaKind>,
    pub timestamp: u32,
    pub payload: Vec<u8>,
}

impl TagReader {
    /// Tags larger than `max_tag` make [`next_tag`](Self::next_tag) fail.
    pub fn new(max_tag: usize) -> TagReader {
        TagReader {
            buf: Vec::new(),
            header_done: false,
            max_tag,
        }
    }

    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    pub fn next_tag(&mut self) -> Result<Option<Tag>, String> {
        if !self.header_done {
            if self.buf.len() < 9 {
                return Ok(None);
            }
            if &self.buf[..3] != b"FLV" {
                return Err("not FLV".into());
            }
            let offset = u32::from_be_bytes([self.buf[5], self.buf[6], self.buf[7], self.buf[8]]);
            let skip = (offset as usize).clamp(9, 1024) + 4;
            if self.buf.len() < skip {
                return Ok(None);
            }
            self.buf.drain(..skip);
            self.header_done = true;
        }
        if self.buf.len() < 11 {
            return Ok(None);
        }
        let b = &self.buf;
        let len = u32::from_be_bytes([0, b[1], b[2], b[3]]) as usize;
        if len > self.max_tag {
            return Err(format!("FLV tag of {len} bytes"));
        }
        if b.len() < 11 + len + 4 {
            return Ok(None);
        }
        let timestamp = u32::from_be_bytes([b[7], b[4], b[5], b[6]]);
        let tag = Tag {
            kind: MediaKind::from_type_id(b[0] & 0x1F),
            timestamp,
            payload: b[11..11 + len].to_vec(),
        };
        self.buf.drain(..11 + len + 4);
        Ok(Some(tag))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_read_back() {
        let mut bytes = header(true, true);
        bytes.extend(tag(MediaKind::Video, 0x0123_4567, &[1, 2, 3]).unwrap());
        bytes.extend(tag(MediaKind::Audio, 5, &[]).unwrap());
        let mut r = TagReader::new(100);
        let mut tags = Vec::new();
        for b in bytes.chunks(2) {
            r.feed(b);
            while let Some(t) = r.next_tag().unwrap() {
                tags.push(t);
            }
        }
        assert_eq!(
            tags,
            vec![
                Tag {
                    kind: Some(MediaKind::Video),
                    timestamp: 0x0123_4567,
                    payload: vec![1, 2, 3]
                },
                Tag {
                    kind: Some(MediaKind::Audio),
                    timestamp: 5,
                    payload: vec![]
                },
            ]
        );
        let mut r = TagReader::new(2);
        r.feed(&bytes);
        assert!(r.next_tag().is_err());
    }
}

//! The RTMP chunk stream (RTMP 1.0 spec §5.3): messages cut into chunks of the sender's chunk
//! size, interleaved over chunk stream IDs, headers compressed against the previous chunk of
//! the same chunk stream. The reader is bounded in every dimension a peer controls: chunk
//! size ([`Limits::max_chunk_size`]), message length (checked from the header, before any
//! payload is kept), chunk streams in use, and bytes of unfinished messages held at once.
//! GStreamer-free.

use std::collections::HashMap;
use std::fmt;

/// The chunk size both sides start with.
pub const DEFAULT_CHUNK_SIZE: usize = 128;
/// Timestamps at or above this are carried in the extended timestamp field.
const EXTENDED: u32 = 0xFF_FFFF;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest chunk size a peer may set (the spec allows 2^31 - 1).
    pub max_chunk_size: usize,
    /// Largest message (a video frame); a header announcing more closes the connection.
    pub max_message_len: usize,
    /// Chunk stream IDs a peer may use (ffmpeg and OBS use fewer than 10).
    pub max_chunk_streams: usize,
    /// Bytes of unfinished messages held at once over all chunk streams.
    pub max_pending_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_chunk_size: 65_536,
            max_message_len: 8 * 1024 * 1024,
            max_chunk_streams: 64,
            max_pending_bytes: 16 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    ChunkSize(u32),
    MessageTooLong(u32),
    TooManyChunkStreams,
    TooMuchPending,
    /// A compressed header on a chunk stream that has no previous header.
    NoPreviousHeader(u32),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ChunkSize(n) => write!(f, "chunk size {n} refused"),
            Error::MessageTooLong(n) => write!(f, "message of {n} bytes refused"),
            Error::TooManyChunkStreams => f.write_str("too many chunk streams"),
            Error::TooMuchPending => f.write_str("too many bytes of unfinished messages"),
            Error::NoPreviousHeader(c) => {
                write!(f, "chunk stream {c} starts without a full header")
            }
        }
    }
}

/// One whole message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub csid: u32,
    pub timestamp: u32,
    pub type_id: u8,
    pub stream_id: u32,
    pub payload: Vec<u8>,
}

#[derive(Default)]
struct ChunkStream {
    timestamp: u32,
    /// The last timestamp delta (fmt 1/2), applied again by a fmt 3 chunk starting a message.
    delta: u32,
    /// Whether the last header had an extended timestamp (fmt 3 chunks then repeat it).
    extended: bool,
    length: u32,
    type_id: u8,
    stream_id: u32,
    payload: Vec<u8>,
}

/// Parses chunks into messages. Feed it what the socket gave, then take messages until
/// `next_message` returns `Ok(None)`.
pub struct ChunkReader {
    limits: Limits,
    chunk_size: usize,
    buf: Vec<u8>,
    streams: HashMap<u32, ChunkStream>,
    pending: usize,
}

fn be24(b: &[u8]) -> u32 {
    u32::from_be_bytes([0, b[0], b[1], b[2]])
}

impl ChunkReader {
    pub fn new(limits: Limits) -> ChunkReader {
        ChunkReader {
            limits,
            chunk_size: DEFAULT_CHUNK_SIZE,
            buf: Vec::new(),
            streams: HashMap::new(),
            pending: 0,
        }
    }

    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes fed and not yet parsed (at most one chunk once `next_message` gave `None`).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The peer's Set Chunk Size (RTMP message type 1).
    pub fn set_chunk_size(&mut self, size: u32) -> Result<(), Error> {
        let size = size & 0x7FFF_FFFF;
        if size == 0 || size as usize > self.limits.max_chunk_size {
            return Err(Error::ChunkSize(size));
        }
        self.chunk_size = size as usize;
        Ok(())
    }

    /// The peer's Abort Message (type 2): the unfinished message of `csid` is dropped.
    pub fn abort(&mut self, csid: u32) {
        if let Some(cs) = self.streams.get_mut(&csid) {
            self.pending -= cs.payload.len();
            cs.payload = Vec::new();
        }
    }

    /// The next whole message, `Ok(None)` when more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Message>, Error> {
        let mut at = 0;
        loop {
            match self.chunk(at)? {
                None => {
                    self.buf.drain(..at);
                    return Ok(None);
                }
                Some((used, msg)) => {
                    at += used;
                    if msg.is_some() {
                        self.buf.drain(..at);
                        return Ok(msg);
                    }
                }
            }
        }
    }

    /// Parses one chunk at `at`: None when incomplete, else the bytes it took and the message
    /// it completed.
    fn chunk(&mut self, at: usize) -> Result<Option<(usize, Option<Message>)>, Error> {
        let b = &self.buf[at..];
        let Some(&first) = b.first() else {
            return Ok(None);
        };
        let fmt = first >> 6;
        let (csid, mut pos) = match first & 0x3F {
            0 if b.len() >= 2 => (64 + u32::from(b[1]), 2),
            1 if b.len() >= 3 => (64 + u32::from(b[1]) + 256 * u32::from(b[2]), 3),
            0 | 1 => return Ok(None),
            c => (u32::from(c), 1),
        };
        let header_len = [11, 7, 3, 0][usize::from(fmt)];
        if b.len() < pos + header_len {
            return Ok(None);
        }
        let h = &b[pos..pos + header_len];
        pos += header_len;
        if !self.streams.contains_key(&csid) {
            if fmt != 0 {
                return Err(Error::NoPreviousHeader(csid));
            }
            if self.streams.len() >= self.limits.max_chunk_streams {
                return Err(Error::TooManyChunkStreams);
            }
        }
        let prev = self.streams.get(&csid);
        let starts = prev.is_none_or(|cs| cs.payload.is_empty());
        // The header's fields, not applied until the chunk is complete.
        let (ts_field, length, type_id, stream_id) = match fmt {
            0 => (
                be24(h),
                be24(&h[3..]),
                h[6],
                u32::from_le_bytes([h[7], h[8], h[9], h[10]]),
            ),
            1 => {
                let p = prev.expect("checked above");
                (be24(h), be24(&h[3..]), h[6], p.stream_id)
            }
            2 => {
                let p = prev.expect("checked above");
                (be24(h), p.length, p.type_id, p.stream_id)
            }
            _ => {
                let p = prev.expect("checked above");
                let f = if p.extended {
                    EXTENDED
                } else {
                    p.delta.min(EXTENDED - 1)
                };
                (f, p.length, p.type_id, p.stream_id)
            }
        };
        let extended = if fmt == 3 {
            prev.is_some_and(|p| p.extended)
        } else {
            ts_field >= EXTENDED
        };
        let mut ts_value = ts_field;
        if extended {
            if b.len() < pos + 4 {
                return Ok(None);
            }
            ts_value = u32::from_be_bytes([b[pos], b[pos + 1], b[pos + 2], b[pos + 3]]);
            pos += 4;
        }
        if length as usize > self.limits.max_message_len {
            return Err(Error::MessageTooLong(length));
        }
        let have = if starts {
            0
        } else {
            prev.map_or(0, |p| p.payload.len())
        };
        let take = (length as usize - have).min(self.chunk_size);
        if b.len() < pos + take {
            return Ok(None);
        }
        if self.pending + take > self.limits.max_pending_bytes {
            return Err(Error::TooMuchPending);
        }
        let data = b[pos..pos + take].to_vec();
        let cs = self.streams.entry(csid).or_default();
        if starts {
            match fmt {
                0 => {
                    cs.timestamp = ts_value;
                    cs.delta = 0;
                }
                1 | 2 => {
                    cs.delta = ts_value;
                    cs.timestamp = cs.timestamp.wrapping_add(ts_value);
                }
                _ => cs.timestamp = cs.timestamp.wrapping_add(cs.delta),
            }
            cs.length = length;
            cs.type_id = type_id;
            cs.stream_id = stream_id;
        }
        if fmt != 3 {
            cs.extended = extended;
        }
        cs.payload.extend_from_slice(&data);
        self.pending += take;
        if cs.payload.len() < cs.length as usize {
            return Ok(Some((pos + take, None)));
        }
        let payload = std::mem::take(&mut cs.payload);
        self.pending -= payload.len();
        Ok(Some((
            pos + take,
            Some(Message {
                csid,
                timestamp: cs.timestamp,
                type_id: cs.type_id,
                stream_id: cs.stream_id,
                payload,
            }),
        )))
    }
}

/// Writes messages as chunks: a full header on each message's first chunk, then type 3.
pub struct ChunkWriter {
    chunk_size: usize,
}

impl Default for ChunkWriter {
    fn default() -> Self {
        ChunkWriter {
            chunk_size: DEFAULT_CHUNK_SIZE,
        }
    }
}

impl ChunkWriter {
    /// Our chunk size (after sending Set Chunk Size).
    pub fn set_chunk_size(&mut self, size: usize) {
        self.chunk_size = size.max(1);
    }

    pub fn write(&self, out: &mut Vec<u8>, msg: &Message) {
        let basic = |out: &mut Vec<u8>, fmt: u8| match msg.csid {
            c @ 2..=63 => out.push(fmt << 6 | c as u8),
            c @ 64..=319 => out.extend_from_slice(&[fmt << 6, (c - 64) as u8]),
            c => {
                let c = c.clamp(320, 65_599) - 64;
                out.extend_from_slice(&[fmt << 6 | 1, (c & 0xFF) as u8, (c >> 8) as u8]);
            }
        };
        let extended = msg.timestamp >= EXTENDED;
        let len = msg.payload.len().min(EXTENDED as usize) as u32;
        basic(out, 0);
        out.extend_from_slice(&msg.timestamp.min(EXTENDED).to_be_bytes()[1..]);
        out.extend_from_slice(&len.to_be_bytes()[1..]);
        out.push(msg.type_id);
        out.extend_from_slice(&msg.stream_id.to_le_bytes());
        for (i, piece) in msg.payload[..len as usize]
            .chunks(self.chunk_size)
            .enumerate()
        {
            if i > 0 {
                basic(out, 3);
            }
            if extended {
                out.extend_from_slice(&msg.timestamp.to_be_bytes());
            }
            out.extend_from_slice(piece);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(csid: u32, ts: u32, type_id: u8, len: usize) -> Message {
        Message {
            csid,
            timestamp: ts,
            type_id,
            stream_id: 1,
            payload: (0..len).map(|i| i as u8).collect(),
        }
    }

    fn read_all(r: &mut ChunkReader, bytes: &[u8], step: usize) -> Result<Vec<Message>, Error> {
        let mut out = Vec::new();
        for piece in bytes.chunks(step) {
            r.feed(piece);
            while let Some(m) = r.next_message()? {
                out.push(m);
            }
        }
        Ok(out)
    }

    #[test]
    fn writer_output_reads_back_in_any_split() {
        let mut w = ChunkWriter::default();
        let msgs = vec![
            msg(3, 0, 20, 10),
            msg(6, 40, 9, 5000),
            msg(4, 0x0100_0000, 8, 300),
            msg(400, 7, 9, 129),
        ];
        let mut bytes = Vec::new();
        for m in &msgs {
            w.write(&mut bytes, m);
        }
        w.set_chunk_size(4096);
        for step in [1, 7, 128, 100_000] {
            let mut r = ChunkReader::new(Limits::default());
            assert_eq!(read_all(&mut r, &bytes, step).unwrap(), msgs, "step {step}");
            assert_eq!(r.buffered(), 0);
        }
    }

    #[test]
    fn compressed_headers_carry_the_previous_fields() {
        // fmt 0 (ts 1000, len 3, type 9, stream 1), fmt 2 (delta 40), fmt 3 (delta again).
        let mut b = vec![0x06, 0x00, 0x03, 0xE8, 0, 0, 3, 9, 1, 0, 0, 0, 1, 2, 3];
        b.extend_from_slice(&[0x86, 0, 0, 40, 4, 5, 6]);
        b.extend_from_slice(&[0xC6, 7, 8, 9]);
        let mut r = ChunkReader::new(Limits::default());
        let m = read_all(&mut r, &b, 1).unwrap();
        assert_eq!(
            m.iter()
                .map(|m| (m.timestamp, m.payload.clone()))
                .collect::<Vec<_>>(),
            vec![
                (1000, vec![1, 2, 3]),
                (1040, vec![4, 5, 6]),
                (1080, vec![7, 8, 9])
            ]
        );
        // A compressed header first is refused.
        let mut r = ChunkReader::new(Limits::default());
        assert_eq!(
            read_all(&mut r, &[0xC7, 1], 2),
            Err(Error::NoPreviousHeader(7))
        );
    }

    #[test]
    fn hostile_sizes_are_refused() {
        let mut r = ChunkReader::new(Limits::default());
        assert_eq!(r.set_chunk_size(1 << 31), Err(Error::ChunkSize(0)));
        assert_eq!(
            r.set_chunk_size(0x7FFF_FFFF),
            Err(Error::ChunkSize(0x7FFF_FFFF))
        );
        assert!(r.set_chunk_size(65_536).is_ok());
        // A 16 MiB message is refused from its header, before any payload is held.
        let h = [0x04, 0, 0, 0, 0xFF, 0xFF, 0xFF, 9, 1, 0, 0, 0];
        assert_eq!(
            read_all(&mut r, &h, 100),
            Err(Error::MessageTooLong(0xFF_FFFF))
        );
        // Many chunk streams each opening a message.
        let mut r = ChunkReader::new(Limits::default());
        let mut b = Vec::new();
        for c in 0..100u32 {
            b.extend_from_slice(&[
                1,
                (c & 0xFF) as u8,
                (c >> 8) as u8,
                0,
                0,
                0,
                0,
                0,
                200,
                9,
                1,
                0,
                0,
                0,
            ]);
            b.extend_from_slice(&[0; 128]);
        }
        assert_eq!(read_all(&mut r, &b, 1000), Err(Error::TooManyChunkStreams));
        // Unfinished messages beyond the memory cap.
        let limits = Limits {
            max_pending_bytes: 1000,
            ..Limits::default()
        };
        let mut r = ChunkReader::new(limits);
        let mut b = Vec::new();
        for c in 3..20u8 {
            b.extend_from_slice(&[c, 0, 0, 0, 0, 1, 0, 9, 1, 0, 0, 0]);
            b.extend_from_slice(&[0; 128]);
        }
        assert_eq!(read_all(&mut r, &b, 4096), Err(Error::TooMuchPending));
    }
}

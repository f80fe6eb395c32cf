//! GStreamer-free core of `rtspinterleavedparse`: RTSP-over-TCP (RFC 2326 §10.12) byte
//! stream framing, RTSP message tracking (SETUP channel mapping, DESCRIBE SDP) and RTP
//! time conversion. Everything here works over byte slices; time is passed in.

mod demux;
mod framer;
mod message;
mod sdp;
mod session;
mod timing;

pub use demux::{Demuxer, Output, PacketKind, Stats};
pub use framer::{DEFAULT_MAX_TEXT_SIZE, Data, Event, Framer, MAX_FRAME_SIZE};
pub use message::{MessageKind, RtspMessage};
pub use sdp::{StreamCaps, parse_sdp, static_payload_caps};
pub use session::{ChannelInfo, ChannelRole, Session};
pub use timing::{ArrivalTimes, RtpClock};

#[cfg(test)]
mod tests;

/// The fuzz target's entry point (also replayed by `tests/fuzz_corpus.rs`): the first byte
/// chooses the chunk size and strict/live framing, the rest is fed through a [`Demuxer`] and
/// every output is checked for consistency. Panics only on a bug.
pub fn fuzz_one(data: &[u8]) {
    let Some((&ctl, bytes)) = data.split_first() else {
        return;
    };
    let chunk = match ctl & 0x0f {
        0 => bytes.len().max(1),
        n => (n as usize) * (n as usize) * 7,
    };
    let mut demux = Demuxer::new(if ctl & 0x20 != 0 {
        512
    } else {
        DEFAULT_MAX_TEXT_SIZE
    });
    demux.set_strict(ctl & 0x10 == 0);
    let mut out = Vec::new();
    let check = |out: &mut Vec<Output>, input: &[u8]| {
        for o in out.drain(..) {
            if let Output::Packet { data, .. } = o {
                let b = data.bytes(input);
                assert_eq!(b.len(), data.len());
                assert!(!b.is_empty() && b[0] >> 6 == 2);
            }
        }
    };
    for piece in bytes.chunks(chunk) {
        demux.push(piece, &mut out);
        check(&mut out, piece);
        assert!(demux.buffered_bytes() <= 3 * MAX_FRAME_SIZE + DEFAULT_MAX_TEXT_SIZE + 8192);
    }
    demux.finish(&mut out);
    check(&mut out, &[]);
    let _ = demux.stats();
    for ch in 0..=255u8 {
        let _ = demux.session().stream_for_channel(ch);
    }
}

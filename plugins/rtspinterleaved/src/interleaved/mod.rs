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
pub use framer::{Data, DEFAULT_MAX_TEXT_SIZE, Event, Framer, MAX_FRAME_SIZE};
pub use message::{MessageKind, RtspMessage};
pub use sdp::{StreamCaps, parse_sdp, static_payload_caps};
pub use session::{ChannelInfo, ChannelRole, Session};
pub use timing::RtpClock;

#[cfg(test)]
mod tests;

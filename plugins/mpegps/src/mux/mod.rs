//! GStreamer-free MPEG-2 Program Stream writer used by `psmux`: header writers
//! ([`headers`]) and the frame-to-PS state machine ([`writer`]).

pub mod headers;
pub mod start;
pub mod writer;

pub use headers::StreamDesc;
pub use start::StartGate;
pub use writer::{Frame, Packet, Piece, PsWriter, WriteError, WriterConfig, ns_to_90k};

//! The GStreamer-free GB/T 28181 core: pure functions and state machines over byte slices,
//! with time passed in as a parameter.

pub mod addr;
pub mod client;
pub mod digest;
pub mod fuzz;
pub mod id;
pub mod manscdp;
pub mod mansrtsp;
pub mod media;
pub mod notify;
pub mod random;
pub mod ratelimit;
pub mod registrar;
pub mod retime;
pub mod sdp;
pub mod sip;
pub mod ssrc;
pub mod subject;
pub mod subscription;
pub mod talk;
pub mod transaction;

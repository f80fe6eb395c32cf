//! The platform side of GB/T 28181 without GStreamer: a [`Call`] is one INVITE session to a
//! device's channel (live view, playback or download) with its media receiver. `gb28181src`
//! is glue around it; the gateway and tests can drive calls directly.

mod call;

pub use call::{Call, CallError, CallEvent, CallParams};

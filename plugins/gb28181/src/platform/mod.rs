//! The platform side of GB/T 28181 without GStreamer: a [`Call`] is one INVITE session to a
//! device's channel (live view, playback or download) with its media receiver; a [`Talk`]
//! is a voice broadcast to a device (it INVITEs us, we send G.711). `gb28181src`
//! is glue around it; the gateway and tests can drive calls directly.

mod call;
mod talk;

pub use call::{
    CONTROL_TIMEOUT, Call, CallError, CallEvent, CallParams, ControlError, send_control,
};
pub use talk::{SAMPLES_PER_PACKET, Talk, TalkParams};

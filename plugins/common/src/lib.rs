//! GStreamer-free helpers shared by the gst-ipcam plugins, the gateway and the tests: one home
//! for each small thing (STYLE.md), so a fix reaches every user.
#![forbid(unsafe_code)]

pub mod startcode;
pub mod sync;

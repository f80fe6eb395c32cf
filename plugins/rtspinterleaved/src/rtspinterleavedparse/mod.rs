//! `rtspinterleavedparse`: RTP and RTCP out of the bytes of an RTSP-over-TCP session.
//!
//! ```text
//! gst-launch-1.0 filesrc location=session.bin ! rtspinterleavedparse name=p \
//!     p.rtp_0 ! rtph264depay ! h264parse ! mp4mux ! filesink location=out.mp4
//! ```

use gst::glib;
use gst::prelude::*;

mod imp;

/// How output buffers are timestamped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstIpcamRtspInterleavedTimestampMode")]
pub enum TimestampMode {
    #[default]
    #[enum_value(
        name = "Auto: upstream times for live input or time segments, else RTP times",
        nick = "auto"
    )]
    Auto = 0,
    #[enum_value(name = "Upstream: input buffer (arrival) times", nick = "upstream")]
    Upstream = 1,
    #[enum_value(
        name = "RTP time: running time from each stream's RTP timestamps",
        nick = "rtp-time"
    )]
    RtpTime = 2,
}

glib::wrapper! {
    pub struct RtspInterleavedParse(ObjectSubclass<imp::RtspInterleavedParse>)
        @extends gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    TimestampMode::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    gst::Element::register(
        Some(plugin),
        "rtspinterleavedparse",
        gst::Rank::NONE,
        RtspInterleavedParse::static_type(),
    )
}

//! `rtspinterleavedparse`: RTP and RTCP out of the bytes of an RTSP-over-TCP session.
//!
//! ```text
//! gst-launch-1.0 filesrc location=session.bin ! rtspinterleavedparse name=p \
//!     p.rtp_0 ! rtph264depay ! h264parse ! mp4mux ! filesink location=out.mp4
//! ```
//!
//! - Pads: `rtp_<n>` for RTP arriving on channel n; `rtcp_<m>` for RTCP, m being the
//!   stream's RTCP channel from SETUP (`interleaved=n-m`), or n+1 for RTCP on an even channel
//!   without SETUP (servers sending RTCP on the RTP channel are told by packet types
//!   200–204). When the stream's SETUPs were seen, data on other channels is dropped (counted
//!   as `unknown-channel-frames`), as retina and gortsplib do.
//! - Caps: the DESCRIBE SDP (matched to SETUP by control URL, else by order), else the
//!   `request-caps` signal (return NULL for "don't know"), else the `caps` property, else
//!   the static payload type table.
//! - Times (`mode`): `upstream` keeps input times (the buffer in which a packet completes),
//!   made fit for live users: a packet without time, or stamped with the clock's absolute
//!   time (tcpclientsrc `do-timestamp` reading while the pipeline starts), gets the running
//!   time now, and times never go backwards (counted as `timestamp-corrections`);
//!   `rtp-time` derives running times from each stream's RTP timestamps; `auto` picks
//!   upstream for live input or time segments. File input is framed strictly (a frame is
//!   confirmed by the bytes after it, which tells truncated frames apart); live input is not
//!   held back.
//! - RTSP requests/responses are posted as `rtsp-message` element messages.
//! - Limits: one RTSP message ≤ `max-rtsp-message-size`; held-over bytes ≤ about two frames
//!   (128 KiB) or one RTSP message.
//! - The pads are fed from one streaming thread: put queues (or `async=false` sinks) after
//!   them when several are linked, as with any demuxer.

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

//! `rtppsdepay`: reassembles MPEG-PS frames from RTP as GB/T 28181 sends them; one complete
//! PS frame per output buffer (`alignment=frame`).
//!
//! Accepts `encoding-name=MP2P` or `PS` (the name in GB/T 28181 SDP) at 90 kHz on any
//! payload type. A frame ends with the marker bit or when the timestamp changes (or at EOS);
//! frames hit by loss are dropped and the next output is flagged DISCONT. Frames larger
//! than `max-frame-size` are dropped with a warning. The `stats` property (overriding the
//! base class's) counts packets received/lost/late and frames pushed/dropped/too large.
//!
//! ```text
//! udpsrc port=15060 caps="application/x-rtp, media=video, clock-rate=90000, encoding-name=PS"
//!   ! rtpjitterbuffer ! rtppsdepay ! psdemux ! ...
//! tcpserversrc port=15060 ! application/x-rtp-stream, media=video, clock-rate=90000, encoding-name=PS
//!   ! rtpstreamdepay ! rtppsdepay ! psdemux ! ...
//! ```
//!
//! Note that the base class already drops packets that arrive after a later one (up to its
//! `max-reorder`); put `rtpjitterbuffer` in front to repair reordering on UDP.

use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct RtpPsDepay(ObjectSubclass<imp::RtpPsDepay>)
        @extends gst_rtp::RTPBaseDepayload, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "rtppsdepay",
        gst::Rank::MARGINAL,
        RtpPsDepay::static_type(),
    )
}

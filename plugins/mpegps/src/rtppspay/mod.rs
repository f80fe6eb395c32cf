//! `rtppspay`: MPEG-PS into RTP as GB/T 28181 sends it (PT 96, 90 kHz, one PS frame per RTP
//! timestamp, marker on its last packet).
//!
//! One input buffer is one PS frame (psmux pushes one per video access unit and one per
//! audio PES); the RTP timestamp comes from its PTS (or DTS). Caps
//! `application/x-rtp, media=video, clock-rate=90000, encoding-name=MP2P`, PT 96 by default;
//! `mtu`, `pt`, `ssrc`, ... are the base class's properties.
//!
//! ```text
//! ... ! psmux ! rtppspay ! udpsink host=192.0.2.1 port=15060
//! ... ! psmux ! rtppspay ! rtpstreampay ! tcpclientsink host=192.0.2.1 port=15060
//! ```
//!
//! Stock `mpegpsmux` also works; it pushes the pack header, system header and PSM as
//! separate buffers, which become separate marker-terminated packet groups with the same RTP
//! timestamp.

use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct RtpPsPay(ObjectSubclass<imp::RtpPsPay>)
        @extends gst_rtp::RTPBasePayload, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "rtppspay",
        gst::Rank::MARGINAL,
        RtpPsPay::static_type(),
    )
}

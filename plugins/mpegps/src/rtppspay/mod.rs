//! `rtppspay`: MPEG-PS into RTP as GB/T 28181 sends it (PT 96, 90 kHz, one PS frame per RTP
//! timestamp, marker on its last packet).

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

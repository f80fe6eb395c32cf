//! `rtppsdepay`: reassembles MPEG-PS frames from RTP as GB/T 28181 sends them; one complete
//! PS frame per output buffer (`alignment=frame`).

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

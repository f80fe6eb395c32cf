use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct RtcpStats(ObjectSubclass<imp::RtcpStats>) @extends gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "rtcpstats",
        gst::Rank::NONE,
        RtcpStats::static_type(),
    )
}

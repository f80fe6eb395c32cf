//! `psmux`: MPEG-2 Program Stream muxer (aggregator with request pads `sink_%u`).

use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct PsMux(ObjectSubclass<imp::PsMux>) @extends gst_base::Aggregator, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "psmux",
        gst::Rank::PRIMARY,
        PsMux::static_type(),
    )
}

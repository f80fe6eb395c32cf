//! `psdemux`: MPEG-PS demuxer for what IP cameras (GB28181) and muxers write.
//!
//! The bitstream work is done by the GStreamer-free [`crate::demux`] core; this element keeps
//! the input buffers, turns the core's byte ranges into output buffers sharing the input memory,
//! and handles pads, timestamps, pull mode (duration, seeking) and flow.

use gst::glib;
use gst::prelude::*;

mod imp;
mod output;

glib::wrapper! {
    pub struct PsDemux(ObjectSubclass<imp::PsDemux>) @extends gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "psdemux",
        gst::Rank::SECONDARY,
        PsDemux::static_type(),
    )
}

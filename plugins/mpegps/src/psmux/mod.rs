//! `psmux`: MPEG-2 Program Stream muxer as GB28181 cameras write it (aggregator with
//! request pads `sink_%u`).
//!
//! One output buffer per video access unit (pack header, system header + PSM before every
//! key frame, PES packets split at `pes-payload-size`) and one per audio buffer (with its
//! own pack header); key frames are the buffers without `DELTA_UNIT`. Output buffers share
//! the input memory (zero copy). Stream ids 0xE0.. (video) and 0xC0.. (audio) in pad order.
//!
//! ```text
//! gst-launch-1.0 videotestsrc ! x264enc ! h264parse config-interval=-1 ! queue ! psmux name=m \
//!     ! filesink location=out.ps  audiotestsrc ! alawenc ! queue ! m.
//! ```
//! Key frames must carry their parameter sets in-band (`h264parse config-interval=-1`,
//! `h265parse config-interval=-1`, `mpeg4videoparse config-interval=-1`): a PS receiver can
//! join at any key frame.

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
        // Below stock mpegpsmux (PRIMARY) where both fit; the only choice for H.265 and G.711.
        gst::Rank::SECONDARY,
        PsMux::static_type(),
    )
}

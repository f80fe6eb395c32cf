//! `gb28181talksink`: the platform side of a GB/T 28181 voice broadcast (§9.12). Takes G.711
//! audio, tells `device-id` (registered on the process-wide SIP endpoint of sip-address,
//! sip-port, sip-transport, shared with `gb28181src`) to call back, answers its INVITE and
//! sends the audio as RTP (PCMA PT 8 or PCMU PT 0, 20 ms packets) to the address it offered.
//!
//! ```text
//! gst-launch-1.0 audiotestsrc is-live=true ! audioconvert ! audioresample \
//!     ! audio/x-raw,rate=8000,channels=1 ! alawenc \
//!     ! gb28181talksink sip-port=5060 device-id=34020000001320000001 password=12345678
//! ```

use gst::glib;
use gst::prelude::*;

pub(crate) mod imp;

glib::wrapper! {
    pub struct Gb28181TalkSink(ObjectSubclass<imp::Gb28181TalkSink>)
        @extends gst_base::BaseSink, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "gb28181talksink",
        gst::Rank::NONE,
        Gb28181TalkSink::static_type(),
    )
}

//! `gb28181sink`: the device side of GB/T 28181. Registers with a platform (digest, refresh,
//! keepalives, re-registration with backoff), answers Catalog / DeviceInfo / DeviceStatus and
//! INVITE, and sends the incoming MPEG-PS frames as RTP (PT 96, marker on the last packet of
//! each frame) over UDP, TCP active or TCP passive, as the platform's offer asks. A new viewer
//! starts with the cached latest GOP.
//!
//! ```text
//! gst-launch-1.0 videotestsrc is-live=true ! x264enc tune=zerolatency key-int-max=25 \
//!     ! h264parse ! mpegpsmux ! gb28181sink server-ip=127.0.0.1 server-port=5060 \
//!     device-id=34020000001320000001 password=12345678
//! ```

use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct Gb28181Sink(ObjectSubclass<imp::Gb28181Sink>)
        @extends gst_base::BaseSink, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "gb28181sink",
        gst::Rank::NONE,
        Gb28181Sink::static_type(),
    )
}

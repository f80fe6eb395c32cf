//! `gb28181sink`: the device side of GB/T 28181. Registers with a platform (digest, refresh,
//! keepalives, re-registration with backoff), answers Catalog / DeviceInfo / DeviceStatus and
//! INVITE, and sends the incoming MPEG-PS frames as RTP (PT 96, marker on the last packet of
//! each frame) over UDP, TCP active or TCP passive, as the platform's offer asks. A new viewer
//! starts with the cached latest GOP. SIP runs over UDP or, with `sip-transport=tcp`, over one
//! TCP connection to the platform (reconnected with backoff and registered again when it drops).
//!
//! ```text
//! gst-launch-1.0 videotestsrc is-live=true ! x264enc tune=zerolatency key-int-max=25 \
//!     ! h264parse ! mpegpsmux ! gb28181sink server-ip=127.0.0.1 server-port=5060 \
//!     device-id=34020000001320000001 password=12345678
//! ```

use gst::glib;
use gst::prelude::*;

mod imp;

/// How the `talk` audio comes from the platform (this device offers it in its INVITE).
#[derive(Debug, Eq, PartialEq, Hash, Clone, Copy, glib::Enum, Default)]
#[repr(u32)]
#[enum_type(name = "GstIpcamGb28181TalkTransport")]
pub enum TalkTransportMode {
    #[default]
    #[enum_value(name = "RTP over UDP", nick = "udp")]
    Udp = 0,
    #[enum_value(name = "RTP over TCP, this device listens", nick = "tcp-passive")]
    TcpPassive = 1,
    #[enum_value(name = "RTP over TCP, this device connects", nick = "tcp-active")]
    TcpActive = 2,
}

impl From<TalkTransportMode> for crate::core::sdp::MediaTransport {
    fn from(m: TalkTransportMode) -> Self {
        match m {
            TalkTransportMode::Udp => Self::Udp,
            TalkTransportMode::TcpPassive => Self::TcpPassive,
            TalkTransportMode::TcpActive => Self::TcpActive,
        }
    }
}

glib::wrapper! {
    pub struct Gb28181Sink(ObjectSubclass<imp::Gb28181Sink>)
        @extends gst_base::BaseSink, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    TalkTransportMode::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    gst::Element::register(
        Some(plugin),
        "gb28181sink",
        gst::Rank::NONE,
        Gb28181Sink::static_type(),
    )
}

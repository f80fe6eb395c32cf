//! `gb28181src`: the platform side of GB/T 28181 live view. Uses the process-wide SIP endpoint
//! for (sip-address, sip-port, sip-transport) (registrar with digest, keepalive tracking),
//! waits for `device-id` to be registered, INVITEs `channel-id` and outputs the PS stream the
//! camera sends (UDP, TCP passive or TCP active), one PS frame per buffer.
//!
//! ```text
//! gst-launch-1.0 gb28181src sip-port=5060 device-id=34020000001320000001 password=12345678 \
//!     ! psdemux ! h264parse ! avdec_h264 ! autovideosink
//! ```

use gst::glib;
use gst::prelude::*;

mod imp;

#[derive(Debug, Eq, PartialEq, Hash, Clone, Copy, glib::Enum, Default)]
#[repr(u32)]
#[enum_type(name = "GstIpcamGb28181MediaTransport")]
pub enum MediaTransportMode {
    #[default]
    #[enum_value(name = "RTP over UDP", nick = "udp")]
    Udp = 0,
    #[enum_value(name = "RTP over TCP, the platform listens", nick = "tcp-passive")]
    TcpPassive = 1,
    #[enum_value(name = "RTP over TCP, the platform connects", nick = "tcp-active")]
    TcpActive = 2,
}

impl From<SipTransportMode> for crate::endpoint::SipTransport {
    fn from(m: SipTransportMode) -> Self {
        match m {
            SipTransportMode::Udp => crate::endpoint::SipTransport::Udp,
            SipTransportMode::Tcp => crate::endpoint::SipTransport::Tcp,
        }
    }
}

/// The shared endpoint of (address, port, transport) properties: `[::1]` and `::1` name the
/// same endpoint.
pub(crate) fn endpoint_key(
    address: &str,
    port: u32,
    transport: SipTransportMode,
) -> crate::endpoint::EndpointKey {
    crate::endpoint::EndpointKey {
        address: crate::core::addr::parse_ip(address)
            .map(|ip| ip.to_string())
            .unwrap_or_else(|| address.to_string()),
        port: port as u16,
        transport: transport.into(),
    }
}

#[derive(Debug, Eq, PartialEq, Hash, Clone, Copy, glib::Enum, Default)]
#[repr(u32)]
#[enum_type(name = "GstIpcamGb28181SipTransport")]
pub enum SipTransportMode {
    #[default]
    #[enum_value(name = "SIP over UDP", nick = "udp")]
    Udp = 0,
    #[enum_value(name = "SIP over TCP", nick = "tcp")]
    Tcp = 1,
}

#[derive(Debug, Eq, PartialEq, Hash, Clone, Copy, glib::Enum, Default)]
#[repr(u32)]
#[enum_type(name = "GstIpcamGb28181SessionKind")]
pub enum SessionKindMode {
    #[default]
    #[enum_value(name = "Live view", nick = "play")]
    Play = 0,
    #[enum_value(
        name = "Playback of a recording (start-time..end-time)",
        nick = "playback"
    )]
    Playback = 1,
    #[enum_value(
        name = "Download of a recording (start-time..end-time)",
        nick = "download"
    )]
    Download = 2,
}

glib::wrapper! {
    pub struct Gb28181Src(ObjectSubclass<imp::Gb28181Src>)
        @extends gst_base::PushSrc, gst_base::BaseSrc, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    MediaTransportMode::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    SipTransportMode::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    SessionKindMode::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    gst::Element::register(
        Some(plugin),
        "gb28181src",
        gst::Rank::NONE,
        Gb28181Src::static_type(),
    )
}

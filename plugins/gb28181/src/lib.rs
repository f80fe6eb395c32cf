//! GB/T 28181 signalling for IP cameras.
//!
//! Elements: `gb28181src` (platform side: registrar on a process-wide SIP endpoint, INVITE,
//! PS over RTP on UDP/TCP), `gb28181sink` (device side: registration, query answers, media)
//! and `gb28181talksink` (platform side of a voice broadcast: G.711 to a device).
//!
//! GStreamer-free parts: [`core`] (SIP parsing, digest authentication, the device registrar,
//! MANSCDP (XML) messages, SDP offers/answers, SSRCs, transactions and dialogs, TCP media
//! framing), [`endpoint`] (the shared SIP endpoint and its Rust API: devices, events,
//! queries), [`platform`] (a platform → device call), [`device`] (the device-side user agent) and [`receiver`] (media reception).
use gst::glib;

pub mod core;
pub mod device;
pub mod endpoint;
mod gb28181sink;
mod gb28181src;
mod gb28181talksink;
pub mod messages;
pub mod platform;
pub mod receiver;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gb28181src::register(plugin)?;
    gb28181sink::register(plugin)?;
    gb28181talksink::register(plugin)?;
    Ok(())
}

gst::plugin_define!(
    gb28181,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MPL",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_REPOSITORY"),
    env!("BUILD_REL_DATE")
);

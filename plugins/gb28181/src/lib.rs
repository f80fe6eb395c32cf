//! GB/T 28181 signalling for IP cameras.
//!
//! The elements (gb28181src, gb28181sink) come later; this crate currently holds the
//! GStreamer-free core in [`core`]: SIP parsing, digest authentication, the device registrar,
//! MANSCDP (XML) messages, SDP offers/answers, SSRCs, transactions and dialogs.
use gst::glib;

pub mod core;
pub mod device;
pub mod endpoint;
pub mod receiver;

fn plugin_init(_plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
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

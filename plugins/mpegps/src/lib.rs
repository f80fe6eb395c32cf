//! MPEG-2 Program Stream as IP cameras write it.
//!
//! Elements: `psdemux`, `psmux`, `rtppspay`, `rtppsdepay`. The bitstream logic lives in
//! GStreamer-free modules (`ps`, `demux`, `mux`, `rtp`) so it can be unit-tested and fuzzed
//! on plain byte slices.

use gst::glib;

pub mod demux;
pub mod mux;
pub mod ps;
pub mod rtp;

mod psdemux;
mod psmux;
mod rtppsdepay;
mod rtppspay;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    psdemux::register(plugin)?;
    psmux::register(plugin)?;
    rtppspay::register(plugin)?;
    rtppsdepay::register(plugin)?;
    Ok(())
}

gst::plugin_define!(
    mpegps,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MPL",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_REPOSITORY"),
    env!("BUILD_REL_DATE")
);

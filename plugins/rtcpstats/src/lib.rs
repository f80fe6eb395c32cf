use gst::glib;

mod rtcpstats;
pub mod stats;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    rtcpstats::register(plugin)?;
    Ok(())
}

gst::plugin_define!(
    rtcpstats,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MPL",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_REPOSITORY"),
    env!("BUILD_REL_DATE")
);

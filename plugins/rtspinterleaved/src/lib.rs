use gst::glib;

pub mod interleaved;
mod rtspinterleavedparse;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    rtspinterleavedparse::register(plugin)?;
    Ok(())
}

gst::plugin_define!(
    rtspinterleaved,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MPL",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_REPOSITORY"),
    env!("BUILD_REL_DATE")
);

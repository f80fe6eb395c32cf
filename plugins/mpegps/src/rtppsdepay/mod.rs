use gst::glib;

// Placeholder until the element lands; registers nothing.
pub fn register(_plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    Ok(())
}

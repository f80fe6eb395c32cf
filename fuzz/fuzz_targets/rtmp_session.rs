#![no_main]
// See gst_ipcam_gateway::fuzz::rtmp_session.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gst_ipcam_gateway::fuzz::rtmp_session(data));

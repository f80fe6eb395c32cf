#![no_main]
// See gst_ipcam_gateway::fuzz::direct_rtp.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gst_ipcam_gateway::fuzz::direct_rtp(data));

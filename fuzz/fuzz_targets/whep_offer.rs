#![no_main]
// See gst_ipcam_gateway::fuzz::whep_offer.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gst_ipcam_gateway::fuzz::whep_offer(data));

#![no_main]
// What ONVIF devices answer (WS-Discovery ProbeMatches, GetProfiles, GetStreamUri): bounded
// results or an error, never a panic, whatever the bytes.
use gst_ipcam_gateway::onvif::{MAX_ITEMS, parse_probe_matches, parse_profiles, parse_stream_uri};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(m) = parse_probe_matches(data) {
        assert!(m.len() <= MAX_ITEMS);
    }
    if let Ok(p) = parse_profiles(data) {
        assert!(p.len() <= MAX_ITEMS);
    }
    let _ = parse_stream_uri(data);
});

#![no_main]
// WHEP offers as browsers (or anyone) POST them: bounded, parsed, and matched against every
// kind of channel. Never a panic, whatever the bytes.
use gst_ipcam_gateway::webrtc::offer::{Codec, parse_offer, plan};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(offer) = parse_offer(data) else { return };
    for (video, audio) in [
        (Some(Codec::H264), Some(Codec::Pcma)),
        (Some(Codec::H264), Some(Codec::Pcmu)),
        (Some(Codec::H265), None),
        (None, Some(Codec::Pcmu)),
        (Some(Codec::H264), Some(Codec::Other)),
    ] {
        for profile in [None, Some(0x42), Some(0x64)] {
            if let Err(r) = plan(&offer, video, audio, profile) {
                let _ = (r.status(), r.message());
            }
        }
    }
});

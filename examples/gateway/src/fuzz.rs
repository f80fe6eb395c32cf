//! Entry points shared by the cargo-fuzz targets (`fuzz/fuzz_targets/{rtmp_session,onvif,
//! whep_offer}.rs`) and the corpus-replay test (`tests/fuzz_corpus.rs`): each runs one input
//! through a parser of network bytes and checks its bounds; never a panic, whatever the bytes.

use crate::onvif::{MAX_ITEMS, parse_probe_matches, parse_profiles, parse_stream_uri};
use crate::rtmp::chunk::Limits;
use crate::rtmp::session::{Event, Session};
use crate::rtmp::{amf0, flv};
use crate::webrtc::offer::{Codec, parse_offer, plan};

/// What an RTMP peer sends after the handshake (chunks, control messages, AMF0 commands), in
/// the pieces the first byte chooses, through the server session; also the AMF0 decoder and
/// the FLV tag reader alone. The session's limits hold.
pub fn rtmp_session(data: &[u8]) {
    let _ = amf0::decode_all(data);
    let mut tags = flv::TagReader::new(1 << 16);
    tags.feed(data);
    while let Ok(Some(_)) = tags.next_tag() {}

    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let limits = Limits {
        max_message_len: 1 << 16,
        max_pending_bytes: 1 << 17,
        ..Limits::default()
    };
    let mut s = Session::new(limits);
    for piece in rest.chunks(usize::from(step).max(1)) {
        match s.feed(piece) {
            Ok(events) => {
                for e in events {
                    match e {
                        Event::Publish { .. } => s.accept_publish("p"),
                        Event::Play { .. } => {
                            let _ = s.accept_play("p");
                        }
                        _ => {}
                    }
                }
            }
            Err(_) => return,
        }
        let _ = s.take_output();
    }
}

/// What ONVIF devices answer (WS-Discovery ProbeMatches, GetProfiles, GetStreamUri): bounded
/// results or an error.
pub fn onvif(data: &[u8]) {
    if let Ok(m) = parse_probe_matches(data) {
        assert!(m.len() <= MAX_ITEMS);
    }
    if let Ok(p) = parse_profiles(data) {
        assert!(p.len() <= MAX_ITEMS);
    }
    let _ = parse_stream_uri(data);
}

/// WHEP offers as browsers (or anyone) POST them: bounded, parsed, and matched against every
/// kind of channel.
pub fn whep_offer(data: &[u8]) {
    let Ok(offer) = parse_offer(data) else {
        return;
    };
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
}

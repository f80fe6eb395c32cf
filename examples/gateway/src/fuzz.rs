//! Entry points shared by the cargo-fuzz targets (`fuzz/fuzz_targets/{rtmp_session,onvif,
//! whep_offer,direct_rtp}.rs`) and the corpus-replay test (`tests/fuzz_corpus.rs`): each runs one input
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

/// What a camera sends, as the direct RTSP path gets it (access units, audio frames, any
/// bytes): packetized by every codec into interleaved frames that frame back exactly, each
/// within the RTP payload limit, and described in an SDP that parses.
pub fn direct_rtp(data: &[u8]) {
    use crate::direct::rtp::{Codec, MAX_PAYLOAD, Packetizer};
    use crate::direct::sdp;
    let codecs = [
        Codec::H264,
        Codec::H265,
        Codec::Aac {
            rate: 48_000,
            channels: 2,
            config: data.iter().take(4).copied().collect(),
        },
        Codec::Pcma {
            rate: 8000,
            channels: 1,
        },
        Codec::Pcmu {
            rate: 16_000,
            channels: 2,
        },
    ];
    for (i, codec) in codecs.into_iter().enumerate() {
        let mut p = Packetizer::new(codec.clone(), 96, 1, 65_530, u32::MAX - 5, 2);
        let mut out = Vec::new();
        let n = p.frame(data, 1_000_000_000, &mut out);
        p.frame(data, u64::MAX, &mut out);
        p.sender_report(u64::MAX, 0, "c", &mut out);
        let mut rest = out.as_slice();
        let mut frames = 0;
        while !rest.is_empty() {
            assert!(rest.len() >= 4 && rest[0] == b'$');
            let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
            assert!(len >= 12 && len - 12 <= MAX_PAYLOAD + 2 && rest.len() >= 4 + len);
            rest = &rest[4 + len..];
            frames += 1;
        }
        assert!(frames >= n);
        let sdp = sdp::describe(
            &[sdp::Stream {
                pt: sdp::payload_type(&codec, i),
                codec,
                key_frame: data.to_vec(),
            }],
            7,
            i % 2 == 0,
        );
        assert!(sdp_types::Session::parse(sdp.as_bytes()).is_ok());
    }
}

//! The WHEP offer, untrusted network input: bounded, parsed with sdp-types, and matched
//! against the channel's streams. GStreamer-free; the answer itself is webrtcbin's.
//!
//! We send only what the camera sends, unchanged: H.264 (packetization-mode 1) and G.711
//! (PCMA/PCMU). A channel in H.265 is refused with a message naming HLS (browsers' WebRTC
//! has no H.265 we could count on).

use sdp_types::Session;

/// Offers larger than this are refused (Chromium's are 4-10 KiB with all its codecs).
pub const MAX_OFFER_BYTES: usize = 32 * 1024;
/// m-lines in an offer at most.
pub const MAX_MEDIA: usize = 16;
/// Formats per m-line at most (Chromium offers about 30 video payload types).
pub const MAX_FORMATS: usize = 64;

/// The codec of one of the channel's streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    H264,
    H265,
    Pcma,
    Pcmu,
    /// Anything we cannot send over WebRTC without transcoding (AAC, ...).
    Other,
}

/// One payload type the browser offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pub pt: u8,
    /// Encoding name, upper case (`H264`, `PCMA`).
    pub encoding: String,
    pub clock_rate: u32,
    /// The `a=fmtp` parameters, as given.
    pub fmtp: String,
}

impl Format {
    fn param(&self, name: &str) -> Option<&str> {
        self.fmtp.split(';').find_map(|p| {
            let (k, v) = p.trim().split_once('=')?;
            k.trim().eq_ignore_ascii_case(name).then_some(v.trim())
        })
    }
}

/// The parts of an offer that matter to us.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Offer {
    /// Formats of the first video and the first audio m-line (None: not offered).
    pub video: Option<Vec<Format>>,
    pub audio: Option<Vec<Format>>,
}

/// Why an offer is refused, and the HTTP status it becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not an acceptable SDP offer (400).
    BadOffer(String),
    /// Too large (413).
    TooLarge,
    /// The channel is H.265: the page should use HLS (406).
    UseHls,
    /// Nothing in common (406).
    NoCommonCodec(String),
}

impl Refusal {
    pub fn status(&self) -> u16 {
        match self {
            Refusal::BadOffer(_) => 400,
            Refusal::TooLarge => 413,
            Refusal::UseHls | Refusal::NoCommonCodec(_) => 406,
        }
    }

    pub fn message(&self) -> String {
        match self {
            Refusal::BadOffer(m) => format!("bad SDP offer: {m}"),
            Refusal::TooLarge => format!("SDP offer larger than {MAX_OFFER_BYTES} bytes"),
            Refusal::UseHls => "the channel is H.265, which is not sent over WebRTC as it is: \
                                ask for POST .../whep?transcode=h264, or use HLS"
                .to_string(),
            Refusal::NoCommonCodec(m) => m.clone(),
        }
    }
}

/// What we send: the offer's payload types for the channel's streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// H.264 payload type and its `profile-level-id` (6 hex digits).
    pub video: Option<(u8, [u8; 6])>,
    /// G.711 payload type and codec.
    pub audio: Option<(u8, Codec)>,
}

/// The WHEP POST's query: empty, or `transcode=h264` (send an H.265 channel as H.264 from
/// its shared transcoder). Anything else, or longer than 64 bytes, is refused (400).
pub fn parse_query(query: Option<&str>) -> Result<bool, String> {
    match query.unwrap_or("") {
        "" => Ok(false),
        "transcode=h264" => Ok(true),
        q if q.len() > 64 => Err("query longer than 64 bytes".into()),
        q => Err(format!(
            "unknown query {:?}: the only one is transcode=h264",
            q.escape_debug().to_string()
        )),
    }
}

/// Parses and bounds an offer.
pub fn parse_offer(body: &[u8]) -> Result<Offer, Refusal> {
    if body.len() > MAX_OFFER_BYTES {
        return Err(Refusal::TooLarge);
    }
    let bad = |m: &str| Refusal::BadOffer(m.to_string());
    if !body.starts_with(b"v=0") {
        return Err(bad("does not start with v=0"));
    }
    let session = Session::parse(body).map_err(|e| Refusal::BadOffer(e.to_string()))?;
    if session.medias.len() > MAX_MEDIA {
        return Err(bad("too many m-lines"));
    }
    let mut offer = Offer::default();
    for m in &session.medias {
        let slot = match m.media.as_str() {
            "video" if offer.video.is_none() => &mut offer.video,
            "audio" if offer.audio.is_none() => &mut offer.audio,
            _ => continue,
        };
        if !m.proto.contains("SAVPF") {
            return Err(bad("m-line transport is not (UDP/TLS/)RTP/SAVPF"));
        }
        if m.port == 0 {
            continue;
        }
        let pts: Vec<&str> = m.fmt.split_whitespace().collect();
        if pts.len() > MAX_FORMATS {
            return Err(bad("too many formats in an m-line"));
        }
        let mut formats = Vec::new();
        for pt in pts {
            let Ok(pt) = pt.parse::<u8>() else {
                return Err(bad("payload type is not a number"));
            };
            if pt > 127 {
                return Err(bad("payload type above 127"));
            }
            let attr = |name: &str| {
                m.get_attribute_values(name).flatten().find_map(|v| {
                    let (p, rest) = v.split_once(' ')?;
                    (p.parse::<u8>().ok()? == pt).then(|| rest.trim().to_string())
                })
            };
            let (encoding, clock_rate) = match (pt, attr("rtpmap")) {
                (_, Some(map)) => {
                    let mut it = map.split('/');
                    let enc = it.next().unwrap_or_default().to_ascii_uppercase();
                    let rate = it.next().and_then(|r| r.parse().ok()).unwrap_or(0);
                    (enc, rate)
                }
                // Static payload types may come without rtpmap.
                (0, None) => ("PCMU".to_string(), 8000),
                (8, None) => ("PCMA".to_string(), 8000),
                _ => continue,
            };
            formats.push(Format {
                pt,
                encoding,
                clock_rate,
                fmtp: attr("fmtp").unwrap_or_default(),
            });
        }
        *slot = Some(formats);
    }
    if offer.video.is_none() && offer.audio.is_none() {
        return Err(bad("no audio or video m-line"));
    }
    Ok(offer)
}

/// `profile-level-id` of an H.264 format (defaults to 420010, RFC 6184).
fn profile_level_id(f: &Format) -> Option<[u8; 6]> {
    let v = f.param("profile-level-id").unwrap_or("420010");
    let b: [u8; 6] = v.as_bytes().try_into().ok()?;
    b.iter()
        .all(u8::is_ascii_hexdigit)
        .then(|| b.map(|c| c.to_ascii_lowercase()))
}

/// The H.264 profile_idc (first byte of profile-level-id) of a GStreamer `profile` name.
pub fn profile_idc(profile: &str) -> Option<u8> {
    Some(match profile {
        "constrained-baseline" | "baseline" => 0x42,
        "main" => 0x4d,
        "high" => 0x64,
        _ => return None,
    })
}

/// Chooses the payload types to send the channel's `video` and `audio` with. `profile` is
/// the H.264 stream's profile_idc when known: a format of that profile is preferred (the
/// browser decodes what we send either way; the answer should tell the truth).
pub fn plan(
    offer: &Offer,
    video: Option<Codec>,
    audio: Option<Codec>,
    profile: Option<u8>,
) -> Result<Plan, Refusal> {
    let mut p = Plan {
        video: None,
        audio: None,
    };
    match video {
        Some(Codec::H265) => return Err(Refusal::UseHls),
        Some(Codec::H264) => {
            let h264: Vec<(&Format, [u8; 6])> = offer
                .video
                .iter()
                .flatten()
                .filter(|f| f.encoding == "H264" && f.clock_rate == 90000)
                .filter(|f| f.param("packetization-mode") == Some("1"))
                .filter_map(|f| Some((f, profile_level_id(f)?)))
                .collect();
            let idc = profile.map(|i| format!("{i:02x}"));
            let best = h264
                .iter()
                .find(|(_, id)| idc.as_deref().is_some_and(|i| id.starts_with(i.as_bytes())))
                .or_else(|| h264.first());
            match best {
                Some((f, id)) => p.video = Some((f.pt, *id)),
                None => {
                    return Err(Refusal::NoCommonCodec(
                        "the offer has no H.264 with packetization-mode=1".into(),
                    ));
                }
            }
        }
        _ => {}
    }
    if let Some(codec @ (Codec::Pcma | Codec::Pcmu)) = audio {
        let name = if codec == Codec::Pcma { "PCMA" } else { "PCMU" };
        p.audio = offer
            .audio
            .iter()
            .flatten()
            .find(|f| f.encoding == name && f.clock_rate == 8000)
            .map(|f| (f.pt, codec));
    }
    if p.video.is_none() && p.audio.is_none() {
        return Err(Refusal::NoCommonCodec(
            "nothing the channel sends can go over WebRTC unchanged".into(),
        ));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A trimmed Chromium offer (recvonly video and audio).
    pub(crate) const CHROMIUM: &str = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\na=msid-semantic: WMS\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 102 103 108 109 39\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\na=setup:actpass\r\na=mid:0\r\na=recvonly\r\na=rtcp-mux\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\na=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f\r\na=rtpmap:103 H264/90000\r\na=fmtp:103 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f\r\na=rtpmap:108 H264/90000\r\na=fmtp:108 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\na=rtpmap:109 H264/90000\r\na=fmtp:109 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640c1f\r\na=rtpmap:39 AV1/90000\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 0 8\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=recvonly\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n";

    #[test]
    fn chromium_offer_gets_h264_and_pcma() {
        let o = parse_offer(CHROMIUM.as_bytes()).unwrap();
        assert_eq!(o.video.as_ref().unwrap().len(), 6);
        let p = plan(&o, Some(Codec::H264), Some(Codec::Pcma), Some(0x42)).unwrap();
        assert_eq!(p.video, Some((102, *b"42001f")));
        assert_eq!(p.audio, Some((8, Codec::Pcma)));
        let p = plan(&o, Some(Codec::H264), Some(Codec::Pcmu), Some(0x64)).unwrap();
        assert_eq!(p.video, Some((109, *b"640c1f")));
        assert_eq!(p.audio, Some((0, Codec::Pcmu)));
        // AAC audio is left out; video still goes.
        let p = plan(&o, Some(Codec::H264), Some(Codec::Other), None).unwrap();
        assert_eq!(p.audio, None);
    }

    #[test]
    fn h265_asks_for_hls_and_nothing_in_common_is_406() {
        let o = parse_offer(CHROMIUM.as_bytes()).unwrap();
        let e = plan(&o, Some(Codec::H265), Some(Codec::Pcma), None).unwrap_err();
        assert_eq!(e, Refusal::UseHls);
        assert_eq!(e.status(), 406);
        assert!(e.message().contains("HLS"));
        let only_vp8 = CHROMIUM
            .replace("packetization-mode=1", "packetization-mode=0")
            .replace("m=audio 9", "m=audio 0");
        let o = parse_offer(only_vp8.as_bytes()).unwrap();
        assert_eq!(
            plan(&o, Some(Codec::H264), Some(Codec::Pcma), None)
                .unwrap_err()
                .status(),
            406
        );
    }

    #[test]
    fn bad_offers_are_refused_not_panicked_on() {
        for bad in [
            &b""[..],
            b"hello",
            b"v=0\r\n",
            b"v=0\r\nm=video x UDP/TLS/RTP/SAVPF 96\r\n",
            b"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 RTP/AVP 96\r\n",
            b"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 300\r\n",
            b"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=text 9 UDP/TLS/RTP/SAVPF 96\r\n",
            b"\xff\xfe\x00",
        ] {
            let e = parse_offer(bad).unwrap_err();
            assert_eq!(e.status(), 400, "{:?}: {e:?}", String::from_utf8_lossy(bad));
        }
        let big = format!("{CHROMIUM}{}", "a=x\r\n".repeat(MAX_OFFER_BYTES / 5));
        assert_eq!(parse_offer(big.as_bytes()).unwrap_err(), Refusal::TooLarge);
        let many = format!(
            "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF {}\r\n",
            (0..100)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        );
        assert_eq!(parse_offer(many.as_bytes()).unwrap_err().status(), 400);
        // A malformed profile-level-id is not chosen.
        let o = parse_offer(
            CHROMIUM
                .replace("profile-level-id=", "profile-level-id=zz")
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            plan(&o, Some(Codec::H264), None, None)
                .unwrap_err()
                .status(),
            406
        );
    }

    #[test]
    fn query_is_transcode_or_nothing() {
        assert_eq!(super::parse_query(None), Ok(false));
        assert_eq!(super::parse_query(Some("")), Ok(false));
        assert_eq!(super::parse_query(Some("transcode=h264")), Ok(true));
        let long = "x".repeat(10_000);
        for bad in [
            "transcode=h265",
            "transcode=H264",
            "transcode=h264&transcode=h264",
            "transcode",
            "a=b",
            "transcode=h264\u{0}",
            long.as_str(),
        ] {
            let e = super::parse_query(Some(bad)).unwrap_err();
            assert!(e.len() < 200, "{e}");
        }
    }
}

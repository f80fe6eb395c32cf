//! DESCRIBE SDP → RTP stream descriptions (what `application/x-rtp` caps need), following
//! GStreamer's `gst_sdp_media_get_caps_from_media()`: encoding name upper case, fmtp
//! parameters as lower-case string fields.

/// What a depayloader needs to know about one RTP stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamCaps {
    /// `video`, `audio`, `application`, ...
    pub media: String,
    pub payload: u8,
    pub clock_rate: u32,
    pub encoding_name: String,
    /// Audio channels (third rtpmap field), as GStreamer's `encoding-params`.
    pub encoding_params: Option<String>,
    /// fmtp parameters (key lower case), in order.
    pub fmtp: Vec<(String, String)>,
    /// The media's `a=control:` (absolute or relative URL), if any.
    pub control: Option<String>,
}

/// Static payload types of RFC 3551 that cameras use: (pt, media, encoding, clock, channels).
const STATIC_PTS: &[(u8, &str, &str, u32, Option<&str>)] = &[
    (0, "audio", "PCMU", 8000, Some("1")),
    (3, "audio", "GSM", 8000, Some("1")),
    (4, "audio", "G723", 8000, Some("1")),
    (5, "audio", "DVI4", 8000, Some("1")),
    (6, "audio", "DVI4", 16000, Some("1")),
    (7, "audio", "LPC", 8000, Some("1")),
    (8, "audio", "PCMA", 8000, Some("1")),
    (9, "audio", "G722", 8000, Some("1")),
    (10, "audio", "L16", 44100, Some("2")),
    (11, "audio", "L16", 44100, Some("1")),
    (12, "audio", "QCELP", 8000, Some("1")),
    (13, "audio", "CN", 8000, Some("1")),
    (14, "audio", "MPA", 90000, None),
    (15, "audio", "G728", 8000, Some("1")),
    (18, "audio", "G729", 8000, Some("1")),
    (25, "video", "CELB", 90000, None),
    (26, "video", "JPEG", 90000, None),
    (28, "video", "NV", 90000, None),
    (31, "video", "H261", 90000, None),
    (32, "video", "MPV", 90000, None),
    (33, "video", "MP2T", 90000, None),
    (34, "video", "H263", 90000, None),
];

/// Description of a static payload type, if `pt` is one.
pub fn static_payload_caps(pt: u8) -> Option<StreamCaps> {
    STATIC_PTS
        .iter()
        .find(|(p, ..)| *p == pt)
        .map(|&(payload, media, name, clock_rate, params)| StreamCaps {
            media: media.to_string(),
            payload,
            clock_rate,
            encoding_name: name.to_string(),
            encoding_params: params.map(str::to_string),
            fmtp: Vec::new(),
            control: None,
        })
}

/// Fields GStreamer sets itself; an fmtp parameter of the same name must not override them.
const RESERVED_FIELDS: &[&str] = &[
    "media",
    "payload",
    "clock-rate",
    "encoding-name",
    "encoding-params",
];

fn parse_fmtp(value: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for param in value.split(';') {
        let param = param.trim();
        if param.is_empty() {
            continue;
        }
        // Values (base64 sprop sets) may contain '='; split at the first only.
        let (k, v) = param.split_once('=').unwrap_or((param, "1"));
        let k = k.trim().to_ascii_lowercase();
        let valid = !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
        if valid && !RESERVED_FIELDS.contains(&k.as_str()) {
            out.push((k, v.trim().to_string()));
        }
    }
    out
}

fn media_caps(media: &sdp_types::Media) -> Option<StreamCaps> {
    let pt: u8 = media.fmt.split_whitespace().next()?.parse().ok()?;
    let mut caps = static_payload_caps(pt).unwrap_or_default();
    caps.payload = pt;
    caps.media = media.media.clone();
    for value in media.get_attribute_values("rtpmap").flatten() {
        let Some((p, rest)) = value.trim().split_once(' ') else {
            continue;
        };
        if p.trim().parse::<u8>().ok() != Some(pt) {
            continue;
        }
        let mut fields = rest.trim().split('/');
        if let Some(name) = fields.next() {
            caps.encoding_name = name.trim().to_ascii_uppercase();
        }
        if let Some(rate) = fields.next().and_then(|r| r.trim().parse().ok()) {
            caps.clock_rate = rate;
        }
        caps.encoding_params = fields.next().map(|c| c.trim().to_string());
    }
    for value in media.get_attribute_values("fmtp").flatten() {
        let Some((p, rest)) = value.trim().split_once(' ') else {
            continue;
        };
        if p.trim().parse::<u8>().ok() == Some(pt) {
            caps.fmtp = parse_fmtp(rest);
        }
    }
    caps.control = media
        .get_first_attribute_value("control")
        .flatten()
        .map(|c| c.trim().to_string());
    Some(caps)
}

/// The RTP streams of an SDP, in media order. Media without a usable format are skipped;
/// an SDP that does not parse gives an empty list.
pub fn parse_sdp(body: &[u8]) -> Vec<StreamCaps> {
    match sdp_types::Session::parse(body) {
        Ok(session) => session.medias.iter().filter_map(media_caps).collect(),
        Err(_) => Vec::new(),
    }
}

/// Session-level `a=control:` of an SDP, if any.
pub fn session_control(body: &[u8]) -> Option<String> {
    let session = sdp_types::Session::parse(body).ok()?;
    session
        .get_first_attribute_value("control")
        .flatten()
        .map(|c| c.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDP: &[u8] = b"v=0\r\n\
o=- 1188340656180883 1 IN IP4 127.0.0.1\r\n\
s=Session streamed with GStreamer\r\n\
t=0 0\r\n\
a=control:*\r\n\
m=video 0 RTP/AVP 96\r\n\
c=IN IP4 0.0.0.0\r\n\
a=rtpmap:96 H264/90000\r\n\
a=fmtp:96 packetization-mode=1;profile-level-id=42c00d;sprop-parameter-sets=Z0LADdkBQfsBEAAAAwAQAAADAyDxQqSA,aMuMsg==\r\n\
a=control:stream=0\r\n\
m=audio 0 RTP/AVP 97\r\n\
a=rtpmap:97 MPEG4-GENERIC/48000/2\r\n\
a=fmtp:97 streamtype=5;profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3;config=1190\r\n\
a=control:stream=1\r\n\
m=audio 0 RTP/AVP 8\r\n\
a=control:trackID=3\r\n";

    #[test]
    fn h264_sprop() {
        let streams = parse_sdp(SDP);
        assert_eq!(streams.len(), 3);
        let v = &streams[0];
        assert_eq!(v.media, "video");
        assert_eq!(v.payload, 96);
        assert_eq!(v.clock_rate, 90000);
        assert_eq!(v.encoding_name, "H264");
        assert_eq!(v.control.as_deref(), Some("stream=0"));
        let get = |k: &str| v.fmtp.iter().find(|(n, _)| n == k).map(|(_, x)| x.as_str());
        assert_eq!(
            get("sprop-parameter-sets"),
            Some("Z0LADdkBQfsBEAAAAwAQAAADAyDxQqSA,aMuMsg==")
        );
        assert_eq!(get("packetization-mode"), Some("1"));
        assert_eq!(get("profile-level-id"), Some("42c00d"));
    }

    #[test]
    fn aac_config() {
        let a = &parse_sdp(SDP)[1];
        assert_eq!(a.encoding_name, "MPEG4-GENERIC");
        assert_eq!(a.clock_rate, 48000);
        assert_eq!(a.encoding_params.as_deref(), Some("2"));
        assert!(a.fmtp.contains(&("config".to_string(), "1190".to_string())));
        assert!(
            a.fmtp
                .contains(&("mode".to_string(), "AAC-hbr".to_string()))
        );
    }

    #[test]
    fn pcma_static() {
        let a = &parse_sdp(SDP)[2];
        assert_eq!(a.payload, 8);
        assert_eq!(a.encoding_name, "PCMA");
        assert_eq!(a.clock_rate, 8000);
        assert_eq!(a.control.as_deref(), Some("trackID=3"));
        assert_eq!(session_control(SDP).as_deref(), Some("*"));
    }

    #[test]
    fn bad_sdp_is_empty() {
        assert!(parse_sdp(b"not an sdp").is_empty());
        assert!(parse_sdp(b"").is_empty());
    }
}

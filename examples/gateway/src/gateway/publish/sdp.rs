//! What an RTSP publisher announces: the SDP body of its ANNOUNCE, checked (GStreamer-free)
//! before anything is built from it. Bounded: at most [`MAX_SDP_BYTES`] and [`MAX_MEDIA`]
//! media sections; each section is mapped to the codec of its first payload type (H.264,
//! H.265, AAC as MPEG4-GENERIC or MP4A-LATM, G.711), the first video and the first audio
//! of a known codec are taken, every other section is received and dropped (gst-rtsp-server
//! needs one receiver per announced section). An SDP without a stream we take is refused.

/// Largest SDP taken (ffmpeg's for H.264 + AAC is about 500 bytes).
pub const MAX_SDP_BYTES: usize = 16 * 1024;
/// Media sections at most.
pub const MAX_MEDIA: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    H264,
    H265,
    /// AAC, RFC 3640 (`MPEG4-GENERIC`).
    AacGeneric,
    /// AAC, RFC 3016 (`MP4A-LATM`).
    AacLatm,
    Pcma,
    Pcmu,
}

impl Codec {
    /// The RTP depayloader of the codec.
    pub fn depayloader(self) -> &'static str {
        match self {
            Codec::H264 => "rtph264depay",
            Codec::H265 => "rtph265depay",
            Codec::AacGeneric => "rtpmp4gdepay",
            Codec::AacLatm => "rtpmp4adepay",
            Codec::Pcma => "rtppcmadepay",
            Codec::Pcmu => "rtppcmudepay",
        }
    }

    fn is_video(self) -> bool {
        matches!(self, Codec::H264 | Codec::H265)
    }

    fn from_encoding(name: &str) -> Option<Codec> {
        Some(match name.to_ascii_uppercase().as_str() {
            "H264" => Codec::H264,
            "H265" => Codec::H265,
            "MPEG4-GENERIC" => Codec::AacGeneric,
            "MP4A-LATM" => Codec::AacLatm,
            "PCMA" => Codec::Pcma,
            "PCMU" => Codec::Pcmu,
            _ => return None,
        })
    }
}

/// Why an announced SDP is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdpRefusal {
    TooLarge(usize),
    TooManyMedia(usize),
    Malformed(String),
    /// No H.264/H.265/AAC/G.711 stream in it.
    NothingUsable,
}

impl std::fmt::Display for SdpRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SdpRefusal::TooLarge(n) => write!(f, "SDP of {n} bytes (at most {MAX_SDP_BYTES})"),
            SdpRefusal::TooManyMedia(n) => {
                write!(f, "SDP with {n} media sections (at most {MAX_MEDIA})")
            }
            SdpRefusal::Malformed(e) => write!(f, "malformed SDP: {e}"),
            SdpRefusal::NothingUsable => {
                f.write_str("no H.264, H.265, AAC or G.711 stream in the SDP")
            }
        }
    }
}

/// The announced media sections in order: the codec of each one taken, None for the ones
/// received and dropped.
pub fn announced_streams(body: &[u8]) -> Result<Vec<Option<Codec>>, SdpRefusal> {
    if body.len() > MAX_SDP_BYTES {
        return Err(SdpRefusal::TooLarge(body.len()));
    }
    // Counted before parsing: a hostile SDP costs no more than a scan.
    let sections = body
        .split(|b| *b == b'\n')
        .filter(|l| l.starts_with(b"m="))
        .count();
    if sections > MAX_MEDIA {
        return Err(SdpRefusal::TooManyMedia(sections));
    }
    let session =
        sdp_types::Session::parse(body).map_err(|e| SdpRefusal::Malformed(e.to_string()))?;
    let (mut video, mut audio) = (false, false);
    let mut out = Vec::with_capacity(session.medias.len());
    for m in &session.medias {
        let codec = media_codec(m).filter(|c| {
            let taken = if c.is_video() { &mut video } else { &mut audio };
            !std::mem::replace(taken, true)
        });
        out.push(codec);
    }
    if out.iter().all(Option::is_none) {
        return Err(SdpRefusal::NothingUsable);
    }
    Ok(out)
}

/// The codec of a media section's first payload type (RTP/AVP or RTP/AVPF only).
fn media_codec(m: &sdp_types::Media) -> Option<Codec> {
    if !matches!(m.proto.as_str(), "RTP/AVP" | "RTP/AVPF") {
        return None;
    }
    let pt: u8 = m.fmt.split_whitespace().next()?.parse().ok()?;
    let rtpmap = m.get_attribute_values("rtpmap").flatten().find_map(|v| {
        let (p, rest) = v.split_once(' ')?;
        (p.parse::<u8>().ok()? == pt).then_some(rest.trim())
    });
    let codec = match (pt, rtpmap) {
        (_, Some(map)) => Codec::from_encoding(map.split('/').next().unwrap_or_default())?,
        (0, None) => Codec::Pcmu,
        (8, None) => Codec::Pcma,
        _ => return None,
    };
    let kind_ok = match m.media.as_str() {
        "video" => codec.is_video(),
        "audio" => !codec.is_video(),
        _ => false,
    };
    kind_ok.then_some(codec)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What ffmpeg 5 announces for H.264 + AAC.
    const FFMPEG: &str = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=No Name\r\nc=IN IP4 127.0.0.1\r\n\
        t=0 0\r\na=tool:libavformat 59.27.100\r\nm=video 0 RTP/AVP 96\r\nb=AS:200\r\n\
        a=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1; \
        sprop-parameter-sets=Z2QAFazZQUH7ARAAAAMAEAAAAwMg8UKZYA==,aOvjyyLA; profile-level-id=640015\r\n\
        a=control:streamid=0\r\nm=audio 0 RTP/AVP 97\r\nb=AS:64\r\n\
        a=rtpmap:97 MPEG4-GENERIC/44100/1\r\na=fmtp:97 profile-level-id=1;mode=AAC-hbr;\
        sizelength=13;indexlength=3;indexdeltalength=3; config=1208\r\na=control:streamid=1\r\n";

    #[test]
    fn ffmpeg_h264_and_aac() {
        assert_eq!(
            announced_streams(FFMPEG.as_bytes()),
            Ok(vec![Some(Codec::H264), Some(Codec::AacGeneric)])
        );
    }

    #[test]
    fn static_g711_and_extra_sections() {
        let sdp = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
            m=audio 0 RTP/AVP 8\r\n\
            m=audio 0 RTP/AVP 0\r\n\
            m=application 0 RTP/AVP 107\r\na=rtpmap:107 vnd.onvif.metadata/90000\r\n\
            m=video 0 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n\
            m=video 0 RTP/AVP 98\r\na=rtpmap:98 h265/90000\r\n";
        assert_eq!(
            announced_streams(sdp.as_bytes()),
            Ok(vec![Some(Codec::Pcma), None, None, None, Some(Codec::H265)])
        );
    }

    #[test]
    fn hostile_sdps_are_refused() {
        let mut many = String::from("v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n");
        for _ in 0..100 {
            many.push_str("m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n");
        }
        assert_eq!(
            announced_streams(many.as_bytes()),
            Err(SdpRefusal::TooManyMedia(100))
        );
        assert_eq!(
            announced_streams(&vec![b'a'; MAX_SDP_BYTES + 1]),
            Err(SdpRefusal::TooLarge(MAX_SDP_BYTES + 1))
        );
        for garbage in [
            &b""[..],
            b"\xff\xfe\x00garbage",
            b"v=0\r\nm=video 0 RTP/AVP 96\r\n",
            b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video x RTP/AVP 96\r\n",
        ] {
            assert!(announced_streams(garbage).is_err(), "{garbage:?}");
        }
        // Parsed, but nothing we take: VP8, SRTP, a payload type past 255, no rtpmap.
        let nothing = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
            m=video 0 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n\
            m=video 0 RTP/SAVP 96\r\na=rtpmap:96 H264/90000\r\n\
            m=video 0 RTP/AVP 300\r\na=rtpmap:300 H264/90000\r\n\
            m=audio 0 RTP/AVP 97\r\n";
        assert_eq!(
            announced_streams(nothing.as_bytes()),
            Err(SdpRefusal::NothingUsable)
        );
        // Every refusal says why.
        assert!(!SdpRefusal::NothingUsable.to_string().is_empty());
    }
}

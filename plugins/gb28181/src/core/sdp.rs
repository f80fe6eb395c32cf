//! GB/T 28181 SDP: INVITE offers for Play / Playback / Download over UDP, TCP passive and TCP
//! active, and parsing of offers and answers.
//!
//! Parsing uses `sdp-types`. GB28181 adds `y=` (SSRC) and `f=` (media format) lines, which are
//! not RFC 4566 lines: sdp-types would silently drop them, so they are taken out here first and
//! the remaining text is handed to sdp-types. Offers are written directly (their layout is
//! fixed by the standard and cameras are picky about line order).

use std::fmt::Write;
use std::net::SocketAddr;

use super::addr::{parse_ip, sdp_addrtype};

/// Largest SDP body accepted.
pub const MAX_SDP: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    Play,
    Playback,
    Download,
}

impl SessionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionKind::Play => "Play",
            SessionKind::Playback => "Playback",
            SessionKind::Download => "Download",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "play" => Some(SessionKind::Play),
            "playback" => Some(SessionKind::Playback),
            "download" => Some(SessionKind::Download),
            _ => None,
        }
    }
}

/// Media transport of the offer (platform's view).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaTransport {
    Udp,
    /// The offerer listens (`a=setup:passive`).
    TcpPassive,
    /// The offerer connects (`a=setup:active`).
    TcpActive,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdpError {
    TooLarge,
    NotUtf8,
    Syntax(String),
    NoMedia,
}

impl std::fmt::Display for SdpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SdpError::TooLarge => f.write_str("SDP too large"),
            SdpError::NotUtf8 => f.write_str("SDP is not UTF-8"),
            SdpError::Syntax(e) => write!(f, "bad SDP: {e}"),
            SdpError::NoMedia => f.write_str("SDP has no media line"),
        }
    }
}

impl std::error::Error for SdpError {}

/// An INVITE offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub kind: SessionKind,
    /// `o=` user: the platform ID.
    pub origin_id: String,
    /// Media receive address.
    pub ip: String,
    pub port: u16,
    pub transport: MediaTransport,
    /// `y=` (10 digits).
    pub ssrc: String,
    /// Channel ID for `u=<channel>:0` (Playback/Download).
    pub channel_id: String,
    /// Unix seconds, Playback/Download; 0 0 for Play.
    pub start: u64,
    pub end: u64,
    /// `a=downloadspeed:` for Download.
    pub download_speed: Option<u32>,
    /// `f=` line, e.g. `v/2/5/25/1/4000a/1/8/1` (None: omitted).
    pub format: Option<String>,
}

impl Offer {
    pub fn to_sdp(&self) -> String {
        let mut s = String::with_capacity(320);
        let _ = write!(
            s,
            "v=0\r\no={} 0 0 IN {} {}\r\ns={}\r\n",
            self.origin_id,
            sdp_addrtype(&self.ip),
            self.ip,
            self.kind.as_str()
        );
        if self.kind != SessionKind::Play {
            let _ = write!(s, "u={}:0\r\n", self.channel_id);
        }
        let _ = write!(s, "c=IN {} {}\r\n", sdp_addrtype(&self.ip), self.ip);
        let (start, end) = match self.kind {
            SessionKind::Play => (0, 0),
            _ => (self.start, self.end),
        };
        let _ = write!(s, "t={start} {end}\r\n");
        let proto = match self.transport {
            MediaTransport::Udp => "RTP/AVP",
            _ => "TCP/RTP/AVP",
        };
        let _ = write!(s, "m=video {} {proto} 96 97 98\r\n", self.port);
        s.push_str("a=recvonly\r\na=rtpmap:96 PS/90000\r\na=rtpmap:97 MPEG4/90000\r\na=rtpmap:98 H264/90000\r\n");
        match self.transport {
            MediaTransport::Udp => {}
            MediaTransport::TcpPassive => s.push_str("a=setup:passive\r\na=connection:new\r\n"),
            MediaTransport::TcpActive => s.push_str("a=setup:active\r\na=connection:new\r\n"),
        }
        if let (SessionKind::Download, Some(speed)) = (self.kind, self.download_speed) {
            let _ = write!(s, "a=downloadspeed:{speed}\r\n");
        }
        let _ = write!(s, "y={}\r\n", self.ssrc);
        if let Some(f) = &self.format {
            let _ = write!(s, "f={f}\r\n");
        }
        s
    }
}

/// What matters in a GB28181 SDP (offer or answer), first video (else first) media only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    pub session_name: String,
    pub kind: Option<SessionKind>,
    pub origin_user: Option<String>,
    pub origin_ip: String,
    /// Media-level `c=` if present, else session-level.
    pub connection_ip: Option<String>,
    pub uri: Option<String>,
    pub start: u64,
    pub end: u64,
    pub media: String,
    pub port: u16,
    pub proto: String,
    pub payload_types: Vec<u8>,
    /// (payload type, encoding name, clock rate)
    pub rtpmaps: Vec<(u8, String, u32)>,
    /// sendonly / recvonly / sendrecv / inactive
    pub direction: Option<String>,
    /// `a=setup:` value (active / passive / actpass)
    pub setup: Option<String>,
    pub connection_attr: Option<String>,
    pub download_speed: Option<u32>,
    pub file_size: Option<u64>,
    /// `y=`
    pub ssrc: Option<String>,
    /// `f=`
    pub format: Option<String>,
}

impl SessionDescription {
    pub fn is_tcp(&self) -> bool {
        self.proto.to_ascii_uppercase().starts_with("TCP")
    }

    /// The transport seen from this SDP's author.
    pub fn transport(&self) -> MediaTransport {
        if !self.is_tcp() {
            return MediaTransport::Udp;
        }
        match self.setup.as_deref() {
            Some(s) if s.eq_ignore_ascii_case("active") => MediaTransport::TcpActive,
            _ => MediaTransport::TcpPassive,
        }
    }

    /// The media address: media-level `c=`, else session-level, else `o=`; IPv4 or IPv6
    /// (`IN IP6`, brackets tolerated). None when it is not an IP literal.
    pub fn media_addr(&self) -> Option<SocketAddr> {
        let ip = self.connection_ip.as_deref().unwrap_or(&self.origin_ip);
        Some(SocketAddr::new(parse_ip(ip)?, self.port))
    }

    /// Payload type mapped to PS/90000, if any.
    pub fn ps_payload_type(&self) -> Option<u8> {
        self.rtpmaps
            .iter()
            .find(|(_, name, _)| name.eq_ignore_ascii_case("PS"))
            .map(|(pt, _, _)| *pt)
    }
}

pub fn parse(body: &[u8]) -> Result<SessionDescription, SdpError> {
    if body.len() > MAX_SDP {
        return Err(SdpError::TooLarge);
    }
    let text = std::str::from_utf8(body).map_err(|_| SdpError::NotUtf8)?;
    let mut ssrc = None;
    let mut format = None;
    let mut rest = String::with_capacity(text.len());
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(y) = line.strip_prefix("y=") {
            ssrc = Some(y.trim().to_string());
        } else if let Some(f) = line.strip_prefix("f=") {
            format = Some(f.trim().to_string());
        } else if !line.trim().is_empty() {
            rest.push_str(line);
            rest.push_str("\r\n");
        }
    }
    let session =
        sdp_types::Session::parse(rest.as_bytes()).map_err(|e| SdpError::Syntax(e.to_string()))?;
    let media = session
        .medias
        .iter()
        .find(|m| m.media == "video")
        .or_else(|| session.medias.first())
        .ok_or(SdpError::NoMedia)?;
    let attr = |name: &str| {
        media
            .attributes
            .iter()
            .chain(session.attributes.iter())
            .find(|a| a.attribute.eq_ignore_ascii_case(name))
    };
    let attr_value = |name: &str| {
        attr(name)
            .and_then(|a| a.value.as_ref())
            .map(|v| v.trim().to_string())
    };
    let direction = ["sendonly", "recvonly", "sendrecv", "inactive"]
        .iter()
        .find(|d| attr(d).is_some())
        .map(|d| d.to_string());
    let rtpmaps = media
        .attributes
        .iter()
        .filter(|a| a.attribute.eq_ignore_ascii_case("rtpmap"))
        .filter_map(|a| {
            let v = a.value.as_deref()?;
            let (pt, enc) = v.trim().split_once(char::is_whitespace)?;
            let mut enc = enc.trim().split('/');
            let name = enc.next()?.to_string();
            let clock = enc.next().and_then(|c| c.parse().ok()).unwrap_or(0);
            Some((pt.parse().ok()?, name, clock))
        })
        .collect();
    let connection_ip = media
        .connections
        .first()
        .or(session.connection.as_ref())
        .map(|c| c.connection_address.clone());
    let (start, end) = session
        .times
        .first()
        .map(|t| (t.start_time, t.stop_time))
        .unwrap_or((0, 0));
    Ok(SessionDescription {
        kind: SessionKind::parse(&session.session_name),
        session_name: session.session_name.clone(),
        origin_user: session.origin.username.clone(),
        origin_ip: session.origin.unicast_address.clone(),
        connection_ip,
        uri: session.uri.clone(),
        start,
        end,
        media: media.media.clone(),
        port: media.port,
        proto: media.proto.clone(),
        payload_types: media
            .fmt
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect(),
        rtpmaps,
        direction,
        setup: attr_value("setup"),
        connection_attr: attr_value("connection"),
        download_speed: attr_value("downloadspeed").and_then(|v| v.parse().ok()),
        file_size: attr_value("filesize").and_then(|v| v.parse().ok()),
        ssrc,
        format,
    })
}

/// A device's answer to `offer` (device side, or tests): `sendonly`, its media address,
/// TCP setup role mirrored.
pub fn build_answer(
    offer: &SessionDescription,
    device_id: &str,
    ip: &str,
    port: u16,
    ssrc: &str,
) -> String {
    let mut s = String::with_capacity(256);
    let pt = offer.ps_payload_type().unwrap_or(96);
    let _ = write!(
        s,
        "v=0\r\no={device_id} 0 0 IN {at} {ip}\r\ns={}\r\nc=IN {at} {ip}\r\nt={} {}\r\nm=video {port} {} {pt}\r\na=sendonly\r\na=rtpmap:{pt} PS/90000\r\n",
        offer.session_name,
        offer.start,
        offer.end,
        offer.proto,
        at = sdp_addrtype(ip)
    );
    if offer.is_tcp() {
        let role = match offer.transport() {
            MediaTransport::TcpActive => "passive",
            _ => "active",
        };
        let _ = write!(s, "a=setup:{role}\r\na=connection:new\r\n");
    }
    let _ = write!(s, "y={ssrc}\r\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(kind: SessionKind, transport: MediaTransport) -> Offer {
        Offer {
            kind,
            origin_id: "34020000002000000001".into(),
            ip: "192.168.1.2".into(),
            port: 30000,
            transport,
            ssrc: "1200000001".into(),
            channel_id: "34020000001310000001".into(),
            start: 1_600_000_000,
            end: 1_600_003_600,
            download_speed: Some(4),
            format: Some("v/2/5/25/1/4000a/1/8/1".into()),
        }
    }

    #[test]
    fn offers_round_trip() {
        for kind in [
            SessionKind::Play,
            SessionKind::Playback,
            SessionKind::Download,
        ] {
            for t in [
                MediaTransport::Udp,
                MediaTransport::TcpPassive,
                MediaTransport::TcpActive,
            ] {
                let o = offer(kind, t);
                let p = parse(o.to_sdp().as_bytes()).unwrap();
                assert_eq!(p.kind, Some(kind));
                assert_eq!(p.transport(), t);
                assert_eq!(p.port, 30000);
                assert_eq!(p.ssrc.as_deref(), Some("1200000001"));
                assert_eq!(p.format.as_deref(), o.format.as_deref());
                assert_eq!(p.ps_payload_type(), Some(96));
                assert_eq!(p.direction.as_deref(), Some("recvonly"));
                assert_eq!(p.connection_ip.as_deref(), Some("192.168.1.2"));
                if kind == SessionKind::Play {
                    assert_eq!((p.start, p.end), (0, 0));
                    assert_eq!(p.uri, None);
                } else {
                    assert_eq!((p.start, p.end), (1_600_000_000, 1_600_003_600));
                    assert_eq!(p.uri.as_deref(), Some("34020000001310000001:0"));
                }
                assert_eq!(
                    p.download_speed,
                    (kind == SessionKind::Download).then_some(4)
                );
                if t != MediaTransport::Udp {
                    assert_eq!(p.connection_attr.as_deref(), Some("new"));
                }
                let a = build_answer(&p, "dev", "10.0.0.1", 15060, "1200000001");
                let pa = parse(a.as_bytes()).unwrap();
                assert_eq!(pa.direction.as_deref(), Some("sendonly"));
                assert_eq!(pa.port, 15060);
                if t == MediaTransport::TcpPassive {
                    assert_eq!(pa.transport(), MediaTransport::TcpActive);
                }
            }
        }
    }

    #[test]
    fn ipv6_offers_and_answers_round_trip() {
        for t in [
            MediaTransport::Udp,
            MediaTransport::TcpPassive,
            MediaTransport::TcpActive,
        ] {
            let mut o = offer(SessionKind::Play, t);
            o.ip = "::1".into();
            let text = o.to_sdp();
            assert!(text.contains("\r\nc=IN IP6 ::1\r\n"), "{text}");
            assert!(text.contains("\r\no=34020000002000000001 0 0 IN IP6 ::1\r\n"));
            let p = parse(text.as_bytes()).unwrap();
            assert_eq!(p.connection_ip.as_deref(), Some("::1"));
            assert_eq!(p.media_addr(), Some("[::1]:30000".parse().unwrap()));
            let a = build_answer(&p, "dev", "fd00::5", 15060, "0200000001");
            assert!(a.contains("\r\nc=IN IP6 fd00::5\r\n"), "{a}");
            assert!(a.contains("IN IP6 fd00::5\r\ns=Play"), "{a}");
            let pa = parse(a.as_bytes()).unwrap();
            assert_eq!(pa.media_addr(), Some("[fd00::5]:15060".parse().unwrap()));
        }
        // What devices send: session-level c= only, o= IP4 with media c= IP6, brackets.
        let answer = b"v=0\r\no=dev 0 0 IN IP4 10.0.0.1\r\ns=Play\r\nt=0 0\r\nm=video 9000 RTP/AVP 96\r\nc=IN IP6 [2001:db8::7]\r\na=sendonly\r\ny=0100000001\r\n";
        let p = parse(answer).unwrap();
        assert_eq!(p.media_addr(), Some("[2001:db8::7]:9000".parse().unwrap()));
        let origin_only = b"v=0\r\no=dev 0 0 IN IP6 2001:db8::8\r\ns=Play\r\nt=0 0\r\nm=video 9002 RTP/AVP 96\r\n";
        let p = parse(origin_only).unwrap();
        assert_eq!(p.media_addr(), Some("[2001:db8::8]:9002".parse().unwrap()));
        let v4 = parse(
            offer(SessionKind::Play, MediaTransport::Udp)
                .to_sdp()
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(v4.media_addr(), Some("192.168.1.2:30000".parse().unwrap()));
        let name = b"v=0\r\no=dev 0 0 IN IP4 cam.local\r\ns=Play\r\nc=IN IP4 cam.local\r\nt=0 0\r\nm=video 9 RTP/AVP 96\r\n";
        assert_eq!(parse(name).unwrap().media_addr(), None);
    }

    #[test]
    fn bad_sdp() {
        for bad in [
            &b""[..],
            b"v=0\r\n",
            b"v=0\r\ns=Play\r\nm=video notaport RTP/AVP 96\r\n",
            b"\xff\xfe",
            b"m=video 1 RTP/AVP 96\r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse(&vec![b'a'; MAX_SDP + 1]), Err(SdpError::TooLarge));
    }
}

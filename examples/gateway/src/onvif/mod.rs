//! ONVIF: finding cameras (WS-Discovery `Probe` / `ProbeMatches`) and their stream URIs
//! (media service `GetProfiles` / `GetStreamUri` with a WS-Security UsernameToken,
//! PasswordDigest = base64(SHA-1(nonce + created + password))). This module is the
//! GStreamer-free part: the messages we send and the parsers of what devices answer, time and
//! randomness passed in. What devices send is untrusted: parsed by the bounded XML reader the
//! GB28181 side uses ([`gstgb28181::core::manscdp::parse_xml`]: size, depth and element count
//! capped) and cut to [`MAX_ITEMS`] items of at most [`MAX_FIELD`] bytes. The network side is
//! [`client`].

pub mod client;

use base64::Engine as _;
use gstgb28181::core::manscdp::{Element, parse_xml};
use sha1::Digest as _;

/// Where WS-Discovery probes go (IPv4).
pub const DISCOVERY_ADDR: &str = "239.255.255.250:3702";
/// A message from a device (a UDP ProbeMatches, a SOAP answer) longer than this is refused.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Items taken from one answer (addresses, scopes, profiles), and devices from one probe.
pub const MAX_ITEMS: usize = 32;
/// Longest address, scope, token or URI taken.
pub const MAX_FIELD: usize = 1024;

/// One device's answer to a probe.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProbeMatch {
    /// Its service addresses (`http://ip/onvif/device_service`).
    pub xaddrs: Vec<String>,
    pub scopes: Vec<String>,
}

/// A `urn:uuid:` from 16 random bytes (RFC 4122 version 4).
pub fn uuid(mut b: [u8; 16]) -> String {
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The WS-Discovery Probe for network video transmitters.
pub fn probe_message(message_id: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope" xmlns:w="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery" xmlns:dn="http://www.onvif.org/ver10/network/wsdl"><e:Header><w:MessageID>{message_id}</w:MessageID><w:To e:mustUnderstand="true">urn:schemas-xmlsoap-org:ws:2005:04:discovery</w:To><w:Action e:mustUnderstand="true">http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe</w:Action></e:Header><e:Body><d:Probe><d:Types>dn:NetworkVideoTransmitter</d:Types></d:Probe></e:Body></e:Envelope>"#
    )
}

/// Every element named `name` (local name, any namespace) under `el`, depth first, at most
/// [`MAX_ITEMS`].
fn find_all<'a>(el: &'a Element, name: &str, out: &mut Vec<&'a Element>) {
    for c in &el.children {
        if out.len() >= MAX_ITEMS {
            return;
        }
        if c.name.eq_ignore_ascii_case(name) {
            out.push(c);
        }
        find_all(c, name, out);
    }
}

fn first<'a>(el: &'a Element, name: &str) -> Option<&'a Element> {
    let mut v = Vec::new();
    find_all(el, name, &mut v);
    v.into_iter().next()
}

/// Whitespace-separated items of a text, bounded.
fn words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .filter(|w| w.len() <= MAX_FIELD)
        .take(MAX_ITEMS)
        .map(str::to_string)
        .collect()
}

/// A device's message as an element tree, bounded.
fn parse(message: &[u8]) -> Result<Element, String> {
    if message.len() > MAX_MESSAGE {
        return Err(format!(
            "answer of {} bytes (at most {MAX_MESSAGE})",
            message.len()
        ));
    }
    let text = std::str::from_utf8(message).map_err(|_| "answer is not UTF-8".to_string())?;
    let root = parse_xml(text).map_err(|e| format!("bad XML: {e:?}"))?;
    if let Some(fault) = first(&root, "Fault") {
        let reason = first(fault, "Text")
            .or_else(|| first(fault, "Subcode"))
            .map(|t| t.text.trim().chars().take(200).collect::<String>())
            .unwrap_or_default();
        return Err(format!("SOAP fault: {}", reason.escape_debug()));
    }
    Ok(root)
}

/// The devices of a ProbeMatches message.
pub fn parse_probe_matches(message: &[u8]) -> Result<Vec<ProbeMatch>, String> {
    let root = parse(message)?;
    let mut matches = Vec::new();
    find_all(&root, "ProbeMatch", &mut matches);
    if matches.is_empty() {
        return Err("no ProbeMatch".into());
    }
    Ok(matches
        .into_iter()
        .map(|m| ProbeMatch {
            xaddrs: first(m, "XAddrs").map_or_else(Vec::new, |x| words(&x.text)),
            scopes: first(m, "Scopes").map_or_else(Vec::new, |x| words(&x.text)),
        })
        .collect())
}

/// WS-Security PasswordDigest: base64(SHA-1(nonce + created + password)).
pub fn password_digest(nonce: &[u8], created: &str, password: &str) -> String {
    let mut h = sha1::Sha1::new();
    h.update(nonce);
    h.update(created.as_bytes());
    h.update(password.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// `yyyy-MM-ddTHH:mm:ssZ` of Unix seconds.
pub fn created(unix_s: u64) -> String {
    let (y, m, d, h, mi, s) = gstgb28181::core::registrar::civil_from_unix(unix_s as i64);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// XML text escaping (user names and tokens go into our requests).
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The SOAP envelope of a media-service request, with a UsernameToken when `user` is set.
pub fn soap_request(
    body: &str,
    user: &str,
    password: &str,
    nonce: &[u8; 16],
    created: &str,
) -> String {
    let header = if user.is_empty() {
        String::new()
    } else {
        format!(
            r#"<s:Header><wsse:Security xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd" xmlns:wsu="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"><wsse:UsernameToken><wsse:Username>{}</wsse:Username><wsse:Password Type="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest">{}</wsse:Password><wsse:Nonce EncodingType="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary">{}</wsse:Nonce><wsu:Created>{created}</wsu:Created></wsse:UsernameToken></wsse:Security></s:Header>"#,
            esc(user),
            password_digest(nonce, created, password),
            base64::engine::general_purpose::STANDARD.encode(nonce),
        )
    };
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:trt="http://www.onvif.org/ver10/media/wsdl" xmlns:tt="http://www.onvif.org/ver10/schema">{header}<s:Body>{body}</s:Body></s:Envelope>"#
    )
}

pub fn get_profiles_body() -> String {
    "<trt:GetProfiles/>".into()
}

pub fn get_stream_uri_body(profile_token: &str) -> String {
    format!(
        "<trt:GetStreamUri><trt:StreamSetup><tt:Stream>RTP-Unicast</tt:Stream><tt:Transport>\
         <tt:Protocol>RTSP</tt:Protocol></tt:Transport></trt:StreamSetup>\
         <trt:ProfileToken>{}</trt:ProfileToken></trt:GetStreamUri>",
        esc(profile_token)
    )
}

/// The profile tokens of a GetProfilesResponse.
pub fn parse_profiles(message: &[u8]) -> Result<Vec<String>, String> {
    let root = parse(message)?;
    let mut profiles = Vec::new();
    find_all(&root, "Profiles", &mut profiles);
    let tokens: Vec<String> = profiles
        .iter()
        .filter_map(|p| p.attr("token"))
        .filter(|t| !t.is_empty() && t.len() <= MAX_FIELD)
        .map(str::to_string)
        .collect();
    if tokens.is_empty() {
        return Err("no profile".into());
    }
    Ok(tokens)
}

/// The URI of a GetStreamUriResponse.
pub fn parse_stream_uri(message: &[u8]) -> Result<String, String> {
    let root = parse(message)?;
    let uri = first(&root, "MediaUri")
        .and_then(|m| first(m, "Uri"))
        .map(|u| u.text.trim().to_string())
        .ok_or("no MediaUri")?;
    if uri.is_empty() || uri.len() > MAX_FIELD || uri.chars().any(char::is_control) {
        return Err("bad MediaUri".into());
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MATCHES: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://www.w3.org/2003/05/soap-envelope" xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery"><SOAP-ENV:Body><d:ProbeMatches><d:ProbeMatch><d:Types>dn:NetworkVideoTransmitter</d:Types><d:Scopes>onvif://www.onvif.org/name/Cam onvif://www.onvif.org/hardware/X1</d:Scopes><d:XAddrs>http://192.168.1.64/onvif/device_service http://[fe80::1]/onvif/device_service</d:XAddrs></d:ProbeMatch></d:ProbeMatches></SOAP-ENV:Body></SOAP-ENV:Envelope>"#;

    #[test]
    fn probe_matches() {
        let m = parse_probe_matches(MATCHES.as_bytes()).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].xaddrs[0], "http://192.168.1.64/onvif/device_service");
        assert_eq!(m[0].scopes.len(), 2);
        let probe = probe_message(&uuid([7; 16]));
        assert!(probe.contains("urn:uuid:07070707-0707-4707-8707-070707070707"));
        assert!(parse_xml(&probe).is_ok());
    }

    /// The WS-Security example values (ONVIF Application Programmer's Guide).
    #[test]
    fn password_digest_of_the_guide() {
        let nonce = base64::engine::general_purpose::STANDARD
            .decode("LKqI6G/AikKCQrN0zqZFlg==")
            .unwrap();
        assert_eq!(
            password_digest(&nonce, "2010-09-16T07:50:45Z", "userpassword"),
            "tuOSpGlFlIXsozq4HFNeeGeFLEI="
        );
        assert_eq!(created(1_284_623_445), "2010-09-16T07:50:45Z");
    }

    #[test]
    fn profiles_and_uri() {
        let p = r#"<s:Envelope xmlns:s="x" xmlns:trt="y" xmlns:tt="z"><s:Body><trt:GetProfilesResponse><trt:Profiles token="main" fixed="true"><tt:Name>a</tt:Name></trt:Profiles><trt:Profiles token="sub"/></trt:GetProfilesResponse></s:Body></s:Envelope>"#;
        assert_eq!(parse_profiles(p.as_bytes()).unwrap(), ["main", "sub"]);
        let u = r#"<s:Envelope xmlns:s="x"><s:Body><GetStreamUriResponse><MediaUri><Uri>rtsp://10.0.0.5:554/h264 </Uri></MediaUri></GetStreamUriResponse></s:Body></s:Envelope>"#;
        assert_eq!(
            parse_stream_uri(u.as_bytes()).unwrap(),
            "rtsp://10.0.0.5:554/h264"
        );
        let fault = r#"<s:Envelope xmlns:s="x"><s:Body><s:Fault><s:Code><s:Value>s:Sender</s:Value></s:Code><s:Reason><s:Text>Sender not Authorized</s:Text></s:Reason></s:Fault></s:Body></s:Envelope>"#;
        assert_eq!(
            parse_profiles(fault.as_bytes()).unwrap_err(),
            "SOAP fault: Sender not Authorized"
        );
        let req = soap_request(
            &get_stream_uri_body("a<b"),
            "u&1",
            "pw",
            &[1; 16],
            "2024-01-01T00:00:00Z",
        );
        assert!(req.contains("a&lt;b") && req.contains("u&amp;1") && !req.contains(">pw<"));
        assert!(parse_xml(&req).is_ok());
    }

    /// Hostile answers: too large, too deep, too many items, not UTF-8, garbage: an error or a
    /// bounded result, never a panic.
    #[test]
    fn hostile_answers_are_bounded() {
        let big = format!("<a>{}</a>", "x".repeat(MAX_MESSAGE));
        assert!(
            parse_probe_matches(big.as_bytes())
                .unwrap_err()
                .contains("bytes")
        );
        let deep = format!("{}{}", "<a>".repeat(5000), "</a>".repeat(5000));
        assert!(parse_profiles(deep.as_bytes()).is_err());
        let many = format!(
            "<e><ProbeMatch><XAddrs>{}</XAddrs></ProbeMatch>{}</e>",
            "http://h/x ".repeat(1000),
            "<ProbeMatch/>".repeat(1000)
        );
        let m = parse_probe_matches(many.as_bytes()).unwrap();
        assert!(m.len() <= MAX_ITEMS && m[0].xaddrs.len() <= MAX_ITEMS);
        assert!(parse_stream_uri(b"\xff\xfe").is_err());
        assert!(parse_stream_uri(b"<a><MediaUri><Uri>x\x01y</Uri></MediaUri></a>").is_err());
        let mut x: u64 = 0x1234_5678_9abc_def1;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 200) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|i| b"<>/=\" aProbeMatchXAddrsUri&;#x"[(x as usize >> (i % 50)) % 29])
                .collect();
            let _ = parse_probe_matches(&bytes);
            let _ = parse_profiles(&bytes);
            let _ = parse_stream_uri(&bytes);
        }
    }
}

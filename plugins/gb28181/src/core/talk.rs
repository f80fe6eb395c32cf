//! Voice broadcast (GB/T 28181-2016 §9.12) without I/O: the platform's Broadcast notification,
//! the device's answer, the device's INVITE offer for the audio it wants to receive, and the
//! platform's answer.
//!
//! The flow: platform → device MESSAGE `<Notify><CmdType>Broadcast</CmdType>` naming the
//! platform's audio source (SourceID) and the device's audio output (TargetID); the device
//! answers 200 and a `<Response>` MESSAGE (Result OK), then INVITEs the SourceID with an audio
//! offer (`m=audio <port> RTP/AVP 8`, `a=recvonly`, `y=` SSRC); the platform answers
//! `sendonly` with the address it sends from and streams G.711 over RTP until BYE.

use std::fmt::Write;

use super::addr::sdp_addrtype;
use super::manscdp::{Root, head, push_el};
use super::sdp::{MediaTransport, SessionDescription};

/// A G.711 law as RTP carries it (RFC 3551 static payload types, 8 kHz).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum G711 {
    /// PCMA, payload type 8.
    Alaw,
    /// PCMU, payload type 0.
    Ulaw,
}

impl G711 {
    pub fn payload_type(self) -> u8 {
        match self {
            G711::Alaw => 8,
            G711::Ulaw => 0,
        }
    }

    pub fn encoding(self) -> &'static str {
        match self {
            G711::Alaw => "PCMA",
            G711::Ulaw => "PCMU",
        }
    }

    /// The law of an offer: the first PCMA or PCMU among its formats (by rtpmap, else by
    /// static payload type), PCMA preferred when both are there.
    pub fn of_offer(offer: &SessionDescription) -> Option<G711> {
        let named = |name: &str, pt: u8| {
            offer
                .rtpmaps
                .iter()
                .any(|(p, n, rate)| n.eq_ignore_ascii_case(name) && *rate == 8000 && *p == pt)
                || (offer.payload_types.contains(&pt)
                    && !offer.rtpmaps.iter().any(|(p, _, _)| *p == pt))
        };
        if offer.media != "audio" {
            return None;
        }
        if named("PCMA", 8) {
            Some(G711::Alaw)
        } else if named("PCMU", 0) {
            Some(G711::Ulaw)
        } else {
            None
        }
    }
}

/// Platform → device: start a broadcast from `source_id` to the device's `target_id`.
pub fn build_broadcast(sn: u32, source_id: &str, target_id: &str) -> String {
    let mut s = format!("<{}>\r\n", Root::Notify.as_str());
    push_el(&mut s, "CmdType", "Broadcast");
    push_el(&mut s, "SN", &sn.to_string());
    push_el(&mut s, "SourceID", source_id);
    push_el(&mut s, "TargetID", target_id);
    s.push_str("</Notify>\r\n");
    s
}

/// Device → platform: the answer to a Broadcast notification.
pub fn build_broadcast_response(sn: u32, device_id: &str, ok: bool) -> String {
    let mut s = head(Root::Response, "Broadcast", sn, device_id);
    push_el(&mut s, "Result", if ok { "OK" } else { "ERROR" });
    s.push_str("</Response>\r\n");
    s
}

/// Device side: the INVITE offer for the broadcast audio, received on `ip:port` over UDP, or
/// over TCP with the device listening there (`TcpPassive`) or connecting (`TcpActive`).
pub fn build_talk_offer(
    device_id: &str,
    ip: &str,
    port: u16,
    law: G711,
    ssrc: &str,
    transport: MediaTransport,
) -> String {
    let pt = law.payload_type();
    let mut s = String::with_capacity(256);
    let _ = write!(
        s,
        "v=0\r\no={device_id} 0 0 IN {at} {ip}\r\ns=Play\r\nc=IN {at} {ip}\r\nt=0 0\r\nm=audio {port} {} {pt}\r\na=recvonly\r\na=rtpmap:{pt} {}/8000\r\n{}y={ssrc}\r\nf=v/////a/1/8/1\r\n",
        proto(transport),
        law.encoding(),
        setup(transport),
        at = sdp_addrtype(ip)
    );
    s
}

/// The `m=` protocol of a transport.
fn proto(t: MediaTransport) -> &'static str {
    match t {
        MediaTransport::Udp => "RTP/AVP",
        _ => "TCP/RTP/AVP",
    }
}

/// The RFC 4145 lines of the SDP's author in `t`: `TcpPassive` listens, `TcpActive` connects.
fn setup(t: MediaTransport) -> &'static str {
    match t {
        MediaTransport::Udp => "",
        MediaTransport::TcpPassive => "a=setup:passive\r\na=connection:new\r\n",
        MediaTransport::TcpActive => "a=setup:active\r\na=connection:new\r\n",
    }
}

/// Platform side: the answer to a talk offer: we send (`sendonly`) `law` from `ip:port`,
/// with the offer's SSRC; over TCP in the role opposite to the offer's (the device listens:
/// we connect, and the other way round).
pub fn build_talk_answer(
    offer: &SessionDescription,
    platform_id: &str,
    ip: &str,
    port: u16,
    law: G711,
) -> String {
    let pt = law.payload_type();
    let ours = match offer.transport() {
        MediaTransport::Udp => MediaTransport::Udp,
        MediaTransport::TcpPassive => MediaTransport::TcpActive,
        MediaTransport::TcpActive => MediaTransport::TcpPassive,
    };
    let mut s = String::with_capacity(256);
    let _ = write!(
        s,
        "v=0\r\no={platform_id} 0 0 IN {at} {ip}\r\ns=Play\r\nc=IN {at} {ip}\r\nt=0 0\r\nm=audio {port} {} {pt}\r\na=sendonly\r\na=rtpmap:{pt} {}/8000\r\n{}",
        proto(ours),
        law.encoding(),
        setup(ours),
        at = sdp_addrtype(ip)
    );
    if let Some(y) = &offer.ssrc {
        let _ = write!(s, "y={y}\r\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::manscdp::{Charset, Manscdp, encode_body};
    use crate::core::sdp;

    #[test]
    fn broadcast_and_its_answer_parse() {
        let b = build_broadcast(7, "34020000002000000001", "34020000001370000001");
        let m = Manscdp::parse(&encode_body(&b, Charset::Gb2312)).unwrap();
        assert_eq!(
            m,
            Manscdp::Broadcast {
                sn: 7,
                source_id: "34020000002000000001".into(),
                target_id: "34020000001370000001".into(),
            }
        );
        // Whom it is about: the target.
        assert_eq!(m.device_id(), "34020000001370000001");
        let r = build_broadcast_response(7, "34020000001370000001", true);
        assert_eq!(
            Manscdp::parse(&encode_body(&r, Charset::Gb2312)).unwrap(),
            Manscdp::BroadcastResponse {
                sn: 7,
                device_id: "34020000001370000001".into(),
                ok: true,
            }
        );
    }

    /// Over TCP the answer takes the other role: a listening device is connected to, a
    /// connecting one is listened for (RFC 4145), as wvp's TCP talk does.
    #[test]
    fn tcp_offers_get_the_other_role() {
        for (device, platform) in [
            (MediaTransport::TcpPassive, MediaTransport::TcpActive),
            (MediaTransport::TcpActive, MediaTransport::TcpPassive),
        ] {
            let o = build_talk_offer(
                "34020000001320000001",
                "127.0.0.1",
                31000,
                G711::Ulaw,
                "0100000001",
                device,
            );
            let offer = sdp::parse(o.as_bytes()).unwrap();
            assert!(offer.is_tcp(), "{o}");
            assert_eq!(offer.transport(), device, "{o}");
            assert_eq!(G711::of_offer(&offer), Some(G711::Ulaw));
            let a = build_talk_answer(
                &offer,
                "34020000002000000001",
                "127.0.0.1",
                32000,
                G711::Ulaw,
            );
            let answer = sdp::parse(a.as_bytes()).unwrap();
            assert!(answer.is_tcp(), "{a}");
            assert_eq!(answer.transport(), platform, "{a}");
            assert_eq!(answer.direction.as_deref(), Some("sendonly"));
        }
    }

    #[test]
    fn offer_and_answer() {
        let o = build_talk_offer(
            "34020000001320000001",
            "127.0.0.1",
            31000,
            G711::Alaw,
            "0100000001",
            MediaTransport::Udp,
        );
        let offer = sdp::parse(o.as_bytes()).unwrap();
        assert_eq!(offer.transport(), MediaTransport::Udp);
        assert_eq!(offer.media, "audio");
        assert_eq!(offer.port, 31000);
        assert!(!o.contains("setup"), "{o}");
        assert_eq!(offer.direction.as_deref(), Some("recvonly"));
        assert_eq!(G711::of_offer(&offer), Some(G711::Alaw));
        let a = build_talk_answer(&offer, "34020000002000000001", "::1", 32000, G711::Alaw);
        let answer = sdp::parse(a.as_bytes()).unwrap();
        assert_eq!(answer.direction.as_deref(), Some("sendonly"));
        assert_eq!(answer.ssrc.as_deref(), Some("0100000001"));
        assert_eq!(answer.media_addr().unwrap().to_string(), "[::1]:32000");
        // μ-law only (static PT 0, no rtpmap), and a video offer is no talk offer.
        let u = "v=0\r\no=x 0 0 IN IP4 1.2.3.4\r\ns=Play\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\nm=audio 5 RTP/AVP 0\r\na=recvonly\r\n";
        assert_eq!(
            G711::of_offer(&sdp::parse(u.as_bytes()).unwrap()),
            Some(G711::Ulaw)
        );
        let v = u.replace(
            "m=audio 5 RTP/AVP 0",
            "m=video 5 RTP/AVP 96\r\na=rtpmap:96 PS/90000",
        );
        assert_eq!(G711::of_offer(&sdp::parse(v.as_bytes()).unwrap()), None);
        // An offer that maps PT 8 to something else is not PCMA.
        let odd = u.replace("RTP/AVP 0", "RTP/AVP 8\r\na=rtpmap:8 opus/48000");
        assert_eq!(G711::of_offer(&sdp::parse(odd.as_bytes()).unwrap()), None);
    }
}

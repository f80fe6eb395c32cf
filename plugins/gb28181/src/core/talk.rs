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

/// How the talk audio travels: G.711 as RTP (PT 8 / 0, GB/T 28181-2016 §9.12), or G.711
/// in an MPEG-PS over RTP (the offer's `PS/90000` payload type), as devices of the 2022
/// edition and media servers sending PS (ZLMediaKit's `startSendRtp`) do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TalkFormat {
    Rtp(G711),
    /// PS with one G.711 stream (PSM stream type 0x90 A-law / 0x91 µ-law).
    Ps {
        pt: u8,
        law: G711,
    },
}

impl TalkFormat {
    pub fn law(self) -> G711 {
        match self {
            TalkFormat::Rtp(l) | TalkFormat::Ps { law: l, .. } => l,
        }
    }

    pub fn payload_type(self) -> u8 {
        match self {
            TalkFormat::Rtp(l) => l.payload_type(),
            TalkFormat::Ps { pt, .. } => pt,
        }
    }

    pub fn is_ps(self) -> bool {
        matches!(self, TalkFormat::Ps { .. })
    }

    /// `PCMA`, `PCMU`, `PS/PCMA` or `PS/PCMU`.
    pub fn describe(self) -> String {
        match self {
            TalkFormat::Rtp(l) => l.encoding().into(),
            TalkFormat::Ps { law, .. } => format!("PS/{}", law.encoding()),
        }
    }

    /// What an audio offer (or answer) asks: G.711 as RTP when it lists it (what §9.12
    /// describes), else PS when it lists `PS/90000` (A-law inside, GB/T 28181's default audio).
    pub fn of_offer(offer: &SessionDescription) -> Option<TalkFormat> {
        if let Some(l) = G711::of_offer(offer) {
            return Some(TalkFormat::Rtp(l));
        }
        (offer.media == "audio")
            .then(|| offer.ps_payload_type())
            .flatten()
            .map(|pt| TalkFormat::Ps {
                pt,
                law: G711::Alaw,
            })
    }

    fn rtpmap(self) -> String {
        match self {
            TalkFormat::Rtp(l) => {
                format!("a=rtpmap:{} {}/8000\r\n", l.payload_type(), l.encoding())
            }
            TalkFormat::Ps { pt, .. } => format!("a=rtpmap:{pt} PS/90000\r\n"),
        }
    }
}

/// G.711 out of PS talk audio: RTP payloads (whole packs, as [`TalkFormat::Ps`] senders
/// write them) in, the audio PES payloads out. Bounded: frames up to 64 KiB, input kept only
/// while a frame may still need it.
pub struct PsAudio {
    demux: gstmpegps::demux::Demuxer,
    /// Input from absolute offset `start` on.
    buf: Vec<u8>,
    start: u64,
    events: Vec<gstmpegps::demux::Event>,
}

impl Default for PsAudio {
    fn default() -> Self {
        PsAudio {
            demux: gstmpegps::demux::Demuxer::new(gstmpegps::demux::Config {
                max_frame_size: 64 * 1024,
            }),
            buf: Vec::new(),
            start: 0,
            events: Vec::new(),
        }
    }
}

impl PsAudio {
    /// Input bytes kept for frames not complete yet.
    pub fn kept(&self) -> usize {
        self.buf.len()
    }

    /// Feeds one payload; `out` gets each complete G.711 frame.
    pub fn push(&mut self, data: &[u8], mut out: impl FnMut(G711, &[u8])) {
        use gstmpegps::demux::Event;
        use gstmpegps::ps::Codec;
        self.buf.extend_from_slice(data);
        self.demux.push(data, &mut self.events);
        for e in self.events.drain(..) {
            let Event::Frame(f) = e else { continue };
            let law = match f.codec {
                Codec::G711Alaw => G711::Alaw,
                Codec::G711Mulaw => G711::Ulaw,
                _ => continue,
            };
            let mut bytes = Vec::with_capacity(f.size);
            for r in &f.ranges {
                let from = r.offset.saturating_sub(self.start) as usize;
                if let Some(b) = self.buf.get(from..from + r.len) {
                    bytes.extend_from_slice(b);
                }
            }
            out(law, &bytes);
        }
        let keep = self.demux.oldest_needed_offset();
        let done = (keep.saturating_sub(self.start) as usize).min(self.buf.len());
        self.buf.drain(..done);
        self.start += done as u64;
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
    format: TalkFormat,
    ssrc: &str,
    transport: MediaTransport,
) -> String {
    let pt = format.payload_type();
    let mut s = String::with_capacity(256);
    let _ = write!(
        s,
        "v=0\r\no={device_id} 0 0 IN {at} {ip}\r\ns=Play\r\nc=IN {at} {ip}\r\nt=0 0\r\nm=audio {port} {} {pt}\r\na=recvonly\r\n{}{}y={ssrc}\r\nf=v/////a/1/8/1\r\n",
        proto(transport),
        format.rtpmap(),
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
    format: TalkFormat,
) -> String {
    let pt = format.payload_type();
    let ours = match offer.transport() {
        MediaTransport::Udp => MediaTransport::Udp,
        MediaTransport::TcpPassive => MediaTransport::TcpActive,
        MediaTransport::TcpActive => MediaTransport::TcpPassive,
    };
    let mut s = String::with_capacity(256);
    let _ = write!(
        s,
        "v=0\r\no={platform_id} 0 0 IN {at} {ip}\r\ns=Play\r\nc=IN {at} {ip}\r\nt=0 0\r\nm=audio {port} {} {pt}\r\na=sendonly\r\n{}{}",
        proto(ours),
        format.rtpmap(),
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

    /// G.711 written as PS packs (the platform's sender) comes out of [`PsAudio`] whole and
    /// in order; a lost pack loses only itself, and garbage only until the next pack.
    #[test]
    fn ps_audio_round_trip() {
        use gstmpegps::mux::writer::{Frame, PsWriter, WriterConfig};
        let mut w = PsWriter::new(WriterConfig::default());
        let id = w.add_stream(gstmpegps::ps::Codec::G711Alaw).unwrap();
        let mut pack = |i: u64| {
            let chunk: Vec<u8> = (0..160).map(|j| ((i * 160 + j) % 251) as u8).collect();
            let p = w
                .write_frame(&Frame {
                    stream_id: id,
                    len: chunk.len(),
                    pts: Some(i * 1800),
                    dts: None,
                    key: false,
                })
                .unwrap();
            (p.to_contiguous(&chunk).unwrap(), chunk)
        };
        let mut rx = PsAudio::default();
        let mut heard = Vec::new();
        let mut sent = Vec::new();
        for i in 0..100u64 {
            let (p, chunk) = pack(i);
            if i == 50 {
                continue; // lost
            }
            sent.extend_from_slice(&chunk);
            rx.push(&p, |law, b| {
                assert_eq!(law, G711::Alaw);
                heard.extend_from_slice(b);
            });
        }
        assert_eq!(heard.len(), sent.len());
        assert!(heard == sent, "the samples, in order");
        assert!(rx.buf.len() < 2048, "input kept: {}", rx.buf.len());
        rx.push(&[0xAB; 40], |_, _| panic!("garbage heard"));
        let before = heard.len();
        for i in 100..110u64 {
            rx.push(&pack(i).0, |_, b| heard.extend_from_slice(b));
        }
        assert!(heard.len() - before >= 9 * 160, "{}", heard.len() - before);
    }

    /// A device asking for PS gets PS (A-law inside); one listing G.711 as well gets G.711.
    #[test]
    fn ps_offers_get_ps() {
        let ps = TalkFormat::Ps {
            pt: 96,
            law: G711::Alaw,
        };
        let o = build_talk_offer(
            "34020000001320000001",
            "127.0.0.1",
            31000,
            ps,
            "0100000001",
            MediaTransport::Udp,
        );
        let offer = sdp::parse(o.as_bytes()).unwrap();
        assert_eq!(G711::of_offer(&offer), None, "{o}");
        assert_eq!(TalkFormat::of_offer(&offer), Some(ps), "{o}");
        let a = build_talk_answer(&offer, "34020000002000000001", "127.0.0.1", 32000, ps);
        let answer = sdp::parse(a.as_bytes()).unwrap();
        assert_eq!(TalkFormat::of_offer(&answer), Some(ps), "{a}");
        assert_eq!(ps.describe(), "PS/PCMA");
        let both = o.replace("RTP/AVP 96", "RTP/AVP 96 8");
        assert_eq!(
            TalkFormat::of_offer(&sdp::parse(both.as_bytes()).unwrap()),
            Some(TalkFormat::Rtp(G711::Alaw))
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
                TalkFormat::Rtp(G711::Ulaw),
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
                TalkFormat::Rtp(G711::Ulaw),
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
            TalkFormat::Rtp(G711::Alaw),
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
        let a = build_talk_answer(
            &offer,
            "34020000002000000001",
            "::1",
            32000,
            TalkFormat::Rtp(G711::Alaw),
        );
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

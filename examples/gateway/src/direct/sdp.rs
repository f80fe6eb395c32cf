//! The SDP a direct-path DESCRIBE answers with: one media section per stream, controls
//! `stream=0`, `stream=1` as gst-rtsp-server names them (so a client may DESCRIBE on one
//! path and SETUP on the other), parameter sets from the cached key frame when there is one
//! (clients also find them in band). GStreamer-free.

use super::rtp::{Codec, nal_units};
use base64::Engine;
use std::fmt::Write;

/// One stream as the SDP describes it.
#[derive(Debug, Clone)]
pub struct Stream {
    pub codec: Codec,
    pub pt: u8,
    /// Video: the parameter-set NAL units (SPS, PPS, VPS) found so far, Annex B access unit
    /// of the cached key frame; empty when none is known.
    pub key_frame: Vec<u8>,
}

/// The payload type of a codec for stream `index` (G.711 at 8 kHz mono: the static ones).
pub fn payload_type(codec: &Codec, index: usize) -> u8 {
    match codec {
        Codec::Pcmu {
            rate: 8000,
            channels: 1,
        } => 0,
        Codec::Pcma {
            rate: 8000,
            channels: 1,
        } => 8,
        _ => 96 + index as u8,
    }
}

/// The SDP of `streams`; `ipv6` for the address family of the connection.
pub fn describe(streams: &[Stream], session_id: u64, ipv6: bool) -> String {
    let (fam, any) = if ipv6 {
        ("IP6", "::")
    } else {
        ("IP4", "0.0.0.0")
    };
    let mut s = String::new();
    let _ = write!(
        s,
        "v=0\r\no=- {session_id} 1 IN {fam} {any}\r\ns=Session streamed by gst-ipcam\r\n\
         t=0 0\r\na=tool:gst-ipcam-gateway\r\na=type:broadcast\r\na=control:*\r\n\
         a=range:npt=now-\r\n"
    );
    for (i, st) in streams.iter().enumerate() {
        let kind = if st.codec.is_video() {
            "video"
        } else {
            "audio"
        };
        let pt = st.pt;
        let _ = write!(s, "m={kind} 0 RTP/AVP {pt}\r\nc=IN {fam} {any}\r\n");
        match &st.codec {
            Codec::H264 => {
                let _ = write!(s, "a=rtpmap:{pt} H264/90000\r\n");
                let mut fmtp = String::from("packetization-mode=1");
                let (mut sps, mut pps) = (None, None);
                for nal in nal_units(&st.key_frame).filter(|n| !n.is_empty()) {
                    match nal[0] & 0x1f {
                        7 if sps.is_none() => sps = Some(nal),
                        8 if pps.is_none() => pps = Some(nal),
                        _ => {}
                    }
                }
                if let Some(sps) = sps.filter(|s| s.len() >= 4) {
                    let _ = write!(
                        fmtp,
                        ";profile-level-id={:02x}{:02x}{:02x}",
                        sps[1], sps[2], sps[3]
                    );
                    if let Some(pps) = pps {
                        let _ = write!(fmtp, ";sprop-parameter-sets={},{}", b64(sps), b64(pps));
                    }
                }
                let _ = write!(s, "a=fmtp:{pt} {fmtp}\r\n");
            }
            Codec::H265 => {
                let _ = write!(s, "a=rtpmap:{pt} H265/90000\r\n");
                let (mut vps, mut sps, mut pps) = (None, None, None);
                for nal in nal_units(&st.key_frame).filter(|n| n.len() > 2) {
                    match (nal[0] >> 1) & 0x3f {
                        32 if vps.is_none() => vps = Some(nal),
                        33 if sps.is_none() => sps = Some(nal),
                        34 if pps.is_none() => pps = Some(nal),
                        _ => {}
                    }
                }
                if let (Some(v), Some(sp), Some(p)) = (vps, sps, pps) {
                    let _ = write!(
                        s,
                        "a=fmtp:{pt} sprop-vps={};sprop-sps={};sprop-pps={}\r\n",
                        b64(v),
                        b64(sp),
                        b64(p)
                    );
                }
            }
            Codec::Aac {
                rate,
                channels,
                config,
            } => {
                let hex: String = config.iter().map(|b| format!("{b:02x}")).collect();
                let _ = write!(
                    s,
                    "a=rtpmap:{pt} MPEG4-GENERIC/{rate}/{channels}\r\n\
                     a=fmtp:{pt} streamtype=5;profile-level-id=1;mode=AAC-hbr;sizelength=13;\
                     indexlength=3;indexdeltalength=3;config={hex}\r\n"
                );
            }
            Codec::Pcma { rate, channels } | Codec::Pcmu { rate, channels } => {
                let name = if matches!(st.codec, Codec::Pcma { .. }) {
                    "PCMA"
                } else {
                    "PCMU"
                };
                let _ = write!(s, "a=rtpmap:{pt} {name}/{rate}");
                if *channels > 1 {
                    let _ = write!(s, "/{channels}");
                }
                s.push_str("\r\n");
            }
        }
        let _ = write!(s, "a=control:stream={i}\r\n");
    }
    s
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h264_and_pcma_with_parameter_sets() {
        let key = [
            0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1e, 0xab, 0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80, 0, 0, 1,
            0x65, 1,
        ];
        let streams = [
            Stream {
                codec: Codec::H264,
                pt: 96,
                key_frame: key.to_vec(),
            },
            Stream {
                codec: Codec::Pcma {
                    rate: 8000,
                    channels: 1,
                },
                pt: 8,
                key_frame: Vec::new(),
            },
        ];
        let sdp = describe(&streams, 42, false);
        let parsed = sdp_types::Session::parse(sdp.as_bytes()).expect("valid SDP");
        assert_eq!(parsed.medias.len(), 2);
        assert!(sdp.contains("a=rtpmap:96 H264/90000\r\n"));
        assert!(sdp.contains(
            "a=fmtp:96 packetization-mode=1;profile-level-id=42c01e;sprop-parameter-sets=Z0LAHqs=,aM48gA==\r\n"
        ));
        assert!(sdp.contains("m=audio 0 RTP/AVP 8\r\n"));
        assert!(sdp.contains("a=rtpmap:8 PCMA/8000\r\na=control:stream=1\r\n"));
        assert!(sdp.contains("a=control:stream=0\r\n"));
    }

    #[test]
    fn h265_without_key_frame_and_aac_over_ipv6() {
        let streams = [
            Stream {
                codec: Codec::H265,
                pt: 96,
                key_frame: Vec::new(),
            },
            Stream {
                codec: Codec::Aac {
                    rate: 48_000,
                    channels: 2,
                    config: vec![0x11, 0x90],
                },
                pt: 97,
                key_frame: Vec::new(),
            },
        ];
        let sdp = describe(&streams, 1, true);
        assert!(sdp_types::Session::parse(sdp.as_bytes()).is_ok());
        assert!(sdp.contains("c=IN IP6 ::\r\n"));
        assert!(sdp.contains("a=rtpmap:96 H265/90000\r\n"));
        assert!(!sdp.contains("sprop-vps"));
        assert!(sdp.contains("a=rtpmap:97 MPEG4-GENERIC/48000/2\r\n"));
        assert!(sdp.contains("config=1190\r\n"));
    }
}

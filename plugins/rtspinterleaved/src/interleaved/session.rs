//! What the RTSP text of a session tells about its interleaved channels: DESCRIBE gives the
//! streams (SDP), SETUP maps each stream's control URL to an RTP and an RTCP channel.

use std::collections::VecDeque;

use super::message::{MessageKind, RtspMessage};
use super::sdp::{StreamCaps, parse_sdp, session_control};

/// Requests remembered while waiting for their responses; older ones are forgotten.
const MAX_PENDING: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelRole {
    Rtp,
    Rtcp,
}

/// A channel set up by SETUP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelInfo {
    pub role: ChannelRole,
    pub rtp_channel: u8,
    /// Equals `rtp_channel` when the server gave a single channel (RTCP muxed).
    pub rtcp_channel: u8,
    /// Index into [`Session::streams`], when the SETUP could be matched to the SDP.
    pub stream: Option<usize>,
}

#[derive(Debug)]
struct Pending {
    cseq: u32,
    method: String,
    uri: Option<String>,
    interleaved: Option<(u8, Option<u8>)>,
}

#[derive(Debug)]
pub struct Session {
    pending: VecDeque<Pending>,
    base: Option<String>,
    streams: Vec<StreamCaps>,
    channels: Vec<Option<ChannelInfo>>,
    setups: usize,
}

impl Default for Session {
    fn default() -> Self {
        Session {
            pending: VecDeque::new(),
            base: None,
            streams: Vec::new(),
            channels: vec![None; 256],
            setups: 0,
        }
    }
}

fn looks_like_sdp(msg: &RtspMessage) -> bool {
    let ct_sdp = msg
        .header("Content-Type")
        .is_some_and(|ct| ct.to_ascii_lowercase().contains("sdp"));
    ct_sdp || msg.body.starts_with(b"v=0")
}

/// Resolves an SDP control attribute against the presentation base URL (RFC 2326 C.1.1).
fn resolve_control(base: Option<&str>, control: &str) -> String {
    if control.contains("://") {
        return control.to_string();
    }
    let Some(base) = base else {
        return control.to_string();
    };
    if control == "*" {
        return base.to_string();
    }
    if base.ends_with('/') {
        format!("{base}{control}")
    } else {
        format!("{base}/{control}")
    }
}

impl Session {
    /// Streams described by the last DESCRIBE response's SDP.
    pub fn streams(&self) -> &[StreamCaps] {
        &self.streams
    }

    pub fn channel(&self, channel: u8) -> Option<&ChannelInfo> {
        self.channels.get(channel as usize).and_then(|c| c.as_ref())
    }

    /// Whether any SETUP has mapped channels.
    pub fn has_mapping(&self) -> bool {
        self.setups > 0
    }

    /// The SDP description of the stream carried on `channel`, if known.
    pub fn stream_for_channel(&self, channel: u8) -> Option<&StreamCaps> {
        let idx = self.channel(channel)?.stream?;
        self.streams.get(idx)
    }

    fn stream_for_uri(&self, uri: Option<&str>) -> Option<usize> {
        let uri = uri?.trim_end_matches('/');
        let exact = self.streams.iter().position(|s| {
            s.control.as_deref().is_some_and(|c| {
                resolve_control(self.base.as_deref(), c).trim_end_matches('/') == uri
            })
        });
        exact.or_else(|| {
            self.streams.iter().position(|s| {
                s.control.as_deref().is_some_and(|c| {
                    c != "*" && !c.contains("://") && uri.ends_with(&format!("/{c}"))
                })
            })
        })
    }

    /// Updates the session with a message; returns the channels it newly mapped.
    pub fn handle(&mut self, msg: &RtspMessage) -> Vec<u8> {
        match &msg.kind {
            MessageKind::Request { method, uri } => {
                if let Some(cseq) = msg.cseq {
                    if self.pending.len() >= MAX_PENDING {
                        self.pending.pop_front();
                    }
                    self.pending.push_back(Pending {
                        cseq,
                        method: method.to_ascii_uppercase(),
                        uri: uri.clone(),
                        interleaved: msg.interleaved(),
                    });
                }
                Vec::new()
            }
            MessageKind::Response { status, .. } => {
                let request = msg.cseq.and_then(|cseq| {
                    let idx = self.pending.iter().position(|p| p.cseq == cseq)?;
                    self.pending.remove(idx)
                });
                if !(200..300).contains(status) {
                    return Vec::new();
                }
                let method = request.as_ref().map(|r| r.method.as_str());
                if (method == Some("DESCRIBE") || method.is_none()) && looks_like_sdp(msg) {
                    self.describe(msg, request.as_ref().and_then(|r| r.uri.as_deref()));
                }
                let interleaved = msg
                    .interleaved()
                    .or_else(|| request.as_ref().and_then(|r| r.interleaved));
                match (method, interleaved) {
                    (Some("SETUP") | None, Some((rtp, rtcp))) => {
                        let uri = request.as_ref().and_then(|r| r.uri.as_deref());
                        self.setup(uri, rtp, rtcp)
                    }
                    _ => Vec::new(),
                }
            }
        }
    }

    fn describe(&mut self, msg: &RtspMessage, request_uri: Option<&str>) {
        let streams = parse_sdp(&msg.body);
        if streams.is_empty() {
            return;
        }
        let base = msg
            .header("Content-Base")
            .or_else(|| msg.header("Content-Location"))
            .or(request_uri)
            .map(|b| b.trim().to_string());
        // A session-level absolute control URL overrides the base.
        self.base = match session_control(&msg.body) {
            Some(c) if c.contains("://") => Some(c),
            _ => base,
        };
        self.streams = streams;
        self.setups = 0;
        self.channels.iter_mut().for_each(|c| *c = None);
    }

    fn setup(&mut self, uri: Option<&str>, rtp: u8, rtcp: Option<u8>) -> Vec<u8> {
        let stream = self.stream_for_uri(uri).or_else(|| {
            // Unknown URL (or no request in the dump): streams are set up in SDP order.
            (self.setups < self.streams.len()).then_some(self.setups)
        });
        self.setups += 1;
        let rtcp_channel = rtcp.unwrap_or(rtp);
        self.channels[rtp as usize] = Some(ChannelInfo {
            role: ChannelRole::Rtp,
            rtp_channel: rtp,
            rtcp_channel,
            stream,
        });
        let mut mapped = vec![rtp];
        if rtcp_channel != rtp {
            self.channels[rtcp_channel as usize] = Some(ChannelInfo {
                role: ChannelRole::Rtcp,
                rtp_channel: rtp,
                rtcp_channel,
                stream,
            });
            mapped.push(rtcp_channel);
        }
        mapped
    }
}

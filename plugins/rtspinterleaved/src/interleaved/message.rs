//! Owned summary of an RTSP request or response found between `$` frames.

use rtsp_types::headers::{Transport, Transports};

/// Request or response line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageKind {
    Request { method: String, uri: Option<String> },
    Response { status: u16, reason: String },
}

/// An RTSP message as the element reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtspMessage {
    pub kind: MessageKind,
    pub cseq: Option<u32>,
    /// Header names as sent, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    interleaved: Option<(u8, Option<u8>)>,
}

impl RtspMessage {
    pub(crate) fn from_rtsp(msg: &rtsp_types::Message<&[u8]>) -> Option<Self> {
        let (kind, headers, body, typed): (MessageKind, Vec<(String, String)>, &[u8], _) = match msg
        {
            rtsp_types::Message::Request(req) => (
                MessageKind::Request {
                    method: <&str>::from(req.method()).to_string(),
                    uri: req.request_uri().map(|u| u.as_str().to_string()),
                },
                req.headers()
                    .map(|(n, v)| (n.as_str().to_string(), v.as_str().to_string()))
                    .collect(),
                req.body(),
                req.typed_header::<Transports>().ok().flatten(),
            ),
            rtsp_types::Message::Response(resp) => (
                MessageKind::Response {
                    status: u16::from(resp.status()),
                    reason: resp.reason_phrase().to_string(),
                },
                resp.headers()
                    .map(|(n, v)| (n.as_str().to_string(), v.as_str().to_string()))
                    .collect(),
                resp.body(),
                resp.typed_header::<Transports>().ok().flatten(),
            ),
            rtsp_types::Message::Data(_) => return None,
        };
        let mut m = RtspMessage {
            kind,
            cseq: None,
            headers,
            body: body.to_vec(),
            interleaved: typed_interleaved(typed),
        };
        m.cseq = m.header("CSeq").and_then(|v| v.trim().parse().ok());
        if m.interleaved.is_none() {
            m.interleaved = m.header("Transport").and_then(raw_interleaved);
        }
        Some(m)
    }

    /// First header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn method(&self) -> Option<&str> {
        match &self.kind {
            MessageKind::Request { method, .. } => Some(method),
            MessageKind::Response { .. } => None,
        }
    }

    /// `interleaved=n[-m]` of the first transport in the Transport header that has one.
    pub fn interleaved(&self) -> Option<(u8, Option<u8>)> {
        self.interleaved
    }
}

fn typed_interleaved(transports: Option<Transports>) -> Option<(u8, Option<u8>)> {
    transports?.iter().find_map(|t| match t {
        Transport::Rtp(rtp) => rtp.params.interleaved,
        Transport::Other(_) => None,
    })
}

/// Reads `interleaved=` directly, for Transport values rtsp-types' typed parser rejects.
fn raw_interleaved(value: &str) -> Option<(u8, Option<u8>)> {
    for transport in value.split(',') {
        for param in transport.split(';') {
            let Some((k, v)) = param.trim().split_once('=') else {
                continue;
            };
            if !k.trim().eq_ignore_ascii_case("interleaved") {
                continue;
            }
            let mut it = v.trim().splitn(2, '-');
            let first = it.next().and_then(|s| s.trim().parse::<u8>().ok());
            let second = it.next().and_then(|s| s.trim().parse::<u8>().ok());
            if let Some(first) = first {
                return Some((first, second));
            }
        }
    }
    None
}

//! SIP messages (RFC 3261) as GB/T 28181 devices and platforms send them.
//!
//! Why a parser of our own: the maintained Rust SIP crates were evaluated (Nov 2026) against
//! every vector in `testdata/gb28181/sip`:
//! - `rsip` 0.4.0 parses all vectors, but its last release is from 2022, its crate metadata
//!   declares no licence and it pulls in old `md-5` 0.9 / `sha2` 0.9 / `uuid` 0.8 / `nom` 7.
//! - `ezk-sip-types` 0.6.5 (MIT, maintained) parses the vectors' header lines, but has no
//!   header line folding, no message/header/body size limits, no stream framer, is tied to its
//!   `Bytes`/`BytesStr` types and async stack, and has ~100 `unwrap`/`panic!` sites we would
//!   have to trust under fuzzing.
//! - `rvoip-sip-core` 0.4 is a large pre-1.0 stack with a heavy dependency tree.
//!
//! What GB28181 needs is small: start line, a header list with lookups by (compact or full,
//! case-insensitive) name, exact body bytes (GB2312 bodies are not UTF-8), a few structured
//! headers (Via, From/To, CSeq, Contact) and strict bounds. So this module is a small
//! strict-but-tolerant parser: it accepts LF-only line ends, header folding, compact names,
//! missing Content-Length on datagrams, and refuses anything oversized.
//!
//! Limits: [`MAX_MESSAGE_SIZE`], [`MAX_HEADERS`], [`MAX_BODY_SIZE`], [`MAX_LINE`].

use std::fmt;

/// Largest message accepted (headers + body), UDP datagrams and TCP frames alike.
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024;
/// Largest number of header fields (after unfolding).
pub const MAX_HEADERS: usize = 96;
/// Largest body (Content-Length).
pub const MAX_BODY_SIZE: usize = 60 * 1024;
/// Largest single header line (after unfolding).
pub const MAX_LINE: usize = 8 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    Empty,
    TooLarge,
    Truncated,
    NoHeaderEnd,
    BadStartLine,
    BadHeader,
    TooManyHeaders,
    LineTooLong,
    BadContentLength,
    BodyTooLarge,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ParseError::Empty => "empty message",
            ParseError::TooLarge => "message too large",
            ParseError::Truncated => "message shorter than its Content-Length",
            ParseError::NoHeaderEnd => "no end of headers",
            ParseError::BadStartLine => "bad start line",
            ParseError::BadHeader => "bad header line",
            ParseError::TooManyHeaders => "too many headers",
            ParseError::LineTooLong => "header line too long",
            ParseError::BadContentLength => "bad Content-Length",
            ParseError::BodyTooLarge => "body too large",
        };
        f.write_str(s)
    }
}

impl std::error::Error for ParseError {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: String, uri: String },
    Response { status: u16, reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The name as received (case and compact form preserved).
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub start: StartLine,
    pub headers: Vec<Header>,
    pub body: Vec<u8>,
}

/// Full header name for a compact form (RFC 3261 §7.3.3), lower case.
fn expand_compact(name: &str) -> Option<&'static str> {
    if name.len() != 1 {
        return None;
    }
    Some(match name.as_bytes()[0].to_ascii_lowercase() {
        b'i' => "call-id",
        b'm' => "contact",
        b'e' => "content-encoding",
        b'l' => "content-length",
        b'c' => "content-type",
        b'f' => "from",
        b's' => "subject",
        b'k' => "supported",
        b't' => "to",
        b'v' => "via",
        _ => return None,
    })
}

/// Whether header `name` (as received) is `wanted` (full name, any case).
pub fn name_matches(name: &str, wanted: &str) -> bool {
    if name.eq_ignore_ascii_case(wanted) {
        return true;
    }
    match expand_compact(name) {
        Some(full) => full.eq_ignore_ascii_case(wanted),
        None => false,
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

/// Offset of the blank line ending the headers and the length of the separator.
fn find_header_end(data: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i < data.len() {
        if data[i] == b'\n' {
            if data.get(i + 1) == Some(&b'\n') {
                return Some((i + 1, 1));
            }
            if data.get(i + 1) == Some(&b'\r') && data.get(i + 2) == Some(&b'\n') {
                return Some((i + 1, 2));
            }
        }
        i += 1;
    }
    None
}

fn split_lines(head: &[u8]) -> impl Iterator<Item = &[u8]> {
    head.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
}

fn parse_start_line(line: &str) -> Result<StartLine, ParseError> {
    if let Some(rest) = line.strip_prefix("SIP/2.0 ") {
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        if code.len() != 3 {
            return Err(ParseError::BadStartLine);
        }
        let status: u16 = code.parse().map_err(|_| ParseError::BadStartLine)?;
        if !(100..700).contains(&status) {
            return Err(ParseError::BadStartLine);
        }
        return Ok(StartLine::Response {
            status,
            reason: reason.to_string(),
        });
    }
    let mut parts = line.split(' ').filter(|p| !p.is_empty());
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::BadStartLine);
    };
    if !is_token(method) || !version.eq_ignore_ascii_case("SIP/2.0") {
        return Err(ParseError::BadStartLine);
    }
    Ok(StartLine::Request {
        method: method.to_string(),
        uri: uri.to_string(),
    })
}

/// Parses the head (start line + headers, without the blank line).
fn parse_head(head: &[u8]) -> Result<(StartLine, Vec<Header>), ParseError> {
    let mut lines = split_lines(head).skip_while(|l| l.is_empty());
    let first = lines.next().ok_or(ParseError::Empty)?;
    let first = std::str::from_utf8(first).map_err(|_| ParseError::BadStartLine)?;
    let start = parse_start_line(first.trim_end())?;
    let mut headers: Vec<Header> = Vec::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        if line.len() > MAX_LINE {
            return Err(ParseError::LineTooLong);
        }
        // Header values are ASCII in practice; be lossless for the rest as far as possible.
        let text = String::from_utf8_lossy(line);
        if line[0] == b' ' || line[0] == b'\t' {
            // Folded continuation of the previous header (RFC 3261 §7.3.1).
            let last = headers.last_mut().ok_or(ParseError::BadHeader)?;
            if last.value.len() + text.len() > MAX_LINE {
                return Err(ParseError::LineTooLong);
            }
            last.value.push(' ');
            last.value.push_str(text.trim());
            continue;
        }
        let (name, value) = text.split_once(':').ok_or(ParseError::BadHeader)?;
        let name = name.trim_end();
        if !is_token(name) {
            return Err(ParseError::BadHeader);
        }
        if headers.len() >= MAX_HEADERS {
            return Err(ParseError::TooManyHeaders);
        }
        headers.push(Header {
            name: name.to_string(),
            value: value.trim().to_string(),
        });
    }
    Ok((start, headers))
}

fn content_length(headers: &[Header]) -> Result<Option<usize>, ParseError> {
    let mut found = None;
    for h in headers
        .iter()
        .filter(|h| name_matches(&h.name, "content-length"))
    {
        let v: usize = h
            .value
            .trim()
            .parse()
            .map_err(|_| ParseError::BadContentLength)?;
        if found.is_some_and(|f| f != v) {
            return Err(ParseError::BadContentLength);
        }
        found = Some(v);
    }
    if found.is_some_and(|v| v > MAX_BODY_SIZE) {
        return Err(ParseError::BodyTooLarge);
    }
    Ok(found)
}

impl Message {
    /// Parses one datagram holding one message. A missing Content-Length means "the rest of
    /// the datagram" (RFC 3261 §18.3 for UDP); bytes past Content-Length are ignored.
    pub fn parse(data: &[u8]) -> Result<Message, ParseError> {
        if data.len() > MAX_MESSAGE_SIZE {
            return Err(ParseError::TooLarge);
        }
        if data.iter().all(|b| b.is_ascii_whitespace()) {
            return Err(ParseError::Empty);
        }
        let (end, sep) = find_header_end(data).ok_or(ParseError::NoHeaderEnd)?;
        let (start, headers) = parse_head(&data[..end])?;
        let body_start = end + sep;
        let rest = data.get(body_start..).unwrap_or(&[]);
        let body = match content_length(&headers)? {
            Some(len) => rest.get(..len).ok_or(ParseError::Truncated)?,
            None if rest.len() > MAX_BODY_SIZE => return Err(ParseError::BodyTooLarge),
            None => rest,
        };
        Ok(Message {
            start,
            headers,
            body: body.to_vec(),
        })
    }

    pub fn request(method: &str, uri: &str) -> Message {
        Message {
            start: StartLine::Request {
                method: method.to_string(),
                uri: uri.to_string(),
            },
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A response to `req` copying Via, From, To, Call-ID and CSeq (RFC 3261 §8.2.6.2); adds
    /// `to_tag` to To when the request had none.
    pub fn response_to(req: &Message, status: u16, reason: &str, to_tag: Option<&str>) -> Message {
        let mut resp = Message {
            start: StartLine::Response {
                status,
                reason: reason.to_string(),
            },
            headers: Vec::new(),
            body: Vec::new(),
        };
        for h in &req.headers {
            let copied = ["via", "from", "to", "call-id", "cseq"]
                .iter()
                .any(|n| name_matches(&h.name, n));
            if !copied {
                continue;
            }
            let mut value = h.value.clone();
            if name_matches(&h.name, "to")
                && let Some(tag) = to_tag
                && NameAddr::parse(&value).is_some_and(|na| na.param("tag").is_none())
            {
                value.push_str(";tag=");
                value.push_str(tag);
            }
            resp.headers.push(Header {
                name: h.name.clone(),
                value,
            });
        }
        resp
    }

    pub fn method(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    pub fn uri(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { status, .. } => Some(*status),
            StartLine::Request { .. } => None,
        }
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// First header named `name` (full name, any case; compact forms match too).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| name_matches(&h.name, name))
            .map(|h| h.value.as_str())
    }

    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |h| name_matches(&h.name, name))
            .map(|h| h.value.as_str())
    }

    pub fn add_header(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        self.headers.push(Header {
            name: name.to_string(),
            value: value.into(),
        });
        self
    }

    /// Replaces every header named `name` by one with `value`.
    pub fn set_header(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        self.headers.retain(|h| !name_matches(&h.name, name));
        self.add_header(name, value)
    }

    pub fn remove_header(&mut self, name: &str) {
        self.headers.retain(|h| !name_matches(&h.name, name));
    }

    pub fn set_body(&mut self, content_type: &str, body: Vec<u8>) -> &mut Self {
        self.set_header("Content-Type", content_type);
        self.body = body;
        self
    }

    pub fn call_id(&self) -> Option<&str> {
        self.header("call-id")
    }

    pub fn cseq(&self) -> Option<CSeq> {
        CSeq::parse(self.header("cseq")?)
    }

    pub fn from(&self) -> Option<NameAddr> {
        NameAddr::parse(self.header("from")?)
    }

    pub fn to(&self) -> Option<NameAddr> {
        NameAddr::parse(self.header("to")?)
    }

    pub fn via(&self) -> Option<Via> {
        Via::parse(self.header("via")?)
    }

    /// On a response to a request received from `source`: the top Via gets `received=<ip>`
    /// when the request said another host or asked for `rport`, and `rport=<port>` when it
    /// asked for it (RFC 3261 §18.2.1, RFC 3581 §4). A device behind NAT learns the address
    /// it is seen from; the response itself goes to `source` whatever the Via says.
    pub fn stamp_via_source(&mut self, source: std::net::SocketAddr) {
        let Some(h) = self
            .headers
            .iter_mut()
            .find(|h| name_matches(&h.name, "via"))
        else {
            return;
        };
        if let Some(v) = stamped_via(&h.value, source) {
            h.value = v;
        }
    }

    pub fn contact(&self) -> Option<NameAddr> {
        NameAddr::parse(self.header("contact")?)
    }

    pub fn expires(&self) -> Option<u32> {
        self.header("expires")?.trim().parse().ok()
    }

    pub fn content_type(&self) -> Option<&str> {
        self.header("content-type")
    }

    /// Serializes with CRLF line ends and a Content-Length equal to the body length (an
    /// existing Content-Length header is rewritten in place).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.body.len());
        match &self.start {
            StartLine::Request { method, uri } => {
                out.extend_from_slice(format!("{method} {uri} SIP/2.0\r\n").as_bytes())
            }
            StartLine::Response { status, reason } => {
                out.extend_from_slice(format!("SIP/2.0 {status} {reason}\r\n").as_bytes())
            }
        }
        let mut wrote_length = false;
        for h in &self.headers {
            out.extend_from_slice(h.name.as_bytes());
            out.extend_from_slice(b": ");
            if name_matches(&h.name, "content-length") {
                if wrote_length {
                    // Drop duplicates: the one written is the truth.
                    out.truncate(out.len() - h.name.len() - 2);
                    continue;
                }
                wrote_length = true;
                out.extend_from_slice(self.body.len().to_string().as_bytes());
            } else {
                out.extend_from_slice(h.value.as_bytes());
            }
            out.extend_from_slice(b"\r\n");
        }
        if !wrote_length {
            out.extend_from_slice(format!("Content-Length: {}\r\n", self.body.len()).as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

/// `CSeq: <n> <METHOD>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: String,
}

impl CSeq {
    pub fn parse(v: &str) -> Option<CSeq> {
        let mut it = v.split_whitespace();
        let seq = it.next()?.parse().ok()?;
        let method = it.next()?;
        if it.next().is_some() || !is_token(method) {
            return None;
        }
        Some(CSeq {
            seq,
            method: method.to_string(),
        })
    }
}

/// Splits `;a=b;c` parameters; values keep their quotes stripped.
fn parse_params(s: &str) -> Vec<(String, Option<String>)> {
    s.split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (
                k.trim().to_string(),
                Some(v.trim().trim_matches('"').to_string()),
            ),
            None => (p.to_string(), None),
        })
        .collect()
}

fn find_param<'a>(params: &'a [(String, Option<String>)], name: &str) -> Option<Option<&'a str>> {
    params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_deref())
}

/// `"Display" <sip:user@host:port;uri-params>;tag=x;expires=y` or the bare form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    pub display: Option<String>,
    pub uri: String,
    pub params: Vec<(String, Option<String>)>,
}

impl NameAddr {
    pub fn parse(v: &str) -> Option<NameAddr> {
        let v = v.trim();
        if let Some(lt) = v.find('<') {
            let gt = lt + v.get(lt..)?.find('>')?;
            let display = v[..lt].trim().trim_matches('"').trim();
            let uri = v.get(lt + 1..gt)?.trim();
            if uri.is_empty() {
                return None;
            }
            Some(NameAddr {
                display: (!display.is_empty()).then(|| display.to_string()),
                uri: uri.to_string(),
                params: parse_params(v.get(gt + 1..)?),
            })
        } else {
            // addr-spec form: header parameters follow the first ';'.
            let (uri, params) = v.split_once(';').unwrap_or((v, ""));
            if uri.is_empty() {
                return None;
            }
            Some(NameAddr {
                display: None,
                uri: uri.to_string(),
                params: parse_params(params),
            })
        }
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        find_param(&self.params, name).flatten()
    }

    pub fn tag(&self) -> Option<&str> {
        self.param("tag")
    }

    pub fn sip_uri(&self) -> Option<SipUri> {
        SipUri::parse(&self.uri)
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display {
            write!(f, "\"{d}\" ")?;
        }
        write!(f, "<{}>", self.uri)?;
        for (k, v) in &self.params {
            match v {
                Some(v) => write!(f, ";{k}={v}")?,
                None => write!(f, ";{k}")?,
            }
        }
        Ok(())
    }
}

/// `sip:user@host:port;params`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

impl SipUri {
    pub fn parse(s: &str) -> Option<SipUri> {
        let s = s.trim();
        let rest = s
            .strip_prefix("sip:")
            .or_else(|| s.strip_prefix("SIP:"))
            .or_else(|| s.strip_prefix("sips:"))?;
        let rest = rest.split([';', '?']).next()?;
        let (user, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_string()), h),
            None => (None, rest),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6.split_once(']')?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p.parse().ok()?),
                None => None,
            };
            (h.to_string(), port)
        } else if hostport.matches(':').count() > 1 {
            // An unbracketed IPv6 literal (not RFC 3261, but devices write it): no port.
            hostport.parse::<std::net::Ipv6Addr>().ok()?;
            (hostport.to_string(), None)
        } else {
            match hostport.split_once(':') {
                Some((h, p)) => (h.to_string(), Some(p.parse().ok()?)),
                None => (hostport.to_string(), None),
            }
        };
        if host.is_empty() {
            return None;
        }
        Some(SipUri { user, host, port })
    }
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sip:")?;
        if let Some(u) = &self.user {
            write!(f, "{u}@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

/// `Via: SIP/2.0/UDP host:port;rport;branch=...` (first value of the header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    pub transport: String,
    pub host: String,
    pub port: Option<u16>,
    pub params: Vec<(String, Option<String>)>,
}

impl Via {
    pub fn parse(v: &str) -> Option<Via> {
        let first = v.split(',').next()?.trim();
        let (proto, rest) = first.split_once(char::is_whitespace)?;
        let mut parts = proto.split('/');
        let (Some(name), Some(_ver), Some(transport)) = (parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        if !name.eq_ignore_ascii_case("SIP") {
            return None;
        }
        let rest = rest.trim();
        let (sent_by, params) = rest.split_once(';').unwrap_or((rest, ""));
        let uri = SipUri::parse(&format!("sip:{}", sent_by.trim()))?;
        Some(Via {
            transport: transport.to_ascii_uppercase(),
            host: uri.host,
            port: uri.port,
            params: parse_params(params),
        })
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        find_param(&self.params, name).flatten()
    }

    pub fn has_param(&self, name: &str) -> bool {
        find_param(&self.params, name).is_some()
    }

    pub fn branch(&self) -> Option<&str> {
        self.param("branch")
    }
}

/// The first value of a Via header with `received`/`rport` filled in from `source`; None when
/// it does not parse (left as it is).
fn stamped_via(value: &str, source: std::net::SocketAddr) -> Option<String> {
    let (first, others) = match value.find(',') {
        Some(i) => value.split_at(i),
        None => (value, ""),
    };
    let via = Via::parse(first)?;
    let (sent_by, params) = first.split_once(';').unwrap_or((first, ""));
    let rport = via.has_param("rport");
    let ip = source.ip();
    let host_is_source = via.host.parse::<std::net::IpAddr>().is_ok_and(|h| h == ip);
    let mut out = sent_by.trim_end().to_string();
    for p in params.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let name = p.split('=').next().unwrap_or("").trim();
        if name.eq_ignore_ascii_case("received") {
            continue;
        }
        if name.eq_ignore_ascii_case("rport") {
            out.push_str(&format!(";rport={}", source.port()));
        } else {
            out.push(';');
            out.push_str(p);
        }
    }
    if rport || !host_is_source {
        out.push_str(&format!(";received={ip}"));
    }
    out.push_str(others);
    Some(out)
}

/// Frames SIP messages out of a TCP byte stream by Content-Length (RFC 3261 §18.3).
///
/// Garbage before a start line is skipped (resync on the next line that starts like a SIP
/// request or response); CRLF keep-alives (RFC 5626) are dropped. Buffering is bounded by
/// [`MAX_MESSAGE_SIZE`]: a head that doesn't end within it is discarded.
#[derive(Debug, Default)]
pub struct StreamFramer {
    buf: Vec<u8>,
}

fn looks_like_start(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.starts_with(b"SIP/2.0 ") {
        return true;
    }
    let Ok(s) = std::str::from_utf8(line) else {
        return false;
    };
    parse_start_line(s).is_ok()
}

impl StreamFramer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Drops bytes from `from` up to the next complete line that looks like a start line
    /// (kept), or up to the last line end when there is none yet.
    fn skip_to_next_start(&mut self, from: usize) {
        let mut pos = from.min(self.buf.len());
        let mut cut = pos;
        while let Some(off) = self.buf[pos..].iter().position(|b| *b == b'\n') {
            if looks_like_start(&self.buf[pos..pos + off]) {
                cut = pos;
                break;
            }
            pos += off + 1;
            cut = pos;
        }
        self.buf.drain(..cut);
    }

    /// Adds bytes and returns every complete message (or the parse error of a bad one).
    pub fn push(&mut self, data: &[u8]) -> Vec<Result<Message, ParseError>> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        loop {
            // Skip leading CRLFs and anything before a plausible start line.
            let lead = self
                .buf
                .iter()
                .position(|b| *b != b'\r' && *b != b'\n')
                .unwrap_or(self.buf.len());
            self.buf.drain(..lead);
            if self.buf.is_empty() {
                break;
            }
            let Some(nl) = self.buf.iter().position(|b| *b == b'\n') else {
                if self.buf.len() > MAX_LINE {
                    out.push(Err(ParseError::LineTooLong));
                    self.buf.clear();
                }
                break;
            };
            if !looks_like_start(&self.buf[..nl]) {
                out.push(Err(ParseError::BadStartLine));
                self.skip_to_next_start(nl + 1);
                continue;
            }
            let Some((end, sep)) = find_header_end(&self.buf) else {
                if self.buf.len() > MAX_MESSAGE_SIZE {
                    out.push(Err(ParseError::TooLarge));
                    self.skip_to_next_start(nl + 1);
                    continue;
                }
                break;
            };
            let head = match parse_head(&self.buf[..end]) {
                Ok(h) => h,
                Err(e) => {
                    out.push(Err(e));
                    self.buf.drain(..end + sep);
                    continue;
                }
            };
            // Over a stream, Content-Length is mandatory; missing means empty body.
            let body_len = match content_length(&head.1) {
                Ok(l) => l.unwrap_or(0),
                Err(e) => {
                    out.push(Err(e));
                    self.buf.drain(..end + sep);
                    continue;
                }
            };
            let total = end + sep + body_len;
            if self.buf.len() < total {
                break;
            }
            let body = self.buf[end + sep..total].to_vec();
            self.buf.drain(..total);
            out.push(Ok(Message {
                start: head.0,
                headers: head.1,
                body,
            }));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REG: &[u8] = b"REGISTER sip:34020000002000000001@3402000000 SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.137.109:5060;rport;branch=z9hG4bK1\r\nf: <sip:a@b>;tag=1\r\nt: <sip:a@b>\r\ni: 42\r\nCSeq: 1 REGISTER\r\nX-Long: a\r\n b\r\n\tc\r\nl: 0\r\n\r\n";

    #[test]
    fn compact_and_folding() {
        let m = Message::parse(REG).unwrap();
        assert_eq!(m.method(), Some("REGISTER"));
        assert_eq!(m.call_id(), Some("42"));
        assert_eq!(m.from().unwrap().tag(), Some("1"));
        assert_eq!(m.header("x-long"), Some("a b c"));
        let via = m.via().unwrap();
        assert_eq!(via.transport, "UDP");
        assert_eq!(via.port, Some(5060));
        assert!(via.has_param("rport"));
        assert_eq!(via.branch(), Some("z9hG4bK1"));
    }

    #[test]
    fn lf_only_and_response_to() {
        let text = String::from_utf8(REG.to_vec())
            .unwrap()
            .replace("\r\n", "\n");
        let m = Message::parse(text.as_bytes()).unwrap();
        let r = Message::response_to(&m, 200, "OK", Some("99"));
        assert_eq!(r.to().unwrap().tag(), Some("99"));
        let back = Message::parse(&r.to_bytes()).unwrap();
        assert_eq!(back.status(), Some(200));
        assert_eq!(back.cseq().unwrap().seq, 1);
        assert_eq!(back.header("content-length"), Some("0"));
    }

    #[test]
    fn bounds() {
        let mut bomb = b"MESSAGE sip:a@b SIP/2.0\r\n".to_vec();
        for i in 0..(MAX_HEADERS + 1) {
            bomb.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        bomb.extend_from_slice(b"\r\n");
        assert_eq!(Message::parse(&bomb), Err(ParseError::TooManyHeaders));
        let big = vec![b'a'; MAX_MESSAGE_SIZE + 1];
        assert_eq!(Message::parse(&big), Err(ParseError::TooLarge));
        let cl = b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 10\r\n\r\nabc";
        assert_eq!(Message::parse(cl), Err(ParseError::Truncated));
        let cl = b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 99999999\r\n\r\nabc";
        assert_eq!(Message::parse(cl), Err(ParseError::BodyTooLarge));
        let cl = b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: -1\r\n\r\n";
        assert_eq!(Message::parse(cl), Err(ParseError::BadContentLength));
        assert_eq!(
            Message::parse(b"HELLO\r\n\r\n"),
            Err(ParseError::BadStartLine)
        );
        assert_eq!(
            Message::parse(b"SIP/2.0 99 X\r\n\r\n"),
            Err(ParseError::BadStartLine)
        );
    }

    #[test]
    fn framer_splits_and_resyncs() {
        let one = b"MESSAGE sip:a@b SIP/2.0\r\nCall-ID: 1\r\nContent-Length: 3\r\n\r\nabc";
        let mut stream = b"\r\n\r\ngarbage line\r\n".to_vec();
        stream.extend_from_slice(one);
        stream.extend_from_slice(one);
        let mut f = StreamFramer::new();
        let mut got = Vec::new();
        for chunk in stream.chunks(7) {
            got.extend(f.push(chunk));
        }
        let ok: Vec<_> = got.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[1].body, b"abc");
        assert_eq!(got.iter().filter(|r| r.is_err()).count(), 1);
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn framer_bounded() {
        let mut f = StreamFramer::new();
        let mut head = b"MESSAGE sip:a@b SIP/2.0\r\n".to_vec();
        head.extend(std::iter::repeat_n(b"X: y\r\n".to_vec(), 20000).flatten());
        let r = f.push(&head);
        assert!(r.iter().any(|r| r.is_err()));
        assert!(f.buffered() <= MAX_MESSAGE_SIZE);
    }

    #[test]
    fn responses_tell_the_sender_where_it_was_seen() {
        let req = |via: &str| {
            let t = format!(
                "REGISTER sip:a@b SIP/2.0\r\nVia: {via}\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: 1\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"
            );
            Message::parse(t.as_bytes()).unwrap()
        };
        let stamp = |via: &str, src: &str| {
            let mut r = Message::response_to(&req(via), 200, "OK", Some("t"));
            r.stamp_via_source(src.parse().unwrap());
            Message::parse(&r.to_bytes())
                .unwrap()
                .header("via")
                .unwrap()
                .to_string()
        };
        // Behind NAT, asking for rport: both filled.
        assert_eq!(
            stamp(
                "SIP/2.0/UDP 192.168.1.64:5060;rport;branch=z9hG4bK1",
                "203.0.113.7:40123"
            ),
            "SIP/2.0/UDP 192.168.1.64:5060;rport=40123;branch=z9hG4bK1;received=203.0.113.7"
        );
        // Another host, no rport: received only; a stale received is replaced.
        assert_eq!(
            stamp(
                "SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK2;received=1.1.1.1",
                "127.0.0.1:5060"
            ),
            "SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK2;received=127.0.0.1"
        );
        // Seen from where it says, no rport: unchanged.
        assert_eq!(
            stamp(
                "SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK3",
                "127.0.0.1:5062"
            ),
            "SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK3"
        );
        // IPv6, and a second Via value in the same header left alone.
        assert_eq!(
            stamp(
                "SIP/2.0/UDP [2001:db8::1]:5060;rport;branch=z9hG4bK4, SIP/2.0/UDP p:5060;branch=z9hG4bKp",
                "[::1]:6000"
            ),
            "SIP/2.0/UDP [2001:db8::1]:5060;rport=6000;branch=z9hG4bK4;received=::1, SIP/2.0/UDP p:5060;branch=z9hG4bKp"
        );
        // A Via that does not parse is left as it is.
        assert_eq!(stamp("garbage", "127.0.0.1:1"), "garbage");
    }

    #[test]
    fn ipv6_via_contact_and_uris() {
        let text = "REGISTER sip:34020000002000000001@3402000000 SIP/2.0\r\nVia: SIP/2.0/UDP [2001:db8::1]:5062;rport=5062;received=2001:db8::1;branch=z9hG4bK6\r\nFrom: <sip:34020000001320000001@3402000000>;tag=1\r\nTo: <sip:34020000001320000001@3402000000>\r\nCall-ID: 6@2001:db8::1\r\nCSeq: 1 REGISTER\r\nContact: <sip:34020000001320000001@[2001:db8::1]:5062;transport=tcp>;expires=60\r\nContent-Length: 0\r\n\r\n";
        let m = Message::parse(text.as_bytes()).unwrap();
        let via = m.via().unwrap();
        assert_eq!(via.host, "2001:db8::1");
        assert_eq!(via.port, Some(5062));
        assert_eq!(via.param("received"), Some("2001:db8::1"));
        assert_eq!(via.param("rport"), Some("5062"));
        let contact = m.contact().unwrap();
        assert_eq!(contact.param("expires"), Some("60"));
        let uri = contact.sip_uri().unwrap();
        assert_eq!(uri.host, "2001:db8::1");
        assert_eq!(uri.port, Some(5062));
        assert_eq!(
            uri.to_string(),
            "sip:34020000001320000001@[2001:db8::1]:5062"
        );
        assert_eq!(SipUri::parse(&uri.to_string()), Some(uri));
        // A response copies the v6 Via unchanged and parses back.
        let r = Message::response_to(&m, 200, "OK", Some("t"));
        let back = Message::parse(&r.to_bytes()).unwrap();
        assert_eq!(back.via().unwrap(), via);
        // Tolerated forms: no port, unbracketed literal; refused: garbage in brackets.
        let no_port = Via::parse("SIP/2.0/TCP [::1];branch=z9hG4bK1").unwrap();
        assert_eq!((no_port.host.as_str(), no_port.port), ("::1", None));
        let bare = Via::parse("SIP/2.0/UDP fe80::2;branch=z9hG4bK1").unwrap();
        assert_eq!((bare.host.as_str(), bare.port), ("fe80::2", None));
        assert!(SipUri::parse("sip:a@[::1]:x").is_none());
        assert!(SipUri::parse("sip:a@[::1").is_none());
        assert!(SipUri::parse("sip:a@1:2:zz").is_none());
        // Built with the shared helper, read back the same.
        let built = format!(
            "SIP/2.0/UDP {};rport;branch=z9hG4bK2",
            crate::core::addr::host_port("::1", 5060)
        );
        let v = Via::parse(&built).unwrap();
        assert_eq!((v.host.as_str(), v.port), ("::1", Some(5060)));
    }

    #[test]
    fn uris() {
        let u = SipUri::parse("sip:34020000001320000001@192.168.64.3:55302").unwrap();
        assert_eq!(u.user.as_deref(), Some("34020000001320000001"));
        assert_eq!(u.port, Some(55302));
        assert_eq!(u.to_string(), "sip:34020000001320000001@192.168.64.3:55302");
        let na = NameAddr::parse("<sip:x@1.2.3.4:5060>;expires=0").unwrap();
        assert_eq!(na.param("expires"), Some("0"));
        assert!(SipUri::parse("sip:a@b:notaport").is_none());
        assert!(NameAddr::parse("<").is_none());
    }
}

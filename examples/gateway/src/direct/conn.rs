//! One RTSP connection on the direct path, in a thread of its own: OPTIONS, DESCRIBE,
//! SETUP over TCP (interleaved), PLAY, PAUSE, TEARDOWN, GET_PARAMETER and SET_PARAMETER of
//! live paths are answered here; anything else before this connection has a session here (a
//! SETUP over UDP or multicast, ANNOUNCE/RECORD, playback and other paths, HTTP tunnels,
//! what does not parse, RTSP 2.0) is handed with the bytes read so far to gst-rtsp-server,
//! which answers as it always does. A request that `Require`s an option gets 551: none is
//! supported. Requests are authenticated against the same users and
//! permissions as there (Basic and Digest, nonces shared); sessions count against the same
//! limits and belong to this connection. A session ends with TEARDOWN, with the connection,
//! or after `rtsp_session_timeout_s` without a request or RTCP from the client; a connection
//! whose peer stops acknowledging closes after as long (`TCP_USER_TIMEOUT`).

use super::reader::Output;
use super::rtp::{Codec, Packetizer};
use super::sdp;
use super::{Server, SessionInfo};
use crate::auth::{Action, Attempt, AuthError, Identity, Protocol};
use crate::factory::ChannelHooks;
use crate::ingest::{Ingest, Kind};
use gst_rtsp_server::prelude::*;
use std::fmt::Write as _;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Largest request (headers and body) read before it is answered or handed over.
const MAX_REQUEST: usize = 64 * 1024;
/// How often the connection's thread wakes without input (flush, reports, timeouts).
const TICK: Duration = Duration::from_millis(500);
const SENDER_REPORT_INTERVAL: Duration = Duration::from_secs(5);
const PUBLIC: &str = "OPTIONS, DESCRIBE, ANNOUNCE, GET_PARAMETER, PAUSE, PLAY, RECORD, SETUP, \
                      SET_PARAMETER, TEARDOWN";

/// The live path a connection described or set up: its ingest is held until the
/// connection's session ends.
struct Held {
    path: String,
    channel: String,
    hooks: Arc<dyn ChannelHooks>,
    ingest: Arc<Ingest>,
    /// Per stream index (`stream=N`): codec and payload type.
    streams: Vec<sdp::Stream>,
    subscription: Option<u64>,
}

struct Session {
    id: String,
    info: Arc<SessionInfo>,
}

/// What handling a request leads to.
enum Next {
    Continue,
    /// Hand the connection (with the bytes from this request on) to gst-rtsp-server.
    Transfer,
    Close,
}

/// A connection's place in the limits (`max_rtsp_clients`, the guard's clients table):
/// taken as it is accepted, freed exactly once when dropped.
struct Slot {
    srv: Arc<Server>,
    client: u64,
}

impl Slot {
    fn take(srv: &Arc<Server>) -> Slot {
        srv.registry.conns.fetch_add(1, Ordering::Relaxed);
        Slot {
            srv: srv.clone(),
            client: srv.guard.direct_client_connected(),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.srv.guard.direct_client_closed(self.client);
        self.srv.registry.conns.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(super) struct Conn {
    srv: Arc<Server>,
    sock: TcpStream,
    peer: SocketAddr,
    client: u64,
    /// Given up before the lingering close or the hand-over.
    slot: Option<Slot>,
    out: Arc<Output>,
    held: Option<Held>,
    session: Option<Session>,
    /// The request being handled names the session (`Session` header).
    named_session: bool,
    /// Last request or client RTCP.
    active_at: Instant,
    reported_at: Instant,
}

impl Conn {
    pub(super) fn new(
        srv: Arc<Server>,
        sock: TcpStream,
        peer: SocketAddr,
    ) -> std::io::Result<Conn> {
        let _ = sock.set_nodelay(true);
        let _ = socket2::SockRef::from(&sock).set_tcp_user_timeout(Some(srv.session_timeout));
        sock.set_read_timeout(Some(TICK))?;
        let out = Output::new(sock.try_clone()?, srv.queue_limit);
        let slot = Slot::take(&srv);
        Ok(Conn {
            srv,
            sock,
            peer,
            client: slot.client,
            slot: Some(slot),
            out,
            held: None,
            session: None,
            named_session: false,
            active_at: Instant::now(),
            reported_at: Instant::now(),
        })
    }

    pub(super) fn output(&self) -> &Arc<Output> {
        &self.out
    }

    /// Serves the connection until it closes or is handed over.
    pub(super) fn run(mut self) {
        let mut buf: Vec<u8> = Vec::new();
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            match self.sock.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
            if self.out.ended.load(Ordering::Relaxed) {
                break;
            }
            match self.take_messages(&mut buf) {
                Next::Continue => {}
                Next::Close => break,
                Next::Transfer => {
                    self.transfer(&buf);
                    return;
                }
            }
            if !self.tick() {
                break;
            }
        }
        self.close();
    }

    /// Handles every complete message in `buf`, leaving the rest (or, on a hand-over, the
    /// request to hand over and what follows it).
    fn take_messages(&mut self, buf: &mut Vec<u8>) -> Next {
        loop {
            if buf.is_empty() {
                return Next::Continue;
            }
            let parsed = rtsp_types::Message::<Vec<u8>>::parse(buf.as_slice());
            let (msg, used) = match parsed {
                Ok(m) => m,
                Err(rtsp_types::ParseError::Incomplete(_)) => {
                    if buf.len() > MAX_REQUEST {
                        // As gst-rtsp-server's content length limit: answered here (handing
                        // over a request cut short leaves gst-rtsp-server reading a closed
                        // connection in a loop).
                        self.respond(413, "Request Entity Too Large", None, "", "");
                        return Next::Close;
                    }
                    return Next::Continue;
                }
                Err(rtsp_types::ParseError::Error) => {
                    // RTSP over HTTP (a tunnel's GET or POST) is gst-rtsp-server's.
                    if self.session.is_none()
                        && (buf.starts_with(b"GET ") || buf.starts_with(b"POST "))
                    {
                        return Next::Transfer;
                    }
                    self.respond(400, "Bad Request", None, "", "");
                    return Next::Close;
                }
            };
            match msg {
                rtsp_types::Message::Request(req) => {
                    self.active_at = Instant::now();
                    match self.request(&req) {
                        Next::Continue => {}
                        Next::Transfer => return Next::Transfer,
                        Next::Close => return Next::Close,
                    }
                }
                // The client's RTCP (receiver reports) keeps its session alive.
                rtsp_types::Message::Data(_) => self.active_at = Instant::now(),
                rtsp_types::Message::Response(_) => {}
            }
            buf.drain(..used);
        }
    }

    /// What does not parse: gst-rtsp-server's (an HTTP tunnel, another dialect) before a
    /// session here, else an error and the end of the connection.
    fn refuse_or_transfer(&mut self, code: u16, reason: &str) -> Next {
        if self.session.is_none() {
            return Next::Transfer;
        }
        self.respond(code, reason, None, "", "");
        Next::Close
    }

    /// What a request that cannot be handed over (not text) gets: 400, and the end.
    fn refuse_untransferable(&mut self) {
        self.respond(400, "Bad Request", None, "", "");
        let _ = self.out.flush();
    }

    fn request(&mut self, req: &rtsp_types::Request<Vec<u8>>) -> Next {
        use rtsp_types::Method;
        let cseq = req
            .header(&rtsp_types::headers::CSEQ)
            .map(|v| v.as_str().trim().to_string())
            .filter(|v| v.len() <= 16 && v.bytes().all(|b| b.is_ascii_digit()));
        let Some(cseq) = cseq else {
            return self.refuse_or_transfer(400, "Bad Request");
        };
        let cseq = cseq.as_str();
        // RTSP 2.0 is gst-rtsp-server's (before a session here; a session here is 1.0).
        if req.version() != rtsp_types::Version::V1_0 {
            if self.session.is_none() {
                return Next::Transfer;
            }
            self.respond(505, "RTSP Version Not Supported", Some(cseq), "", "");
            return Next::Continue;
        }
        // No option is supported (RFC 2326 §12.32), as with gst-rtsp-server's default.
        if let Some(options) = req
            .header(&rtsp_types::headers::REQUIRE)
            .map(|v| v.as_str().trim())
            .filter(|v| !v.is_empty())
        {
            let options = options.replace(['\r', '\n'], "");
            self.respond(
                551,
                "Option not supported",
                Some(cseq),
                &format!("Unsupported: {options}\r\n"),
                "",
            );
            return Next::Continue;
        }
        // A session named here must be this connection's.
        let named = req.header(&rtsp_types::headers::SESSION).map(|v| {
            v.as_str()
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        });
        if let Some(sid) = &named
            && self.session.as_ref().is_none_or(|s| s.id != *sid)
        {
            // Another connection's session (ours or gst-rtsp-server's): refused and counted,
            // as gst-rtsp-server's own check does.
            let taken = self.srv.guard.session_exists(sid);
            if !taken && self.session.is_none() && self.held.is_none() {
                // Not known here: gst-rtsp-server's to answer.
                return Next::Transfer;
            }
            if taken {
                self.srv.guard.count_refused_takeover(
                    <&str>::from(req.method()),
                    &self.peer.ip().to_string(),
                );
            }
            self.respond(454, "Session Not Found", Some(cseq), "", "");
            return Next::Continue;
        }
        self.named_session = named.is_some();
        match req.method() {
            Method::Options => {
                self.respond(200, "OK", Some(cseq), &format!("Public: {PUBLIC}\r\n"), "");
                Next::Continue
            }
            Method::Describe => self.describe(req, cseq),
            Method::Setup => self.setup(req, cseq),
            Method::Play => self.play(req, cseq),
            Method::Pause => {
                if let Some(r) = self.session_required(cseq) {
                    return r;
                }
                self.unsubscribe();
                lockout(&self.out).playing = false;
                let h = self.session_header();
                self.respond(200, "OK", Some(cseq), &h, "");
                Next::Continue
            }
            Method::Teardown => {
                if let Some(r) = self.session_required(cseq) {
                    return r;
                }
                let h = self.session_header();
                self.end_session();
                self.respond(200, "OK", Some(cseq), &h, "");
                Next::Continue
            }
            Method::GetParameter | Method::SetParameter => {
                let h = self.session_header();
                self.respond(200, "OK", Some(cseq), &h, "");
                Next::Continue
            }
            _ if self.session.is_none() => Next::Transfer,
            _ => {
                self.respond(455, "Method Not Valid in This State", Some(cseq), "", "");
                Next::Continue
            }
        }
    }

    /// PLAY, PAUSE and TEARDOWN name this connection's session (checked above).
    fn session_required(&mut self, cseq: &str) -> Option<Next> {
        if self.session.is_some() && self.named_session {
            return None;
        }
        if self.held.is_none() {
            return Some(Next::Transfer);
        }
        self.respond(454, "Session Not Found", Some(cseq), "", "");
        Some(Next::Continue)
    }

    fn session_header(&self) -> String {
        self.session.as_ref().map_or_else(String::new, |s| {
            format!(
                "Session: {};timeout={}\r\n",
                s.id,
                self.srv.session_timeout.as_secs()
            )
        })
    }

    /// Authenticates the request and checks that its user may read `path`; answers 401/403
    /// itself when not.
    fn authorize(
        &mut self,
        req: &rtsp_types::Request<Vec<u8>>,
        path: &str,
        cseq: &str,
    ) -> Option<Identity> {
        let method = <&str>::from(req.method());
        let users = self.srv.guard.users().clone();
        let auth = req
            .header(&rtsp_types::headers::AUTHORIZATION)
            .map(|v| v.as_str().to_string());
        let id = users.authenticate(
            auth.as_deref(),
            &Attempt {
                protocol: Protocol::Rtsp,
                method,
                ip: self.peer.ip(),
            },
        );
        let challenge = |stale: bool| {
            let mut h = format!("WWW-Authenticate: {}\r\n", users.basic_challenge());
            if users.has_digest() {
                let _ = write!(h, "WWW-Authenticate: {}\r\n", users.digest_challenge(stale));
            }
            h
        };
        match id {
            Ok(id) if id.allows(Action::Read, path) => {
                self.srv.guard.direct_client_user(self.client, id.user());
                Some(id)
            }
            Ok(id) if id.is_anonymous() => {
                self.respond(401, "Unauthorized", Some(cseq), &challenge(false), "");
                None
            }
            Ok(id) => {
                eprintln!(
                    "[rtsp] user {} may not Read {}: 403",
                    id.user(),
                    gstgb28181::core::id::printable(path)
                );
                self.respond(403, "Forbidden", Some(cseq), "", "");
                None
            }
            Err(e) => {
                let stale = e == AuthError::StaleNonce;
                self.respond(401, "Unauthorized", Some(cseq), &challenge(stale), "");
                None
            }
        }
    }

    /// The held live path for `path` (`live`: its channel, hooks and stream wait), taking its
    /// ingest (waiting for its streams) if another or none is held. Err(None): a codec only
    /// gst-rtsp-server serves (hand over); Err(Some(..)): answered.
    fn hold(
        &mut self,
        path: &str,
        live: (String, Arc<dyn ChannelHooks>, Duration),
        cseq: &str,
    ) -> Result<(), Option<()>> {
        if self.held.as_ref().is_some_and(|h| h.path == path) {
            return Ok(());
        }
        if self.session.is_some() {
            // One path per connection's session here.
            self.respond(459, "Aggregate Operation Not Allowed", Some(cseq), "", "");
            return Err(Some(()));
        }
        let (channel, hooks, timeout) = live;
        let ingest = match crate::factory::acquire_ingest(hooks.as_ref(), &channel) {
            Ok(i) => i,
            Err(e) => {
                crate::gateway::warn(&format!("channel {channel}: no RTSP media: {e}"));
                self.respond(503, "Service Unavailable", Some(cseq), "", "");
                return Err(Some(()));
            }
        };
        let streams = match ingest.wait_streams(timeout) {
            Ok(s) => s,
            Err(e) => {
                crate::gateway::warn(&format!("channel {channel}: no RTSP media: {e}"));
                ingest.release();
                hooks.maybe_stop(&channel);
                self.respond(503, "Service Unavailable", Some(cseq), "", "");
                return Err(Some(()));
            }
        };
        let mut list = Vec::new();
        for caps in [&streams.video, &streams.audio].into_iter().flatten() {
            match super::codec_of(caps) {
                Some(c) => list.push(c),
                None => {
                    // A codec only gst-rtsp-server's payloaders take.
                    ingest.release();
                    return Err(None);
                }
            }
        }
        let key = ingest.key_frame();
        let streams = list
            .into_iter()
            .enumerate()
            .map(|(i, codec)| sdp::Stream {
                pt: sdp::payload_type(&codec, i),
                key_frame: match &key {
                    Some(b) if codec.is_video() => {
                        b.map_readable().map(|m| m.to_vec()).unwrap_or_default()
                    }
                    _ => Vec::new(),
                },
                codec,
            })
            .collect();
        self.release_held();
        self.held = Some(Held {
            path: path.to_string(),
            channel,
            hooks,
            ingest,
            streams,
            subscription: None,
        });
        Ok(())
    }

    fn describe(&mut self, req: &rtsp_types::Request<Vec<u8>>, cseq: &str) -> Next {
        let Some(url) = req.request_uri() else {
            return self.refuse_or_transfer(400, "Bad Request");
        };
        let Some((path, rest)) = self.srv.split_path(url.path()) else {
            return self.no_session_transfer(cseq, 404, "Not Found");
        };
        if !rest.is_empty() {
            return self.no_session_transfer(cseq, 404, "Not Found");
        }
        if let Some(next) = self.open_path(req, &path, cseq) {
            return next;
        }
        let held = self.held.as_ref().expect("held");
        let body = sdp::describe(&held.streams, self.client, self.peer.is_ipv6());
        let mut base = public_url(url);
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        let h = format!("Content-Base: {base}\r\nContent-Type: application/sdp\r\n");
        self.respond(200, "OK", Some(cseq), &h, &body);
        Next::Continue
    }

    /// A DESCRIBE or SETUP of `path`: a live path, a user who may read it, its ingest held.
    /// None: go on; Some: what the request led to (answered, or handed over).
    fn open_path(
        &mut self,
        req: &rtsp_types::Request<Vec<u8>>,
        path: &str,
        cseq: &str,
    ) -> Option<Next> {
        let Some(live) = self.srv.live_path(path) else {
            return Some(self.no_session_transfer(cseq, 404, "Not Found"));
        };
        if self.authorize(req, path, cseq).is_none() {
            // Answered (401, 403).
            return Some(Next::Continue);
        }
        match self.hold(path, live, cseq) {
            Ok(()) => None,
            Err(None) => Some(self.no_session_transfer(cseq, 404, "Not Found")),
            Err(Some(())) => Some(Next::Continue),
        }
    }

    /// Before any session here: gst-rtsp-server's; after: answered with `code`.
    fn no_session_transfer(&mut self, cseq: &str, code: u16, reason: &str) -> Next {
        if self.session.is_none() {
            self.release_held();
            return Next::Transfer;
        }
        self.respond(code, reason, Some(cseq), "", "");
        Next::Continue
    }

    fn setup(&mut self, req: &rtsp_types::Request<Vec<u8>>, cseq: &str) -> Next {
        let Some(url) = req.request_uri() else {
            return self.refuse_or_transfer(400, "Bad Request");
        };
        // TCP interleaved play only; anything else is gst-rtsp-server's.
        let transport = req
            .typed_header::<rtsp_types::headers::Transports>()
            .ok()
            .flatten()
            .and_then(|t| {
                t.iter().find_map(|t| match t {
                    rtsp_types::headers::Transport::Rtp(r)
                        if r.lower_transport
                            == Some(rtsp_types::headers::RtpLowerTransport::Tcp)
                            && r.profile == rtsp_types::headers::RtpProfile::Avp
                            && !r.params.multicast
                            && r.params
                                .mode
                                .iter()
                                .all(|m| *m == rtsp_types::headers::TransportMode::Play) =>
                    {
                        Some(r.params.interleaved)
                    }
                    _ => None,
                })
            });
        let Some(interleaved) = transport else {
            return self.no_session_transfer(cseq, 461, "Unsupported Transport");
        };
        let Some((path, rest)) = self.srv.split_path(url.path()) else {
            return self.no_session_transfer(cseq, 404, "Not Found");
        };
        let index = match rest.strip_prefix("/stream=").map(str::parse::<usize>) {
            Some(Ok(i)) => i,
            None if rest.is_empty() || rest == "/" => 0,
            _ => return self.no_session_transfer(cseq, 404, "Not Found"),
        };
        if let Some(next) = self.open_path(req, &path, cseq) {
            return next;
        }
        let held = self.held.as_ref().expect("held");
        let Some(stream) = held.streams.get(index) else {
            self.respond(404, "Not Found", Some(cseq), "", "");
            return Next::Continue;
        };
        let (kind, codec, pt) = (kind_of(&stream.codec), stream.codec.clone(), stream.pt);
        let channel = match interleaved {
            Some((a, _)) => a,
            None => (index * 2) as u8,
        };
        if channel == u8::MAX {
            self.respond(461, "Unsupported Transport", Some(cseq), "", "");
            return Next::Continue;
        }
        if self.session.is_none() {
            let Some(id) = crate::auth::hash::random_hex(8).ok() else {
                self.respond(500, "Internal Server Error", Some(cseq), "", "");
                return Next::Continue;
            };
            let Some(number) = self.srv.guard.direct_session(&id, self.client) else {
                self.respond(503, "Service Unavailable", Some(cseq), "", "");
                return Next::Continue;
            };
            let info = Arc::new(SessionInfo {
                number,
                path: path.clone(),
                remote: self.peer.to_string(),
                output: self.out.clone(),
            });
            self.srv.registry.add_session(&info, &path, &self.out);
            self.session = Some(Session { id, info });
        }
        let r: [u8; 10] = random_bytes();
        let ssrc = u32::from_be_bytes([r[0], r[1], r[2], r[3]]);
        let seq = u16::from_be_bytes([r[4], r[5]]);
        let ts = u32::from_be_bytes([r[6], r[7], r[8], r[9]]);
        {
            let mut st = lockout(&self.out);
            st.streams.retain(|(k, _)| *k != kind);
            st.streams
                .push((kind, Packetizer::new(codec, pt, ssrc, seq, ts, channel)));
        }
        let h = format!(
            "Transport: RTP/AVP/TCP;unicast;interleaved={channel}-{};ssrc={ssrc:08X};mode=\"PLAY\"\r\n{}",
            channel.wrapping_add(1),
            self.session_header()
        );
        self.respond(200, "OK", Some(cseq), &h, "");
        Next::Continue
    }

    fn play(&mut self, req: &rtsp_types::Request<Vec<u8>>, cseq: &str) -> Next {
        if let Some(r) = self.session_required(cseq) {
            return r;
        }
        let path = self
            .held
            .as_ref()
            .map(|h| h.path.clone())
            .unwrap_or_default();
        if self.authorize(req, &path, cseq).is_none() {
            return Next::Continue;
        }
        let Some(held) = self.held.as_mut() else {
            self.respond(454, "Session Not Found", Some(cseq), "", "");
            return Next::Continue;
        };
        let base = req
            .request_uri()
            .map(|u| public_url(u).to_string().trim_end_matches('/').to_string())
            .unwrap_or_default();
        let mut info = Vec::new();
        // The ingest clock now: a resumed stream's RTP-Info estimates its next timestamp.
        let now = held.ingest.clock_time();
        let resumed;
        {
            let mut st = lockout(&self.out);
            resumed = st.started();
            if st.streams.is_empty() {
                drop(st);
                self.respond(455, "Method Not Valid in This State", Some(cseq), "", "");
                return Next::Continue;
            }
            for (kind, p) in &st.streams {
                let index = held
                    .streams
                    .iter()
                    .position(|st| kind_of(&st.codec) == *kind)
                    .unwrap_or(0);
                let rtptime = match (resumed, now) {
                    (true, Some(now)) => p.rtp_time(now),
                    _ => p.ts_base(),
                };
                info.push(format!(
                    "url={base}/stream={index};seq={};rtptime={rtptime}",
                    p.next_seq()
                ));
            }
            st.play();
        }
        let first = held.subscription.is_none();
        if first {
            let sink: Arc<dyn crate::ingest::FrameSink> = self.out.clone();
            // The response goes first: the cached GOP follows it at once.
            let h = format!(
                "Range: npt=now-\r\nRTP-Info: {}\r\n{}",
                info.join(","),
                self.session_header()
            );
            self.respond(200, "OK", Some(cseq), &h, "");
            let held = self.held.as_mut().expect("held");
            // A resumed stream goes on with the next live key frame: the cached GOP is
            // older than what it already sent (its RTP times would step back).
            match held.ingest.subscribe_direct(sink, !resumed) {
                Some(id) => held.subscription = Some(id),
                None => return Next::Close,
            }
            return Next::Continue;
        }
        let h = format!("Range: npt=now-\r\n{}", self.session_header());
        self.respond(200, "OK", Some(cseq), &h, "");
        Next::Continue
    }

    fn respond(&mut self, code: u16, reason: &str, cseq: Option<&str>, headers: &str, body: &str) {
        let mut r = format!("RTSP/1.0 {code} {reason}\r\n");
        if let Some(c) = cseq {
            let _ = write!(r, "CSeq: {c}\r\n");
        }
        let _ = write!(r, "Server: gst-ipcam-gateway\r\n{headers}");
        if !body.is_empty() {
            let _ = write!(r, "Content-Length: {}\r\n", body.len());
        }
        r.push_str("\r\n");
        r.push_str(body);
        if !self.out.send_now(r.as_bytes()) {
            self.out.ended.store(true, Ordering::Relaxed);
        }
    }

    /// Flushes, sends reports and ends what timed out; false when the connection closes.
    fn tick(&mut self) -> bool {
        if !self.out.flush() || self.out.ended.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        let quiet = now.duration_since(self.active_at);
        if self.session.is_some() {
            if quiet >= self.srv.session_timeout {
                eprintln!(
                    "[rtsp] session of {} timed out ({}s without a request or RTCP)",
                    self.peer,
                    self.srv.session_timeout.as_secs()
                );
                return false;
            }
            if now.duration_since(self.reported_at) >= SENDER_REPORT_INTERVAL {
                self.reported_at = now;
                let clock = self.held.as_ref().and_then(|h| h.ingest.clock_time());
                if let Some(c) = clock
                    && !self.out.sender_reports(c, "gst-ipcam-gateway")
                {
                    return false;
                }
            }
        } else if quiet >= self.srv.idle_timeout && self.out.waiting() == 0 {
            self.srv.guard.count_idle_close();
            return false;
        }
        true
    }

    fn unsubscribe(&mut self) {
        if let Some(h) = self.held.as_mut()
            && let Some(id) = h.subscription.take()
        {
            h.ingest.unsubscribe(id);
        }
    }

    fn release_held(&mut self) {
        self.unsubscribe();
        if let Some(h) = self.held.take() {
            h.ingest.release();
            h.hooks.maybe_stop(&h.channel);
        }
    }

    fn end_session(&mut self) {
        self.release_held();
        {
            let mut st = lockout(&self.out);
            st.playing = false;
            st.streams.clear();
        }
        if let Some(s) = self.session.take() {
            self.srv.guard.end_direct_session(&s.id);
            self.srv.registry.remove_session(s.info.number);
        }
    }

    fn close(mut self) {
        self.end_session();
        let _ = self.out.flush();
        // The slot is free before the lingering end.
        self.slot = None;
        linger_close(&self.sock);
    }

    /// Hands the connection and `pending` (this request on) to gst-rtsp-server.
    fn transfer(mut self, pending: &[u8]) {
        self.end_session();
        self.slot = None;
        let text = match std::str::from_utf8(pending) {
            Ok(t) if !t.contains('\0') => t.to_string(),
            _ => {
                // gst-rtsp-server takes what was read as text only: a body that is not
                // (what it would refuse as well) is answered here.
                self.refuse_untransferable();
                linger_close(&self.sock);
                return;
            }
        };
        let _ = self.sock.set_read_timeout(None);
        let peer = self.peer;
        // The output's clone of the socket goes with this connection.
        drop(self.out);
        let fd: std::os::fd::OwnedFd = self.sock.into();
        let Ok(socket) = gst_rtsp_server::gio::Socket::from_fd(fd) else {
            return;
        };
        let ip = peer.ip().to_string();
        let initial = (!text.is_empty()).then_some(text.as_str());
        if let Err(e) =
            self.srv
                .rtsp
                .transfer_connection(socket, &ip, i32::from(peer.port()), initial)
        {
            eprintln!("[rtsp] could not hand the connection of {peer} over: {e}");
        }
    }
}

/// Ends a connection so that what was sent last (an error response) arrives: our side is
/// shut down first and what the peer still sends is read and dropped for a moment (bounded),
/// since closing with unread input would reset the connection and lose the response.
fn linger_close(sock: &TcpStream) {
    let _ = sock.shutdown(std::net::Shutdown::Write);
    let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
    let end = Instant::now() + Duration::from_secs(1);
    let mut left = 256 * 1024usize;
    let mut b = [0u8; 16 * 1024];
    let mut s = sock;
    while left > 0 && Instant::now() < end {
        match s.read(&mut b) {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
    let _ = sock.shutdown(std::net::Shutdown::Both);
}

/// A request URL as responses may repeat it: without credentials and query.
fn public_url(url: &rtsp_types::Url) -> rtsp_types::Url {
    let mut u = url.clone();
    let _ = u.set_password(None);
    let _ = u.set_username("");
    u.set_query(None);
    u
}

fn kind_of(codec: &Codec) -> Kind {
    if codec.is_video() {
        Kind::Video
    } else {
        Kind::Audio
    }
}

fn lockout(o: &Output) -> std::sync::MutexGuard<'_, super::reader::OutState> {
    gst_ipcam_common::sync::lock(&o.state)
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // Without randomness the numbers are only less surprising, not wrong.
    let _ = getrandom::fill(&mut b);
    b
}

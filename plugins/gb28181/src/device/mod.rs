//! The device side of GB/T 28181 for gb28181sink: a SIP user agent on a UDP socket or a TCP
//! connection of its own that registers with digest ([`RegisterClient`]: refresh, keepalives, re-registration with
//! backoff), answers Catalog / DeviceInfo / DeviceStatus queries and PTZ controls, and answers
//! INVITE with an SDP (UDP, TCP active or TCP passive as the offer asks), starting a
//! [`MediaSession`] at ACK and ending it at BYE (either side).
//!
//! GStreamer-free: one thread and std sockets; the sink feeds frames to
//! [`DeviceAgent::send_frame`] from its streaming thread.
//!
//! SIP over TCP (GB/T 28181-2016): the agent connects to the server, sends everything
//! (REGISTER, keepalives, answers, BYE) on that connection and reads requests and responses
//! from it with [`StreamFramer`] (bounded by the framer's message size limit). Via says
//! `SIP/2.0/TCP`, Contact `;transport=tcp`; nothing is retransmitted (reliable transport, also
//! no 200-until-ACK resends). When the connection is refused or drops, the agent connects
//! again after `retry_ms`, doubling per failure in a row (up to 32×, as the registration
//! backoff), and registers again. The OS picks the local TCP port (`local_port` is for UDP).
//!
//! In-dialog requests from the platform (BYE, INFO) are believed only with the dialog's
//! Call-ID and both its tags, from the address the INVITE came from; anything else gets 481
//! and the session goes on. Call-IDs, tags and branches are random (OS randomness).
//!
//! Limits: one media session at a time (a new INVITE replaces the old one); the GOP cache is
//! bounded by [`MAX_GOP_BYTES`] and [`MAX_GOP_FRAMES`].

mod answers;
mod channels;
mod invite;
mod media;
mod records;
mod subscriptions;
mod talk;

pub use channels::{
    CATALOG_CHECK_MS, ChannelDirectory, Channels, MAX_CATALOG_ITEMS, catalog_changes,
    catalog_pages, check_media_target, is_ssrc,
};
use gst_ipcam_common::sync::lock;
use invite::no_dialog;
use media::{Gop, MediaOut, MediaSession};
pub use records::{MAX_RECORDS, Recording, is_gb_time, parse_records, records_in};
pub use talk::TalkSink;

use crate::core::addr;
use crate::core::client::{
    ClientAction, ClientState, MAX_BACKOFF_SHIFT, RegisterClient, RegisterClientConfig,
};
use crate::core::manscdp::{self, CatalogItem, Manscdp};
use crate::core::mansrtsp;
use crate::core::media::{frame_rfc4571, has_psm, is_header_only, is_key_frame};
use crate::core::random;
use crate::core::sdp::{self, MediaTransport};
use crate::core::sip::{Message, NameAddr, StreamFramer};
use crate::core::subject::Subject;
pub use crate::endpoint::SipTransport;
use crate::endpoint::now_ms;
use gstmpegps::rtp::packetizer;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub const MAX_GOP_BYTES: usize = 16 * 1024 * 1024;
pub const MAX_GOP_FRAMES: usize = 1000;
const MTU: u32 = 1400;

#[derive(Debug, Clone)]
pub struct DeviceConfig {
    pub server: SocketAddr,
    pub server_id: String,
    pub domain: String,
    pub device_id: String,
    pub channel_id: String,
    pub password: String,
    /// Local IP for SIP and media (Contact, Via, SDP); the socket binds to it.
    pub local_ip: String,
    pub local_port: u16,
    pub expires: u32,
    pub keepalive_interval_ms: u64,
    pub retry_ms: u64,
    pub device_name: String,
    /// SIP over UDP (a socket bound to `local_ip:local_port`) or TCP (a connection to `server`).
    pub transport: SipTransport,
    /// Recordings the device says it has (answers to RecordInfo), see [`parse_records`].
    pub records: Vec<Recording>,
}

/// What the sink is told.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceEvent {
    Registered {
        expires_s: u32,
    },
    RegisterFailed {
        status: Option<u16>,
    },
    Unregistered,
    /// SIP over TCP: the connection to the server was refused, failed or closed; the agent
    /// connects again (and registers) after `retry_in_ms`.
    Disconnected {
        reason: String,
        retry_in_ms: u64,
    },
    /// SIP over TCP: connected to the server (from `local`), registering.
    Connected {
        local: String,
    },
    SessionStarted {
        call_id: String,
        /// The channel asked for (the Request-URI's; for a one-channel device, its channel).
        channel: String,
        /// `Play`, `Playback` or `Download` (the offer's `s=`).
        kind: String,
        /// Playback / Download: the offer's `t=` range (Unix seconds, as GB/T 28181 writes it).
        range: Option<(u64, u64)>,
        /// Download: the offer's `a=downloadspeed`.
        download_speed: Option<u32>,
        transport: MediaTransport,
        dest: String,
        ssrc: u32,
    },
    SessionStopped {
        call_id: String,
        reason: String,
    },
    /// A PTZ command (hex) for `channel` (the DeviceControl's DeviceID).
    Ptz {
        channel: String,
        command: String,
    },
    /// The platform asked for a key frame of `channel` (DeviceControl `IFameCmd`).
    KeyFrameRequested {
        channel: String,
    },
    /// Many-channel mode: the platform asks for the recordings of a shared `channel`
    /// (RecordInfo, times `yyyy-MM-ddTHH:mm:ss` as sent); answer with
    /// [`DeviceAgent::answer_record_info`].
    RecordInfoQuery {
        sn: u32,
        channel: String,
        start: String,
        end: String,
    },
    /// MANSRTSP INFO during playback: `PLAY` (with scale / npt) or `PAUSE`, in call
    /// `call_id`.
    PlaybackControl {
        call_id: String,
        method: String,
        scale: Option<f64>,
        npt: Option<f64>,
    },
    /// The platform subscribed to `event` (Catalog, Alarm, MobilePosition) or refreshed it;
    /// `expires_s` 0: it unsubscribed.
    Subscribed {
        event: String,
        expires_s: u32,
    },
    /// A voice broadcast started: the platform sends `codec` (PCMA/PCMU) from `source`.
    TalkStarted {
        call_id: String,
        codec: String,
        source: String,
    },
    /// The broadcast ended (`bye`, `stop`, `replaced`) or was refused (`refused: <status>`).
    TalkStopped {
        call_id: String,
        reason: String,
    },
    /// A request was refused with `status` (many-channel mode: a stranger, an unshared or
    /// malformed channel, a hostile SDP, too many sessions); `why` is printable.
    Refused {
        method: String,
        status: u16,
        why: String,
    },
}

type EventFn = Box<dyn Fn(DeviceEvent) + Send + Sync>;

#[derive(Clone)]
struct Dialog {
    call_id: String,
    /// Our From (the INVITE's To with our tag) and their To (the INVITE's From).
    local: String,
    remote: String,
    /// Our tag (To of our 200) and the platform's (From of its INVITE).
    local_tag: String,
    remote_tag: String,
    /// Where the INVITE came from: in-dialog requests must come from there too.
    peer: SocketAddr,
    remote_target: String,
    cseq: u32,
}

impl Dialog {
    /// Whether `m` (from `from`) belongs to this dialog: Call-ID, both tags, peer address.
    fn matches(&self, m: &Message, from: SocketAddr) -> bool {
        let tag = |na: Option<NameAddr>| na.and_then(|n| n.tag().map(str::to_string));
        m.call_id() == Some(self.call_id.as_str())
            && tag(m.from()).as_deref() == Some(self.remote_tag.as_str())
            && tag(m.to()).as_deref() == Some(self.local_tag.as_str())
            && from == self.peer
    }
}

/// Our 200 OK to an INVITE, re-sent until the ACK comes (RFC 3261 §13.3.1.4).
struct OkRetransmit {
    call_id: String,
    bytes: Vec<u8>,
    dest: SocketAddr,
    next_at: u64,
    interval: u64,
    give_up_at: u64,
}

/// Where SIP goes: a UDP socket, or the current TCP connection to the server (its writing
/// half; the agent's thread reads the other).
enum SipSocket {
    Udp(UdpSocket),
    Tcp(Mutex<Option<TcpStream>>),
}

/// Longest a TCP connect to the server may block the agent's thread.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

pub struct DeviceAgent {
    ok_retransmit: Mutex<Option<OkRetransmit>>,
    config: DeviceConfig,
    socket: SipSocket,
    /// Our SIP address (Via, Contact, SDP); over TCP the current connection's local address.
    local_addr: Mutex<SocketAddr>,
    /// TCP connection failures in a row (for the reconnect backoff).
    tcp_failures: AtomicU32,
    stop: AtomicBool,
    session: Mutex<Option<MediaSession>>,
    pending: Mutex<Option<(MediaSession, Dialog)>>,
    dialog: Mutex<Option<Dialog>>,
    gop: Mutex<Gop>,
    client: Mutex<RegisterClient>,
    /// The platform's subscriptions to our events.
    subs: Mutex<subscriptions::DeviceSubs>,
    /// The voice broadcast (talk) session.
    talk: Mutex<talk::DeviceTalk>,
    on_event: EventFn,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Many-channel mode (a lower platform): what it shares, and its calls.
    channels: Option<Channels>,
    calls: Mutex<Vec<channels::ChannelCall>>,
    catalog_watch: Mutex<channels::CatalogWatch>,
}

fn other(s: &str) -> io::Error {
    io::Error::other(s.to_string())
}

impl DeviceAgent {
    pub fn start(
        config: DeviceConfig,
        on_event: impl Fn(DeviceEvent) + Send + Sync + 'static,
    ) -> io::Result<Arc<DeviceAgent>> {
        Self::start_inner(config, None, on_event)
    }

    fn start_inner(
        config: DeviceConfig,
        channels: Option<Channels>,
        on_event: impl Fn(DeviceEvent) + Send + Sync + 'static,
    ) -> io::Result<Arc<DeviceAgent>> {
        let bind = match addr::parse_ip(&config.local_ip) {
            Some(ip) => SocketAddr::new(ip, config.local_port),
            None => (config.local_ip.as_str(), config.local_port)
                .to_socket_addrs()?
                .next()
                .ok_or_else(|| other("no local address"))?,
        };
        // A socket of the wrong family would send nothing, silently: refuse it here.
        if let Some(e) = addr::family_mismatch("local address", bind.ip(), config.server) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, e));
        }
        let (socket, local_addr) = match config.transport {
            SipTransport::Udp => {
                let socket = UdpSocket::bind(bind)?;
                socket.set_read_timeout(Some(Duration::from_millis(20)))?;
                let local_addr = socket.local_addr()?;
                (SipSocket::Udp(socket), local_addr)
            }
            // Not connected yet: the port becomes the connection's.
            SipTransport::Tcp => (SipSocket::Tcp(Mutex::new(None)), bind),
        };
        let client = RegisterClient::new(RegisterClientConfig {
            device_id: config.device_id.clone(),
            domain: config.domain.clone(),
            server_id: config.server_id.clone(),
            local_host: local_addr.ip().to_string(),
            local_port: local_addr.port(),
            transport: config.transport.as_str().into(),
            password: config.password.clone(),
            expires: config.expires,
            keepalive_interval_ms: config.keepalive_interval_ms,
            max_keepalive_failures: 3,
            retry_ms: config.retry_ms,
            charset: manscdp::Charset::Gb2312,
        });
        let agent = Arc::new(DeviceAgent {
            ok_retransmit: Mutex::new(None),
            config,
            socket,
            local_addr: Mutex::new(local_addr),
            tcp_failures: AtomicU32::new(0),
            stop: AtomicBool::new(false),
            session: Mutex::new(None),
            pending: Mutex::new(None),
            dialog: Mutex::new(None),
            gop: Mutex::new(Gop::default()),
            client: Mutex::new(client),
            subs: Mutex::new(subscriptions::DeviceSubs::default()),
            talk: Mutex::new(talk::DeviceTalk::default()),
            on_event: Box::new(on_event),
            thread: Mutex::new(None),
            channels,
            calls: Mutex::new(Vec::new()),
            catalog_watch: Mutex::new(Default::default()),
        });
        let a = agent.clone();
        let t = std::thread::Builder::new()
            .name("gb28181-device".into())
            .spawn(move || a.run())?;
        *lock(&agent.thread) = Some(t);
        Ok(agent)
    }

    /// Our SIP address (over TCP: of the current connection, port 0 before the first).
    pub fn local_addr(&self) -> SocketAddr {
        *lock(&self.local_addr)
    }

    fn reliable(&self) -> bool {
        self.config.transport == SipTransport::Tcp
    }

    /// Whether SIP can go out: always over UDP, over TCP while connected.
    pub fn is_connected(&self) -> bool {
        match &self.socket {
            SipSocket::Udp(_) => true,
            SipSocket::Tcp(w) => lock(w).is_some(),
        }
    }

    /// `SIP/2.0/UDP <addr>;rport;branch=z9hG4bK<random>` (TCP over TCP).
    fn via(&self) -> String {
        format!(
            "SIP/2.0/{} {};rport;branch={}",
            self.config.transport.as_str(),
            self.local_addr(),
            random::branch()
        )
    }

    /// Our Contact for `user`.
    fn contact(&self, user: &str) -> String {
        let params = if self.reliable() {
            ";transport=tcp"
        } else {
            ""
        };
        format!("<sip:{user}@{}{params}>", self.local_addr())
    }

    pub fn is_registered(&self) -> bool {
        lock(&self.client).state == ClientState::Registered
    }

    /// When (`now_ms` clock) the platform last answered a keepalive.
    pub fn last_keepalive_ms(&self) -> Option<u64> {
        lock(&self.client).last_keepalive_ok_ms
    }

    pub fn has_session(&self) -> bool {
        lock(&self.session).is_some()
    }

    /// Ends the session with BYE, unregisters, and stops the thread.
    pub fn stop(&self) {
        self.end_talk("stop");
        self.hang_up_all();
        if let Some(mut d) = lock(&self.dialog).take() {
            d.cseq += 1;
            let bye = self.in_dialog_request(&d, "BYE");
            let _ = self.send(&bye);
            // Over UDP once more in case the first is lost (we don't wait for the 200).
            if !self.reliable() {
                let _ = self.send(&bye);
            }
        }
        *lock(&self.session) = None;
        if self.is_connected() {
            let acts = lock(&self.client).unregister(now_ms());
            self.do_actions(acts);
            // Give the platform a moment to answer the unregister.
            let deadline = std::time::Instant::now() + Duration::from_millis(300);
            while std::time::Instant::now() < deadline
                && !lock(&self.client).state.eq(&ClientState::Idle)
                && self.is_connected()
            {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
        // Over TCP: close the connection once unregistered.
        if let SipSocket::Tcp(w) = &self.socket
            && let Some(s) = lock(w).take()
        {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Sends to the server (over TCP: on the connection, an error when there is none).
    fn send(&self, m: &Message) -> io::Result<()> {
        self.send_bytes(&m.to_bytes(), self.config.server)
    }

    /// Over UDP to `dest`; over TCP on the connection (where every request came from).
    fn send_bytes(&self, bytes: &[u8], dest: SocketAddr) -> io::Result<()> {
        match &self.socket {
            SipSocket::Udp(s) => s
                .send_to(bytes, addr::wire_addr(self.local_addr(), dest))
                .map(|_| ()),
            SipSocket::Tcp(w) => {
                let mut w = lock(w);
                let s = w.as_mut().ok_or_else(|| other("not connected"))?;
                let r = s.write_all(bytes);
                if r.is_err() {
                    // Let the reading side notice and reconnect.
                    let _ = s.shutdown(std::net::Shutdown::Both);
                }
                r
            }
        }
    }

    fn do_actions(&self, acts: Vec<ClientAction>) {
        for a in acts {
            match a {
                ClientAction::Send(m) => {
                    let _ = self.send(&m);
                }
                ClientAction::Registered { expires_s, .. } => {
                    self.tcp_failures.store(0, Ordering::SeqCst);
                    (self.on_event)(DeviceEvent::Registered { expires_s })
                }
                ClientAction::Unregistered => (self.on_event)(DeviceEvent::Unregistered),
                ClientAction::Failed { status } => {
                    // Over TCP, no answer at all (REGISTER or keepalives): the connection is
                    // dead or half-open; drop it, `run_tcp` connects again.
                    if status.is_none()
                        && let SipSocket::Tcp(w) = &self.socket
                        && let Some(s) = lock(w).take()
                    {
                        let _ = s.shutdown(std::net::Shutdown::Both);
                    }
                    (self.on_event)(DeviceEvent::RegisterFailed { status })
                }
            }
        }
    }

    fn run(self: Arc<Self>) {
        match &self.socket {
            SipSocket::Udp(socket) => self.run_udp(socket),
            SipSocket::Tcp(_) => self.run_tcp(),
        }
    }

    fn run_udp(&self, socket: &UdpSocket) {
        let acts = lock(&self.client).start(now_ms());
        self.do_actions(acts);
        let mut buf = vec![0u8; 65_536];
        while !self.stop.load(Ordering::SeqCst) {
            if let Ok((n, from)) = socket.recv_from(&mut buf)
                && let Ok(m) = Message::parse(&buf[..n])
            {
                self.handle(m, addr::canonical(from));
            }
            let acts = lock(&self.client).poll(now_ms());
            self.do_actions(acts);
            self.retransmit_ok(now_ms());
            self.tick_subscriptions(now_ms());
            self.tick_talk(now_ms());
            self.tick_calls(now_ms());
            self.tick_catalog(now_ms());
        }
    }

    /// Delay before the next connection attempt after `failures` in a row (1 = the first).
    fn reconnect_delay(&self, failures: u32) -> u64 {
        self.config.retry_ms << failures.saturating_sub(1).min(MAX_BACKOFF_SHIFT)
    }

    /// Connects to the server and starts registering on the new connection.
    fn connect_tcp(&self) -> io::Result<TcpStream> {
        let s = TcpStream::connect_timeout(&self.config.server, CONNECT_TIMEOUT)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_millis(20)))?;
        s.set_write_timeout(Some(Duration::from_secs(2)))?;
        let local = s.local_addr()?;
        let writer = s.try_clone()?;
        *lock(&self.local_addr) = local;
        let SipSocket::Tcp(w) = &self.socket else {
            return Err(other("not TCP"));
        };
        *lock(w) = Some(writer);
        (self.on_event)(DeviceEvent::Connected {
            local: local.to_string(),
        });
        let acts = {
            let mut c = lock(&self.client);
            // A fresh registration (new Call-ID) from the new address.
            let mut config = c.config.clone();
            config.local_host = local.ip().to_string();
            config.local_port = local.port();
            *c = RegisterClient::new(config);
            c.start(now_ms())
        };
        self.do_actions(acts);
        Ok(s)
    }

    /// The connection is gone: forget it and the registration made over it.
    fn disconnected(&self, reason: String) -> u64 {
        if let SipSocket::Tcp(w) = &self.socket
            && let Some(s) = lock(w).take()
        {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        {
            let mut c = lock(&self.client);
            let config = c.config.clone();
            *c = RegisterClient::new(config);
        }
        let failures = self.tcp_failures.fetch_add(1, Ordering::SeqCst) + 1;
        let retry_in_ms = self.reconnect_delay(failures);
        (self.on_event)(DeviceEvent::Disconnected {
            reason,
            retry_in_ms,
        });
        retry_in_ms
    }

    fn run_tcp(&self) {
        let mut conn: Option<(TcpStream, StreamFramer)> = None;
        let mut connect_at = 0u64;
        let mut buf = vec![0u8; 16 * 1024];
        while !self.stop.load(Ordering::SeqCst) {
            let now = now_ms();
            let Some((stream, framer)) = conn.as_mut() else {
                if now >= connect_at {
                    match self.connect_tcp() {
                        Ok(s) => conn = Some((s, StreamFramer::new())),
                        Err(e) => {
                            connect_at = now + self.disconnected(format!("connect: {e}"));
                        }
                    }
                } else {
                    std::thread::sleep(Duration::from_millis(20));
                }
                self.retransmit_ok(now);
                continue;
            };
            let closed = match stream.read(&mut buf) {
                Ok(0) => Some("closed by the server".to_string()),
                Ok(n) => {
                    let peer = stream.peer_addr().unwrap_or(self.config.server);
                    for m in framer.push(&buf[..n]).into_iter().flatten() {
                        self.handle(m, peer);
                    }
                    None
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    None
                }
                Err(e) => Some(format!("read: {e}")),
            };
            // A write error shuts the connection down and empties the writer.
            let closed = closed.or_else(|| {
                (!self.is_connected()).then(|| "write failed or nothing answered".into())
            });
            if let Some(reason) = closed {
                conn = None;
                connect_at = now_ms() + self.disconnected(reason);
                continue;
            }
            let acts = lock(&self.client).poll(now_ms());
            self.do_actions(acts);
            self.retransmit_ok(now_ms());
            self.tick_subscriptions(now_ms());
            self.tick_talk(now_ms());
            self.tick_calls(now_ms());
            self.tick_catalog(now_ms());
        }
    }

    fn handle(&self, m: Message, from: SocketAddr) {
        if !m.is_request() {
            if self.handle_talk_response(&m) {
                return;
            }
            let acts = lock(&self.client).on_response(&m, now_ms());
            self.do_actions(acts);
            return;
        }
        let reply = |r: Message| {
            let _ = self.send_bytes(&r.to_bytes(), from);
        };
        let method = m.method().unwrap_or_default().to_ascii_uppercase();
        if let Some(c) = &self.channels {
            // A lower platform takes requests from its upper platform only.
            if !self.is_upper(from) {
                if method != "ACK" {
                    reply(Message::response_to(&m, 403, "Forbidden", None));
                }
                (self.on_event)(DeviceEvent::Refused {
                    method,
                    status: 403,
                    why: format!("from {from}, not the upper platform"),
                });
                return;
            }
            match method.as_str() {
                "INVITE" => return self.handle_channel_invite(c, &m, from),
                "ACK" if self.channel_ack(&m) => return,
                "BYE" if self.channel_bye(&m, from) => return,
                "INFO" if self.channel_info(&m, from) => return,
                _ => {}
            }
        }
        match method.as_str() {
            "MESSAGE" => {
                reply(Message::response_to(&m, 200, "OK", Some(&random::tag())));
                self.handle_manscdp(&m);
            }
            "INVITE" => self.handle_invite(&m, from),
            "SUBSCRIBE" => self.handle_subscribe(&m, from),
            "ACK" => {
                {
                    let mut r = lock(&self.ok_retransmit);
                    if r.as_ref().map(|r| r.call_id.as_str()) == m.call_id() {
                        *r = None;
                    }
                }
                let p = lock(&self.pending).take();
                if let Some((s, d)) = p {
                    if Some(s.call_id.as_str()) == m.call_id() {
                        let ev = s.started_event(&self.config.channel_id);
                        *lock(&self.session) = Some(s);
                        *lock(&self.dialog) = Some(d);
                        (self.on_event)(ev);
                    } else {
                        *lock(&self.pending) = Some((s, d));
                    }
                }
            }
            "INFO" => {
                if !self.in_dialog(&m, from) {
                    reply(no_dialog(&m));
                    return;
                }
                if let Some(ev) = self.playback_control(&m, from) {
                    (self.on_event)(ev);
                }
            }
            "BYE" => {
                if self.talk_bye(&m, from) {
                    reply(Message::response_to(&m, 200, "OK", None));
                    return;
                }
                if !self.in_dialog(&m, from) {
                    reply(no_dialog(&m));
                    return;
                }
                reply(Message::response_to(&m, 200, "OK", None));
                let cid = m.call_id().unwrap_or_default().to_string();
                {
                    // Hung up before its ACK: forget the session and our 200.
                    let mut p = lock(&self.pending);
                    if p.as_ref().is_some_and(|(s, _)| s.call_id == cid) {
                        *p = None;
                    }
                    let mut r = lock(&self.ok_retransmit);
                    if r.as_ref().is_some_and(|r| r.call_id == cid) {
                        *r = None;
                    }
                }
                let mut ended = false;
                {
                    let mut s = lock(&self.session);
                    if s.as_ref().is_some_and(|s| s.call_id == cid) {
                        *s = None;
                        ended = true;
                    }
                }
                let mut d = lock(&self.dialog);
                if d.as_ref().is_some_and(|d| d.call_id == cid) {
                    *d = None;
                }
                drop(d);
                if ended {
                    (self.on_event)(DeviceEvent::SessionStopped {
                        call_id: cid,
                        reason: "bye".into(),
                    });
                }
            }
            _ => reply(Message::response_to(&m, 501, "Not Implemented", None)),
        }
    }
}

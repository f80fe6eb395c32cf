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

mod subscriptions;
mod talk;

pub use talk::TalkSink;

use crate::core::addr;
use crate::core::client::{
    ClientAction, ClientState, MAX_BACKOFF_SHIFT, RegisterClient, RegisterClientConfig,
};
use crate::core::manscdp::{self, CatalogItem, Manscdp};
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

/// A recording a (simulated) device lists: start and end as `yyyy-MM-ddTHH:mm:ss`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recording {
    pub start: String,
    pub end: String,
}

/// Recordings a device may list at most, and items in one RecordInfo answer at most.
pub const MAX_RECORDS: usize = 1000;
const MAX_RECORDS_PER_ANSWER: usize = 20;

/// Whether `t` is a GB/T 28181 time `yyyy-MM-ddTHH:mm:ss` (digits and separators in place).
pub fn is_gb_time(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 19
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            _ => c.is_ascii_digit(),
        })
}

/// `start/end;start/end;...` (times `yyyy-MM-ddTHH:mm:ss`, start before end), at most
/// [`MAX_RECORDS`]. Empty: none.
pub fn parse_records(s: &str) -> Result<Vec<Recording>, String> {
    let mut out = Vec::new();
    for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        if out.len() >= MAX_RECORDS {
            return Err(format!("at most {MAX_RECORDS} recordings"));
        }
        let (start, end) = part
            .split_once('/')
            .filter(|(a, b)| is_gb_time(a) && is_gb_time(b) && a < b)
            .ok_or_else(|| {
                format!(
                    "{}: not start/end as yyyy-MM-ddTHH:mm:ss",
                    crate::core::id::printable(part)
                )
            })?;
        out.push(Recording {
            start: start.into(),
            end: end.into(),
        });
    }
    Ok(out)
}

/// The recordings of `records` that overlap `[start, end)` (same time format: compared as
/// strings), at most [`MAX_RECORDS_PER_ANSWER`], as RecordInfo items of `channel`.
pub fn records_in(
    records: &[Recording],
    channel: &str,
    start: &str,
    end: &str,
) -> Vec<manscdp::RecordItem> {
    records
        .iter()
        .filter(|r| r.start.as_str() < end && r.end.as_str() > start)
        .take(MAX_RECORDS_PER_ANSWER)
        .map(|r| manscdp::RecordItem {
            device_id: channel.to_string(),
            name: "recording".into(),
            file_path: format!("{}-{}", r.start, r.end).replace([':', '-', 'T'], ""),
            address: "local".into(),
            start_time: r.start.clone(),
            end_time: r.end.clone(),
            secrecy: Some(0),
            record_type: "time".into(),
            file_size: None,
        })
        .collect()
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
        /// `Play`, `Playback` or `Download` (the offer's `s=`).
        kind: String,
        transport: MediaTransport,
        dest: String,
        ssrc: u32,
    },
    SessionStopped {
        call_id: String,
        reason: String,
    },
    Ptz {
        command: String,
    },
    /// The platform asked for a key frame (DeviceControl `IFameCmd`).
    KeyFrameRequested,
    /// MANSRTSP INFO during playback: `PLAY` (with scale / npt) or `PAUSE`.
    PlaybackControl {
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
}

enum MediaOut {
    Udp(UdpSocket, SocketAddr),
    Tcp(TcpStream),
    /// Waiting for the platform to connect (TCP active on the platform's side).
    Listening(TcpListener),
}

pub struct MediaSession {
    call_id: String,
    kind: String,
    out: MediaOut,
    ssrc: u32,
    seq: u16,
    /// The cached GOP has not been sent yet.
    need_gop: bool,
    active: bool,
    /// Playback / Download: when (ms) the requested range (`t=` end - start, played at real
    /// time) has been sent: the "file" ends there (MediaStatus 121, no more media).
    file_end_at: Option<u64>,
    file_ended: bool,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Default)]
struct Gop {
    frames: Vec<(Vec<u8>, u32)>,
    bytes: usize,
    /// The latest PS headers pushed as buffers of their own (pack, system header, PSM), sent
    /// ahead of the GOP to a new viewer when the GOP's first frame has no PSM.
    /// Pack header, system header, PSM.
    headers: [Vec<u8>; 3],
}

/// Most bytes of separate PS headers kept.
const MAX_HEADER_BYTES: usize = 4096;

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
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn other(s: &str) -> io::Error {
    io::Error::other(s.to_string())
}

impl DeviceAgent {
    pub fn start(
        config: DeviceConfig,
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

    pub fn has_session(&self) -> bool {
        lock(&self.session).is_some()
    }

    /// Ends the session with BYE, unregisters, and stops the thread.
    pub fn stop(&self) {
        self.end_talk("stop");
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
        }
    }

    fn retransmit_ok(&self, now: u64) {
        let mut guard = lock(&self.ok_retransmit);
        let Some(r) = guard.as_mut() else { return };
        if now >= r.give_up_at {
            // No ACK: the platform is gone; forget the session it asked for.
            let cid = r.call_id.clone();
            *guard = None;
            drop(guard);
            let mut pending = lock(&self.pending);
            if pending.as_ref().is_some_and(|(s, _)| s.call_id == cid) {
                *pending = None;
            }
            return;
        }
        // Over TCP the 200 is not re-sent (reliable transport), only given up on.
        if now >= r.next_at && !self.reliable() {
            let _ = self.send_bytes(&r.bytes, r.dest);
            r.interval = (r.interval * 2).min(crate::core::transaction::T2_MS);
            r.next_at = now + r.interval;
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
        match m.method().unwrap_or_default().to_ascii_uppercase().as_str() {
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
                        let ev = DeviceEvent::SessionStarted {
                            call_id: s.call_id.clone(),
                            kind: s.kind.clone(),
                            transport: match s.out {
                                MediaOut::Udp(..) => MediaTransport::Udp,
                                MediaOut::Tcp(_) => MediaTransport::TcpPassive,
                                MediaOut::Listening(_) => MediaTransport::TcpActive,
                            },
                            dest: match &s.out {
                                MediaOut::Udp(_, a) => a.to_string(),
                                MediaOut::Tcp(t) => {
                                    t.peer_addr().map(|a| a.to_string()).unwrap_or_default()
                                }
                                MediaOut::Listening(l) => {
                                    l.local_addr().map(|a| a.to_string()).unwrap_or_default()
                                }
                            },
                            ssrc: s.ssrc,
                        };
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
                reply(Message::response_to(&m, 200, "OK", None));
                if let Some(c) = crate::core::transaction::parse_mansrtsp(&m.body) {
                    (self.on_event)(DeviceEvent::PlaybackControl {
                        method: c.method,
                        scale: c.scale,
                        npt: c.npt_start,
                    });
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

    /// Whether an in-dialog request belongs to the current (or the pending, not yet
    /// acknowledged) session's dialog.
    fn in_dialog(&self, m: &Message, from: SocketAddr) -> bool {
        let current = lock(&self.dialog)
            .as_ref()
            .is_some_and(|d| d.matches(m, from));
        current
            || lock(&self.pending)
                .as_ref()
                .is_some_and(|(_, d)| d.matches(m, from))
    }

    fn new_message(&self, body: &str) -> Message {
        let c = &self.config;
        let local = self.local_addr();
        let mut m = Message::request("MESSAGE", &format!("sip:{}@{}", c.server_id, c.domain));
        m.add_header("Via", self.via())
            .add_header(
                "From",
                format!("<sip:{}@{}>;tag={}", c.device_id, c.domain, random::tag()),
            )
            .add_header("To", format!("<sip:{}@{}>", c.server_id, c.domain))
            .add_header("Call-ID", format!("{}@{}", random::call_id(), local.ip()))
            .add_header("CSeq", "1 MESSAGE")
            .add_header("Max-Forwards", "70");
        m.set_body(
            "Application/MANSCDP+xml",
            manscdp::encode_body(body, manscdp::Charset::Gb2312),
        );
        m
    }

    /// Our one channel as a Catalog item.
    fn catalog_item(&self) -> CatalogItem {
        let c = &self.config;
        CatalogItem {
            device_id: c.channel_id.clone(),
            name: c.device_name.clone(),
            manufacturer: "gst-ipcam".into(),
            model: "gb28181sink".into(),
            owner: "gst-ipcam".into(),
            civil_code: c.domain.chars().take(6).collect(),
            address: "gst-ipcam".into(),
            parental: Some(0),
            parent_id: c.device_id.clone(),
            register_way: Some(1),
            secrecy: Some(0),
            status: "ON".into(),
            // A fixed camera.
            ptz_type: Some(3),
            ..Default::default()
        }
    }

    fn handle_manscdp(&self, m: &Message) {
        let c = &self.config;
        let body = match Manscdp::parse(&m.body) {
            Ok(Manscdp::CatalogQuery { sn, .. }) => {
                let item = self.catalog_item();
                manscdp::build_catalog_response(sn, &c.device_id, 1, &[item])
            }
            Ok(Manscdp::DeviceInfoQuery { sn, .. }) => manscdp::build_device_info_response(
                sn,
                &manscdp::DeviceInfo {
                    device_id: c.device_id.clone(),
                    result: "OK".into(),
                    device_name: c.device_name.clone(),
                    manufacturer: "gst-ipcam".into(),
                    model: "gb28181sink".into(),
                    firmware: env!("CARGO_PKG_VERSION").into(),
                    channel: Some(1),
                },
            ),
            Ok(Manscdp::DeviceStatusQuery { sn, .. }) => {
                let online = if self.is_registered() {
                    "ONLINE"
                } else {
                    "OFFLINE"
                };
                format!(
                    "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Response>\r\n<CmdType>DeviceStatus</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{}</DeviceID>\r\n<Result>OK</Result>\r\n<Online>{online}</Online>\r\n<Status>OK</Status>\r\n<Encode>ON</Encode>\r\n<Record>OFF</Record>\r\n<DeviceTime>{}</DeviceTime>\r\n</Response>\r\n",
                    c.device_id,
                    crate::core::registrar::format_gb_date(crate::endpoint::wall_ms(), 480)
                        .chars()
                        .take(19)
                        .collect::<String>()
                )
            }
            Ok(Manscdp::RecordInfoQuery(q)) => {
                let items = records_in(&c.records, &q.device_id, &q.start_time, &q.end_time);
                manscdp::build_record_info_response(q.sn, items.len() as u32, &q.device_id, &items)
            }
            Ok(Manscdp::Broadcast {
                sn,
                source_id,
                target_id,
            }) => {
                self.handle_broadcast(sn, &source_id, &target_id);
                return;
            }
            Ok(Manscdp::DeviceControl { ptz, key_frame, .. }) => {
                if let Some(p) = ptz {
                    (self.on_event)(DeviceEvent::Ptz {
                        command: p.to_hex(),
                    });
                }
                if key_frame {
                    (self.on_event)(DeviceEvent::KeyFrameRequested);
                }
                return;
            }
            _ => return,
        };
        let _ = self.send(&self.new_message(&body));
    }

    fn handle_invite(&self, m: &Message, from: SocketAddr) {
        let reply = |r: Message| {
            let _ = self.send_bytes(&r.to_bytes(), from);
        };
        // A retransmitted INVITE: answer with the same 200 again.
        if let Some(r) = lock(&self.ok_retransmit).as_ref()
            && Some(r.call_id.as_str()) == m.call_id()
        {
            let _ = self.send_bytes(&r.bytes, from);
            return;
        }
        if lock(&self.session)
            .as_ref()
            .is_some_and(|s| Some(s.call_id.as_str()) == m.call_id())
        {
            return;
        }
        let offer = match sdp::parse(&m.body) {
            Ok(o) => o,
            Err(_) => {
                reply(Message::response_to(m, 488, "Not Acceptable Here", None));
                return;
            }
        };
        // A playback or download being sent is not cut by a live request (a camera with
        // one media channel is busy until the file ends or the platform hangs up).
        if offer.session_name.eq_ignore_ascii_case("Play")
            && lock(&self.session)
                .as_ref()
                .is_some_and(|s| !s.kind.eq_ignore_ascii_case("Play"))
        {
            reply(Message::response_to(m, 486, "Busy Here", None));
            return;
        }
        reply(Message::response_to(m, 100, "Trying", None));
        let ssrc_str = offer
            .ssrc
            .clone()
            .or_else(|| m.header("subject").and_then(Subject::parse).map(|s| s.ssrc))
            .unwrap_or_else(|| "0000000001".into());
        let ssrc: u32 = ssrc_str.parse().unwrap_or(1);
        let dest = offer.media_addr();
        // Media from our SIP address, or (another family, or a wildcard) from the address
        // facing the platform's media address.
        let sip_ip = self.local_addr().ip();
        let local_ip = dest.and_then(|d| {
            if !sip_ip.is_unspecified() && addr::can_reach(sip_ip, d.ip()) {
                Some(sip_ip)
            } else {
                addr::local_ip_towards(d).ok()
            }
        });
        let out = match (offer.transport(), dest, local_ip) {
            (_, None, _) | (_, _, None) => None,
            (MediaTransport::Udp, Some(d), Some(local_ip)) => UdpSocket::bind((local_ip, 0))
                .ok()
                .map(|s| MediaOut::Udp(s, d)),
            (MediaTransport::TcpPassive, Some(d), _) => {
                TcpStream::connect_timeout(&d, Duration::from_secs(3))
                    .ok()
                    .map(|s| {
                        let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
                        let _ = s.set_nodelay(true);
                        MediaOut::Tcp(s)
                    })
            }
            (MediaTransport::TcpActive, Some(_), Some(local_ip)) => {
                TcpListener::bind((local_ip, 0))
                    .and_then(|l| {
                        l.set_nonblocking(true)?;
                        Ok(l)
                    })
                    .ok()
                    .map(MediaOut::Listening)
            }
        };
        let Some(out) = out else {
            reply(Message::response_to(m, 488, "Not Acceptable Here", None));
            return;
        };
        let media_addr = match &out {
            MediaOut::Udp(s, _) => s.local_addr(),
            MediaOut::Tcp(s) => s.local_addr(),
            MediaOut::Listening(l) => l.local_addr(),
        };
        let Ok(media_addr) = media_addr else {
            reply(Message::response_to(m, 488, "Not Acceptable Here", None));
            return;
        };
        let answer = sdp::build_answer(
            &offer,
            &self.config.channel_id,
            &addr::canonical(media_addr).ip().to_string(),
            media_addr.port(),
            &ssrc_str,
        );
        let tag = random::tag();
        let mut ok = Message::response_to(m, 200, "OK", Some(&tag));
        ok.add_header("Contact", self.contact(&self.config.channel_id));
        ok.set_body("APPLICATION/SDP", answer.into_bytes());
        let call_id = m.call_id().unwrap_or_default().to_string();
        let dialog = Dialog {
            call_id: call_id.clone(),
            local: ok.header("to").unwrap_or_default().to_string(),
            remote: m.header("from").unwrap_or_default().to_string(),
            local_tag: tag,
            remote_tag: m
                .from()
                .and_then(|f| f.tag().map(str::to_string))
                .unwrap_or_default(),
            peer: from,
            remote_target: m
                .contact()
                .map(|c| c.uri)
                .unwrap_or_else(|| format!("sip:{}@{}", self.config.server_id, from)),
            cseq: 0,
        };
        // A new INVITE replaces the current session.
        if let Some(old) = lock(&self.session).take() {
            (self.on_event)(DeviceEvent::SessionStopped {
                call_id: old.call_id,
                reason: "replaced".into(),
            });
        }
        *lock(&self.pending) = Some((
            MediaSession {
                call_id,
                kind: offer.session_name.clone(),
                out,
                ssrc,
                seq: random::u64() as u16,
                need_gop: true,
                active: true,
                file_end_at: (!offer.session_name.eq_ignore_ascii_case("Play")
                    && offer.end > offer.start)
                    .then(|| {
                        now_ms().saturating_add((offer.end - offer.start).saturating_mul(1000))
                    }),
                file_ended: false,
                packets: 0,
                bytes: 0,
            },
            dialog,
        ));
        let now = now_ms();
        *lock(&self.ok_retransmit) = Some(OkRetransmit {
            call_id: m.call_id().unwrap_or_default().to_string(),
            bytes: ok.to_bytes(),
            dest: from,
            next_at: now + crate::core::transaction::T1_MS,
            interval: crate::core::transaction::T1_MS,
            give_up_at: now + 64 * crate::core::transaction::T1_MS,
        });
        reply(ok);
    }

    /// The input ended: for a Playback / Download session, tell the platform the "file"
    /// ended (MediaStatus 121), as devices do at the end of a recording.
    pub fn end_of_media(&self) {
        let kind = lock(&self.session).as_ref().map(|s| s.kind.clone());
        if kind.is_some_and(|k| !k.eq_ignore_ascii_case("Play")) {
            let sn = (now_ms() % 100_000) as u32;
            let body = manscdp::build_media_status(sn, &self.config.device_id, 121);
            let _ = self.send(&self.new_message(&body));
        }
    }

    fn in_dialog_request(&self, d: &Dialog, method: &str) -> Message {
        let mut m = Message::request(method, &d.remote_target);
        m.add_header("Via", self.via())
            .add_header("From", d.local.clone())
            .add_header("To", d.remote.clone())
            .add_header("Call-ID", d.call_id.clone())
            .add_header("CSeq", format!("{} {method}", d.cseq))
            .add_header("Max-Forwards", "70");
        m
    }

    /// Feeds one PS frame (`rtp_ts` 90 kHz). `key`: whether it starts a GOP as the upstream
    /// flags say, or None to look at the frame (H.264/H.265 SPS or IDR). Keeps the latest GOP
    /// and sends to the current session, if any (the GOP first to a new viewer).
    pub fn send_frame(&self, frame: &[u8], key: Option<bool>, rtp_ts: u32) {
        {
            let mut gop = lock(&self.gop);
            if is_header_only(frame) {
                // Keep the latest of each kind (a later lone pack header must not lose the PSM).
                let slot = match frame.get(3) {
                    Some(0xBA) => 0,
                    Some(0xBB) => 1,
                    _ => 2,
                };
                if frame.len() <= MAX_HEADER_BYTES {
                    gop.headers[slot] = frame.to_vec();
                }
            } else {
                if key.unwrap_or_else(|| is_key_frame(frame)) {
                    gop.frames.clear();
                    gop.bytes = 0;
                }
                if gop.frames.len() < MAX_GOP_FRAMES && gop.bytes + frame.len() <= MAX_GOP_BYTES {
                    gop.bytes += frame.len();
                    gop.frames.push((frame.to_vec(), rtp_ts));
                }
            }
        }
        let mut guard = lock(&self.session);
        let Some(s) = guard.as_mut() else { return };
        if s.file_ended {
            return;
        }
        if s.file_end_at.is_some_and(|t| now_ms() >= t) {
            s.file_ended = true;
            drop(guard);
            self.end_of_media();
            return;
        }
        if let MediaOut::Listening(l) = &s.out {
            match l.accept() {
                Ok((t, _)) => {
                    let _ = t.set_nonblocking(false);
                    let _ = t.set_write_timeout(Some(Duration::from_secs(2)));
                    let _ = t.set_nodelay(true);
                    s.out = MediaOut::Tcp(t);
                }
                Err(_) => return,
            }
        }
        let res = if s.need_gop {
            s.need_gop = false;
            let mut frames: Vec<(Vec<u8>, u32)> = {
                let gop = lock(&self.gop);
                let mut frames = gop.frames.clone();
                if let Some((first, _)) = frames.first_mut()
                    && !has_psm(first)
                    && !gop.headers[2].is_empty()
                {
                    let mut f = gop.headers.concat();
                    f.extend_from_slice(first);
                    *first = f;
                }
                frames
            };
            if frames.is_empty() {
                frames.push((frame.to_vec(), rtp_ts));
            }
            frames.iter().try_for_each(|(f, ts)| send_rtp(s, f, *ts))
        } else {
            send_rtp(s, frame, rtp_ts)
        };
        if res.is_err() {
            s.active = false;
            let cid = s.call_id.clone();
            *guard = None;
            drop(guard);
            (self.on_event)(DeviceEvent::SessionStopped {
                call_id: cid,
                reason: "media send failed".into(),
            });
        }
    }
}

fn no_dialog(m: &Message) -> Message {
    Message::response_to(m, 481, "Call/Transaction Does Not Exist", None)
}

fn send_rtp(s: &mut MediaSession, frame: &[u8], ts: u32) -> io::Result<()> {
    let cap = packetizer::payload_capacity(MTU, 0).ok_or_else(|| other("mtu"))?;
    for f in packetizer::fragments(frame.len(), cap) {
        let payload = frame
            .get(f.offset..f.offset + f.len)
            .ok_or_else(|| other("frag"))?;
        let mut pkt = Vec::with_capacity(12 + payload.len());
        pkt.push(0x80);
        pkt.push(96 | if f.marker { 0x80 } else { 0 });
        pkt.extend_from_slice(&s.seq.to_be_bytes());
        pkt.extend_from_slice(&ts.to_be_bytes());
        pkt.extend_from_slice(&s.ssrc.to_be_bytes());
        pkt.extend_from_slice(payload);
        s.seq = s.seq.wrapping_add(1);
        s.packets += 1;
        s.bytes += pkt.len() as u64;
        match &mut s.out {
            MediaOut::Udp(sock, dest) => {
                // Loss on UDP is not fatal.
                let _ = sock.send_to(&pkt, *dest);
            }
            MediaOut::Tcp(t) => {
                let framed = frame_rfc4571(&pkt).ok_or_else(|| other("packet too large"))?;
                t.write_all(&framed)?;
            }
            MediaOut::Listening(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse_and_answer_overlapping_ones_bounded() {
        let r = parse_records(
            " 2024-01-01T00:00:00/2024-01-01T01:00:00; 2024-01-02T00:00:00/2024-01-02T00:10:00;",
        )
        .unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].end, "2024-01-02T00:10:00");
        assert!(parse_records("").unwrap().is_empty());
        for bad in [
            "2024-01-01T01:00:00/2024-01-01T00:00:00",
            "2024-01-01 00:00:00/2024-01-01T01:00:00",
            "2024-01-01T00:00:00",
            "x/y",
        ] {
            assert!(parse_records(bad).is_err(), "{bad}");
        }
        let many = vec!["2024-01-01T00:00:00/2024-01-01T01:00:00"; MAX_RECORDS + 1].join(";");
        assert!(parse_records(&many).is_err());
        let items = records_in(&r, "c", "2024-01-01T00:30:00", "2024-01-01T23:00:00");
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].start_time, "2024-01-01T00:00:00");
        assert_eq!(items[0].device_id, "c");
        assert!(records_in(&r, "c", "2023-01-01T00:00:00", "2023-12-31T00:00:00").is_empty());
        let lots =
            parse_records(&vec!["2024-01-01T00:00:00/2024-01-01T01:00:00"; 50].join(";")).unwrap();
        assert_eq!(
            records_in(&lots, "c", "2000-01-01T00:00:00", "2100-01-01T00:00:00").len(),
            MAX_RECORDS_PER_ANSWER
        );
    }
}

//! The device side of GB/T 28181 for gb28181sink: a SIP user agent on a UDP socket of its own
//! that registers with digest ([`RegisterClient`]: refresh, keepalives, re-registration with
//! backoff), answers Catalog / DeviceInfo / DeviceStatus queries and PTZ controls, and answers
//! INVITE with an SDP (UDP, TCP active or TCP passive as the offer asks), starting a
//! [`MediaSession`] at ACK and ending it at BYE (either side).
//!
//! GStreamer-free: one thread and std sockets; the sink feeds frames to
//! [`DeviceAgent::send_frame`] from its streaming thread.
//!
//! Limits: one media session at a time (a new INVITE replaces the old one); the GOP cache is
//! bounded by [`MAX_GOP_BYTES`] and [`MAX_GOP_FRAMES`].

use crate::core::client::{ClientAction, ClientState, RegisterClient, RegisterClientConfig};
use crate::core::manscdp::{self, CatalogItem, Manscdp};
use crate::core::media::{frame_rfc4571, has_psm, is_header_only, is_key_frame};
use crate::core::sdp::{self, MediaTransport};
use crate::core::sip::Message;
use crate::core::subject::Subject;
use crate::endpoint::now_ms;
use gstmpegps::rtp::packetizer;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// MANSRTSP INFO during playback: `PLAY` (with scale / npt) or `PAUSE`.
    PlaybackControl {
        method: String,
        scale: Option<f64>,
        npt: Option<f64>,
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

struct Dialog {
    call_id: String,
    /// Our From (the INVITE's To with our tag) and their To (the INVITE's From).
    local: String,
    remote: String,
    remote_target: String,
    cseq: u32,
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

pub struct DeviceAgent {
    ok_retransmit: Mutex<Option<OkRetransmit>>,
    config: DeviceConfig,
    socket: UdpSocket,
    local_addr: SocketAddr,
    stop: AtomicBool,
    session: Mutex<Option<MediaSession>>,
    pending: Mutex<Option<(MediaSession, Dialog)>>,
    dialog: Mutex<Option<Dialog>>,
    gop: Mutex<Gop>,
    client: Mutex<RegisterClient>,
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
        let bind = (config.local_ip.as_str(), config.local_port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| other("no local address"))?;
        let socket = UdpSocket::bind(bind)?;
        socket.set_read_timeout(Some(Duration::from_millis(20)))?;
        let local_addr = socket.local_addr()?;
        let seed = now_ms() ^ u64::from(local_addr.port()) << 40;
        let client = RegisterClient::new(RegisterClientConfig {
            device_id: config.device_id.clone(),
            domain: config.domain.clone(),
            server_id: config.server_id.clone(),
            local_host: local_addr.ip().to_string(),
            local_port: local_addr.port(),
            transport: "UDP".into(),
            password: config.password.clone(),
            expires: config.expires,
            keepalive_interval_ms: config.keepalive_interval_ms,
            max_keepalive_failures: 3,
            retry_ms: config.retry_ms,
            seed,
            charset: manscdp::Charset::Gb2312,
        });
        let agent = Arc::new(DeviceAgent {
            ok_retransmit: Mutex::new(None),
            config,
            socket,
            local_addr,
            stop: AtomicBool::new(false),
            session: Mutex::new(None),
            pending: Mutex::new(None),
            dialog: Mutex::new(None),
            gop: Mutex::new(Gop::default()),
            client: Mutex::new(client),
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

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn is_registered(&self) -> bool {
        lock(&self.client).state == ClientState::Registered
    }

    pub fn has_session(&self) -> bool {
        lock(&self.session).is_some()
    }

    /// Ends the session with BYE, unregisters, and stops the thread.
    pub fn stop(&self) {
        if let Some(mut d) = lock(&self.dialog).take() {
            d.cseq += 1;
            let bye = self.in_dialog_request(&d, "BYE");
            let _ = self.send(&bye);
            let _ = self.send(&bye);
        }
        *lock(&self.session) = None;
        let acts = lock(&self.client).unregister(now_ms());
        self.do_actions(acts);
        // Give the platform a moment to answer the unregister.
        let deadline = std::time::Instant::now() + Duration::from_millis(300);
        while std::time::Instant::now() < deadline
            && !lock(&self.client).state.eq(&ClientState::Idle)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }

    fn send(&self, m: &Message) -> io::Result<()> {
        self.socket
            .send_to(&m.to_bytes(), self.config.server)
            .map(|_| ())
    }

    fn do_actions(&self, acts: Vec<ClientAction>) {
        for a in acts {
            match a {
                ClientAction::Send(m) => {
                    let _ = self.send(&m);
                }
                ClientAction::Registered { expires_s, .. } => {
                    (self.on_event)(DeviceEvent::Registered { expires_s })
                }
                ClientAction::Unregistered => (self.on_event)(DeviceEvent::Unregistered),
                ClientAction::Failed { status } => {
                    (self.on_event)(DeviceEvent::RegisterFailed { status })
                }
            }
        }
    }

    fn run(self: Arc<Self>) {
        let acts = lock(&self.client).start(now_ms());
        self.do_actions(acts);
        let mut buf = vec![0u8; 65_536];
        while !self.stop.load(Ordering::SeqCst) {
            if let Ok((n, from)) = self.socket.recv_from(&mut buf)
                && let Ok(m) = Message::parse(&buf[..n])
            {
                self.handle(m, from);
            }
            let acts = lock(&self.client).poll(now_ms());
            self.do_actions(acts);
            self.retransmit_ok(now_ms());
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
        if now >= r.next_at {
            let _ = self.socket.send_to(&r.bytes, r.dest);
            r.interval = (r.interval * 2).min(crate::core::transaction::T2_MS);
            r.next_at = now + r.interval;
        }
    }

    fn handle(&self, m: Message, from: SocketAddr) {
        if !m.is_request() {
            let acts = lock(&self.client).on_response(&m, now_ms());
            self.do_actions(acts);
            return;
        }
        let reply = |r: Message| {
            let _ = self.socket.send_to(&r.to_bytes(), from);
        };
        match m.method().unwrap_or_default().to_ascii_uppercase().as_str() {
            "MESSAGE" => {
                reply(Message::response_to(&m, 200, "OK", Some("dev")));
                self.handle_manscdp(&m);
            }
            "INVITE" => self.handle_invite(&m, from),
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
                reply(Message::response_to(&m, 200, "OK", None));
                let cid = m.call_id().unwrap_or_default().to_string();
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

    fn new_message(&self, body: &str) -> Message {
        let c = &self.config;
        let n = now_ms() ^ u64::from(self.local_addr.port());
        let mut m = Message::request("MESSAGE", &format!("sip:{}@{}", c.server_id, c.domain));
        m.add_header(
            "Via",
            format!("SIP/2.0/UDP {};rport;branch=z9hG4bK{n}", self.local_addr),
        )
        .add_header(
            "From",
            format!("<sip:{}@{}>;tag={n}", c.device_id, c.domain),
        )
        .add_header("To", format!("<sip:{}@{}>", c.server_id, c.domain))
        .add_header("Call-ID", format!("{n}@{}", self.local_addr.ip()))
        .add_header("CSeq", "1 MESSAGE")
        .add_header("Max-Forwards", "70");
        m.set_body(
            "Application/MANSCDP+xml",
            manscdp::encode_body(body, manscdp::Charset::Gb2312),
        );
        m
    }

    fn handle_manscdp(&self, m: &Message) {
        let c = &self.config;
        let body = match Manscdp::parse(&m.body) {
            Ok(Manscdp::CatalogQuery { sn, .. }) => {
                let item = CatalogItem {
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
                    ..Default::default()
                };
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
                    crate::core::registrar::format_gb_date(now_ms(), 480)
                        .chars()
                        .take(19)
                        .collect::<String>()
                )
            }
            // No recordings here: an empty list.
            Ok(Manscdp::RecordInfoQuery(q)) => {
                manscdp::build_record_info_response(q.sn, 0, &q.device_id, &[])
            }
            Ok(Manscdp::DeviceControl { ptz: Some(p), .. }) => {
                (self.on_event)(DeviceEvent::Ptz {
                    command: p.to_hex(),
                });
                return;
            }
            _ => return,
        };
        let _ = self.send(&self.new_message(&body));
    }

    fn handle_invite(&self, m: &Message, from: SocketAddr) {
        let reply = |r: Message| {
            let _ = self.socket.send_to(&r.to_bytes(), from);
        };
        // A retransmitted INVITE: answer with the same 200 again.
        if let Some(r) = lock(&self.ok_retransmit).as_ref()
            && Some(r.call_id.as_str()) == m.call_id()
        {
            let _ = self.socket.send_to(&r.bytes, from);
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
        reply(Message::response_to(m, 100, "Trying", None));
        let ssrc_str = offer
            .ssrc
            .clone()
            .or_else(|| m.header("subject").and_then(Subject::parse).map(|s| s.ssrc))
            .unwrap_or_else(|| "0000000001".into());
        let ssrc: u32 = ssrc_str.parse().unwrap_or(1);
        let ip = offer
            .connection_ip
            .clone()
            .unwrap_or_else(|| offer.origin_ip.clone());
        let local_ip = self.local_addr.ip();
        let dest: Option<SocketAddr> = format!("{ip}:{}", offer.port).parse().ok();
        let out = match (offer.transport(), dest) {
            (_, None) => None,
            (MediaTransport::Udp, Some(d)) => UdpSocket::bind((local_ip, 0))
                .ok()
                .map(|s| MediaOut::Udp(s, d)),
            (MediaTransport::TcpPassive, Some(d)) => {
                TcpStream::connect_timeout(&d, Duration::from_secs(3))
                    .ok()
                    .map(|s| {
                        let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
                        let _ = s.set_nodelay(true);
                        MediaOut::Tcp(s)
                    })
            }
            (MediaTransport::TcpActive, Some(_)) => TcpListener::bind((local_ip, 0))
                .and_then(|l| {
                    l.set_nonblocking(true)?;
                    Ok(l)
                })
                .ok()
                .map(MediaOut::Listening),
        };
        let Some(out) = out else {
            reply(Message::response_to(m, 488, "Not Acceptable Here", None));
            return;
        };
        let media_port = match &out {
            MediaOut::Udp(s, _) => s.local_addr().map(|a| a.port()).unwrap_or(0),
            MediaOut::Tcp(s) => s.local_addr().map(|a| a.port()).unwrap_or(0),
            MediaOut::Listening(l) => l.local_addr().map(|a| a.port()).unwrap_or(0),
        };
        let answer = sdp::build_answer(
            &offer,
            &self.config.channel_id,
            &local_ip.to_string(),
            media_port,
            &ssrc_str,
        );
        let tag = format!("{}", now_ms() % 1_000_000_000);
        let mut ok = Message::response_to(m, 200, "OK", Some(&tag));
        ok.add_header(
            "Contact",
            format!("<sip:{}@{}>", self.config.channel_id, self.local_addr),
        );
        ok.set_body("APPLICATION/SDP", answer.into_bytes());
        let call_id = m.call_id().unwrap_or_default().to_string();
        let dialog = Dialog {
            call_id: call_id.clone(),
            local: ok.header("to").unwrap_or_default().to_string(),
            remote: m.header("from").unwrap_or_default().to_string(),
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
                seq: (now_ms() & 0xffff) as u16,
                need_gop: true,
                active: true,
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
        m.add_header(
            "Via",
            format!(
                "SIP/2.0/UDP {};rport;branch=z9hG4bK{}",
                self.local_addr,
                now_ms() % 1_000_000_000
            ),
        )
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

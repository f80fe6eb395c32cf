//! The device side of a voice broadcast (§9.12): the platform's Broadcast notification is
//! answered (200, then a `<Response>` MESSAGE), the device INVITEs the platform's audio
//! source with an audio offer on a UDP port of its own (or over TCP, listening or connecting:
//! [`DeviceAgent::set_talk_transport`]), ACKs the 200, and receives G.711 RTP there until
//! either side sends BYE. Received audio goes to the talk sink set with
//! [`DeviceAgent::set_talk_sink`] (gb28181sink's `talk` pad).
//!
//! Only the broadcast our server asked for is called; one talk at a time (a new Broadcast
//! replaces it); RTP is taken only from the address the platform answered with (and its
//! payload type), payloads of at most 1500 bytes.

use super::*;
use crate::core::media::{ACCEPT_TOKEN, TcpDeframer, accept_from};
use crate::core::talk::{self, G711, PsAudio, TalkFormat};

/// Called with each received audio payload (G.711 bytes).
pub type TalkSink = Arc<dyn Fn(G711, &[u8]) + Send + Sync>;

/// Where the talk audio arrives.
enum TalkSocket {
    Udp(UdpSocket),
    /// TCP, the device listening (`a=setup:passive`).
    Listen(TcpListener),
    /// TCP, the device connecting to the answer's address (`a=setup:active`).
    Connect,
}

struct PendingInvite {
    invite: Message,
    bytes: Vec<u8>,
    socket: TalkSocket,
    next_at: u64,
    interval: u64,
    give_up_at: u64,
}

struct ActiveTalk {
    dialog: Dialog,
    stop: Arc<AtomicBool>,
    /// Wakes a TCP receiver asleep in its poll.
    waker: Option<Arc<mio::Waker>>,
    thread: Option<JoinHandle<()>>,
}

pub(super) struct DeviceTalk {
    pending: Option<PendingInvite>,
    active: Option<ActiveTalk>,
    sink: Option<TalkSink>,
    transport: MediaTransport,
    /// Ask for the audio in PS (PT 96) rather than as G.711 RTP.
    ps: bool,
    packets: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

impl Default for DeviceTalk {
    fn default() -> Self {
        DeviceTalk {
            pending: None,
            active: None,
            sink: None,
            transport: MediaTransport::Udp,
            ps: false,
            packets: Default::default(),
            bytes: Default::default(),
        }
    }
}

impl DeviceAgent {
    /// Where received talk audio goes (None: counted and dropped).
    pub fn set_talk_sink(&self, sink: Option<TalkSink>) {
        lock(&self.talk).sink = sink;
    }

    /// How the next talk's audio is offered: UDP (the default), TCP with the device listening
    /// (`TcpPassive`) or connecting (`TcpActive`).
    pub fn set_talk_transport(&self, t: MediaTransport) {
        lock(&self.talk).transport = t;
    }

    /// Whether the next talk asks for its audio in MPEG-PS (PT 96, `PS/90000`) rather than
    /// as G.711 RTP.
    pub fn set_talk_ps(&self, ps: bool) {
        lock(&self.talk).ps = ps;
    }

    /// Whether a talk session is up.
    pub fn has_talk(&self) -> bool {
        lock(&self.talk).active.is_some()
    }

    /// Talk audio received so far: (packets, payload bytes).
    pub fn talk_stats(&self) -> (u64, u64) {
        let t = lock(&self.talk);
        (
            t.packets.load(Ordering::Relaxed),
            t.bytes.load(Ordering::Relaxed),
        )
    }

    /// The platform asks us to call its `source_id` for a broadcast to `target_id`.
    pub(super) fn handle_broadcast(&self, sn: u32, source_id: &str, target_id: &str) {
        let c = &self.config;
        let ours = target_id == c.device_id || target_id == c.channel_id;
        let body = talk::build_broadcast_response(sn, target_id, ours);
        let _ = self.send(&self.new_message(&body));
        if !ours || source_id.is_empty() || source_id.len() > 64 {
            return;
        }
        self.end_talk("replaced");
        let ip = self.local_addr().ip();
        let (transport, ps) = {
            let t = lock(&self.talk);
            (t.transport, t.ps)
        };
        let format = if ps {
            TalkFormat::Ps {
                pt: 96,
                law: G711::Alaw,
            }
        } else {
            TalkFormat::Rtp(G711::Alaw)
        };
        let bind = SocketAddr::new(ip, 0);
        let socket = match transport {
            MediaTransport::Udp => UdpSocket::bind(bind).map(TalkSocket::Udp),
            MediaTransport::TcpPassive => TcpListener::bind(bind).map(TalkSocket::Listen),
            MediaTransport::TcpActive => Ok(TalkSocket::Connect),
        };
        let Ok(socket) = socket else { return };
        let port = match &socket {
            TalkSocket::Udp(s) => s.local_addr().map(|a| a.port()).unwrap_or(0),
            TalkSocket::Listen(l) => l.local_addr().map(|a| a.port()).unwrap_or(0),
            // The port of a connecting side (RFC 4145).
            TalkSocket::Connect => 9,
        };
        let ssrc = format!("0{:09}", random::u64() % 1_000_000_000);
        let offer = talk::build_talk_offer(
            &c.device_id,
            &addr::canonical(self.local_addr()).ip().to_string(),
            port,
            format,
            &ssrc,
            transport,
        );
        let local = self.local_addr();
        let mut m = Message::request("INVITE", &format!("sip:{source_id}@{}", c.server));
        m.add_header("Via", self.via())
            .add_header(
                "From",
                format!("<sip:{}@{}>;tag={}", c.device_id, c.domain, random::tag()),
            )
            .add_header("To", format!("<sip:{source_id}@{}>", c.domain))
            .add_header("Call-ID", format!("{}@{}", random::call_id(), local.ip()))
            .add_header("CSeq", "1 INVITE")
            .add_header("Contact", self.contact(&c.device_id))
            .add_header("Subject", format!("{source_id}:0,{}:0", c.device_id))
            .add_header("Max-Forwards", "70");
        m.set_body("APPLICATION/SDP", offer.into_bytes());
        let bytes = m.to_bytes();
        let _ = self.send_bytes(&bytes, c.server);
        let now = now_ms();
        lock(&self.talk).pending = Some(PendingInvite {
            invite: m,
            bytes,
            socket,
            next_at: now + crate::core::transaction::T1_MS,
            interval: crate::core::transaction::T1_MS,
            give_up_at: now + 64 * crate::core::transaction::T1_MS,
        });
    }

    /// A response to our talk INVITE; whether it was one.
    pub(super) fn handle_talk_response(&self, m: &Message) -> bool {
        let status = m.status().unwrap_or(0);
        let mut t = lock(&self.talk);
        let Some(p) = t.pending.as_ref() else {
            return false;
        };
        if m.call_id() != p.invite.call_id() {
            return false;
        }
        if status < 200 {
            // Provisional: stop re-sending, keep waiting for the final answer.
            if let Some(p) = t.pending.as_mut() {
                p.next_at = p.give_up_at;
            }
            return true;
        }
        let p = t.pending.take().expect("checked above");
        let to = m.header("to").unwrap_or_default().to_string();
        let remote_target = m
            .contact()
            .map(|c| c.uri)
            .or_else(|| p.invite.uri().map(str::to_string))
            .unwrap_or_default();
        // ACK every final answer (for a 2xx: in the new dialog).
        let mut ack = Message::request("ACK", &remote_target);
        ack.add_header("Via", self.via())
            .add_header("From", p.invite.header("from").unwrap_or_default())
            .add_header("To", to.clone())
            .add_header("Call-ID", p.invite.call_id().unwrap_or_default())
            .add_header("CSeq", "1 ACK")
            .add_header("Max-Forwards", "70");
        let _ = self.send(&ack);
        let answer = crate::core::sdp::parse(&m.body).ok();
        let media = answer.as_ref().and_then(|a| a.media_addr());
        let format = answer.as_ref().and_then(TalkFormat::of_offer);
        let call_id = p.invite.call_id().unwrap_or_default().to_string();
        let (true, Some(media), Some(format)) = ((200..300).contains(&status), media, format)
        else {
            drop(t);
            (self.on_event)(DeviceEvent::TalkStopped {
                call_id,
                reason: format!("refused: {status}"),
            });
            return true;
        };
        let dialog = Dialog {
            call_id: call_id.clone(),
            local: p.invite.header("from").unwrap_or_default().to_string(),
            remote: to,
            local_tag: p
                .invite
                .from()
                .and_then(|f| f.tag().map(str::to_string))
                .unwrap_or_default(),
            remote_tag: m
                .to()
                .and_then(|f| f.tag().map(str::to_string))
                .unwrap_or_default(),
            peer: addr::canonical(self.config.server),
            remote_target,
            cseq: 1,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let sink = t.sink.clone();
        let (packets, bytes) = (t.packets.clone(), t.bytes.clone());
        let s = stop.clone();
        let mut ps = format.is_ps().then(PsAudio::default);
        let take = move |pkt: &[u8]| {
            let Ok(rtp) = rtp_types::RtpPacket::parse(pkt) else {
                return;
            };
            if rtp.payload_type() != format.payload_type() || rtp.payload_len() > 1500 {
                return;
            }
            packets.fetch_add(1, Ordering::Relaxed);
            let heard = |law: G711, audio: &[u8]| {
                bytes.fetch_add(audio.len() as u64, Ordering::Relaxed);
                if let Some(s) = &sink {
                    s(law, audio);
                }
            };
            match ps.as_mut() {
                None => heard(format.law(), rtp.payload()),
                Some(d) => d.push(rtp.payload(), heard),
            }
        };
        let (thread, waker) = match p.socket {
            TalkSocket::Udp(socket) => (
                std::thread::Builder::new()
                    .name("gb28181-talk".into())
                    .spawn(move || receive_talk(socket, media, s, take))
                    .ok(),
                None,
            ),
            tcp => match mio::Poll::new()
                .and_then(|poll| Ok((Arc::new(mio::Waker::new(poll.registry(), WAKE)?), poll)))
            {
                Ok((waker, poll)) => (
                    std::thread::Builder::new()
                        .name("gb28181-talk".into())
                        .spawn(move || receive_talk_tcp(tcp, media, poll, s, take))
                        .ok(),
                    Some(waker),
                ),
                Err(_) => (None, None),
            },
        };
        t.active = Some(ActiveTalk {
            dialog,
            stop,
            waker,
            thread,
        });
        drop(t);
        (self.on_event)(DeviceEvent::TalkStarted {
            call_id,
            codec: format.describe(),
            source: media.to_string(),
        });
        true
    }

    /// A BYE in the talk dialog; whether it was one.
    pub(super) fn talk_bye(&self, m: &Message, from: SocketAddr) -> bool {
        let ours = lock(&self.talk)
            .active
            .as_ref()
            .is_some_and(|a| a.dialog.matches(m, from));
        if ours {
            self.stop_talk_thread("bye");
        }
        ours
    }

    /// Hangs up the talk (BYE) if there is one.
    pub(super) fn end_talk(&self, reason: &str) {
        let dialog = lock(&self.talk).active.as_ref().map(|a| a.dialog.clone());
        if let Some(mut d) = dialog {
            d.cseq += 1;
            let bye = self.in_dialog_request(&d, "BYE");
            let _ = self.send(&bye);
            self.stop_talk_thread(reason);
        }
        lock(&self.talk).pending = None;
    }

    fn stop_talk_thread(&self, reason: &str) {
        let active = lock(&self.talk).active.take();
        if let Some(mut a) = active {
            a.stop.store(true, Ordering::SeqCst);
            if let Some(w) = &a.waker {
                let _ = w.wake();
            }
            if let Some(t) = a.thread.take() {
                let _ = t.join();
            }
            (self.on_event)(DeviceEvent::TalkStopped {
                call_id: a.dialog.call_id,
                reason: reason.into(),
            });
        }
    }

    /// Re-sends the talk INVITE over UDP until answered (Timer A), gives up after 32 s.
    pub(super) fn tick_talk(&self, now: u64) {
        let mut t = lock(&self.talk);
        let Some(p) = t.pending.as_mut() else { return };
        if now >= p.give_up_at {
            t.pending = None;
            return;
        }
        if now >= p.next_at && !self.reliable() {
            let _ = self.send_bytes(&p.bytes, self.config.server);
            p.interval = (p.interval * 2).min(crate::core::transaction::T2_MS);
            p.next_at = now + p.interval;
        }
    }
}

/// The talk receiver thread over UDP: RTP from `from`'s IP to `take`.
fn receive_talk(
    socket: UdpSocket,
    from: SocketAddr,
    stop: Arc<AtomicBool>,
    mut take: impl FnMut(&[u8]),
) {
    let _ = socket.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::SeqCst) {
        let Ok((n, src)) = socket.recv_from(&mut buf) else {
            continue;
        };
        if src.ip().to_canonical() != from.ip().to_canonical() {
            continue;
        }
        take(&buf[..n]);
    }
}

const CONNECTION: mio::Token = mio::Token(1);
const WAKE: mio::Token = mio::Token(2);
// The listener of `accept_from` shares the poll.
const _: () = assert!(ACCEPT_TOKEN.0 != CONNECTION.0 && ACCEPT_TOKEN.0 != WAKE.0);

/// The talk receiver thread over TCP (RFC 4571 or `$` framing): the platform's connection
/// (only from `from`'s IP) to our listener, or ours to `from`. Asleep in `poll` between
/// reads; the stop's waker ends it at once. Ends when the connection closes.
fn receive_talk_tcp(
    socket: TalkSocket,
    from: SocketAddr,
    mut poll: mio::Poll,
    stop: Arc<AtomicBool>,
    mut take: impl FnMut(&[u8]),
) {
    let mut stream = match socket {
        TalkSocket::Udp(_) => return,
        TalkSocket::Connect => match TcpStream::connect_timeout(&from, Duration::from_secs(3))
            .and_then(|s| s.set_nonblocking(true).map(|_| s))
        {
            Ok(s) => mio::net::TcpStream::from_std(s),
            Err(_) => return,
        },
        TalkSocket::Listen(l) => {
            let stop = || stop.load(Ordering::SeqCst);
            match accept_from(&mut poll, l, from.ip(), None, &stop) {
                Ok(s) => s,
                Err(_) => return,
            }
        }
    };
    if poll
        .registry()
        .register(&mut stream, CONNECTION, mio::Interest::READABLE)
        .is_err()
    {
        return;
    }
    let mut events = mio::Events::with_capacity(4);
    let mut deframer = TcpDeframer::new();
    let mut buf = [0u8; 4096];
    loop {
        loop {
            match stream.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    for pkt in deframer.push(&buf[..n]) {
                        take(&pkt);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
        match poll.poll(&mut events, None) {
            Err(e) if e.kind() != io::ErrorKind::Interrupted => return,
            _ if stop.load(Ordering::SeqCst) => return,
            _ => {}
        }
    }
}

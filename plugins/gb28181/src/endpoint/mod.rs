//! The process-wide SIP endpoint of the platform side: one per (address, port, transport),
//! shared by every gb28181src in the process and alive beyond any of them, so cameras that
//! registered before a pipeline started are known.
//!
//! It runs the registrar (digest auth, keepalives, offline detection), answers MANSCDP
//! responses (Catalog merged by SN, DeviceInfo, DeviceStatus) and publishes them as
//! [`EndpointEvent`]s to subscribers, runs client transactions (RFC 3261 timers, UDP
//! retransmissions) for the requests elements send (INVITE, BYE, MESSAGE queries) and routes
//! in-dialog requests (BYE) to the dialog's owner.
//!
//! GStreamer-free: plain threads and std sockets. UDP: one receive thread; TCP: an accept
//! thread and one reader thread per connection (framed by Content-Length with
//! [`StreamFramer`]); plus one timer thread. [`Endpoint::shutdown`] stops all of them.
//!
//! Limits: message/header/body size are bounded by the SIP parser; at most
//! [`MAX_TRANSACTIONS`] client transactions, [`MAX_DIALOGS`] dialogs and [`MAX_TCP_CONNECTIONS`]
//! TCP connections at once; failed authentication is rate-limited by the registrar.

use crate::core::manscdp::{
    self, CatalogItem, DeviceInfo, DeviceStatus, ListMerger, Manscdp, RecordInfoQuery, RecordItem,
};
use crate::core::registrar::{self, Device, Registrar, RegistrarConfig, RegistrarStats};
use crate::core::sip::{Message, StreamFramer};
use crate::core::transaction::{ClientTransaction, TransactionKind, TxAction};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const MAX_TRANSACTIONS: usize = 4096;
pub const MAX_DIALOGS: usize = 4096;
pub const MAX_TCP_CONNECTIONS: usize = 4096;
const TICK: Duration = Duration::from_millis(20);

/// Wall clock in Unix milliseconds (what the core's timers use).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SipTransport {
    Udp,
    Tcp,
}

impl SipTransport {
    pub fn as_str(self) -> &'static str {
        match self {
            SipTransport::Udp => "UDP",
            SipTransport::Tcp => "TCP",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    pub address: String,
    pub port: u16,
    pub transport: SipTransport,
}

/// What subscribers are told.
#[derive(Debug, Clone, PartialEq)]
pub enum EndpointEvent {
    /// Registrar events: registered, unregistered, online, offline, auth failures...
    Registrar(registrar::Event),
    Catalog {
        device_id: String,
        sn: u32,
        sum_num: u32,
        items: Vec<CatalogItem>,
    },
    DeviceInfo {
        sn: u32,
        info: DeviceInfo,
    },
    DeviceStatus {
        sn: u32,
        status: DeviceStatus,
    },
    /// RecordInfo answer, merged over its messages.
    RecordInfo {
        device_id: String,
        sn: u32,
        sum_num: u32,
        items: Vec<RecordItem>,
    },
    /// MediaStatus notification (121 = end of the file played back / downloaded).
    MediaStatus {
        device_id: String,
        notify_type: u32,
    },
}

impl EndpointEvent {
    /// The device the event is about.
    pub fn device_id(&self) -> &str {
        match self {
            EndpointEvent::Registrar(e) => match e {
                registrar::Event::Registered { device_id, .. }
                | registrar::Event::Unregistered { device_id, .. }
                | registrar::Event::Online { device_id }
                | registrar::Event::Offline { device_id }
                | registrar::Event::KeepaliveRefused { device_id, .. }
                | registrar::Event::AuthFailed { device_id, .. } => device_id,
            },
            EndpointEvent::Catalog { device_id, .. } => device_id,
            EndpointEvent::DeviceInfo { info, .. } => &info.device_id,
            EndpointEvent::DeviceStatus { status, .. } => &status.device_id,
            EndpointEvent::RecordInfo { device_id, .. } => device_id,
            EndpointEvent::MediaStatus { device_id, .. } => device_id,
        }
    }
}

/// The result of a client transaction, delivered to the requester.
#[derive(Debug, Clone)]
pub enum TxReply {
    /// Every provisional response and the (first) final one.
    Response(Message),
    Timeout,
}

type Subscriber = Arc<dyn Fn(&EndpointEvent) + Send + Sync>;

struct PendingTx {
    request: Vec<u8>,
    dest: SocketAddr,
    tx: ClientTransaction,
    reply: mpsc::Sender<TxReply>,
}

struct DialogEntry {
    /// Told about in-dialog requests (BYE).
    owner: mpsc::Sender<Message>,
    /// ACK to re-send when the 2xx is retransmitted.
    ack: Option<(Vec<u8>, SocketAddr)>,
}

struct Inner {
    registrar: Registrar,
    transactions: HashMap<(String, u32, String), PendingTx>,
    dialogs: HashMap<String, DialogEntry>,
    catalogs: ListMerger<CatalogItem>,
    records: ListMerger<RecordItem>,
    sn: u32,
    next_poll_ms: u64,
}

enum Socket {
    Udp(UdpSocket),
    Tcp {
        conns: Mutex<HashMap<SocketAddr, TcpStream>>,
    },
}

/// Endpoint statistics (for `stats` properties and the load tool).
#[derive(Debug, Clone, Default)]
pub struct EndpointStats {
    pub registrar: RegistrarStats,
    pub messages_in: u64,
    pub messages_out: u64,
    pub parse_errors: u64,
    pub retransmissions: u64,
    pub devices: usize,
    pub devices_online: usize,
}

pub struct Endpoint {
    me: Weak<Endpoint>,
    key: EndpointKey,
    local_addr: SocketAddr,
    socket: Socket,
    inner: Mutex<Inner>,
    subscribers: Mutex<Vec<(u64, Subscriber)>>,
    next_id: AtomicU64,
    stop: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    parse_errors: AtomicU64,
    retransmissions: AtomicU64,
}

static ENDPOINTS: LazyLock<Mutex<HashMap<EndpointKey, Arc<Endpoint>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Every running endpoint of the process.
pub fn endpoints() -> Vec<Arc<Endpoint>> {
    ENDPOINTS
        .lock()
        .map(|m| m.values().cloned().collect())
        .unwrap_or_default()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("key", &self.key)
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

impl Endpoint {
    /// The endpoint for `key`, started with `config` if it doesn't exist yet. An existing
    /// endpoint keeps its configuration, but learns the per-device passwords of `config`
    /// (and its default password if it had none).
    pub fn obtain(key: &EndpointKey, config: RegistrarConfig) -> io::Result<Arc<Endpoint>> {
        let mut map = lock(&ENDPOINTS);
        if let Some(ep) = map.get(key) {
            let mut inner = lock(&ep.inner);
            let c = &mut inner.registrar.config;
            c.passwords.extend(config.passwords);
            if c.default_password.is_none() {
                c.default_password = config.default_password;
            }
            drop(inner);
            return Ok(ep.clone());
        }
        let ep = Endpoint::start(key.clone(), config)?;
        map.insert(key.clone(), ep.clone());
        Ok(ep)
    }

    /// The running endpoint for `key`, if any.
    pub fn find(key: &EndpointKey) -> Option<Arc<Endpoint>> {
        lock(&ENDPOINTS).get(key).cloned()
    }

    fn start(key: EndpointKey, config: RegistrarConfig) -> io::Result<Arc<Endpoint>> {
        let bind = (key.address.as_str(), key.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address"))?;
        let (socket, local_addr, listener) = match key.transport {
            SipTransport::Udp => {
                let s = UdpSocket::bind(bind)?;
                s.set_read_timeout(Some(TICK))?;
                let a = s.local_addr()?;
                (Socket::Udp(s), a, None)
            }
            SipTransport::Tcp => {
                let l = TcpListener::bind(bind)?;
                l.set_nonblocking(true)?;
                let a = l.local_addr()?;
                (
                    Socket::Tcp {
                        conns: Mutex::new(HashMap::new()),
                    },
                    a,
                    Some(l),
                )
            }
        };
        // Keep `key.port` meaningful when an ephemeral port was asked for.
        let ep = Arc::new_cyclic(|me| Endpoint {
            me: me.clone(),
            key,
            local_addr,
            socket,
            inner: Mutex::new(Inner {
                registrar: Registrar::new(config),
                transactions: HashMap::new(),
                dialogs: HashMap::new(),
                catalogs: ListMerger::new(10_000),
                records: ListMerger::new(10_000),
                sn: 0,
                next_poll_ms: 0,
            }),
            subscribers: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            stop: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
            messages_in: AtomicU64::new(0),
            messages_out: AtomicU64::new(0),
            parse_errors: AtomicU64::new(0),
            retransmissions: AtomicU64::new(0),
        });
        let mut threads = Vec::new();
        let weak = Arc::downgrade(&ep);
        threads.push(
            std::thread::Builder::new()
                .name("gb28181-sip-timer".into())
                .spawn(move || timer_loop(weak))?,
        );
        match listener {
            None => {
                let weak = Arc::downgrade(&ep);
                threads.push(
                    std::thread::Builder::new()
                        .name("gb28181-sip-udp".into())
                        .spawn(move || udp_loop(weak))?,
                );
            }
            Some(l) => {
                let weak = Arc::downgrade(&ep);
                threads.push(
                    std::thread::Builder::new()
                        .name("gb28181-sip-tcp".into())
                        .spawn(move || accept_loop(weak, l))?,
                );
            }
        }
        *lock(&ep.threads) = threads;
        Ok(ep)
    }

    /// Stops the endpoint's threads and removes it from the process registry.
    pub fn shutdown(&self) {
        lock(&ENDPOINTS).retain(|_, e| !std::ptr::eq(e.as_ref(), self));
        self.stop.store(true, Ordering::SeqCst);
        if let Socket::Tcp { conns } = &self.socket {
            for c in lock(conns).values() {
                let _ = c.shutdown(std::net::Shutdown::Both);
            }
        }
        let threads = std::mem::take(&mut *lock(&self.threads));
        let me = std::thread::current().id();
        for t in threads {
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
    }

    pub fn key(&self) -> &EndpointKey {
        &self.key
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn transport(&self) -> SipTransport {
        self.key.transport
    }

    pub fn server_id(&self) -> String {
        lock(&self.inner).registrar.config.server_id.clone()
    }

    pub fn realm(&self) -> String {
        lock(&self.inner).registrar.config.realm.clone()
    }

    /// Changes keepalive timing (offline detection) at run time.
    pub fn set_keepalive(&self, interval_ms: u64, max_missed: u32) {
        let mut inner = lock(&self.inner);
        inner.registrar.config.keepalive_interval_ms = interval_ms.max(1);
        inner.registrar.config.max_missed_keepalives = max_missed.max(1);
    }

    /// Registered devices.
    pub fn devices(&self) -> Vec<Device> {
        lock(&self.inner).registrar.devices().cloned().collect()
    }

    pub fn device(&self, id: &str) -> Option<Device> {
        lock(&self.inner).registrar.device(id).cloned()
    }

    pub fn stats(&self) -> EndpointStats {
        let inner = lock(&self.inner);
        EndpointStats {
            registrar: inner.registrar.stats.clone(),
            messages_in: self.messages_in.load(Ordering::Relaxed),
            messages_out: self.messages_out.load(Ordering::Relaxed),
            parse_errors: self.parse_errors.load(Ordering::Relaxed),
            retransmissions: self.retransmissions.load(Ordering::Relaxed),
            devices: inner.registrar.devices().count(),
            devices_online: inner.registrar.devices().filter(|d| d.online).count(),
        }
    }

    /// Calls `f` (on an endpoint thread) for every event; returns an id for
    /// [`Endpoint::unsubscribe`]. `f` must not block.
    pub fn subscribe(&self, f: impl Fn(&EndpointEvent) + Send + Sync + 'static) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.subscribers).push((id, Arc::new(f)));
        id
    }

    pub fn unsubscribe(&self, id: u64) {
        lock(&self.subscribers).retain(|(i, _)| *i != id);
    }

    fn publish(&self, events: Vec<EndpointEvent>) {
        if events.is_empty() {
            return;
        }
        let subs: Vec<Subscriber> = lock(&self.subscribers)
            .iter()
            .map(|(_, s)| s.clone())
            .collect();
        for e in &events {
            for s in &subs {
                s(e);
            }
        }
    }

    /// A unique number (Call-IDs, tags, branches).
    pub fn unique(&self) -> u64 {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let t = now_ms();
        (t.wrapping_mul(1_000_003) ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)) % 10_000_000_000
    }

    /// Next MANSCDP serial number.
    pub fn next_sn(&self) -> u32 {
        let mut inner = lock(&self.inner);
        inner.sn = inner.sn.wrapping_add(1);
        inner.sn
    }

    /// Where requests to `device_id` go (its registration's source address).
    pub fn device_addr(&self, device_id: &str) -> Option<SocketAddr> {
        self.device(device_id)?.source.parse().ok()
    }

    /// Our address as seen from `dest` (for Via / Contact / SDP when bound to a wildcard).
    pub fn local_ip_for(&self, dest: SocketAddr) -> String {
        if !self.local_addr.ip().is_unspecified() {
            return self.local_addr.ip().to_string();
        }
        UdpSocket::bind("0.0.0.0:0")
            .and_then(|s| {
                s.connect(dest)?;
                s.local_addr()
            })
            .map(|a| a.ip().to_string())
            .unwrap_or_else(|_| "127.0.0.1".into())
    }

    /// Builds a request from the platform to `device_id` (Request-URI `target_id`).
    pub fn new_request(&self, method: &str, target_id: &str, dest: SocketAddr) -> Message {
        let (server_id, realm) = {
            let inner = lock(&self.inner);
            (
                inner.registrar.config.server_id.clone(),
                inner.registrar.config.realm.clone(),
            )
        };
        let ip = self.local_ip_for(dest);
        let port = self.local_addr.port();
        let mut m = Message::request(method, &format!("sip:{target_id}@{dest}"));
        m.add_header(
            "Via",
            format!(
                "SIP/2.0/{} {ip}:{port};rport;branch=z9hG4bK{}",
                self.key.transport.as_str(),
                self.unique()
            ),
        )
        .add_header(
            "From",
            format!("<sip:{server_id}@{realm}>;tag={}", self.unique()),
        )
        .add_header("To", format!("<sip:{target_id}@{realm}>"))
        .add_header("Call-ID", format!("{}@{ip}", self.unique()))
        .add_header("CSeq", format!("1 {method}"))
        .add_header("Contact", format!("<sip:{server_id}@{ip}:{port}>"))
        .add_header("Max-Forwards", "70")
        .add_header("User-Agent", "gst-ipcam");
        m
    }

    /// Sends one message to `dest` (no transaction).
    pub fn send_to(&self, msg: &Message, dest: SocketAddr) -> io::Result<()> {
        self.send_bytes(&msg.to_bytes(), dest)
    }

    fn send_bytes(&self, bytes: &[u8], dest: SocketAddr) -> io::Result<()> {
        self.messages_out.fetch_add(1, Ordering::Relaxed);
        match &self.socket {
            Socket::Udp(s) => s.send_to(bytes, dest).map(|_| ()),
            Socket::Tcp { conns } => {
                let existing = lock(conns).get(&dest).and_then(|c| c.try_clone().ok());
                let mut stream = match existing {
                    Some(s) => s,
                    None => self.connect_tcp(dest)?,
                };
                stream.write_all(bytes)
            }
        }
    }

    fn connect_tcp(&self, dest: SocketAddr) -> io::Result<TcpStream> {
        let s = TcpStream::connect_timeout(&dest, Duration::from_secs(3))?;
        self.add_tcp_connection(s.try_clone()?, dest)?;
        Ok(s)
    }

    fn add_tcp_connection(&self, s: TcpStream, peer: SocketAddr) -> io::Result<()> {
        let Socket::Tcp { conns } = &self.socket else {
            return Ok(());
        };
        {
            let mut conns = lock(conns);
            if conns.len() >= MAX_TCP_CONNECTIONS {
                return Err(io::Error::other("too many TCP connections"));
            }
            conns.insert(peer, s.try_clone()?);
        }
        s.set_read_timeout(Some(Duration::from_millis(100)))?;
        let weak = self.me.clone();
        let handle = std::thread::Builder::new()
            .name("gb28181-sip-conn".into())
            .spawn(move || tcp_conn_loop(weak, s, peer))?;
        let mut threads = lock(&self.threads);
        // Forget the threads of closed connections.
        threads.retain(|t| !t.is_finished());
        threads.push(handle);
        Ok(())
    }

    /// Starts a client transaction: sends `msg` to `dest` (and retransmits it over UDP);
    /// responses and the timeout arrive on the returned channel.
    pub fn request(&self, msg: &Message, dest: SocketAddr) -> io::Result<mpsc::Receiver<TxReply>> {
        let (tx, rx) = mpsc::channel();
        let key = tx_key(msg)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no Call-ID/CSeq"))?;
        let kind = if key.2 == "INVITE" {
            TransactionKind::Invite
        } else {
            TransactionKind::NonInvite
        };
        let bytes = msg.to_bytes();
        {
            let mut inner = lock(&self.inner);
            if inner.transactions.len() >= MAX_TRANSACTIONS {
                return Err(io::Error::other("too many transactions"));
            }
            inner.transactions.insert(
                key,
                PendingTx {
                    request: bytes.clone(),
                    dest,
                    tx: ClientTransaction::new(kind, now_ms()),
                    reply: tx,
                },
            );
        }
        self.send_bytes(&bytes, dest)?;
        Ok(rx)
    }

    /// Sends `msg` and waits up to `timeout` for the final response.
    pub fn request_sync(
        &self,
        msg: &Message,
        dest: SocketAddr,
        timeout: Duration,
        cancelled: &dyn Fn() -> bool,
    ) -> io::Result<Message> {
        let rx = self.request(msg, dest)?;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if cancelled() {
                return Err(io::Error::new(io::ErrorKind::Interrupted, "cancelled"));
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no final response"));
            }
            match rx.recv_timeout(left.min(Duration::from_millis(50))) {
                Ok(TxReply::Response(r)) if r.status().is_some_and(|s| s >= 200) => return Ok(r),
                Ok(TxReply::Response(_)) => {}
                Ok(TxReply::Timeout) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "transaction timeout",
                    ));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(io::Error::other("endpoint stopped"));
                }
            }
        }
    }

    /// Registers a dialog (by Call-ID): in-dialog requests go to `owner`; `ack` is re-sent
    /// when the 2xx comes again.
    pub fn add_dialog(
        &self,
        call_id: &str,
        owner: mpsc::Sender<Message>,
        ack: Option<(&Message, SocketAddr)>,
    ) {
        let mut inner = lock(&self.inner);
        if inner.dialogs.len() >= MAX_DIALOGS {
            return;
        }
        inner.dialogs.insert(
            call_id.to_string(),
            DialogEntry {
                owner,
                ack: ack.map(|(m, a)| (m.to_bytes(), a)),
            },
        );
    }

    pub fn remove_dialog(&self, call_id: &str) {
        lock(&self.inner).dialogs.remove(call_id);
    }

    /// Sends a MANSCDP query (`Catalog`, `DeviceInfo`, `DeviceStatus`) to a registered
    /// device; the answer comes as an [`EndpointEvent`]. Returns the SN.
    pub fn query(&self, device_id: &str, cmd_type: &str) -> io::Result<u32> {
        let sn = self.next_sn();
        let body = manscdp::build_query(cmd_type, sn, device_id);
        self.send_manscdp(device_id, device_id, &body)?;
        Ok(sn)
    }

    /// Sends a RecordInfo query for `channel_id` of `device_id` (times
    /// `yyyy-MM-ddTHH:mm:ss`); the merged answer comes as [`EndpointEvent::RecordInfo`].
    pub fn query_record_info(
        &self,
        device_id: &str,
        channel_id: &str,
        start_time: &str,
        end_time: &str,
    ) -> io::Result<u32> {
        let sn = self.next_sn();
        let body = manscdp::build_record_info_query(&RecordInfoQuery {
            sn,
            device_id: channel_id.to_string(),
            start_time: start_time.to_string(),
            end_time: end_time.to_string(),
            record_type: "all".into(),
        });
        self.send_manscdp(device_id, channel_id, &body)?;
        Ok(sn)
    }

    /// Sends a PTZ command to `channel_id` of `device_id`. Returns the SN.
    pub fn ptz(&self, device_id: &str, channel_id: &str, cmd: manscdp::PtzCmd) -> io::Result<u32> {
        let sn = self.next_sn();
        let body = manscdp::build_ptz_control(sn, channel_id, cmd);
        self.send_manscdp(device_id, channel_id, &body)?;
        Ok(sn)
    }

    fn send_manscdp(&self, device_id: &str, target_id: &str, body: &str) -> io::Result<()> {
        let dest = self
            .device_addr(device_id)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "device not registered"))?;
        let mut m = self.new_request("MESSAGE", target_id, dest);
        m.set_body(
            "Application/MANSCDP+xml",
            manscdp::encode_body(body, manscdp::Charset::Gb2312),
        );
        // Fire and forget: the answer is a separate MESSAGE.
        let _rx = self.request(&m, dest)?;
        Ok(())
    }

    /// Handles one incoming message (public for tests and the fuzz-like vector tests).
    pub fn handle_datagram(&self, data: &[u8], source: SocketAddr) {
        self.messages_in.fetch_add(1, Ordering::Relaxed);
        match Message::parse(data) {
            Ok(m) => self.handle_message(m, source),
            Err(_) => {
                self.parse_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn handle_message(&self, msg: Message, source: SocketAddr) {
        let now = now_ms();
        if !msg.is_request() {
            self.handle_response(msg, now);
            return;
        }
        let method = msg.method().unwrap_or_default().to_ascii_uppercase();
        let src = source.to_string();
        let (response, events) = match method.as_str() {
            "REGISTER" => {
                let out = lock(&self.inner).registrar.handle_register(&msg, &src, now);
                (Some(out.response), wrap(out.events))
            }
            "MESSAGE" => self.handle_manscdp(&msg, &src, now),
            "BYE" => {
                let owner = lock(&self.inner)
                    .dialogs
                    .remove(msg.call_id().unwrap_or_default())
                    .map(|d| d.owner);
                match owner {
                    Some(o) => {
                        let _ = o.send(msg.clone());
                        (Some(Message::response_to(&msg, 200, "OK", None)), vec![])
                    }
                    None => (
                        Some(Message::response_to(
                            &msg,
                            481,
                            "Call/Transaction Does Not Exist",
                            None,
                        )),
                        vec![],
                    ),
                }
            }
            "ACK" => (None, vec![]),
            "OPTIONS" => (Some(Message::response_to(&msg, 200, "OK", None)), vec![]),
            _ => (
                Some(Message::response_to(&msg, 501, "Not Implemented", None)),
                vec![],
            ),
        };
        if let Some(r) = response {
            let _ = self.send_to(&r, reply_addr(&msg, source, self.key.transport));
        }
        self.publish(events);
    }

    fn handle_manscdp(
        &self,
        msg: &Message,
        src: &str,
        now: u64,
    ) -> (Option<Message>, Vec<EndpointEvent>) {
        let parsed = match Manscdp::parse(&msg.body) {
            Ok(p) => p,
            Err(_) => {
                return (
                    Some(Message::response_to(msg, 400, "Bad Request", None)),
                    vec![],
                );
            }
        };
        let ok = Message::response_to(msg, 200, "OK", None);
        match parsed {
            Manscdp::Keepalive(k) => {
                let out = lock(&self.inner)
                    .registrar
                    .handle_keepalive(msg, &k, src, now);
                (Some(out.response), wrap(out.events))
            }
            Manscdp::Catalog(list) => {
                let done = lock(&self.inner).catalogs.add(list, now);
                let ev = done
                    .map(|l| EndpointEvent::Catalog {
                        device_id: l.device_id,
                        sn: l.sn,
                        sum_num: l.sum_num,
                        items: l.items,
                    })
                    .into_iter()
                    .collect();
                (Some(ok), ev)
            }
            Manscdp::RecordInfo(list) => {
                let done = lock(&self.inner).records.add(list, now);
                let ev = done
                    .map(|l| EndpointEvent::RecordInfo {
                        device_id: l.device_id,
                        sn: l.sn,
                        sum_num: l.sum_num,
                        items: l.items,
                    })
                    .into_iter()
                    .collect();
                (Some(ok), ev)
            }
            Manscdp::MediaStatus {
                device_id,
                notify_type,
                ..
            } => (
                Some(ok),
                vec![EndpointEvent::MediaStatus {
                    device_id,
                    notify_type,
                }],
            ),
            Manscdp::DeviceInfo { sn, info } => {
                (Some(ok), vec![EndpointEvent::DeviceInfo { sn, info }])
            }
            Manscdp::DeviceStatus { sn, status } => {
                (Some(ok), vec![EndpointEvent::DeviceStatus { sn, status }])
            }
            _ => (Some(ok), vec![]),
        }
    }

    fn handle_response(&self, msg: Message, now: u64) {
        let Some(key) = tx_key(&msg) else { return };
        let status = msg.status().unwrap_or(0);
        let mut inner = lock(&self.inner);
        if let Some(p) = inner.transactions.get_mut(&key) {
            match p.tx.on_response(status, now) {
                TxAction::Deliver => {
                    let _ = p.reply.send(TxReply::Response(msg));
                }
                TxAction::ResendAck => {}
                _ => {}
            }
            if p.tx.is_terminated() {
                inner.transactions.remove(&key);
            }
            return;
        }
        // A retransmitted 2xx to an INVITE whose transaction is over: ACK again.
        if key.2 == "INVITE"
            && (200..300).contains(&status)
            && let Some((ack, dest)) = inner.dialogs.get(&key.0).and_then(|d| d.ack.clone())
        {
            drop(inner);
            let _ = self.send_bytes(&ack, dest);
        }
    }

    fn poll(&self) {
        let now = now_ms();
        let mut resend = Vec::new();
        let mut events = Vec::new();
        {
            let mut inner = lock(&self.inner);
            let reliable = self.key.transport == SipTransport::Tcp;
            inner.transactions.retain(|_, p| {
                match p.tx.poll(now) {
                    TxAction::Retransmit if !reliable => {
                        resend.push((p.request.clone(), p.dest));
                    }
                    TxAction::Timeout => {
                        let _ = p.reply.send(TxReply::Timeout);
                    }
                    _ => {}
                }
                !p.tx.is_terminated()
            });
            if now >= inner.next_poll_ms {
                inner.next_poll_ms = now + 100;
                events.extend(wrap(inner.registrar.poll(now)));
                for l in inner.catalogs.expire(now) {
                    events.push(EndpointEvent::Catalog {
                        device_id: l.device_id,
                        sn: l.sn,
                        sum_num: l.sum_num,
                        items: l.items,
                    });
                }
                for l in inner.records.expire(now) {
                    events.push(EndpointEvent::RecordInfo {
                        device_id: l.device_id,
                        sn: l.sn,
                        sum_num: l.sum_num,
                        items: l.items,
                    });
                }
            }
        }
        for (bytes, dest) in resend {
            self.retransmissions.fetch_add(1, Ordering::Relaxed);
            let _ = self.send_bytes(&bytes, dest);
        }
        self.publish(events);
    }
}

fn wrap(events: Vec<registrar::Event>) -> Vec<EndpointEvent> {
    events.into_iter().map(EndpointEvent::Registrar).collect()
}

fn tx_key(msg: &Message) -> Option<(String, u32, String)> {
    let cseq = msg.cseq()?;
    Some((
        msg.call_id()?.to_string(),
        cseq.seq,
        cseq.method.to_ascii_uppercase(),
    ))
}

/// Where to answer a request: over TCP the connection it came on; over UDP the source
/// address (symmetric response routing, what cameras behind NAT need: `rport`).
fn reply_addr(_req: &Message, source: SocketAddr, _t: SipTransport) -> SocketAddr {
    source
}

fn udp_loop(weak: Weak<Endpoint>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let Some(ep) = weak.upgrade() else { return };
        if ep.stop.load(Ordering::SeqCst) {
            return;
        }
        let Socket::Udp(s) = &ep.socket else { return };
        match s.recv_from(&mut buf) {
            Ok((n, from)) => ep.handle_datagram(&buf[..n], from),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            // ICMP port unreachable surfaces as ConnectionReset on some systems: ignore.
            Err(_) => {}
        }
    }
}

fn timer_loop(weak: Weak<Endpoint>) {
    loop {
        {
            let Some(ep) = weak.upgrade() else { return };
            if ep.stop.load(Ordering::SeqCst) {
                return;
            }
            ep.poll();
        }
        std::thread::sleep(TICK);
    }
}

fn accept_loop(weak: Weak<Endpoint>, listener: TcpListener) {
    loop {
        {
            let Some(ep) = weak.upgrade() else { return };
            if ep.stop.load(Ordering::SeqCst) {
                return;
            }
            match listener.accept() {
                Ok((s, peer)) => {
                    let _ = s.set_nonblocking(false);
                    let _ = ep.add_tcp_connection(s, peer);
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => {}
            }
        }
        std::thread::sleep(TICK);
    }
}

fn tcp_conn_loop(weak: Weak<Endpoint>, mut s: TcpStream, peer: SocketAddr) {
    let mut framer = StreamFramer::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                match weak.upgrade() {
                    Some(ep) if !ep.stop.load(Ordering::SeqCst) => continue,
                    _ => return,
                }
            }
            Err(_) => break,
        };
        let Some(ep) = weak.upgrade() else { return };
        for m in framer.push(&buf[..n]) {
            ep.messages_in.fetch_add(1, Ordering::Relaxed);
            match m {
                Ok(m) => ep.handle_message(m, peer),
                Err(_) => {
                    ep.parse_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    if let Some(ep) = weak.upgrade()
        && let Socket::Tcp { conns } = &ep.socket
    {
        lock(conns).remove(&peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> EndpointKey {
        EndpointKey {
            address: "127.0.0.1".into(),
            port: 0,
            transport: SipTransport::Udp,
        }
    }

    #[test]
    fn register_vector_challenged_and_shared() {
        let k = EndpointKey { port: 0, ..key() };
        let ep = Endpoint::start(k, RegistrarConfig::default()).unwrap();
        let (tx, rx) = mpsc::channel();
        ep.subscribe(move |e| {
            let _ = tx.send(e.clone());
        });
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let reg = b"REGISTER sip:34020000002000000001@3402000000 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1\r\nFrom: <sip:34020000001320000001@3402000000>;tag=1\r\nTo: <sip:34020000001320000001@3402000000>\r\nCall-ID: 1\r\nCSeq: 1 REGISTER\r\nContact: <sip:34020000001320000001@127.0.0.1:5060>\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n";
        client.send_to(reg, ep.local_addr()).unwrap();
        let mut buf = [0u8; 4096];
        let (n, _) = client.recv_from(&mut buf).unwrap();
        let resp = Message::parse(&buf[..n]).unwrap();
        assert_eq!(resp.status(), Some(401));
        assert!(rx.try_recv().is_err());
        ep.shutdown();
    }

    fn register_over_tcp(ep: &Endpoint, device: &str) -> (TcpStream, StreamFramer) {
        use crate::core::client::{ClientAction, RegisterClient, RegisterClientConfig};
        let mut s = TcpStream::connect(ep.local_addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut client = RegisterClient::new(RegisterClientConfig {
            device_id: device.into(),
            transport: "TCP".into(),
            local_port: s.local_addr().unwrap().port(),
            ..Default::default()
        });
        let mut framer = StreamFramer::new();
        let mut actions = client.start(0);
        let mut buf = [0u8; 4096];
        for _ in 0..10 {
            let mut registered = false;
            for a in actions.drain(..) {
                match a {
                    ClientAction::Send(m) => s.write_all(&m.to_bytes()).unwrap(),
                    ClientAction::Registered { .. } => registered = true,
                    other => panic!("{other:?}"),
                }
            }
            if registered {
                return (s, framer);
            }
            let n = s.read(&mut buf).unwrap();
            for m in framer.push(&buf[..n]) {
                actions.extend(client.on_response(&m.unwrap(), 0));
            }
        }
        panic!("not registered");
    }

    #[test]
    fn tcp_registration_and_query_on_the_same_connection() {
        let k = EndpointKey {
            transport: SipTransport::Tcp,
            ..key()
        };
        let ep = Endpoint::start(k, RegistrarConfig::default()).unwrap();
        let (tx, rx) = mpsc::channel();
        ep.subscribe(move |e| {
            let _ = tx.send(e.clone());
        });
        let device = "34020000001320000009";
        let (mut s, mut framer) = register_over_tcp(&ep, device);
        let ev = rx.recv_timeout(Duration::from_secs(2)).unwrap();
        assert!(matches!(
            ev,
            EndpointEvent::Registrar(registrar::Event::Registered { .. })
        ));
        assert_eq!(ep.devices().len(), 1);
        let sn = ep.query(device, "Catalog").unwrap();
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).unwrap();
        let msgs: Vec<_> = framer.push(&buf[..n]);
        let m = msgs[0].as_ref().unwrap();
        assert_eq!(m.method(), Some("MESSAGE"));
        match Manscdp::parse(&m.body).unwrap() {
            Manscdp::CatalogQuery { sn: got, .. } => assert_eq!(got, sn),
            other => panic!("{other:?}"),
        }
        ep.shutdown();
    }

    #[test]
    fn udp_requests_are_retransmitted_until_answered() {
        let ep = Endpoint::start(key(), RegistrarConfig::default()).unwrap();
        let dev = UdpSocket::bind("127.0.0.1:0").unwrap();
        dev.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let dest = dev.local_addr().unwrap();
        let m = ep.new_request("MESSAGE", "34020000001320000001", dest);
        let rx = ep.request(&m, dest).unwrap();
        let mut buf = [0u8; 4096];
        let t0 = std::time::Instant::now();
        let (n1, _) = dev.recv_from(&mut buf).unwrap();
        let first = buf[..n1].to_vec();
        let (n2, _) = dev.recv_from(&mut buf).unwrap();
        // Timer E: the same request again after T1 (500 ms).
        assert_eq!(&buf[..n2], &first[..]);
        assert!(t0.elapsed() >= Duration::from_millis(400));
        // A 200 ends the transaction and reaches the requester.
        let req = Message::parse(&first).unwrap();
        let ok = Message::response_to(&req, 200, "OK", Some("x"));
        dev.send_to(&ok.to_bytes(), ep.local_addr()).unwrap();
        match rx.recv_timeout(Duration::from_secs(2)).unwrap() {
            TxReply::Response(r) => assert_eq!(r.status(), Some(200)),
            TxReply::Timeout => panic!("timeout"),
        }
        ep.shutdown();
    }
}

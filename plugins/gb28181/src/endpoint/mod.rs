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
//! [`StreamFramer`]); one timer thread; one dispatcher thread that calls the subscribers.
//! [`Endpoint::shutdown`] stops all of them. The receive threads only parse, answer and
//! enqueue events, so a slow subscriber never delays signalling.
//!
//! Whom it believes: only an authenticated REGISTER binds a device to an address (and, over
//! TCP, to the connection it came on). A MESSAGE or NOTIFY is from device D when its From user
//! is D; it is accepted only from D's registered address (over TCP: D's registered
//! connection) and only if its MANSCDP `<DeviceID>` is D or one of D's channels (from its
//! Catalogs, or addressed by us with [`Endpoint::note_channel`], queries and PTZ); otherwise it
//! gets 403, is counted in `forged_requests` and reported as
//! [`registrar::Event::ForgedRequest`], and the binding stays. In-dialog requests (BYE, INFO)
//! must carry the dialog's Call-ID and both tags and come from the dialog's peer address, or
//! they get 481 (counted and reported the same way) and the dialog goes on. Device IDs and
//! Catalog channel IDs are checked with the configured [`crate::core::id::IdPolicy`] before
//! any use; Catalog items with invalid IDs are dropped ([`EndpointEvent::CatalogItemsDropped`]).
//! Call-IDs, tags and branches are random (OS randomness).
//!
//! Limits: message/header/body size are bounded by the SIP parser; at most
//! [`MAX_TRANSACTIONS`] client transactions, [`MAX_DIALOGS`] dialogs and [`MAX_TCP_CONNECTIONS`]
//! TCP connections at once; `max_devices` registrations and `max_channels_per_device` channels
//! per device (further Catalog items are dropped and counted); at most [`EVENT_QUEUE`] events
//! waiting for the subscribers (further events are dropped and counted in `events_dropped`),
//! and events about unauthenticated requests at [`REFUSAL_EVENTS_PER_S`] (the rest counted in
//! `events_suppressed`); failed authentication is limited per source IP by the registrar.

use crate::core::addr;
use crate::core::id::printable;
use crate::core::manscdp::{
    self, CatalogItem, DeviceInfo, DeviceStatus, ListMerger, ListResponse, Manscdp,
    RecordInfoQuery, RecordItem,
};
use crate::core::random;
use crate::core::registrar::{
    self, Device, Registrar, RegistrarConfig, RegistrarStats, SenderCheck, reason,
};
use crate::core::sip::{Message, NameAddr, StreamFramer};
use crate::core::transaction::{ClientTransaction, Dialog, TransactionKind, TxAction};
use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const MAX_TRANSACTIONS: usize = 4096;
pub const MAX_DIALOGS: usize = 4096;
pub const MAX_TCP_CONNECTIONS: usize = 4096;
/// Events waiting for the dispatcher thread; further events are dropped (and counted).
pub const EVENT_QUEUE: usize = 4096;
/// Events caused by unauthenticated requests (failed or refused authentication, forged
/// requests, invalid IDs, refused keepalives) published at most at this rate (per second,
/// bursts of [`REFUSAL_EVENT_BURST`]); the others are only counted, so a flood of forged
/// datagrams cannot flood the applications' buses.
pub const REFUSAL_EVENTS_PER_S: f64 = 20.0;
pub const REFUSAL_EVENT_BURST: f64 = 100.0;
const TICK: Duration = Duration::from_millis(20);

/// Where a request came from: the source address and, over TCP, the connection's number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Peer {
    addr: SocketAddr,
    connection: Option<u64>,
}

impl Peer {
    fn udp(addr: SocketAddr) -> Peer {
        Peer {
            addr,
            connection: None,
        }
    }
}

/// The clock of the SIP timers (what the core's state machines are given: keepalive and
/// offline deadlines, registration expiry, retransmissions, refresh): Unix milliseconds read
/// once at the first call, then advanced by the monotonic clock. A wall-clock step (NTP, an
/// operator setting the date) moves no deadline: with the wall clock, +1 h expired every
/// registration and took every device offline at once, -1 h stopped offline detection and
/// a device's keepalives for an hour. Times it gives are near the wall clock but drift from
/// it by the steps; dates shown to devices use [`wall_ms`].
pub fn now_ms() -> u64 {
    static START: LazyLock<(Instant, u64)> = LazyLock::new(|| (Instant::now(), wall_ms()));
    START.1 + START.0.elapsed().as_millis() as u64
}

/// The wall clock in Unix milliseconds (the `Date` of a REGISTER's 200, device times).
pub fn wall_ms() -> u64 {
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
    /// Catalog items of `device_id` that were dropped: `invalid` IDs refused by the ID policy
    /// (`example`: the first, printable), `over_limit` beyond `max_channels_per_device`.
    CatalogItemsDropped {
        device_id: String,
        invalid: u32,
        over_limit: u32,
        example: String,
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
                | registrar::Event::AuthFailed { device_id, .. }
                | registrar::Event::SourceBlocked { device_id, .. }
                | registrar::Event::ForgedRequest { device_id, .. } => device_id,
                registrar::Event::InvalidId { id, .. } => id,
            },
            EndpointEvent::Catalog { device_id, .. } => device_id,
            EndpointEvent::DeviceInfo { info, .. } => &info.device_id,
            EndpointEvent::DeviceStatus { status, .. } => &status.device_id,
            EndpointEvent::RecordInfo { device_id, .. } => device_id,
            EndpointEvent::MediaStatus { device_id, .. } => device_id,
            EndpointEvent::CatalogItemsDropped { device_id, .. } => device_id,
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
    /// Our tag (From of our INVITE) and the device's (To of its 2xx).
    local_tag: String,
    remote_tag: String,
    /// The device's address: in-dialog requests must come from it.
    peer: SocketAddr,
}

struct Inner {
    registrar: Registrar,
    transactions: HashMap<(String, u32, String), PendingTx>,
    dialogs: HashMap<String, DialogEntry>,
    catalogs: ListMerger<CatalogItem>,
    records: ListMerger<RecordItem>,
    /// Channels per registered device (from its Catalogs and the ones we addressed), at most
    /// `max_channels_per_device` each.
    channels: HashMap<String, HashSet<String>>,
    /// Over TCP: the connection each device registered on.
    device_conns: HashMap<String, u64>,
    catalog_items_dropped: u64,
    sn: u32,
    next_poll_ms: u64,
}

impl Inner {
    /// Keeps the per-device tables in step with registrations.
    fn track_bindings(&mut self, events: &[EndpointEvent], connection: Option<u64>) {
        for e in events {
            match e {
                EndpointEvent::Registrar(registrar::Event::Registered { device_id, .. }) => {
                    match connection {
                        Some(c) => self.device_conns.insert(device_id.clone(), c),
                        None => self.device_conns.remove(device_id),
                    };
                }
                EndpointEvent::Registrar(registrar::Event::Unregistered { device_id, .. }) => {
                    self.device_conns.remove(device_id);
                    self.channels.remove(device_id);
                }
                _ => {}
            }
        }
    }

    /// Remembers `channel` of registered `device` (bounded). Whether it is known now.
    fn note_channel(&mut self, device: &str, channel: &str) -> bool {
        if self.registrar.device(device).is_none() {
            return false;
        }
        let max = self.registrar.config.max_channels_per_device;
        let set = self.channels.entry(device.to_string()).or_default();
        if set.contains(channel) {
            return true;
        }
        if set.len() >= max {
            return false;
        }
        set.insert(channel.to_string());
        true
    }

    /// Keeps the items of a complete Catalog that fit the device's channel budget (known
    /// channels first come, first served); returns how many were dropped.
    fn accept_channels(&mut self, list: &mut ListResponse<CatalogItem>) -> usize {
        let max = self.registrar.config.max_channels_per_device;
        if self.registrar.device(&list.device_id).is_none() {
            // Unregistered meanwhile: publish within the budget, remember nothing.
            let over = list.items.len().saturating_sub(max);
            list.items.truncate(max);
            return over;
        }
        let set = self.channels.entry(list.device_id.clone()).or_default();
        let mut over = 0;
        list.items.retain(|i| {
            if set.contains(&i.device_id) {
                true
            } else if set.len() < max {
                set.insert(i.device_id.clone());
                true
            } else {
                over += 1;
                false
            }
        });
        over
    }

    fn catalog_event(&mut self, mut l: ListResponse<CatalogItem>) -> Vec<EndpointEvent> {
        let over = self.accept_channels(&mut l);
        let mut events = Vec::new();
        if over > 0 {
            self.catalog_items_dropped += over as u64;
            events.push(EndpointEvent::CatalogItemsDropped {
                device_id: l.device_id.clone(),
                invalid: 0,
                over_limit: over as u32,
                example: String::new(),
            });
        }
        events.push(EndpointEvent::Catalog {
            device_id: l.device_id,
            sn: l.sn,
            sum_num: l.sum_num,
            items: l.items,
        });
        events
    }
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
    /// Registrations, challenges, auth failures, rate-limited REGISTERs, blocked sources,
    /// keepalives, forged requests, invalid IDs.
    pub registrar: RegistrarStats,
    pub messages_in: u64,
    pub messages_out: u64,
    pub parse_errors: u64,
    pub retransmissions: u64,
    pub devices: usize,
    pub devices_online: usize,
    /// Catalog items dropped: invalid channel IDs and items beyond `max_channels_per_device`.
    pub catalog_items_dropped: u64,
    /// Events not delivered because the subscribers were [`EVENT_QUEUE`] events behind.
    pub events_dropped: u64,
    /// Events about unauthenticated requests not published (beyond
    /// [`REFUSAL_EVENTS_PER_S`]); the requests are still counted in `registrar`.
    pub events_suppressed: u64,
}

pub struct Endpoint {
    me: Weak<Endpoint>,
    key: EndpointKey,
    local_addr: SocketAddr,
    socket: Socket,
    inner: Mutex<Inner>,
    subscribers: Arc<Mutex<Vec<(u64, Subscriber)>>>,
    /// To the dispatcher thread.
    events: mpsc::SyncSender<EndpointEvent>,
    events_dropped: AtomicU64,
    /// Token bucket for events about unauthenticated requests: (tokens, last refill).
    refusal_tokens: Mutex<(f64, std::time::Instant)>,
    events_suppressed: AtomicU64,
    next_id: AtomicU64,
    next_connection: AtomicU64,
    stop: Arc<AtomicBool>,
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
        // Port 0 asked: the process's elements asking port 0 again share this endpoint, and
        // those given the port it got find it too.
        map.insert(key.clone(), ep.clone());
        map.insert(ep.key().clone(), ep.clone());
        Ok(ep)
    }

    /// Replaces the device passwords (the default and the per-device ones): registrations
    /// challenged from now on are checked against them; registered devices stay until their
    /// next refresh, which needs the new password.
    pub fn set_passwords(&self, default: Option<String>, per_device: HashMap<String, String>) {
        let mut inner = lock(&self.inner);
        let c = &mut inner.registrar.config;
        c.default_password = default;
        c.passwords = per_device;
    }

    /// The running endpoint for `key`, if any.
    pub fn find(key: &EndpointKey) -> Option<Arc<Endpoint>> {
        lock(&ENDPOINTS).get(key).cloned()
    }

    fn start(key: EndpointKey, config: RegistrarConfig) -> io::Result<Arc<Endpoint>> {
        // IP literals (IPv6 with or without brackets) as they are, names resolved.
        let bind = match addr::parse_ip(&key.address) {
            Some(ip) => SocketAddr::new(ip, key.port),
            None => (key.address.as_str(), key.port)
                .to_socket_addrs()?
                .next()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address"))?,
        };
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
        let max_channels = config.max_channels_per_device;
        let (events, events_rx) = mpsc::sync_channel(EVENT_QUEUE);
        let subscribers: Arc<Mutex<Vec<(u64, Subscriber)>>> = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        {
            let subscribers = subscribers.clone();
            let stop = stop.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("gb28181-sip-events".into())
                    .spawn(move || dispatch_loop(events_rx, subscribers, stop))?,
            );
        }
        // Keep `key.port` meaningful when an ephemeral port was asked for: the port it got.
        let key = EndpointKey {
            port: local_addr.port(),
            ..key
        };
        let ep = Arc::new_cyclic(|me| Endpoint {
            me: me.clone(),
            key,
            local_addr,
            socket,
            inner: Mutex::new(Inner {
                registrar: Registrar::new(config),
                transactions: HashMap::new(),
                dialogs: HashMap::new(),
                catalogs: ListMerger::with_max_items(10_000, max_channels),
                records: ListMerger::new(10_000),
                channels: HashMap::new(),
                device_conns: HashMap::new(),
                catalog_items_dropped: 0,
                sn: 0,
                next_poll_ms: 0,
            }),
            subscribers,
            events,
            events_dropped: AtomicU64::new(0),
            refusal_tokens: Mutex::new((REFUSAL_EVENT_BURST, std::time::Instant::now())),
            events_suppressed: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            next_connection: AtomicU64::new(1),
            stop,
            threads: Mutex::new(Vec::new()),
            messages_in: AtomicU64::new(0),
            messages_out: AtomicU64::new(0),
            parse_errors: AtomicU64::new(0),
            retransmissions: AtomicU64::new(0),
        });
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

    /// Forgets a registered device (see [`Registrar::remove`]); subscribers get its
    /// `Unregistered` event. Whether it was registered.
    pub fn remove_device(&self, id: &str) -> bool {
        let events = {
            let mut inner = lock(&self.inner);
            let events = wrap(inner.registrar.remove(id).into_iter().collect());
            inner.track_bindings(&events, None);
            events
        };
        let removed = !events.is_empty();
        self.publish(events);
        removed
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
            catalog_items_dropped: inner.catalog_items_dropped,
            events_dropped: self.events_dropped.load(Ordering::Relaxed),
            events_suppressed: self.events_suppressed.load(Ordering::Relaxed),
        }
    }

    /// Calls `f` for every event, in order, on the endpoint's dispatcher thread (never on a
    /// receive thread: a slow `f` delays other subscribers' events, not signalling; beyond
    /// [`EVENT_QUEUE`] waiting events further ones are dropped). Returns an id for
    /// [`Endpoint::unsubscribe`].
    pub fn subscribe(&self, f: impl Fn(&EndpointEvent) + Send + Sync + 'static) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.subscribers).push((id, Arc::new(f)));
        id
    }

    pub fn unsubscribe(&self, id: u64) {
        lock(&self.subscribers).retain(|(i, _)| *i != id);
    }

    /// Hands events to the dispatcher thread, never waiting for it.
    fn publish(&self, events: Vec<EndpointEvent>) {
        for e in events {
            if is_refusal(&e) && !self.take_refusal_token() {
                self.events_suppressed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if let Err(mpsc::TrySendError::Full(_)) = self.events.try_send(e) {
                self.events_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Next MANSCDP serial number.
    pub fn next_sn(&self) -> u32 {
        let mut inner = lock(&self.inner);
        inner.sn = inner.sn.wrapping_add(1);
        inner.sn
    }

    /// Where requests to `device_id` go (its registration's source address); None for a
    /// restored binding until the device confirms it ([`Endpoint::restore`]).
    pub fn device_addr(&self, device_id: &str) -> Option<SocketAddr> {
        let d = self.device(device_id)?;
        if d.restored {
            return None;
        }
        d.source.parse().ok()
    }

    /// Puts back a registration remembered across a restart, with the channels the device
    /// had (at most `max_channels_per_device`; invalid IDs skipped), so that its next
    /// keepalive from the recorded address brings it online without a new REGISTER (see
    /// [`Registrar::restore`] for what is refused). Over TCP the device's connection is gone
    /// with the old process: nothing is restored, the device registers again.
    pub fn restore(
        &self,
        binding: &registrar::RestoredBinding,
        channels: &[String],
    ) -> Result<(), &'static str> {
        if self.key.transport == SipTransport::Tcp {
            return Err("SIP over TCP: the device's connection is gone");
        }
        let mut inner = lock(&self.inner);
        inner.registrar.restore(binding, now_ms())?;
        let policy = inner.registrar.config.id_policy.clone();
        for c in channels.iter().filter(|c| policy.is_valid(c)) {
            if !inner.note_channel(&binding.device_id, c) {
                break;
            }
        }
        Ok(())
    }

    /// Our address as seen from `dest` (for Via / Contact / SDP when bound to a wildcard),
    /// of `dest`'s family.
    pub fn local_ip_for(&self, dest: SocketAddr) -> String {
        if !self.local_addr.ip().is_unspecified() {
            return self.local_addr.ip().to_string();
        }
        addr::local_ip_towards(dest)
            .map(|ip| ip.to_string())
            .unwrap_or_else(|_| match addr::Family::of(dest.ip()) {
                addr::Family::V4 => "127.0.0.1".into(),
                addr::Family::V6 => "::1".into(),
            })
    }

    fn take_refusal_token(&self) -> bool {
        let mut b = lock(&self.refusal_tokens);
        let now = std::time::Instant::now();
        let refill = now.duration_since(b.1).as_secs_f64() * REFUSAL_EVENTS_PER_S;
        *b = ((b.0 + refill).min(REFUSAL_EVENT_BURST), now);
        if b.0 >= 1.0 {
            b.0 -= 1.0;
            true
        } else {
            false
        }
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
                "SIP/2.0/{} {};rport;branch={}",
                self.key.transport.as_str(),
                addr::host_port(&ip, port),
                random::branch()
            ),
        )
        .add_header(
            "From",
            format!("<sip:{server_id}@{realm}>;tag={}", random::tag()),
        )
        .add_header("To", format!("<sip:{target_id}@{realm}>"))
        .add_header("Call-ID", format!("{}@{ip}", random::call_id()))
        .add_header("CSeq", format!("1 {method}"))
        .add_header(
            "Contact",
            format!("<sip:{server_id}@{}>", addr::host_port(&ip, port)),
        )
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
            Socket::Udp(s) => s
                .send_to(bytes, addr::wire_addr(self.local_addr, dest))
                .map(|_| ()),
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
        // A peer that stops reading must not hold up whoever writes to it.
        s.set_write_timeout(Some(Duration::from_secs(2)))?;
        {
            let mut conns = lock(conns);
            if conns.len() >= MAX_TCP_CONNECTIONS {
                return Err(io::Error::other("too many TCP connections"));
            }
            conns.insert(peer, s.try_clone()?);
        }
        s.set_read_timeout(Some(Duration::from_millis(100)))?;
        let weak = self.me.clone();
        let id = self.next_connection.fetch_add(1, Ordering::Relaxed);
        let handle = std::thread::Builder::new()
            .name("gb28181-sip-conn".into())
            .spawn(move || tcp_conn_loop(weak, s, peer, id))?;
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

    /// Registers a dialog with the device at `peer`: a BYE with its Call-ID and both its tags,
    /// from `peer`, goes to `owner` (anything else in the dialog gets 481); `ack` (sent to
    /// `peer`) is re-sent when the 2xx comes again.
    pub fn add_dialog(
        &self,
        dialog: &Dialog,
        peer: SocketAddr,
        owner: mpsc::Sender<Message>,
        ack: Option<&Message>,
    ) {
        let mut inner = lock(&self.inner);
        if inner.dialogs.len() >= MAX_DIALOGS {
            return;
        }
        inner.dialogs.insert(
            dialog.call_id.clone(),
            DialogEntry {
                owner,
                ack: ack.map(|m| (m.to_bytes(), peer)),
                local_tag: dialog.local_tag.clone(),
                remote_tag: dialog.remote_tag.clone(),
                peer,
            },
        );
    }

    /// Tells the endpoint that `channel_id` belongs to registered `device_id` (a channel we
    /// address, e.g. INVITE or RecordInfo), so that the device's messages about it are
    /// accepted. Bounded by `max_channels_per_device`.
    pub fn note_channel(&self, device_id: &str, channel_id: &str) {
        lock(&self.inner).note_channel(device_id, channel_id);
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
        self.note_channel(device_id, channel_id);
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
        self.note_channel(device_id, channel_id);
        let sn = self.next_sn();
        let body = manscdp::build_ptz_control(sn, channel_id, cmd);
        self.send_manscdp(device_id, channel_id, &body)?;
        Ok(sn)
    }

    /// Asks `channel_id` of `device_id` for a key frame now (DeviceControl `IFameCmd`);
    /// cameras that ignore it keep their GOP. Returns the SN.
    pub fn force_key_frame(&self, device_id: &str, channel_id: &str) -> io::Result<u32> {
        self.note_channel(device_id, channel_id);
        let sn = self.next_sn();
        let body = manscdp::build_key_frame_request(sn, channel_id);
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

    /// Handles one incoming datagram from `source` (public for tests and the fuzz-like
    /// vector tests).
    pub fn handle_datagram(&self, data: &[u8], source: SocketAddr) {
        let source = addr::canonical(source);
        self.messages_in.fetch_add(1, Ordering::Relaxed);
        match Message::parse(data) {
            Ok(m) => self.handle_message(m, Peer::udp(source)),
            Err(_) => {
                self.parse_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn handle_message(&self, msg: Message, peer: Peer) {
        let now = now_ms();
        if !msg.is_request() {
            self.handle_response(msg, now);
            return;
        }
        let method = msg.method().unwrap_or_default().to_ascii_uppercase();
        let (response, events) = match method.as_str() {
            "REGISTER" => {
                let mut inner = lock(&self.inner);
                let out = inner
                    .registrar
                    .handle_register(&msg, &peer.addr.to_string(), now);
                let events = wrap(out.events);
                inner.track_bindings(&events, peer.connection);
                let mut response = out.response;
                // Cameras set their clock from it: the wall clock, not the timers' clock.
                if response.header("date").is_some() {
                    let offset = inner.registrar.config.utc_offset_minutes;
                    response.set_header("Date", registrar::format_gb_date(wall_ms(), offset));
                }
                (Some(response), events)
            }
            "MESSAGE" | "NOTIFY" => self.handle_manscdp(&msg, &method, peer, now),
            "BYE" | "INFO" => self.handle_in_dialog(&msg, &method, peer),
            "ACK" => (None, vec![]),
            "OPTIONS" => (Some(Message::response_to(&msg, 200, "OK", None)), vec![]),
            _ => (
                Some(Message::response_to(&msg, 501, "Not Implemented", None)),
                vec![],
            ),
        };
        if let Some(r) = response {
            let _ = self.send_to(&r, reply_addr(&msg, peer.addr, self.key.transport));
        }
        self.publish(events);
    }

    /// BYE / INFO: only with the dialog's Call-ID, both its tags, from its peer.
    fn handle_in_dialog(
        &self,
        msg: &Message,
        method: &str,
        peer: Peer,
    ) -> (Option<Message>, Vec<EndpointEvent>) {
        let no_dialog = || {
            Some(Message::response_to(
                msg,
                481,
                "Call/Transaction Does Not Exist",
                None,
            ))
        };
        let call_id = msg.call_id().unwrap_or_default();
        let mut inner = lock(&self.inner);
        let Some(d) = inner.dialogs.get(call_id) else {
            return (no_dialog(), vec![]);
        };
        let tag = |na: Option<NameAddr>| na.and_then(|n| n.tag().map(str::to_string));
        let matches = tag(msg.from()).as_deref() == Some(d.remote_tag.as_str())
            && tag(msg.to()).as_deref() == Some(d.local_tag.as_str())
            && peer.addr == d.peer;
        if !matches {
            let who = registrar::user_of(msg.from()).unwrap_or_default();
            let ev = inner.registrar.forged(
                &who,
                &peer.addr.to_string(),
                method,
                reason::DIALOG_MISMATCH,
            );
            return (no_dialog(), wrap(vec![ev]));
        }
        if method == "BYE"
            && let Some(d) = inner.dialogs.remove(call_id)
        {
            let _ = d.owner.send(msg.clone());
        }
        (Some(Message::response_to(msg, 200, "OK", None)), vec![])
    }

    /// MESSAGE / NOTIFY with a MANSCDP body, from device D = the From user: see the module
    /// docs for when it is believed.
    fn handle_manscdp(
        &self,
        msg: &Message,
        method: &str,
        peer: Peer,
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
        let src = peer.addr.to_string();
        let forbidden = || Some(Message::response_to(msg, 403, "Forbidden", None));
        let ok = Some(Message::response_to(msg, 200, "OK", None));
        let mut inner = lock(&self.inner);
        let sender = registrar::user_of(msg.from()).unwrap_or_default();
        if let Err((_, ev)) = inner.registrar.check_id(&sender, &src, "MESSAGE") {
            return (forbidden(), wrap(vec![ev]));
        }
        let body_id = parsed.device_id();
        if body_id != sender
            && !inner
                .channels
                .get(&sender)
                .is_some_and(|c| c.contains(body_id))
        {
            let ev = inner
                .registrar
                .forged(&sender, &src, method, reason::BODY_ID_MISMATCH);
            return (forbidden(), wrap(vec![ev]));
        }
        let keepalive = matches!(parsed, Manscdp::Keepalive(_));
        match inner.registrar.check_sender(&sender, &src, now) {
            SenderCheck::Registered => {
                if let Some(c) = peer.connection
                    && inner.device_conns.get(&sender) != Some(&c)
                {
                    let ev =
                        inner
                            .registrar
                            .forged(&sender, &src, method, reason::WRONG_CONNECTION);
                    return (forbidden(), wrap(vec![ev]));
                }
            }
            // The registrar refuses keepalives itself (404 so that the device registers).
            _ if keepalive => {}
            SenderCheck::NotRegistered => {
                let ev = inner
                    .registrar
                    .forged(&sender, &src, method, reason::NOT_REGISTERED);
                return (forbidden(), wrap(vec![ev]));
            }
            SenderCheck::WrongSource => {
                let ev = inner
                    .registrar
                    .forged(&sender, &src, method, reason::WRONG_SOURCE);
                return (forbidden(), wrap(vec![ev]));
            }
        }
        match parsed {
            Manscdp::Keepalive(k) => {
                let out = inner.registrar.handle_keepalive(msg, &k, &src, now);
                (Some(out.response), wrap(out.events))
            }
            Manscdp::Catalog(mut list) => {
                // The list is the sender's (its body may name one of its channels).
                list.device_id = sender.clone();
                let mut invalid = 0usize;
                let mut example = String::new();
                let policy = inner.registrar.config.id_policy.clone();
                list.items.retain(|i| {
                    let valid = policy.is_valid(&i.device_id);
                    if !valid {
                        if invalid == 0 {
                            example = printable(&i.device_id);
                        }
                        invalid += 1;
                    }
                    valid
                });
                let before = inner.catalogs.dropped;
                let done = inner.catalogs.add_part(list, invalid, now);
                let over = (inner.catalogs.dropped - before) as usize;
                let mut events = Vec::new();
                if invalid + over > 0 {
                    inner.catalog_items_dropped += (invalid + over) as u64;
                    events.push(EndpointEvent::CatalogItemsDropped {
                        device_id: sender.clone(),
                        invalid: invalid as u32,
                        over_limit: over as u32,
                        example,
                    });
                }
                if let Some(l) = done {
                    events.extend(inner.catalog_event(l));
                }
                (ok, events)
            }
            Manscdp::RecordInfo(list) => {
                let done = inner.records.add(list, now);
                let ev = done
                    .map(|l| EndpointEvent::RecordInfo {
                        device_id: l.device_id,
                        sn: l.sn,
                        sum_num: l.sum_num,
                        items: l.items,
                    })
                    .into_iter()
                    .collect();
                (ok, ev)
            }
            Manscdp::MediaStatus {
                device_id,
                notify_type,
                ..
            } => (
                ok,
                vec![EndpointEvent::MediaStatus {
                    device_id,
                    notify_type,
                }],
            ),
            Manscdp::DeviceInfo { sn, info } => (ok, vec![EndpointEvent::DeviceInfo { sn, info }]),
            Manscdp::DeviceStatus { sn, status } => {
                (ok, vec![EndpointEvent::DeviceStatus { sn, status }])
            }
            _ => (ok, vec![]),
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
                let reg = wrap(inner.registrar.poll(now));
                inner.track_bindings(&reg, None);
                events.extend(reg);
                for l in inner.catalogs.expire(now) {
                    events.extend(inner.catalog_event(l));
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

/// Whether an event is about a request nobody authenticated (see [`REFUSAL_EVENTS_PER_S`]).
fn is_refusal(e: &EndpointEvent) -> bool {
    matches!(
        e,
        EndpointEvent::Registrar(
            registrar::Event::AuthFailed { .. }
                | registrar::Event::SourceBlocked { .. }
                | registrar::Event::ForgedRequest { .. }
                | registrar::Event::InvalidId { .. }
                | registrar::Event::KeepaliveRefused { .. }
        )
    )
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

/// Calls the subscribers for every queued event (the only thread that does).
fn dispatch_loop(
    rx: mpsc::Receiver<EndpointEvent>,
    subscribers: Arc<Mutex<Vec<(u64, Subscriber)>>>,
    stop: Arc<AtomicBool>,
) {
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(e) => {
                let subs: Vec<Subscriber> =
                    lock(&subscribers).iter().map(|(_, s)| s.clone()).collect();
                for s in &subs {
                    s(&e);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        if stop.load(Ordering::SeqCst) {
            return;
        }
    }
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
                    let _ = ep.add_tcp_connection(s, addr::canonical(peer));
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => {}
            }
        }
        std::thread::sleep(TICK);
    }
}

fn tcp_conn_loop(weak: Weak<Endpoint>, mut s: TcpStream, peer: SocketAddr, id: u64) {
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
                Ok(m) => ep.handle_message(
                    m,
                    Peer {
                        addr: peer,
                        connection: Some(id),
                    },
                ),
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

    /// The timers' clock starts at the wall clock and only moves forward.
    #[test]
    fn timer_clock_is_monotonic_from_the_wall_clock() {
        let (a, wall) = (now_ms(), wall_ms());
        assert!(a.abs_diff(wall) < 60_000, "{a} vs {wall}");
        let mut last = a;
        for _ in 0..1000 {
            let t = now_ms();
            assert!(t >= last);
            last = t;
        }
    }

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

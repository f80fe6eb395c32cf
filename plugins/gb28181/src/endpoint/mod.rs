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

mod events;
mod incoming;
mod outgoing;
mod subscriptions;
#[cfg(test)]
mod tests;
mod threads;
mod uas;
mod waiters;

pub use events::EndpointEvent;
use events::{Delivery, dispatch_loop, is_refusal, wrap};
use incoming::tx_key;
use subscriptions::SubEntry;
pub use subscriptions::{MAX_SUBSCRIPTIONS, SubscriptionInfo};
use threads::{accept_loop, timer_loop, udp_loop};
pub use uas::MAX_INVITE_WAITERS;
pub use waiters::Cancelled;

use crate::core::addr;
use crate::core::id::printable;
use crate::core::manscdp::{
    self, CatalogItem, DeviceInfo, DeviceStatus, ListMerger, ListResponse, Manscdp,
    RecordInfoQuery, RecordItem,
};
use crate::core::notify::{Alarm, MobilePosition};
use crate::core::random;
use crate::core::registrar::{
    self, Device, Registrar, RegistrarConfig, RegistrarStats, SenderCheck, reason,
};
use crate::core::sip::{Message, NameAddr, StreamFramer};
use crate::core::subscription::Change;
use crate::core::transaction::{ClientTransaction, Dialog, TransactionKind, TxAction};
use gst_ipcam_common::sync::lock;
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
/// A TCP connection accepted from a peer that sent no complete SIP message within this long
/// is closed (a connection opened and left silent holds one of [`MAX_TCP_CONNECTIONS`]).
pub const TCP_FIRST_MESSAGE_MS: u64 = 10_000;

/// How long a SIP/TCP connection may stay silent: one keepalive interval more than it takes
/// the registrar to call its device offline. A device that froze or vanished without closing
/// (half-open connection) thus gives its slot back; a live one reconnects.
pub fn tcp_idle_limit_ms(keepalive_interval_ms: u64, max_missed_keepalives: u32) -> u64 {
    keepalive_interval_ms
        .saturating_mul(u64::from(max_missed_keepalives) + 1)
        .max(1000)
}
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

/// Called after a dialog's owner was sent a request (it may sleep on I/O, not on its channel).
pub type DialogWake = Arc<dyn Fn() + Send + Sync>;

struct DialogEntry {
    /// Told about in-dialog requests (BYE).
    owner: mpsc::Sender<Message>,
    /// Woken after `owner` was told ([`Endpoint::set_dialog_wake`]).
    wake: Option<DialogWake>,
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
    /// Our subscriptions to devices' events, by (device, event package).
    subscriptions: HashMap<(String, &'static str), SubEntry>,
    /// Callers waiting for a device's INVITE, by device.
    invite_waiters: HashMap<String, uas::InviteWaiter>,
    /// Our 200s to devices' INVITEs waiting for their ACK, by Call-ID.
    uas_oks: HashMap<String, uas::UasOk>,
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
                    // A (re)registered device has lost its dialogs: subscribe anew.
                    let now = now_ms();
                    for ((dev, _), e) in self.subscriptions.iter_mut() {
                        if dev == device_id {
                            e.restart(now);
                        }
                    }
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
    /// Open SIP/TCP connections.
    pub tcp_connections: usize,
    /// SIP/TCP connections closed for silence ([`TCP_FIRST_MESSAGE_MS`],
    /// [`tcp_idle_limit_ms`]).
    pub tcp_idle_closed: u64,
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
    delivery: Arc<Delivery>,
    events_dropped: AtomicU64,
    /// Token bucket for events about unauthenticated requests: (tokens, last refill).
    refusal_tokens: Mutex<(f64, std::time::Instant)>,
    events_suppressed: AtomicU64,
    next_id: AtomicU64,
    next_connection: AtomicU64,
    stop: Arc<AtomicBool>,
    /// Wakes the SIP/TCP accept thread from its poll at shutdown.
    accept_wake: Mutex<Option<Arc<mio::Waker>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    parse_errors: AtomicU64,
    retransmissions: AtomicU64,
    tcp_idle_closed: AtomicU64,
    /// Callers of [`Endpoint::wait_until`].
    waiters: waiters::Waiters,
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
        let delivery = Arc::new(Delivery::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        {
            let subscribers = subscribers.clone();
            let delivery = delivery.clone();
            let stop = stop.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("gb28181-sip-events".into())
                    .spawn(move || dispatch_loop(events_rx, subscribers, delivery, stop))?,
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
                subscriptions: HashMap::new(),
                invite_waiters: HashMap::new(),
                uas_oks: HashMap::new(),
                sn: 0,
                next_poll_ms: 0,
            }),
            subscribers,
            events,
            delivery,
            events_dropped: AtomicU64::new(0),
            refusal_tokens: Mutex::new((REFUSAL_EVENT_BURST, std::time::Instant::now())),
            events_suppressed: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            next_connection: AtomicU64::new(1),
            stop,
            accept_wake: Mutex::new(None),
            threads: Mutex::new(Vec::new()),
            messages_in: AtomicU64::new(0),
            messages_out: AtomicU64::new(0),
            parse_errors: AtomicU64::new(0),
            tcp_idle_closed: AtomicU64::new(0),
            retransmissions: AtomicU64::new(0),
            waiters: Default::default(),
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
        if let Some(w) = lock(&self.accept_wake).as_ref() {
            let _ = w.wake();
        }
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
            tcp_connections: match &self.socket {
                Socket::Tcp { conns } => lock(conns).len(),
                Socket::Udp(_) => 0,
            },
            tcp_idle_closed: self.tcp_idle_closed.load(Ordering::Relaxed),
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
            if !self.delivery.queue(&self.events, e) {
                self.events_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Waits (at most `wait`) until every event handed to the dispatcher before this call
    /// has been given to the subscribers; false if it had not by then. For an order the
    /// subscribers can rely on: a call made on a device's registration then comes after the
    /// registration's event (an element posts both on its bus). Returns at once on the
    /// dispatcher's own thread.
    pub fn flush_events(&self, wait: std::time::Duration) -> bool {
        self.delivery.flush(wait)
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
}

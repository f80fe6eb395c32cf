//! The RTMP listener: one thread per connection (at most [`Settings::max_connections`]),
//! the handshake within [`Settings::handshake_timeout`], then the [`Session`] state machine;
//! publish and play requests are authenticated against the gateway's users (credentials
//! from the URL's query, as MediaMTX takes them) and handed to [`Paths`].
//!
//! A reader's frames go through a queue bounded in bytes ([`MAX_QUEUED_BYTES`]) to a writer
//! thread; a reader that does not keep up is disconnected.

use super::chunk::Limits;
use super::handshake;
use super::path::{self, Target};
use super::session::{Event, MediaKind, Session};
use crate::auth::{Action, Attempt, Protocol, Users, basic_value};
use gst_ipcam_common::sync::lock;
use gstgb28181::core::id::printable;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Frames queued for a reader, in bytes, before it is disconnected as too slow.
pub const MAX_QUEUED_BYTES: usize = 16 * 1024 * 1024;
/// A write blocked this long closes the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct Settings {
    pub limits: Limits,
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    /// A publisher (or a peer that has not published or played yet) silent this long is
    /// disconnected.
    pub idle_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            limits: Limits::default(),
            max_connections: 256,
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// Why a publish or play request is refused: an RTMP status code and a description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub description: String,
}

/// A publisher's frames.
pub trait Publisher: Send {
    fn frame(&mut self, kind: MediaKind, timestamp: u32, payload: &[u8]) -> Result<(), String>;
}

/// Where a reader's frames go: a bounded queue to the connection's writer.
#[derive(Clone)]
pub struct Outbox {
    tx: SyncSender<(MediaKind, u32, Vec<u8>)>,
    queued: Arc<AtomicUsize>,
    overflow: Arc<AtomicBool>,
    /// Set when the source ends: the writer sends what is queued and stops.
    ended: Arc<AtomicBool>,
}

impl Outbox {
    /// The source ended (end-of-stream): the reader is disconnected once its queue is sent.
    pub fn end(&self) {
        self.ended.store(true, Ordering::SeqCst);
    }

    /// Queues a frame; false once the reader is gone or too slow (stop sending).
    pub fn send(&self, kind: MediaKind, timestamp: u32, payload: Vec<u8>) -> bool {
        if self.overflow.load(Ordering::Relaxed) {
            return false;
        }
        let n = payload.len();
        if self.queued.fetch_add(n, Ordering::Relaxed) + n > MAX_QUEUED_BYTES {
            self.overflow.store(true, Ordering::Relaxed);
            return false;
        }
        match self.tx.try_send((kind, timestamp, payload)) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.overflow.store(true, Ordering::Relaxed);
                false
            }
        }
    }
}

/// What paths the listener serves.
pub trait Paths: Send + Sync {
    /// A publisher for `path` (already authorised).
    fn publish(&self, path: &str) -> Result<Box<dyn Publisher>, Refusal>;
    /// Starts feeding `out` with `path`'s frames (already authorised) until the returned
    /// handle is dropped.
    fn play(&self, path: &str, out: Outbox) -> Result<Box<dyn Send>, Refusal>;
}

/// Counters (MediaMTX names: `rtmp_conns`, `rtmp_bytes_received`).
#[derive(Debug, Default)]
pub struct Stats {
    pub conns: AtomicUsize,
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Connections closed for bad input, timeouts or limits.
    pub refused: AtomicU64,
}

pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
    open: Arc<Mutex<HashMap<u64, TcpStream>>>,
    thread: Option<JoinHandle<()>>,
}

struct Ctx {
    users: Arc<Users>,
    paths: Arc<dyn Paths>,
    settings: Settings,
    stats: Arc<Stats>,
    open: Arc<Mutex<HashMap<u64, TcpStream>>>,
}

impl Server {
    /// Listens on `address:port` (port 0: any free one, see [`local_addr`](Self::local_addr)),
    /// counting into `stats`.
    pub fn start(
        address: &str,
        port: u16,
        users: Arc<Users>,
        paths: Arc<dyn Paths>,
        settings: Settings,
        stats: Arc<Stats>,
    ) -> Result<Server, String> {
        let ip: IpAddr = gstgb28181::core::addr::parse_ip(address)
            .ok_or_else(|| format!("RTMP address {address:?} is not an IP address"))?;
        let listener =
            TcpListener::bind((ip, port)).map_err(|e| format!("RTMP port {port}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(HashMap::new()));
        let ctx = Arc::new(Ctx {
            users,
            paths,
            settings,
            stats: stats.clone(),
            open: open.clone(),
        });
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("rtmp-listen".into())
            .spawn(move || accept_loop(listener, ctx, stop2))
            .map_err(|e| e.to_string())?;
        Ok(Server {
            addr,
            stop,
            stats,
            open,
            thread: Some(thread),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Stops listening and closes every connection.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the blocking accept.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(if wake.is_ipv4() {
                IpAddr::from([127, 0, 0, 1])
            } else {
                IpAddr::from(std::net::Ipv6Addr::LOCALHOST)
            });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for s in lock(&self.open).values() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: TcpListener, ctx: Arc<Ctx>, stop: Arc<AtomicBool>) {
    let mut next_id = 0u64;
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = conn else { continue };
        let Ok(peer) = stream.peer_addr() else {
            continue;
        };
        if ctx.stats.conns.load(Ordering::SeqCst) >= ctx.settings.max_connections {
            ctx.stats.refused.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        next_id += 1;
        let id = next_id;
        if let Ok(c) = stream.try_clone() {
            lock(&ctx.open).insert(id, c);
        }
        ctx.stats.conns.fetch_add(1, Ordering::SeqCst);
        let ctx2 = ctx.clone();
        let spawned = std::thread::Builder::new()
            .name("rtmp-conn".into())
            .spawn(move || {
                if let Err(e) = serve(&ctx2, stream, peer) {
                    ctx2.stats.refused.fetch_add(1, Ordering::Relaxed);
                    eprintln!("[rtmp] {peer}: {e}");
                }
                lock(&ctx2.open).remove(&id);
                ctx2.stats.conns.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            lock(&ctx.open).remove(&id);
            ctx.stats.conns.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Reads exactly `buf.len()` bytes before `deadline`.
fn read_exact_by(s: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> Result<(), String> {
    let mut at = 0;
    while at < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("handshake not finished in time".into());
        }
        s.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
        match s.read(&mut buf[at..]) {
            Ok(0) => return Err("closed during the handshake".into()),
            Ok(n) => at += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err("handshake not finished in time".into());
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

fn handshake(s: &mut TcpStream, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut c0c1 = vec![0u8; 1 + handshake::PACKET];
    read_exact_by(s, &mut c0c1, deadline)?;
    let mut random = [0u8; 64];
    getrandom::fill(&mut random).map_err(|e| e.to_string())?;
    let time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u32);
    let answer = handshake::answer(&c0c1, &random, time)?;
    s.set_write_timeout(Some(WRITE_TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.write_all(&answer).map_err(|e| e.to_string())?;
    let mut c2 = vec![0u8; handshake::PACKET];
    read_exact_by(s, &mut c2, deadline)
}

/// The user's identity for a request: query credentials as HTTP Basic, else anonymous.
fn authorize(ctx: &Ctx, t: &Target, action: Action, ip: IpAddr) -> Result<(), String> {
    let value = match (&t.user, &t.pass) {
        (Some(u), p) => Some(basic_value(u, p.as_deref().unwrap_or(""))),
        _ => None,
    };
    let method = if action == Action::Publish {
        "PUBLISH"
    } else {
        "PLAY"
    };
    let attempt = Attempt {
        protocol: Protocol::Rtmp,
        method,
        ip,
    };
    let id = ctx
        .users
        .authenticate(value.as_deref(), &attempt)
        .map_err(|e| e.to_string())?;
    if !id.allows(action, &t.path) {
        return Err(format!(
            "user {} may not {} {}",
            printable(id.user()),
            method.to_lowercase(),
            t.path
        ));
    }
    Ok(())
}

enum Role {
    None,
    Publishing(Box<dyn Publisher>),
    Playing {
        _handle: Box<dyn Send>,
        writer: JoinHandle<()>,
        overflow: Arc<AtomicBool>,
    },
}

fn serve(ctx: &Ctx, mut stream: TcpStream, peer: SocketAddr) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    handshake(&mut stream, ctx.settings.handshake_timeout)?;
    let out = Arc::new(Mutex::new(stream.try_clone().map_err(|e| e.to_string())?));
    let mut session = Session::new(ctx.settings.limits);
    let mut role = Role::None;
    let mut buf = vec![0u8; 64 * 1024];
    let stop_writer = Arc::new(AtomicBool::new(false));
    let result = loop {
        // A reader only acknowledges now and then: no idle limit for it (its writes have
        // one, and a vanished reader fails them); its writer is checked every second.
        let timeout = match role {
            Role::Playing { .. } => Duration::from_secs(1),
            _ => ctx.settings.idle_timeout,
        };
        let _ = stream.set_read_timeout(Some(timeout));
        let n = match stream.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if let Role::Playing {
                    writer, overflow, ..
                } = &role
                {
                    if overflow.load(Ordering::Relaxed) {
                        break Err("reader too slow: disconnected".into());
                    }
                    if writer.is_finished() {
                        break Ok(());
                    }
                    continue;
                }
                break Err(format!("nothing received for {} s", timeout.as_secs()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // A player that just goes (ffprobe does) resets the connection.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break Ok(()),
            Err(e) => break Err(e.to_string()),
        };
        ctx.stats
            .bytes_received
            .fetch_add(n as u64, Ordering::Relaxed);
        let events = match session.feed(&buf[..n]) {
            Ok(ev) => ev,
            Err(e) => break Err(e.to_string()),
        };
        let mut done = None;
        for ev in events {
            match ev {
                Event::Media {
                    kind,
                    timestamp,
                    payload,
                } => {
                    if let Role::Publishing(p) = &mut role
                        && let Err(e) = p.frame(kind, timestamp, &payload)
                    {
                        done = Some(Err(format!("publisher stopped: {e}")));
                    }
                }
                Event::Publish { app, name } => match start_publish(ctx, &app, &name, peer.ip()) {
                    Ok((path, p)) => {
                        eprintln!("[rtmp] {peer}: publishing {path}");
                        session.accept_publish(&path);
                        role = Role::Publishing(p);
                    }
                    Err(r) => {
                        session.refuse(r.code, &r.description);
                        done = Some(Err(format!("publish refused: {}", r.description)));
                    }
                },
                Event::Play { app, name } => {
                    match start_play(ctx, &app, &name, peer.ip(), stop_writer.clone()) {
                        Ok(Play {
                            path,
                            handle,
                            rx,
                            queued,
                            overflow,
                        }) => {
                            let media = session.accept_play(&path);
                            // The answers first, then the writer takes over the socket.
                            if !flush(&mut session, &out, ctx) {
                                done = Some(Ok(()));
                                break;
                            }
                            let writer = spawn_writer(
                                media,
                                rx,
                                queued,
                                out.clone(),
                                ctx.stats.clone(),
                                stop_writer.clone(),
                            );
                            role = Role::Playing {
                                _handle: handle,
                                writer,
                                overflow,
                            };
                        }
                        Err(r) => {
                            session.refuse(r.code, &r.description);
                            done = Some(Err(format!("play refused: {}", r.description)));
                        }
                    }
                }
                Event::Ended => done = Some(Ok(())),
            }
            if done.is_some() {
                break;
            }
        }
        if !flush(&mut session, &out, ctx) {
            break Ok(());
        }
        if let Some(r) = done {
            break r;
        }
    };
    // Ends the writer (its socket), then the source feeding it.
    let _ = stream.shutdown(Shutdown::Both);
    stop_writer.store(true, Ordering::SeqCst);
    if let Role::Playing {
        writer, _handle, ..
    } = role
    {
        let _ = writer.join();
        drop(_handle);
    }
    result
}

/// Sends the session's answers; false when the peer is gone.
fn flush(session: &mut Session, out: &Mutex<TcpStream>, ctx: &Ctx) -> bool {
    let bytes = session.take_output();
    if bytes.is_empty() {
        return true;
    }
    ctx.stats
        .bytes_sent
        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
    lock(out).write_all(&bytes).is_ok()
}

fn refusal(code: &'static str, description: impl Into<String>) -> Refusal {
    Refusal {
        code,
        description: description.into(),
    }
}

fn start_publish(
    ctx: &Ctx,
    app: &str,
    name: &str,
    ip: IpAddr,
) -> Result<(String, Box<dyn Publisher>), Refusal> {
    let t = path::target(app, name).map_err(|e| {
        refusal(
            "NetStream.Publish.BadName",
            format!("{}: {e}", path::shown(app, name)),
        )
    })?;
    authorize(ctx, &t, Action::Publish, ip)
        .map_err(|e| refusal("NetStream.Publish.Unauthorized", format!("{}: {e}", t.path)))?;
    let p = ctx.paths.publish(&t.path)?;
    Ok((t.path, p))
}

type Frames = Receiver<(MediaKind, u32, Vec<u8>)>;

/// A started reader: its path, the source's handle, and the queue its writer drains.
struct Play {
    path: String,
    handle: Box<dyn Send>,
    rx: Frames,
    queued: Arc<AtomicUsize>,
    overflow: Arc<AtomicBool>,
}

fn start_play(
    ctx: &Ctx,
    app: &str,
    name: &str,
    ip: IpAddr,
    ended: Arc<AtomicBool>,
) -> Result<Play, Refusal> {
    let t = path::target(app, name).map_err(|e| {
        refusal(
            "NetStream.Play.StreamNotFound",
            format!("{}: {e}", path::shown(app, name)),
        )
    })?;
    authorize(ctx, &t, Action::Read, ip)
        .map_err(|e| refusal("NetStream.Play.Unauthorized", format!("{}: {e}", t.path)))?;
    let (tx, rx) = std::sync::mpsc::sync_channel(4096);
    let outbox = Outbox {
        tx,
        queued: Arc::new(AtomicUsize::new(0)),
        overflow: Arc::new(AtomicBool::new(false)),
        ended,
    };
    let (queued, overflow) = (outbox.queued.clone(), outbox.overflow.clone());
    let handle = ctx.paths.play(&t.path, outbox)?;
    Ok(Play {
        path: t.path,
        handle,
        rx,
        queued,
        overflow,
    })
}

fn spawn_writer(
    media: super::session::MediaWriter,
    rx: Frames,
    queued: Arc<AtomicUsize>,
    out: Arc<Mutex<TcpStream>>,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        loop {
            let (kind, ts, payload) = match rx.recv_timeout(Duration::from_millis(500)) {
                Ok(f) => f,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) if !stop.load(Ordering::SeqCst) => {
                    continue;
                }
                Err(_) => return,
            };
            queued.fetch_sub(payload.len(), Ordering::Relaxed);
            let bytes = media.encode(kind, ts, payload);
            stats
                .bytes_sent
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            if lock(&out).write_all(&bytes).is_err() {
                return;
            }
        }
    })
}

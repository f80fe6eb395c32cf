//! A TCP impairment proxy: each connection to [`TcpProxy::addr`] gets its own connection to
//! the target, bytes are relayed both ways with delay, jitter (order kept: it is a stream) and
//! a bandwidth cap. Faults: [`TcpProxy::cut`] closes every connection (the peers see the
//! close) and refuses new ones until [`TcpProxy::restore`]; [`TcpProxy::freeze`] makes every
//! open connection half-open: nothing passes any more and nobody is told (no FIN, no RST), as
//! when a peer loses power or a NAT forgets the mapping; new connections work again after
//! [`TcpProxy::thaw`]. Loss, duplication and reordering do not apply to TCP (the kernel would
//! retransmit): they are ignored.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::model::{Impairer, Impairment};
use super::sched::Scheduler;
use crate::lock;

/// What a [`TcpProxy`] did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpStats {
    pub accepted: usize,
    /// Refused while cut, or the target could not be reached.
    pub refused: usize,
    /// Closed by [`TcpProxy::cut`].
    pub cut: usize,
    /// Made half-open by [`TcpProxy::freeze`].
    pub frozen: usize,
    pub bytes_forward: u64,
    pub bytes_backward: u64,
}

struct Conn {
    id: u64,
    client: TcpStream,
    server: TcpStream,
    frozen: Arc<AtomicBool>,
}

struct Shared {
    target: SocketAddr,
    forward: Mutex<Impairment>,
    backward: Mutex<Impairment>,
    conns: Mutex<Vec<Conn>>,
    cut: AtomicBool,
    frozen: AtomicBool,
    stop: AtomicBool,
    accepted: AtomicUsize,
    refused: AtomicUsize,
    cut_count: AtomicUsize,
    frozen_count: AtomicUsize,
    bytes_forward: AtomicU64,
    bytes_backward: AtomicU64,
}

/// A running TCP proxy; stops (closing every connection) on drop.
pub struct TcpProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl TcpProxy {
    pub fn start(
        listen: SocketAddr,
        target: SocketAddr,
        forward: Impairment,
        backward: Impairment,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            target,
            forward: Mutex::new(forward),
            backward: Mutex::new(backward),
            conns: Mutex::new(Vec::new()),
            cut: AtomicBool::new(false),
            frozen: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            accepted: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            cut_count: AtomicUsize::new(0),
            frozen_count: AtomicUsize::new(0),
            bytes_forward: AtomicU64::new(0),
            bytes_backward: AtomicU64::new(0),
        });
        let s = shared.clone();
        let accept = std::thread::spawn(move || accept_loop(&listener, &s));
        Ok(TcpProxy {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Changes the delay/jitter/rate of new data (client → target).
    pub fn set_forward(&self, impairment: Impairment) {
        *lock(&self.shared.forward) = impairment;
    }

    /// Changes the delay/jitter/rate of new data (target → client).
    pub fn set_backward(&self, impairment: Impairment) {
        *lock(&self.shared.backward) = impairment;
    }

    /// Closes every connection (both peers see the close) and refuses new ones.
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        let conns: Vec<Conn> = lock(&self.shared.conns).drain(..).collect();
        for c in conns {
            let _ = c.client.shutdown(Shutdown::Both);
            let _ = c.server.shutdown(Shutdown::Both);
            self.shared.cut_count.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Accepts connections again after [`TcpProxy::cut`].
    pub fn restore(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
    }

    /// Every open connection goes silent for good without a close (half-open); new
    /// connections are accepted but silent too, until [`TcpProxy::thaw`].
    pub fn freeze(&self) {
        self.shared.frozen.store(true, Ordering::SeqCst);
        for c in lock(&self.shared.conns).iter() {
            if !c.frozen.swap(true, Ordering::SeqCst) {
                self.shared.frozen_count.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// New connections pass again (the frozen ones stay dead, as after a real outage).
    pub fn thaw(&self) {
        self.shared.frozen.store(false, Ordering::SeqCst);
    }

    /// Connections open now (frozen ones included).
    pub fn open_connections(&self) -> usize {
        lock(&self.shared.conns).len()
    }

    pub fn stats(&self) -> TcpStats {
        let s = &self.shared;
        TcpStats {
            accepted: s.accepted.load(Ordering::SeqCst),
            refused: s.refused.load(Ordering::SeqCst),
            cut: s.cut_count.load(Ordering::SeqCst),
            frozen: s.frozen_count.load(Ordering::SeqCst),
            bytes_forward: s.bytes_forward.load(Ordering::SeqCst),
            bytes_backward: s.bytes_backward.load(Ordering::SeqCst),
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((c, _)) => c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // Bounded poll: the accept loop of a test tool, 10 ms to see `stop`.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            Err(_) => continue,
        };
        if shared.cut.load(Ordering::SeqCst) {
            shared.refused.fetch_add(1, Ordering::SeqCst);
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let server = match TcpStream::connect_timeout(&shared.target, Duration::from_secs(5)) {
            Ok(s) => s,
            Err(_) => {
                shared.refused.fetch_add(1, Ordering::SeqCst);
                let _ = client.shutdown(Shutdown::Both);
                continue;
            }
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let _ = client.set_nonblocking(false);
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let frozen = Arc::new(AtomicBool::new(shared.frozen.load(Ordering::SeqCst)));
        if frozen.load(Ordering::SeqCst) {
            shared.frozen_count.fetch_add(1, Ordering::SeqCst);
        }
        let (Ok(c2), Ok(s2), Ok(c3), Ok(s3)) = (
            client.try_clone(),
            server.try_clone(),
            client.try_clone(),
            server.try_clone(),
        ) else {
            continue;
        };
        let id = shared.accepted.load(Ordering::SeqCst) as u64;
        lock(&shared.conns).push(Conn {
            id,
            client: c3,
            server: s3,
            frozen: frozen.clone(),
        });
        for (from, to, forward) in [(client, s2, true), (server, c2, false)] {
            let (shared, frozen) = (shared.clone(), frozen.clone());
            std::thread::spawn(move || relay(id, from, to, forward, &shared, &frozen));
        }
    }
    for c in lock(&shared.conns).drain(..) {
        let _ = c.client.shutdown(Shutdown::Both);
        let _ = c.server.shutdown(Shutdown::Both);
    }
}

/// One direction of one connection, until either side closes or the proxy stops.
fn relay(
    id: u64,
    mut from: TcpStream,
    to: TcpStream,
    forward: bool,
    shared: &Shared,
    frozen: &AtomicBool,
) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let start = Instant::now();
    let config = || {
        *lock(if forward {
            &shared.forward
        } else {
            &shared.backward
        })
    };
    let mut impairer = Impairer::new(config());
    let writer = {
        let mut to = to.try_clone().ok();
        Scheduler::start(move |p: Vec<u8>| {
            if let Some(t) = to.as_mut()
                && t.write_all(&p).is_err()
            {
                let _ = t.shutdown(Shutdown::Both);
                to = None;
            }
        })
    };
    let counter = if forward {
        &shared.bytes_forward
    } else {
        &shared.bytes_backward
    };
    let mut last_due = Duration::ZERO;
    let mut buf = vec![0u8; 16 * 1024];
    while !shared.stop.load(Ordering::SeqCst) {
        // A dead peer reads nothing and acknowledges nothing: the sender's socket buffers fill
        // and its writes stall, as with a real half-open connection.
        if frozen.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if frozen.load(Ordering::SeqCst) {
                    // Read while the link died: lost on the wire.
                    continue;
                }
                counter.fetch_add(n as u64, Ordering::SeqCst);
                // Delay, jitter and rate only: loss/duplication/reordering make no sense here.
                let c = config();
                impairer.set_config(Impairment {
                    delay: c.delay,
                    jitter: c.jitter,
                    rate_bps: c.rate_bps,
                    queue_bytes: usize::MAX,
                    ..Impairment::none()
                });
                for (due, p) in impairer.process_at(start.elapsed(), buf[..n].to_vec()) {
                    last_due = last_due.max(due);
                    writer.push(start + last_due, p);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    // Let what was read reach the other side before passing the close on (bounded).
    let end = Instant::now() + Duration::from_secs(5);
    while writer.pending() > 0 && Instant::now() < end && !frozen.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(5));
    }
    writer.finish();
    if !frozen.load(Ordering::SeqCst) {
        let _ = to.shutdown(Shutdown::Write);
    }
    lock(&shared.conns).retain(|c| c.id != id);
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wait_until;

    fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut s = s;
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    #[test]
    fn relays_with_delay_then_cuts_and_freezes() {
        let target = echo_server();
        let proxy = TcpProxy::start(
            "127.0.0.1:0".parse().unwrap(),
            target,
            Impairment {
                delay: Duration::from_millis(40),
                ..Impairment::none()
            },
            Impairment::none(),
        )
        .unwrap();
        let mut c = TcpStream::connect(proxy.addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let t0 = Instant::now();
        c.write_all(b"hello").unwrap();
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello");
        assert!(t0.elapsed() >= Duration::from_millis(40), "delayed");
        // Cut: the client sees the close; new connections are refused.
        proxy.cut();
        assert_eq!(c.read(&mut buf).unwrap_or(0), 0);
        let mut c2 = TcpStream::connect(proxy.addr()).unwrap();
        c2.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(c2.read(&mut buf).unwrap_or(0), 0);
        assert!(wait_until(Duration::from_secs(5), || proxy.stats().refused == 1));
        proxy.restore();
        // Frozen: the connection stays open and silent.
        let mut c3 = TcpStream::connect(proxy.addr()).unwrap();
        c3.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        c3.write_all(b"x").unwrap();
        c3.read_exact(&mut buf[..1]).unwrap();
        proxy.freeze();
        c3.write_all(b"y").unwrap();
        let e = c3.read(&mut buf).unwrap_err();
        assert!(matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ));
        assert_eq!(proxy.stats().frozen, 1);
        proxy.thaw();
        let mut c4 = TcpStream::connect(proxy.addr()).unwrap();
        c4.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c4.write_all(b"z").unwrap();
        c4.read_exact(&mut buf[..1]).unwrap();
        assert_eq!(buf[0], b'z');
    }
}

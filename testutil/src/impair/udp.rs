//! A UDP impairment proxy: clients send to [`UdpProxy::addr`], the proxy forwards to the
//! target from its own socket and relays the target's answers back to the client that sent
//! last (so SIP transactions and RTP/RTCP work through it). Each direction has its own
//! [`Impairment`], changeable while running; [`UdpProxy::cut`] drops everything both ways
//! (a dead link, no ICMP), until [`UdpProxy::restore`].

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::model::{ImpairStats, Impairer, Impairment};
use super::sched::Scheduler;
use crate::lock;

/// Which way a packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client → target.
    Forward,
    /// Target → client.
    Backward,
}

struct Shared {
    forward: Mutex<Impairer>,
    backward: Mutex<Impairer>,
    client: Arc<Mutex<Option<SocketAddr>>>,
    cut: AtomicBool,
    stop: AtomicBool,
    start: Instant,
    cut_dropped: Mutex<usize>,
    last_packet: Mutex<Instant>,
    pending: [Arc<Scheduler>; 2],
}

/// A running UDP proxy; stops on drop.
pub struct UdpProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl UdpProxy {
    /// Listens on `listen` (port 0: any; read it back with [`UdpProxy::addr`]) and forwards
    /// to `target`.
    pub fn start(
        listen: SocketAddr,
        target: SocketAddr,
        forward: Impairment,
        backward: Impairment,
    ) -> std::io::Result<Self> {
        let front = UdpSocket::bind(listen)?;
        let addr = front.local_addr()?;
        // The proxy's own side towards the target, of the target's family.
        let back_ip: std::net::IpAddr = match (target.is_ipv6(), target.ip().is_loopback()) {
            (false, true) => std::net::Ipv4Addr::LOCALHOST.into(),
            (false, false) => std::net::Ipv4Addr::UNSPECIFIED.into(),
            (true, true) => std::net::Ipv6Addr::LOCALHOST.into(),
            (true, false) => std::net::Ipv6Addr::UNSPECIFIED.into(),
        };
        let back = UdpSocket::bind(SocketAddr::new(back_ip, 0))?;
        // Wake up to see `stop` and to release a held packet when the sender pauses.
        for s in [&front, &back] {
            s.set_read_timeout(Some(Duration::from_millis(20)))?;
        }
        let (front, back) = (Arc::new(front), Arc::new(back));
        let client = Arc::new(Mutex::new(None::<SocketAddr>));
        let sched_fwd = Arc::new(Scheduler::start({
            let back = back.clone();
            move |p: Vec<u8>| {
                let _ = back.send_to(&p, target);
            }
        }));
        let sched_bwd = Arc::new(Scheduler::start({
            let (front, client) = (front.clone(), client.clone());
            move |p: Vec<u8>| {
                if let Some(c) = *lock(&client) {
                    let _ = front.send_to(&p, c);
                }
            }
        }));
        let shared = Arc::new(Shared {
            forward: Mutex::new(Impairer::new(forward)),
            backward: Mutex::new(Impairer::new(backward)),
            client,
            cut: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            start: Instant::now(),
            cut_dropped: Mutex::new(0),
            last_packet: Mutex::new(Instant::now()),
            pending: [sched_fwd.clone(), sched_bwd.clone()],
        });
        let mut threads = Vec::new();
        for (sock, dir, sched) in [
            (front, Direction::Forward, sched_fwd),
            (back, Direction::Backward, sched_bwd),
        ] {
            let shared = shared.clone();
            threads.push(std::thread::spawn(move || {
                pump(&sock, dir, target, &shared, &sched);
            }));
        }
        Ok(UdpProxy {
            addr,
            shared,
            threads,
        })
    }

    /// Where clients send.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Changes one direction's impairment from its next packet on.
    pub fn set(&self, dir: Direction, impairment: Impairment) {
        let m = match dir {
            Direction::Forward => &self.shared.forward,
            Direction::Backward => &self.shared.backward,
        };
        lock(m).set_config(impairment);
    }

    /// Drops every packet both ways from now on (the link is dead).
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
    }

    /// Ends a [`UdpProxy::cut`].
    pub fn restore(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
    }

    /// Waits (at most `timeout`) until nothing arrived for 100 ms and everything received was
    /// sent on (held and delayed packets included); false on timeout.
    pub fn drain(&self, timeout: Duration) -> bool {
        crate::wait_until(timeout, || {
            lock(&self.shared.last_packet).elapsed() > Duration::from_millis(100)
                && !lock(&self.shared.forward).holding()
                && !lock(&self.shared.backward).holding()
                && self.shared.pending.iter().all(|s| s.pending() == 0)
        })
    }

    /// What each direction did so far, and the packets lost to cuts.
    pub fn stats(&self) -> (ImpairStats, ImpairStats, usize) {
        (
            lock(&self.shared.forward).stats,
            lock(&self.shared.backward).stats,
            *lock(&self.shared.cut_dropped),
        )
    }
}

fn pump(sock: &UdpSocket, dir: Direction, target: SocketAddr, shared: &Shared, sched: &Scheduler) {
    let mut buf = vec![0u8; 65536];
    let impairer = match dir {
        Direction::Forward => &shared.forward,
        Direction::Backward => &shared.backward,
    };
    while !shared.stop.load(Ordering::SeqCst) {
        let now = shared.start.elapsed();
        let out = match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                *lock(&shared.last_packet) = Instant::now();
                match dir {
                    Direction::Forward => *lock(&shared.client) = Some(from),
                    // Only the target's answers go back.
                    Direction::Backward if from != target => continue,
                    Direction::Backward => {}
                }
                if shared.cut.load(Ordering::SeqCst) {
                    *lock(&shared.cut_dropped) += 1;
                    continue;
                }
                lock(impairer).process_at(now, buf[..n].to_vec())
            }
            Err(_) => lock(impairer).flush_at(now),
        };
        for (due, p) in out {
            sched.push(shared.start + due, p);
        }
    }
}

impl Drop for UdpProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        for s in &self.shared.pending {
            s.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wait_until;

    #[test]
    fn relays_both_ways_with_seeded_loss_and_cuts() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let proxy = UdpProxy::start(
            "127.0.0.1:0".parse().unwrap(),
            server.local_addr().unwrap(),
            Impairment::loss(0.2, 9),
            Impairment::none(),
        )
        .unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        for n in 0..200u8 {
            client.send_to(&[n], proxy.addr()).unwrap();
        }
        assert!(wait_until(Duration::from_secs(5), || {
            let (f, _, _) = proxy.stats();
            f.received == 200
        }));
        let (f, _, _) = proxy.stats();
        assert!(f.dropped > 10 && f.forwarded == 200 - f.dropped, "{f:?}");
        let mut buf = [0u8; 16];
        let mut got = 0;
        let mut from = None;
        while got < f.forwarded {
            let (_, a) = server.recv_from(&mut buf).unwrap();
            from = Some(a);
            got += 1;
        }
        // The answer goes back to the client.
        server.send_to(b"pong", from.unwrap()).unwrap();
        let (n, _) = client.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"pong");
        // Cut: nothing passes either way; restored: it passes again.
        proxy.cut();
        client.send_to(b"lost", proxy.addr()).unwrap();
        assert!(wait_until(Duration::from_secs(5), || proxy.stats().2 == 1));
        proxy.restore();
        proxy.set(Direction::Forward, Impairment::none());
        client.send_to(b"back", proxy.addr()).unwrap();
        let (n, _) = server.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"back");
    }
}

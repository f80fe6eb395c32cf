//! The endpoint's threads: UDP receive, TCP accept and per-connection readers, and the timer
//! (retransmissions, registrar expiry, list merging).

use super::*;

impl Endpoint {
    pub(super) fn connect_tcp(&self, dest: SocketAddr) -> io::Result<TcpStream> {
        let s = TcpStream::connect_timeout(&dest, Duration::from_secs(3))?;
        self.add_tcp_connection(s.try_clone()?, dest, false)?;
        Ok(s)
    }

    /// Reads SIP from `s` on a thread of its own; `accepted`: the peer opened it (it must
    /// then send a message within [`TCP_FIRST_MESSAGE_MS`]).
    pub(super) fn add_tcp_connection(
        &self,
        s: TcpStream,
        peer: SocketAddr,
        accepted: bool,
    ) -> io::Result<()> {
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
            .spawn(move || tcp_conn_loop(weak, s, peer, id, accepted))?;
        let mut threads = lock(&self.threads);
        // Forget the threads of closed connections.
        threads.retain(|t| !t.is_finished());
        threads.push(handle);
        Ok(())
    }

    pub(super) fn poll(&self) {
        let now = now_ms();
        let mut timed_out = false;
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
                        timed_out = true;
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
        events.extend(self.poll_subscriptions(now));
        self.poll_uas(now);
        let expired = events.iter().any(|e| {
            matches!(
                e,
                EndpointEvent::Registrar(crate::core::registrar::Event::Unregistered { .. })
            )
        });
        self.publish(events);
        if timed_out || expired {
            self.wake_waiters();
        }
    }
}

pub(super) fn udp_loop(weak: Weak<Endpoint>) {
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

pub(super) fn timer_loop(weak: Weak<Endpoint>) {
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

/// Accepts SIP/TCP connections, asleep in a poll between them (woken by a connection or by
/// [`Endpoint::shutdown`]).
pub(super) fn accept_loop(weak: Weak<Endpoint>, listener: TcpListener) {
    use std::os::fd::AsRawFd;
    const LISTENER: mio::Token = mio::Token(0);
    const WAKE: mio::Token = mio::Token(1);
    let fd = listener.as_raw_fd();
    let setup = || -> io::Result<(mio::Poll, Arc<mio::Waker>)> {
        listener.set_nonblocking(true)?;
        let poll = mio::Poll::new()?;
        poll.registry().register(
            &mut mio::unix::SourceFd(&fd),
            LISTENER,
            mio::Interest::READABLE,
        )?;
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKE)?);
        Ok((poll, waker))
    };
    let Ok((mut poll, waker)) = setup() else {
        return;
    };
    match weak.upgrade() {
        // Stored before `stop` is read: a shutdown either finds the waker or is seen below.
        Some(ep) => *lock(&ep.accept_wake) = Some(waker),
        None => return,
    }
    let mut events = mio::Events::with_capacity(4);
    loop {
        {
            let Some(ep) = weak.upgrade() else { return };
            if ep.stop.load(Ordering::SeqCst) {
                return;
            }
            // Every pending connection (the poll is edge-triggered).
            loop {
                match listener.accept() {
                    Ok((s, peer)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = ep.add_tcp_connection(s, addr::canonical(peer), true);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // WouldBlock: none left; another error (out of descriptors...): the next
                    // connection or a minute brings the next try.
                    Err(_) => break,
                }
            }
        }
        let _ = poll.poll(&mut events, Some(Duration::from_secs(60)));
    }
}

pub(super) fn tcp_conn_loop(
    weak: Weak<Endpoint>,
    mut s: TcpStream,
    peer: SocketAddr,
    id: u64,
    accepted: bool,
) {
    let mut framer = StreamFramer::new();
    let mut buf = vec![0u8; 16 * 1024];
    let idle_limit = match weak.upgrade() {
        Some(ep) => {
            let inner = lock(&ep.inner);
            let c = &inner.registrar.config;
            tcp_idle_limit_ms(c.keepalive_interval_ms, c.max_missed_keepalives)
        }
        None => return,
    };
    let mut last_rx = now_ms();
    let mut messages = 0u64;
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
                let Some(ep) = weak.upgrade().filter(|ep| !ep.stop.load(Ordering::SeqCst)) else {
                    return;
                };
                let silent = now_ms().saturating_sub(last_rx);
                let limit = if accepted && messages == 0 {
                    idle_limit.min(TCP_FIRST_MESSAGE_MS)
                } else {
                    idle_limit
                };
                if silent >= limit {
                    // Counted (EndpointStats::tcp_idle_closed); the endpoint does not log.
                    ep.tcp_idle_closed.fetch_add(1, Ordering::Relaxed);
                    let _ = s.shutdown(std::net::Shutdown::Both);
                    break;
                }
                continue;
            }
            Err(_) => break,
        };
        last_rx = now_ms();
        let Some(ep) = weak.upgrade() else { return };
        for m in framer.push(&buf[..n]) {
            ep.messages_in.fetch_add(1, Ordering::Relaxed);
            match m {
                Ok(m) => {
                    messages += 1;
                    ep.handle_message(
                        m,
                        Peer {
                            addr: peer,
                            connection: Some(id),
                        },
                    )
                }
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

//! The platform's media receiver for one GB28181 session: PS over RTP on UDP, TCP passive
//! (we listen, the device connects) or TCP active (we connect to the address of the answer),
//! with RFC 4571 or `$` framing, a sender lock (SSRC of the answer or the first sender) and
//! PS frame reassembly ([`gstmpegps::rtp::depacketizer`]). GStreamer-free.
//!
//! Limits: frames up to `max_frame_size` bytes; at most [`MAX_QUEUED_FRAMES`] complete frames
//! waiting for the element (older ones are dropped); TCP buffering bounded by the deframer.

use crate::core::media::{ReorderBuffer, SenderLock, SsrcPolicy, TcpDeframer};
use gstmpegps::rtp::depacketizer::{Depacketizer, Event, Stats};
use gstmpegps::rtp::replay::parse_packet;
use mio::{Events, Interest, Poll, Token, Waker};
use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

pub const MAX_QUEUED_FRAMES: usize = 64;
/// UDP packets held to repair reordering.
pub const REORDER_PACKETS: usize = 32;
/// UDP packets, or TCP bytes / 64 KiB, read per receive at most (the rest on the next one).
const READ_BUDGET: usize = 256;

const SOCKET: Token = Token(0);
const WAKE: Token = Token(1);
const CONNECTION: Token = Token(2);

enum Io {
    Udp(mio::net::UdpSocket),
    /// Waiting for the device to connect; then the stream and its peer.
    Listen(
        mio::net::TcpListener,
        Option<(mio::net::TcpStream, SocketAddr)>,
    ),
    Stream(mio::net::TcpStream, SocketAddr),
}

/// One reassembled PS frame.
#[derive(Debug)]
pub struct ReceivedFrame {
    pub data: Vec<u8>,
    pub rtp_timestamp: u32,
    pub discont: bool,
}

/// The receiver's sockets sleep in one `poll` (no timed polling): data, or a [`Waker`] from
/// another thread (an element's `unlock`, a BYE), end the wait at once.
pub struct MediaReceiver {
    io: Io,
    poll: Poll,
    events: Events,
    waker: Arc<Waker>,
    /// The last read stopped at its budget with data left (the poll is edge-triggered and
    /// would not report it again).
    pending: bool,
    woken: bool,
    deframer: TcpDeframer,
    lock: SenderLock,
    depay: Depacketizer<Vec<u8>>,
    reorder: ReorderBuffer<Vec<u8>>,
    queue: VecDeque<ReceivedFrame>,
    /// The connection was closed by the peer (TCP).
    pub closed: bool,
    pub queue_dropped: u64,
}

impl MediaReceiver {
    /// UDP socket bound to `bind`.
    pub fn udp(bind: SocketAddr, max_frame_size: usize) -> io::Result<Self> {
        let s = std::net::UdpSocket::bind(bind)?;
        s.set_nonblocking(true)?;
        Self::new(Io::Udp(mio::net::UdpSocket::from_std(s)), max_frame_size)
    }

    /// TCP listener bound to `bind` (TCP passive on our side).
    pub fn tcp_listen(bind: SocketAddr, max_frame_size: usize) -> io::Result<Self> {
        let l = std::net::TcpListener::bind(bind)?;
        l.set_nonblocking(true)?;
        Self::new(
            Io::Listen(mio::net::TcpListener::from_std(l), None),
            max_frame_size,
        )
    }

    /// TCP connection to `dest` (TCP active on our side).
    pub fn tcp_connect(dest: SocketAddr, max_frame_size: usize) -> io::Result<Self> {
        let s = std::net::TcpStream::connect_timeout(&dest, Duration::from_secs(3))?;
        s.set_nonblocking(true)?;
        Self::new(
            Io::Stream(mio::net::TcpStream::from_std(s), dest),
            max_frame_size,
        )
    }

    fn new(mut io: Io, max_frame_size: usize) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        let registry = poll.registry();
        match &mut io {
            Io::Udp(s) => registry.register(s, SOCKET, Interest::READABLE)?,
            Io::Listen(l, _) => registry.register(l, SOCKET, Interest::READABLE)?,
            Io::Stream(s, _) => registry.register(s, CONNECTION, Interest::READABLE)?,
        }
        Ok(MediaReceiver {
            io,
            poll,
            events: Events::with_capacity(8),
            waker,
            // Data may have come before the registration.
            pending: true,
            woken: false,
            deframer: TcpDeframer::new(),
            lock: SenderLock::new(None),
            depay: Depacketizer::new(max_frame_size),
            reorder: ReorderBuffer::new(REORDER_PACKETS),
            queue: VecDeque::new(),
            closed: false,
            queue_dropped: 0,
        })
    }

    /// Ends a wait in [`next_frame`](Self::next_frame) from any thread (it returns `None`
    /// and [`take_woken`](Self::take_woken) says so).
    pub fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }

    /// Whether a [`waker`](Self::waker) woke the receiver since the last call.
    pub fn take_woken(&mut self) -> bool {
        std::mem::take(&mut self.woken)
    }

    /// Asks the kernel for a UDP receive buffer of `bytes` (it caps the request at
    /// `net.core.rmem_max`) and returns the size it granted; `None` for TCP, where the
    /// kernel tunes the window itself.
    pub fn set_recv_buffer_size(&self, bytes: usize) -> io::Result<Option<usize>> {
        match &self.io {
            Io::Udp(s) => {
                let sock = socket2::SockRef::from(s);
                sock.set_recv_buffer_size(bytes)?;
                sock.recv_buffer_size().map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Only accept this SSRC (from the SDP answer).
    pub fn set_expected_ssrc(&mut self, ssrc: Option<u32>) {
        self.lock = SenderLock::new(ssrc);
    }

    /// Checks senders by dialog: the answered SSRC, or any from the device's IP, as `policy`
    /// says (see [`SsrcPolicy`]).
    pub fn set_sender_check(&mut self, ssrc: Option<u32>, device_ip: IpAddr, policy: SsrcPolicy) {
        self.lock = SenderLock::for_call(ssrc, device_ip, policy);
    }

    /// The SSRC the device sends when it is not the one it answered.
    pub fn ssrc_mismatch(&self) -> Option<u32> {
        self.lock.mismatch
    }

    /// SSRC changes followed from the locked sender.
    pub fn ssrc_changes(&self) -> u64 {
        self.lock.ssrc_changes
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.io {
            Io::Udp(s) => s.local_addr(),
            Io::Listen(l, _) => l.local_addr(),
            Io::Stream(s, _) => s.local_addr(),
        }
    }

    pub fn depay_stats(&self) -> Stats {
        self.depay.stats()
    }

    pub fn dropped_foreign(&self) -> u64 {
        self.lock.dropped
    }

    pub fn sender(&self) -> Option<(SocketAddr, u32)> {
        self.lock.locked()
    }

    /// Next complete frame, waiting at most `timeout` for data (or until woken).
    pub fn next_frame(&mut self, timeout: Duration) -> io::Result<Option<ReceivedFrame>> {
        if let Some(f) = self.queue.pop_front() {
            return Ok(Some(f));
        }
        self.receive(timeout)?;
        Ok(self.queue.pop_front())
    }

    /// Reads what a previous read left behind; else sleeps in the poll until the socket is
    /// readable, a waker wakes it, or `timeout` passes, and reads what is there (within
    /// [`READ_BUDGET`]).
    fn receive(&mut self, timeout: Duration) -> io::Result<()> {
        if self.pending && self.read_available()? {
            return Ok(());
        }
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        let mut readable = false;
        for e in self.events.iter() {
            if e.token() == WAKE {
                self.woken = true;
            } else {
                readable = true;
            }
        }
        if readable && self.read_available()? {
            return Ok(());
        }
        self.idle()
    }

    /// Reads the socket until WouldBlock (then the next poll reports new data) or the budget
    /// is spent (then `pending` stays and the next receive reads on without polling), and
    /// feeds the packets; whether there were any.
    fn read_available(&mut self) -> io::Result<bool> {
        let mut buf = [0u8; 65_536];
        let mut packets: Vec<(Vec<u8>, SocketAddr)> = Vec::new();
        let mut drained = false;
        match &mut self.io {
            Io::Udp(s) => {
                while packets.len() < READ_BUDGET {
                    match s.recv_from(&mut buf) {
                        Ok((n, from)) => packets.push((buf[..n].to_vec(), from)),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            drained = true;
                            break;
                        }
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted
                            ) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Io::Listen(l, conn) => {
                if conn.is_none() {
                    match l.accept() {
                        Ok((mut s, peer)) => {
                            // One device connection; later ones wait in the backlog unread.
                            self.poll.registry().deregister(l)?;
                            self.poll.registry().register(
                                &mut s,
                                CONNECTION,
                                Interest::READABLE,
                            )?;
                            *conn = Some((s, peer));
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => drained = true,
                        Err(e) => return Err(e),
                    }
                }
                if let Some((s, peer)) = conn {
                    let peer = *peer;
                    drained =
                        read_stream(s, &mut buf, &mut self.deframer, &mut self.closed, |p| {
                            packets.push((p, peer))
                        })?;
                }
            }
            Io::Stream(s, peer) => {
                let peer = *peer;
                drained = read_stream(s, &mut buf, &mut self.deframer, &mut self.closed, |p| {
                    packets.push((p, peer))
                })?;
            }
        }
        self.pending = !drained;
        let any = !packets.is_empty();
        for (p, from) in packets {
            // One form for the sender lock and stats, whatever the socket's family.
            self.push_packet(&p, crate::core::addr::canonical(from));
        }
        Ok(any)
    }

    /// Nothing came: packets held for reordering are given up as lost.
    fn idle(&mut self) -> io::Result<()> {
        if self.reorder.held() > 0 {
            for p in self.reorder.flush() {
                self.depacketize(&p);
            }
        }
        Ok(())
    }

    pub fn reordered(&self) -> u64 {
        self.reorder.reordered
    }

    /// Feeds one RTP packet from `from` (public for tests).
    pub fn push_packet(&mut self, packet: &[u8], from: SocketAddr) {
        let Some((meta, payload)) = parse_packet(packet) else {
            return;
        };
        // RTCP on the RTP port (PT 200..204 with the marker bit folded in): ignore.
        if (200..=204).contains(&packet.get(1).copied().unwrap_or(0)) {
            return;
        }
        if !self.lock.accept(from, meta.ssrc) {
            return;
        }
        // TCP keeps order; UDP may not.
        if matches!(self.io, Io::Udp(_)) {
            for p in self.reorder.push(meta.seq, packet.to_vec()) {
                self.depacketize(&p);
            }
        } else {
            let events = self.depay.push(meta, payload, payload.to_vec());
            self.take_events(events);
        }
    }

    fn depacketize(&mut self, packet: &[u8]) {
        if let Some((meta, payload)) = parse_packet(packet) {
            let events = self.depay.push(meta, payload, payload.to_vec());
            self.take_events(events);
        }
    }

    fn take_events(&mut self, events: Vec<Event<Vec<u8>>>) {
        for e in events {
            if let Event::Frame(f) = e {
                if self.queue.len() >= MAX_QUEUED_FRAMES {
                    self.queue.pop_front();
                    self.queue_dropped += 1;
                }
                self.queue.push_back(ReceivedFrame {
                    data: f.parts.concat(),
                    rtp_timestamp: f.timestamp,
                    discont: f.discont,
                });
            }
        }
    }

    /// Outputs the frame in progress (end of stream).
    pub fn flush(&mut self) -> Option<ReceivedFrame> {
        let events = self.depay.flush();
        self.take_events(events);
        self.queue.pop_front()
    }
}

/// Reads a TCP stream until WouldBlock (true), the peer closes it (true: nothing more to
/// read; `closed` set) or [`READ_BUDGET`] reads (false), handing each deframed packet to
/// `packet`.
fn read_stream(
    s: &mut mio::net::TcpStream,
    buf: &mut [u8],
    deframer: &mut TcpDeframer,
    closed: &mut bool,
    mut packet: impl FnMut(Vec<u8>),
) -> io::Result<bool> {
    if *closed {
        return Ok(true);
    }
    for _ in 0..READ_BUDGET {
        match s.read(buf) {
            Ok(0) => {
                *closed = true;
                return Ok(true);
            }
            Ok(n) => deframer.push(&buf[..n]).into_iter().for_each(&mut packet),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::media::frame_rfc4571;
    use std::io::Write;
    use std::net::{TcpStream, UdpSocket};

    /// A waker from another thread (an element's unlock) ends a long wait at once, whether
    /// it comes before or during the wait.
    #[test]
    fn a_waker_ends_the_wait() {
        for transport in ["udp", "tcp-passive"] {
            let bind = "127.0.0.1:0".parse().unwrap();
            let mut rx = match transport {
                "udp" => MediaReceiver::udp(bind, 1 << 20).unwrap(),
                _ => MediaReceiver::tcp_listen(bind, 1 << 20).unwrap(),
            };
            let w = rx.waker();
            let t = std::time::Instant::now();
            let waker = std::thread::spawn(move || w.wake().unwrap());
            assert!(rx.next_frame(Duration::from_secs(60)).unwrap().is_none());
            assert!(rx.take_woken(), "{transport}");
            assert!(!rx.take_woken());
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "{transport}: {:?}",
                t.elapsed()
            );
            waker.join().unwrap();
        }
    }

    #[test]
    fn udp_receive_buffer_is_raised_up_to_the_kernel_cap() {
        let r = MediaReceiver::udp("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        let before = socket2::SockRef::from(match &r.io {
            Io::Udp(s) => s,
            _ => unreachable!(),
        })
        .recv_buffer_size()
        .unwrap();
        let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(before);
        let want = 2 * 1024 * 1024;
        let granted = r.set_recv_buffer_size(want).unwrap().expect("UDP");
        // Linux grants twice the request (bookkeeping), capped at twice rmem_max.
        assert!(
            granted >= want.min(rmem_max),
            "granted {granted}, rmem_max {rmem_max}"
        );
        assert!(granted >= before, "granted {granted} < default {before}");
    }

    fn packet(seq: u16, ts: u32, ssrc: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 96 | if marker { 0x80 } else { 0 }];
        p.extend(seq.to_be_bytes());
        p.extend(ts.to_be_bytes());
        p.extend(ssrc.to_be_bytes());
        p.extend(payload);
        p
    }

    #[test]
    fn udp_frames_and_foreign_sender() {
        let mut rx = MediaReceiver::udp("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        let to = rx.local_addr().unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.send_to(&packet(1, 100, 7, false, &[0, 0, 1, 0xBA, 1]), to)
            .unwrap();
        b.send_to(&packet(9, 100, 7, true, &[0, 0, 1, 0xBA, 9]), to)
            .unwrap();
        a.send_to(&packet(2, 100, 7, true, &[2, 3]), to).unwrap();
        let mut got = None;
        for _ in 0..50 {
            if let Some(f) = rx.next_frame(Duration::from_millis(20)).unwrap() {
                got = Some(f);
                break;
            }
        }
        let f = got.expect("frame");
        assert_eq!(f.data, vec![0, 0, 1, 0xBA, 1, 2, 3]);
        assert_eq!(f.rtp_timestamp, 100);
        assert_eq!(rx.dropped_foreign(), 1);
    }

    #[test]
    fn udp_reordering_repaired() {
        let mut rx = MediaReceiver::udp("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        let from: SocketAddr = "127.0.0.1:9".parse().unwrap();
        // Frame 1 = seq 1..3, frame 2 = seq 4..5; 2 and 3 swapped, 4 before 3.
        let p = |seq: u16, ts: u32, m: bool| packet(seq, ts, 1, m, &[0, 0, 1, 0xBA, seq as u8]);
        for pkt in [
            p(1, 0, false),
            p(3, 0, true),
            p(4, 3600, false),
            p(2, 0, false),
            p(5, 3600, true),
        ] {
            rx.push_packet(&pkt, from);
        }
        let f1 = rx.next_frame(Duration::from_millis(1)).unwrap().unwrap();
        assert_eq!(f1.data.len(), 15);
        assert_eq!(f1.data[4], 1);
        assert_eq!(f1.data[9], 2);
        assert_eq!(f1.data[14], 3);
        assert!(!f1.discont || f1.rtp_timestamp == 0);
        let f2 = rx.next_frame(Duration::from_millis(1)).unwrap().unwrap();
        assert_eq!(f2.rtp_timestamp, 3600);
        assert_eq!(rx.depay_stats().packets_lost, 0);
        assert!(rx.reordered() >= 2);
    }

    #[test]
    fn tcp_passive_rfc4571() {
        let mut rx = MediaReceiver::tcp_listen("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        let mut c = TcpStream::connect(rx.local_addr().unwrap()).unwrap();
        for (i, ts, m) in [(1u16, 0, false), (2, 0, true), (3, 3600, true)] {
            let p = packet(i, ts, 5, m, &[0, 0, 1, 0xBA, i as u8]);
            c.write_all(&frame_rfc4571(&p).unwrap()).unwrap();
        }
        let mut frames = Vec::new();
        for _ in 0..100 {
            if let Some(f) = rx.next_frame(Duration::from_millis(20)).unwrap() {
                frames.push(f);
            }
            if frames.len() == 2 {
                break;
            }
        }
        assert_eq!(frames.len(), 2);
        drop(c);
        for _ in 0..50 {
            let _ = rx.next_frame(Duration::from_millis(20)).unwrap();
            if rx.closed {
                break;
            }
        }
        assert!(rx.closed);
    }
}

//! What one direct-path connection has still to send: bytes are written at once without
//! blocking (`MSG_DONTWAIT`) and what the socket does not take waits here, bounded. Frames
//! come from the ingest's thread, which must never wait on a reader; responses and sender
//! reports come from the connection's own thread. GStreamer-free.

use std::io;
use std::net::TcpStream;

/// Why bytes were not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The queue would exceed its limit: the bytes are dropped, the connection goes on.
    Full,
    /// The socket failed (peer gone): nothing more goes out.
    Closed,
}

#[derive(Debug)]
pub struct Outbox {
    pending: Vec<u8>,
    /// Bytes at the start of `pending` already written.
    written: usize,
    limit: usize,
    closed: bool,
    /// Bytes the socket took.
    pub sent: u64,
}

impl Outbox {
    /// A queue of at most `limit` bytes waiting.
    pub fn new(limit: usize) -> Outbox {
        Outbox {
            pending: Vec::new(),
            written: 0,
            limit,
            closed: false,
            sent: 0,
        }
    }

    /// Bytes waiting.
    pub fn waiting(&self) -> usize {
        self.pending.len() - self.written
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Sends `bytes` after what waits (all of them or none, so frames never break), taking
    /// the queue up to its limit, or `limit + slack` for bytes that must go (responses).
    pub fn send(&mut self, sock: &TcpStream, bytes: &[u8], slack: usize) -> Result<(), Refused> {
        self.flush(sock)?;
        if self.waiting() == 0 {
            let n = self.write(sock, bytes)?;
            if n < bytes.len() {
                self.pending.extend_from_slice(&bytes[n..]);
            }
            return Ok(());
        }
        if self.waiting() + bytes.len() > self.limit + slack {
            return Err(Refused::Full);
        }
        self.pending.extend_from_slice(bytes);
        Ok(())
    }

    /// Writes what waits, as far as the socket takes it now.
    pub fn flush(&mut self, sock: &TcpStream) -> Result<(), Refused> {
        if self.closed {
            return Err(Refused::Closed);
        }
        if self.waiting() == 0 {
            return Ok(());
        }
        let (start, end) = (self.written, self.pending.len());
        let pending = std::mem::take(&mut self.pending);
        let r = self.write(sock, &pending[start..end]);
        self.pending = pending;
        self.written += r?;
        if self.written == self.pending.len() {
            self.pending.clear();
            self.written = 0;
        } else if self.written > self.pending.len() / 2 {
            self.pending.drain(..self.written);
            self.written = 0;
        }
        Ok(())
    }

    fn write(&mut self, sock: &TcpStream, mut bytes: &[u8]) -> Result<usize, Refused> {
        let s = socket2::SockRef::from(sock);
        let mut total = 0;
        while !bytes.is_empty() {
            match s.send_with_flags(bytes, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) {
                Ok(0) => break,
                Ok(n) => {
                    total += n;
                    bytes = &bytes[n..];
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.closed = true;
                    return Err(Refused::Closed);
                }
            }
        }
        self.sent += total as u64;
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        // Small buffers, so that the socket fills up soon.
        let s = socket2::SockRef::from(&a);
        s.set_send_buffer_size(4096).unwrap();
        socket2::SockRef::from(&b)
            .set_recv_buffer_size(4096)
            .unwrap();
        (a, b)
    }

    /// A reader that does not read: the queue stops at its limit, whole sends only, and the
    /// bytes come out in order and complete once the reader reads.
    #[test]
    fn bounded_whole_and_in_order() {
        let (a, mut b) = pair();
        let mut o = Outbox::new(64 * 1024);
        let mut accepted = Vec::new();
        let mut refused = 0;
        for i in 0..200u32 {
            let chunk: Vec<u8> = (0..1000u32).map(|k| (i * 7 + k) as u8).collect();
            match o.send(&a, &chunk, 0) {
                Ok(()) => accepted.extend_from_slice(&chunk),
                Err(Refused::Full) => {
                    // Refused only because it would not fit.
                    assert!(o.waiting() + 1000 > 64 * 1024, "{} waiting", o.waiting());
                    refused += 1;
                }
                Err(Refused::Closed) => panic!("closed"),
            }
            assert!(o.waiting() <= 64 * 1024);
        }
        assert!(refused > 0, "the queue filled up");
        // A response may go beyond the limit by its slack.
        o.send(&a, b"RTSP/1.0 200 OK\r\n\r\n", 1024).unwrap();
        accepted.extend_from_slice(b"RTSP/1.0 200 OK\r\n\r\n");
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        b.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        while got.len() < accepted.len() {
            o.flush(&a).unwrap();
            let n = b.read(&mut buf).unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, accepted);
        assert_eq!(o.waiting(), 0);
        assert_eq!(o.sent, accepted.len() as u64);
    }

    #[test]
    fn a_gone_peer_closes_it() {
        let (a, b) = pair();
        drop(b);
        let mut o = Outbox::new(1024);
        let mut closed = false;
        for _ in 0..100 {
            if o.send(&a, &[0; 512], 0) == Err(Refused::Closed) {
                closed = true;
                break;
            }
            let _ = o.flush(&a);
        }
        assert!(closed);
        assert!(o.is_closed());
    }
}

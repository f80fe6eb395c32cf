//! A raw RTSP connection for tests: requests written by hand, responses and `$` frames
//! framed by rtsp-types.

use gst_ipcam_gateway::auth::basic_value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// One RTSP response as received.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub head: String,
}

impl Resp {
    pub fn headers(&self, name: &str) -> Vec<String> {
        self.head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .collect()
    }
}

/// A raw RTSP connection: requests written by hand, responses and `$` frames parsed.
pub struct Conn {
    pub s: TcpStream,
    pub buf: Vec<u8>,
    pub cseq: u32,
    /// `$` frames and their payload bytes received so far.
    pub frames: u64,
    /// When set, the `$` frames read while waiting for a response are kept here as
    /// (channel, payload).
    pub kept: Option<Vec<(u8, Vec<u8>)>>,
}

impl Conn {
    pub fn open(port: u16) -> Conn {
        Conn::from_stream(TcpStream::connect(("127.0.0.1", port)).unwrap())
    }

    pub fn from_stream(s: TcpStream) -> Conn {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Conn {
            s,
            buf: Vec::new(),
            cseq: 0,
            frames: 0,
            kept: None,
        }
    }

    /// Sends a request; waits for its response, counting the frames that come before it.
    pub fn request(&mut self, method: &str, url: &str, headers: &[(&str, String)]) -> Resp {
        self.cseq += 1;
        let mut req = format!("{method} {url} RTSP/1.0\r\nCSeq: {}\r\n", self.cseq);
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        self.s.write_all(req.as_bytes()).unwrap();
        self.response(method)
    }

    /// Waits for the next response (to `what`), counting the frames that come before it.
    pub fn response(&mut self, what: &str) -> Resp {
        loop {
            match self.next_message(Duration::from_secs(20)) {
                Some(Ok(r)) => return r,
                Some(Err(())) => continue,
                None => panic!("no answer to {what}"),
            }
        }
    }

    /// The next message: Ok(response), Err(()) for a data frame, None on timeout/close.
    pub fn next_message(&mut self, timeout: Duration) -> Option<Result<Resp, ()>> {
        let end = Instant::now() + timeout;
        loop {
            match rtsp_types::Message::<Vec<u8>>::parse(&self.buf) {
                Ok((msg, used)) => {
                    let head = String::from_utf8_lossy(&self.buf[..used]).into_owned();
                    self.buf.drain(..used);
                    return Some(match msg {
                        rtsp_types::Message::Response(r) => Ok(Resp {
                            status: u16::from(r.status()),
                            head,
                        }),
                        rtsp_types::Message::Data(d) => {
                            self.frames += 1;
                            if let Some(k) = self.kept.as_mut() {
                                k.push((d.channel_id(), d.as_slice().to_vec()));
                            }
                            Err(())
                        }
                        rtsp_types::Message::Request(_) => Err(()),
                    });
                }
                Err(rtsp_types::ParseError::Incomplete(_)) => {}
                Err(rtsp_types::ParseError::Error) => panic!("unparsable RTSP from the gateway"),
            }
            let left = end.checked_duration_since(Instant::now())?;
            self.s
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut chunk = [0u8; 65536];
            match self.s.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads frames until `n` more have arrived (false on timeout or close).
    pub fn receive_frames(&mut self, n: u64, timeout: Duration) -> bool {
        let want = self.frames + n;
        let end = Instant::now() + timeout;
        while self.frames < want {
            let Some(left) = end.checked_duration_since(Instant::now()) else {
                return false;
            };
            if self.next_message(left).is_none() {
                return false;
            }
        }
        true
    }

    /// Whether the server closed the connection (EOF or reset) within `timeout`.
    pub fn closed_by_server(&mut self, timeout: Duration) -> bool {
        self.s.set_read_timeout(Some(timeout)).unwrap();
        let mut b = [0u8; 4096];
        loop {
            match self.s.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) => {
                    return !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    );
                }
            }
        }
    }
}

pub fn basic(user: (&str, &str)) -> (&'static str, String) {
    ("Authorization", basic_value(user.0, user.1))
}

//! One direct-path reader: the streams its client set up (a [`Packetizer`] each), fed by the
//! channel's ingest in the ingest's thread ([`FrameSink`]) and written without blocking
//! through the connection's [`Outbox`]. It starts at a video key frame (the cached GOP's, so
//! at once), audio with it; a reader whose queue is full loses frames up to the next key
//! frame (never a broken picture). The connection's thread shares the outbox for its
//! responses and the RTCP sender reports.

use super::outbox::{Outbox, Refused};
use super::rtp::{Packetizer, ntp_time};
use crate::ingest::{CapsChange, FrameSink, Kind};
use gst_ipcam_common::sync::lock;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// What responses may add beyond the queue limit (a client that sends requests and never
/// reads is closed past it).
pub const RESPONSE_SLACK: usize = 64 * 1024;

/// What a connection sends, shared by its thread and the ingest's.
pub struct Output {
    pub sock: TcpStream,
    pub state: Mutex<OutState>,
    /// Set when the ingest ended or the peer is gone: the connection closes.
    pub ended: AtomicBool,
    /// Payload bytes sent (metrics), and frames dropped for a full queue.
    pub payload_bytes: AtomicU64,
    pub packets: AtomicU64,
    pub dropped_frames: AtomicU64,
    /// Added to by every reader of the path (the path's `bytes_sent`), once it has one.
    pub path_bytes: OnceLock<Arc<AtomicU64>>,
}

pub struct OutState {
    pub outbox: Outbox,
    /// The set-up streams: (kind, packetizer).
    pub streams: Vec<(Kind, Packetizer)>,
    pub playing: bool,
    /// The first frame sent (all streams' timestamps count from it).
    started: bool,
    /// A video frame was dropped: video waits for the next key frame.
    skip_video: bool,
    scratch: Vec<u8>,
}

impl Output {
    /// An output queueing at most `queue_limit` bytes of frames.
    pub fn new(sock: TcpStream, queue_limit: usize) -> Arc<Output> {
        Arc::new(Output {
            sock,
            state: Mutex::new(OutState {
                outbox: Outbox::new(queue_limit),
                streams: Vec::new(),
                playing: false,
                started: false,
                skip_video: false,
                scratch: Vec::new(),
            }),
            ended: AtomicBool::new(false),
            payload_bytes: AtomicU64::new(0),
            packets: AtomicU64::new(0),
            dropped_frames: AtomicU64::new(0),
            path_bytes: OnceLock::new(),
        })
    }

    /// Sends a response (or anything that must go): false when the connection is to close.
    pub fn send_now(&self, bytes: &[u8]) -> bool {
        let mut st = lock(&self.state);
        st.outbox.send(&self.sock, bytes, RESPONSE_SLACK).is_ok()
    }

    /// Writes what waits; false when the connection is to close.
    pub fn flush(&self) -> bool {
        lock(&self.state).outbox.flush(&self.sock).is_ok()
    }

    pub fn waiting(&self) -> usize {
        lock(&self.state).outbox.waiting()
    }

    /// RTCP sender reports of every playing stream, `clock_ns` being the ingest clock's now.
    pub fn sender_reports(&self, clock_ns: u64, cname: &str) -> bool {
        let mut st = lock(&self.state);
        if !st.playing {
            return true;
        }
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let ntp = ntp_time(wall);
        let mut buf = Vec::new();
        for (_, p) in &st.streams {
            p.sender_report(ntp, clock_ns, cname, &mut buf);
        }
        // Reports are small and may be lost with a full queue (the next one follows).
        !matches!(st.outbox.send(&self.sock, &buf, 0), Err(Refused::Closed))
    }

    pub fn end(&self) {
        if !self.ended.swap(true, Ordering::Relaxed) {
            // The connection's thread sees the end in its read.
            let _ = self.sock.shutdown(std::net::Shutdown::Read);
        }
    }
}

impl OutState {
    /// Whether frames went out already (a PLAY now resumes the stream).
    pub fn started(&self) -> bool {
        self.started
    }

    /// Starts (or resumes) sending; a resumed stream starts again at a key frame.
    pub fn play(&mut self) {
        self.playing = true;
        self.skip_video = self.started;
    }
}

impl FrameSink for Output {
    fn frame(&self, kind: Kind, data: &[u8], time_ns: u64, key: bool) -> bool {
        if self.ended.load(Ordering::Relaxed) {
            return false;
        }
        let mut st = lock(&self.state);
        let st = &mut *st;
        if !st.playing {
            return true;
        }
        let has_video = st.streams.iter().any(|(k, _)| *k == Kind::Video);
        if kind == Kind::Video && (st.skip_video || !st.started) && !key {
            return true;
        }
        if has_video && !st.started && kind != Kind::Video {
            return true;
        }
        if !st.started {
            st.started = true;
            for (_, p) in st.streams.iter_mut() {
                p.set_origin(time_ns);
            }
        }
        let Some((_, p)) = st.streams.iter_mut().find(|(k, _)| *k == kind) else {
            return true;
        };
        st.scratch.clear();
        let n = p.frame(data, time_ns, &mut st.scratch);
        match st.outbox.send(&self.sock, &st.scratch, 0) {
            Ok(()) => {
                if kind == Kind::Video {
                    st.skip_video = false;
                }
                self.payload_bytes
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                if let Some(p) = self.path_bytes.get() {
                    p.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                self.packets.fetch_add(n as u64, Ordering::Relaxed);
                true
            }
            Err(Refused::Full) => {
                self.dropped_frames.fetch_add(1, Ordering::Relaxed);
                if kind == Kind::Video {
                    st.skip_video = true;
                }
                true
            }
            Err(Refused::Closed) => {
                self.end();
                false
            }
        }
    }

    fn caps_changed(&self, kind: Kind, change: CapsChange) -> bool {
        // Video: in-band parameter sets carry a new size or profile. Another codec, or audio
        // with another rate or configuration, needs a new DESCRIBE: the connection closes
        // and the client comes back.
        let keep = matches!(
            (kind, change),
            (_, CapsChange::Same) | (Kind::Video, CapsChange::Params | CapsChange::Size)
        );
        if !keep {
            self.end();
        }
        keep
    }

    fn end(&self) {
        Output::end(self);
    }
}

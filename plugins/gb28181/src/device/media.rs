//! The media sender: the latest GOP kept for a new viewer, PS frames as RTP over UDP or TCP
//! (RFC 4571).

use super::*;

impl DeviceAgent {
    /// Feeds one PS frame (`rtp_ts` 90 kHz). `key`: whether it starts a GOP as the upstream
    /// flags say, or None to look at the frame (H.264/H.265 SPS or IDR). Keeps the latest GOP
    /// and sends to the current session, if any (the GOP first to a new viewer).
    pub fn send_frame(&self, frame: &[u8], key: Option<bool>, rtp_ts: u32) {
        {
            let mut gop = lock(&self.gop);
            if is_header_only(frame) {
                // Keep the latest of each kind (a later lone pack header must not lose the PSM).
                let slot = match frame.get(3) {
                    Some(0xBA) => 0,
                    Some(0xBB) => 1,
                    _ => 2,
                };
                if frame.len() <= MAX_HEADER_BYTES {
                    gop.headers[slot] = frame.to_vec();
                }
            } else {
                if key.unwrap_or_else(|| is_key_frame(frame)) {
                    gop.frames.clear();
                    gop.bytes = 0;
                }
                if gop.frames.len() < MAX_GOP_FRAMES && gop.bytes + frame.len() <= MAX_GOP_BYTES {
                    gop.bytes += frame.len();
                    gop.frames.push((frame.to_vec(), rtp_ts));
                }
            }
        }
        let mut guard = lock(&self.session);
        let Some(s) = guard.as_mut() else { return };
        if s.file_ended {
            return;
        }
        if s.file_end_at.is_some_and(|t| now_ms() >= t) {
            s.file_ended = true;
            drop(guard);
            self.end_of_media();
            return;
        }
        if !s.out.accept_if_listening() {
            return;
        }
        let res = if s.need_gop {
            s.need_gop = false;
            let mut frames: Vec<(Vec<u8>, u32)> = {
                let gop = lock(&self.gop);
                let mut frames = gop.frames.clone();
                if let Some((first, _)) = frames.first_mut()
                    && !has_psm(first)
                    && !gop.headers[2].is_empty()
                {
                    let mut f = gop.headers.concat();
                    f.extend_from_slice(first);
                    *first = f;
                }
                frames
            };
            if frames.is_empty() {
                frames.push((frame.to_vec(), rtp_ts));
            }
            frames.iter().try_for_each(|(f, ts)| send_rtp(s, f, *ts))
        } else {
            send_rtp(s, frame, rtp_ts)
        };
        if res.is_err() {
            s.active = false;
            let cid = s.call_id.clone();
            *guard = None;
            drop(guard);
            (self.on_event)(DeviceEvent::SessionStopped {
                call_id: cid,
                reason: "media send failed".into(),
            });
        }
    }
}

pub(super) fn send_rtp(s: &mut MediaSession, frame: &[u8], ts: u32) -> io::Result<()> {
    let cap = packetizer::payload_capacity(MTU, 0).ok_or_else(|| other("mtu"))?;
    for f in packetizer::fragments(frame.len(), cap) {
        let payload = frame
            .get(f.offset..f.offset + f.len)
            .ok_or_else(|| other("frag"))?;
        let mut pkt = Vec::with_capacity(12 + payload.len());
        pkt.push(0x80);
        pkt.push(96 | if f.marker { 0x80 } else { 0 });
        pkt.extend_from_slice(&s.seq.to_be_bytes());
        pkt.extend_from_slice(&ts.to_be_bytes());
        pkt.extend_from_slice(&s.ssrc.to_be_bytes());
        pkt.extend_from_slice(payload);
        s.seq = s.seq.wrapping_add(1);
        s.packets += 1;
        s.bytes += pkt.len() as u64;
        match &mut s.out {
            MediaOut::Udp(sock, dest) => {
                // Loss on UDP is not fatal.
                let _ = sock.send_to(&pkt, *dest);
            }
            MediaOut::Tcp(t) => {
                let framed = frame_rfc4571(&pkt).ok_or_else(|| other("packet too large"))?;
                t.write_all(&framed)?;
            }
            MediaOut::Listening(_) => {}
        }
    }
    Ok(())
}

pub(super) enum MediaOut {
    Udp(UdpSocket, SocketAddr),
    Tcp(TcpStream),
    /// Waiting for the platform to connect (TCP active on the platform's side).
    Listening(TcpListener),
}

impl MediaOut {
    /// Whether media can go out: while listening, takes the platform's connection if it has
    /// come (without waiting).
    pub(super) fn accept_if_listening(&mut self) -> bool {
        let MediaOut::Listening(l) = self else {
            return true;
        };
        match l.accept() {
            Ok((t, _)) => {
                let _ = t.set_nonblocking(false);
                let _ = t.set_write_timeout(Some(Duration::from_secs(2)));
                let _ = t.set_nodelay(true);
                *self = MediaOut::Tcp(t);
                true
            }
            Err(_) => false,
        }
    }
}

impl MediaSession {
    /// The event telling that this session (for `channel`) started.
    pub(super) fn started_event(&self, channel: &str) -> DeviceEvent {
        DeviceEvent::SessionStarted {
            call_id: self.call_id.clone(),
            channel: channel.to_string(),
            kind: self.kind.clone(),
            range: self.range,
            download_speed: self.download_speed,
            transport: match self.out {
                MediaOut::Udp(..) => MediaTransport::Udp,
                MediaOut::Tcp(_) => MediaTransport::TcpPassive,
                MediaOut::Listening(_) => MediaTransport::TcpActive,
            },
            dest: match &self.out {
                MediaOut::Udp(_, a) => a.to_string(),
                MediaOut::Tcp(t) => t.peer_addr().map(|a| a.to_string()).unwrap_or_default(),
                MediaOut::Listening(l) => l.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            },
            ssrc: self.ssrc,
        }
    }
}

pub struct MediaSession {
    pub(super) call_id: String,
    pub(super) kind: String,
    /// Playback / Download: the offer's `t=` range.
    pub(super) range: Option<(u64, u64)>,
    pub(super) download_speed: Option<u32>,
    pub(super) out: MediaOut,
    pub(super) ssrc: u32,
    pub(super) seq: u16,
    /// The cached GOP has not been sent yet.
    pub(super) need_gop: bool,
    pub(super) active: bool,
    /// Playback / Download: when (ms) the requested range (`t=` end - start, played at real
    /// time) has been sent: the "file" ends there (MediaStatus 121, no more media).
    pub(super) file_end_at: Option<u64>,
    pub(super) file_ended: bool,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Default)]
pub(super) struct Gop {
    pub(super) frames: Vec<(Vec<u8>, u32)>,
    pub(super) bytes: usize,
    /// The latest PS headers pushed as buffers of their own (pack, system header, PSM), sent
    /// ahead of the GOP to a new viewer when the GOP's first frame has no PSM.
    /// Pack header, system header, PSM.
    pub(super) headers: [Vec<u8>; 3],
}

/// Most bytes of separate PS headers kept.
pub(super) const MAX_HEADER_BYTES: usize = 4096;

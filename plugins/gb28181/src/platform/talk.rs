//! The platform's side of a voice broadcast (§9.12) without GStreamer: tell the device to
//! call us (Broadcast MESSAGE), take its audio INVITE, answer `sendonly`, then send G.711
//! over RTP to the address it offered until either side hangs up: over UDP, or over TCP
//! (RFC 4571 framing) in the role opposite to the device's `a=setup` (a listening device is
//! connected to; a connecting one is accepted, only from its own IP), the connection made
//! before `start` returns.

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::call::{CallError, wait_for_device};
use crate::core::addr;
use crate::core::media::{accept_from, frame_rfc4571};
use crate::core::sdp::{self, MediaTransport};
use crate::core::sip::Message;
use crate::core::talk::{self, G711, TalkFormat};
use crate::core::transaction::Dialog;
use crate::endpoint::Endpoint;
use gstmpegps::mux::writer::{Frame as PsFrame, PsWriter, WriterConfig};
use gstmpegps::ps::Codec;

/// Samples per RTP packet: 20 ms at 8 kHz, what devices expect.
pub const SAMPLES_PER_PACKET: usize = 160;
/// How long connecting to a listening device may take, and a blocked write to it.
const TCP_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the talk's RTP goes.
enum MediaOut {
    Udp(UdpSocket),
    /// RFC 4571 over TCP: our connection to a listening device (`a=setup:passive`), or a
    /// connecting device's to us (`a=setup:active`).
    Tcp(TcpStream),
}

impl MediaOut {
    fn send(&mut self, pkt: &[u8], dest: SocketAddr) -> std::io::Result<()> {
        match self {
            MediaOut::Udp(s) => s.send_to(pkt, dest).map(|_| ()),
            MediaOut::Tcp(s) => {
                let framed = frame_rfc4571(pkt)
                    .ok_or_else(|| std::io::Error::other("RTP packet too large for RFC 4571"))?;
                s.write_all(&framed)
            }
        }
    }
}

fn tcp_options(s: &TcpStream) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    s.set_write_timeout(Some(TCP_TIMEOUT))
}

#[derive(Debug, Clone)]
pub struct TalkParams {
    /// Our audio source ID (the device INVITEs it): usually the platform's ID.
    pub source_id: String,
    pub device_id: String,
    /// The device's audio output (TargetID): its ID or an audio channel's.
    pub target_id: String,
    /// Where the RTP socket is bound (None: the address that reaches the device).
    pub media_address: Option<IpAddr>,
    /// How long to wait for the device to register, and then for its INVITE.
    pub wait_timeout: Duration,
    pub invite_timeout: Duration,
}

/// An established talk session.
pub struct Talk {
    pub dialog: Dialog,
    /// The device's SIP address.
    pub dest: SocketAddr,
    /// Where the audio goes.
    pub media_dest: SocketAddr,
    /// G.711 as RTP, or in PS, as the device asked (its law: `format.law()`).
    pub format: TalkFormat,
    pub ssrc: u32,
    media: MediaOut,
    /// PS: the writer and its audio stream.
    ps: Option<(PsWriter, u8)>,
    /// Samples sent: the RTP and PS timestamps.
    samples: u64,
    seq: u16,
    /// The RTP timestamp of the first sample.
    timestamp_base: u32,
    /// Samples short of a whole packet, sent with the next ones.
    partial: Vec<u8>,
    /// The device's BYE.
    pub bye_rx: mpsc::Receiver<Message>,
    pub packets: u64,
    pub bytes: u64,
}

impl Talk {
    /// Runs the broadcast set-up; `cancelled` is polled while waiting.
    pub fn start(
        ep: &Endpoint,
        p: &TalkParams,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Talk, CallError> {
        let dest = wait_for_device(ep, &p.device_id, &p.target_id, p.wait_timeout, cancelled)?;
        let invites =
            ep.expect_invite(&p.device_id, &p.source_id)
                .map_err(|e| CallError::NoAnswer {
                    device_id: p.device_id.clone(),
                    error: e,
                })?;
        let sn = ep.next_sn();
        let body = talk::build_broadcast(sn, &p.source_id, &p.target_id);
        if let Err(e) = ep.send_manscdp(&p.device_id, &p.target_id, &body) {
            ep.forget_invite(&p.device_id);
            return Err(CallError::NoAnswer {
                device_id: p.device_id.clone(),
                error: e,
            });
        }
        // The device calls back (asleep until the endpoint brings its INVITE).
        let deadline = Instant::now() + p.invite_timeout;
        let got = ep.wait_until(deadline, cancelled, || match invites.try_recv() {
            Ok(m) => Some(Some(m)),
            Err(mpsc::TryRecvError::Empty) => None,
            Err(mpsc::TryRecvError::Disconnected) => Some(None),
        });
        let invite = match got {
            Ok(Some(Some(m))) => m,
            Err(_) => {
                ep.forget_invite(&p.device_id);
                return Err(CallError::Cancelled);
            }
            Ok(_) => {
                ep.forget_invite(&p.device_id);
                return Err(CallError::NoAnswer {
                    device_id: p.device_id.clone(),
                    error: std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no INVITE for the broadcast",
                    ),
                });
            }
        };
        let refuse = |status: u16, reason: &str| {
            let mut r = Message::response_to(&invite, status, reason, Some("x"));
            r.stamp_via_source(dest);
            let _ = ep.send_to(&r, dest);
        };
        let offer = match sdp::parse(&invite.body) {
            Ok(o) => o,
            Err(_) => {
                refuse(400, "Bad Request");
                return Err(CallError::BadAnswer);
            }
        };
        let (Some(format), Some(media_dest)) = (
            TalkFormat::of_offer(&offer),
            offer.media_addr().map(|a| addr::media_target(a, dest)),
        ) else {
            // G.711, as RTP or in PS.
            refuse(488, "Not Acceptable Here");
            return Err(CallError::BadAnswer);
        };
        let bind_ip = p.media_address.unwrap_or_else(|| {
            ep.local_ip_for(dest)
                .parse()
                .unwrap_or(addr::Family::of(dest.ip()).unspecified())
        });
        let bind = SocketAddr::new(bind_ip, 0);
        let socket_error = |error| CallError::MediaSocket { bind, error };
        /// What the answer's port is for.
        enum Prepared {
            Udp(UdpSocket),
            /// We connect once answered (the port of a connecting side is 9, RFC 4145).
            Connect,
            Listen(TcpListener),
        }
        let (prepared, local) = match offer.transport() {
            MediaTransport::Udp => {
                let s = UdpSocket::bind(bind).map_err(socket_error)?;
                let local = s.local_addr().map_err(socket_error)?;
                (Prepared::Udp(s), local)
            }
            MediaTransport::TcpPassive => (Prepared::Connect, SocketAddr::new(bind_ip, 9)),
            MediaTransport::TcpActive => {
                let l = TcpListener::bind(bind).map_err(socket_error)?;
                let local = l.local_addr().map_err(socket_error)?;
                (Prepared::Listen(l), local)
            }
        };
        let answer = talk::build_talk_answer(
            &offer,
            &p.source_id,
            &local.ip().to_string(),
            local.port(),
            format,
        );
        let (bye_tx, bye_rx) = mpsc::channel();
        let (dialog, dest) = ep
            .answer_invite(&invite, &answer, bye_tx)
            .map_err(CallError::MediaConnect)?;
        // Over TCP the connection is made before the first audio.
        let media = match prepared {
            Prepared::Udp(s) => Ok(MediaOut::Udp(s)),
            Prepared::Connect => TcpStream::connect_timeout(&media_dest, TCP_TIMEOUT)
                .and_then(|s| tcp_options(&s).map(|_| MediaOut::Tcp(s))),
            Prepared::Listen(l) => mio::Poll::new()
                .and_then(|mut poll| {
                    let deadline = Some(Instant::now() + TCP_TIMEOUT);
                    accept_from(&mut poll, l, media_dest.ip(), deadline, &|| false)
                })
                .map(TcpStream::from)
                .and_then(|s| {
                    s.set_nonblocking(false)?;
                    tcp_options(&s).map(|_| MediaOut::Tcp(s))
                }),
        };
        let media = match media {
            Ok(m) => m,
            Err(e) => {
                ep.remove_dialog(&dialog.call_id);
                let mut d = dialog.clone();
                let _ = ep.request(&d.bye(), dest);
                return Err(CallError::MediaConnect(e));
            }
        };
        let ssrc = offer
            .ssrc
            .as_deref()
            .and_then(|y| y.trim().parse::<u32>().ok())
            .unwrap_or_else(|| crate::core::random::u64() as u32);
        let ps = format.is_ps().then(|| {
            let mut w = PsWriter::new(WriterConfig::default());
            let codec = match format.law() {
                G711::Alaw => Codec::G711Alaw,
                G711::Ulaw => Codec::G711Mulaw,
            };
            let id = w.add_stream(codec).unwrap_or(0xC0);
            (w, id)
        });
        Ok(Talk {
            dialog,
            dest,
            media_dest,
            format,
            ssrc,
            media,
            ps,
            samples: 0,
            seq: crate::core::random::u64() as u16,
            timestamp_base: crate::core::random::u64() as u32,
            partial: Vec::with_capacity(SAMPLES_PER_PACKET),
            bye_rx,
            packets: 0,
            bytes: 0,
        })
    }

    /// Whether the audio goes over TCP.
    pub fn is_tcp(&self) -> bool {
        !matches!(self.media, MediaOut::Udp(_))
    }

    /// Sends G.711 samples (one byte each, in this talk's law) in packets of 20 ms: samples
    /// short of a whole packet wait for the next call (a decoder's 1024-sample frames
    /// resampled to 8 kHz do not fall on 160).
    pub fn send(&mut self, samples: &[u8]) -> std::io::Result<()> {
        self.partial.extend_from_slice(samples);
        let whole = self.partial.len() / SAMPLES_PER_PACKET * SAMPLES_PER_PACKET;
        let pending = std::mem::take(&mut self.partial);
        let sent = pending[..whole]
            .chunks(SAMPLES_PER_PACKET)
            .try_for_each(|chunk| self.send_packet(chunk));
        self.partial = pending;
        self.partial.drain(..whole);
        sent
    }

    fn send_packet(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        // RTP timestamps: 8 kHz for G.711, 90 kHz for PS.
        let (payload, ticks) = match &mut self.ps {
            None => (None, self.samples),
            // One pack per packet (pack header, the map every second, one PES), a whole
            // frame each (the marker on every packet).
            Some((writer, stream_id)) => {
                let pts = self.samples * 90_000 / 8_000;
                let packet = writer
                    .write_frame(&PsFrame {
                        stream_id: *stream_id,
                        len: chunk.len(),
                        pts: Some(pts),
                        dts: None,
                        key: false,
                    })
                    .map_err(|e| std::io::Error::other(format!("PS: {e:?}")))?;
                let ps = packet
                    .to_contiguous(chunk)
                    .ok_or_else(|| std::io::Error::other("PS: payload mismatch"))?;
                (Some(ps), pts)
            }
        };
        let marker = self.samples == 0 || payload.is_some();
        let timestamp = self.timestamp_base.wrapping_add(ticks as u32);
        let body = payload.as_deref().unwrap_or(chunk);
        let mut pkt = Vec::with_capacity(12 + body.len());
        pkt.push(0x80);
        pkt.push(if marker { 0x80 } else { 0 } | self.format.payload_type());
        pkt.extend_from_slice(&self.seq.to_be_bytes());
        pkt.extend_from_slice(&timestamp.to_be_bytes());
        pkt.extend_from_slice(&self.ssrc.to_be_bytes());
        pkt.extend_from_slice(body);
        self.media.send(&pkt, self.media_dest)?;
        self.seq = self.seq.wrapping_add(1);
        self.samples += chunk.len() as u64;
        self.packets += 1;
        self.bytes += chunk.len() as u64;
        Ok(())
    }

    /// The device's BYE as a channel of its own, for a caller that waits on it (another
    /// thread, a select): [`ended_by_device`](Self::ended_by_device) no longer sees it.
    /// Disconnected once the dialog is gone (after [`hang_up`](Self::hang_up)).
    pub fn take_bye(&mut self) -> mpsc::Receiver<Message> {
        std::mem::replace(&mut self.bye_rx, mpsc::channel().1)
    }

    /// Whether the device hung up.
    pub fn ended_by_device(&self) -> bool {
        self.bye_rx.try_recv().is_ok()
    }

    /// Ends the talk from our side (BYE).
    pub fn hang_up(&self, ep: &Endpoint) {
        ep.remove_dialog(&self.dialog.call_id);
        let mut d = self.dialog.clone();
        let _ = ep.request(&d.bye(), self.dest);
    }
}

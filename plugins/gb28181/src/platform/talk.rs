//! The platform's side of a voice broadcast (§9.12) without GStreamer: tell the device to
//! call us (Broadcast MESSAGE), take its audio INVITE, answer `sendonly`, then send G.711
//! over RTP (UDP) to the address it offered until either side hangs up.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::call::{CallError, wait_for_device};
use crate::core::addr;
use crate::core::sdp;
use crate::core::sip::Message;
use crate::core::talk::{self, G711};
use crate::core::transaction::Dialog;
use crate::endpoint::Endpoint;

/// Samples per RTP packet: 20 ms at 8 kHz, what devices expect.
pub const SAMPLES_PER_PACKET: usize = 160;

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
    pub law: G711,
    pub ssrc: u32,
    socket: UdpSocket,
    seq: u16,
    timestamp: u32,
    first: bool,
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
        // The device calls back.
        let deadline = Instant::now() + p.invite_timeout;
        let invite = loop {
            if cancelled() {
                ep.forget_invite(&p.device_id);
                return Err(CallError::Cancelled);
            }
            match invites.recv_timeout(Duration::from_millis(50)) {
                Ok(m) => break m,
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                Err(_) => {
                    ep.forget_invite(&p.device_id);
                    return Err(CallError::NoAnswer {
                        device_id: p.device_id.clone(),
                        error: std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "no INVITE for the broadcast",
                        ),
                    });
                }
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
        let (Some(law), Some(media_dest), false) =
            (G711::of_offer(&offer), offer.media_addr(), offer.is_tcp())
        else {
            // Only G.711 over UDP for now.
            refuse(488, "Not Acceptable Here");
            return Err(CallError::BadAnswer);
        };
        let bind_ip = p.media_address.unwrap_or_else(|| {
            ep.local_ip_for(dest)
                .parse()
                .unwrap_or(addr::Family::of(dest.ip()).unspecified())
        });
        let bind = SocketAddr::new(bind_ip, 0);
        let socket =
            UdpSocket::bind(bind).map_err(|error| CallError::MediaSocket { bind, error })?;
        let local = socket
            .local_addr()
            .map_err(|error| CallError::MediaSocket { bind, error })?;
        let answer = talk::build_talk_answer(
            &offer,
            &p.source_id,
            &local.ip().to_string(),
            local.port(),
            law,
        );
        let (bye_tx, bye_rx) = mpsc::channel();
        let (dialog, dest) = ep
            .answer_invite(&invite, &answer, bye_tx)
            .map_err(CallError::MediaConnect)?;
        let ssrc = offer
            .ssrc
            .as_deref()
            .and_then(|y| y.trim().parse::<u32>().ok())
            .unwrap_or_else(|| crate::core::random::u64() as u32);
        Ok(Talk {
            dialog,
            dest,
            media_dest,
            law,
            ssrc,
            socket,
            seq: crate::core::random::u64() as u16,
            timestamp: crate::core::random::u64() as u32,
            first: true,
            bye_rx,
            packets: 0,
            bytes: 0,
        })
    }

    /// Sends G.711 samples (one byte each, in this talk's law), in packets of 20 ms.
    pub fn send(&mut self, samples: &[u8]) -> std::io::Result<()> {
        for chunk in samples.chunks(SAMPLES_PER_PACKET) {
            let mut pkt = Vec::with_capacity(12 + chunk.len());
            let marker = if self.first { 0x80 } else { 0 };
            pkt.push(0x80);
            pkt.push(marker | self.law.payload_type());
            pkt.extend_from_slice(&self.seq.to_be_bytes());
            pkt.extend_from_slice(&self.timestamp.to_be_bytes());
            pkt.extend_from_slice(&self.ssrc.to_be_bytes());
            pkt.extend_from_slice(chunk);
            self.socket.send_to(&pkt, self.media_dest)?;
            self.first = false;
            self.seq = self.seq.wrapping_add(1);
            self.timestamp = self.timestamp.wrapping_add(chunk.len() as u32);
            self.packets += 1;
            self.bytes += chunk.len() as u64;
        }
        Ok(())
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

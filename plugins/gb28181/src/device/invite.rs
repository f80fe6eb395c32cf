//! INVITEs from the platform (live, playback, download): the answer, our 200 re-sent until
//! the ACK, in-dialog requests, the end of a playback's file.

use super::*;

impl DeviceAgent {
    pub(super) fn retransmit_ok(&self, now: u64) {
        let mut guard = lock(&self.ok_retransmit);
        let Some(r) = guard.as_mut() else { return };
        if now >= r.give_up_at {
            // No ACK: the platform is gone; forget the session it asked for.
            let cid = r.call_id.clone();
            *guard = None;
            drop(guard);
            let mut pending = lock(&self.pending);
            if pending.as_ref().is_some_and(|(s, _)| s.call_id == cid) {
                *pending = None;
            }
            return;
        }
        // Over TCP the 200 is not re-sent (reliable transport), only given up on.
        if now >= r.next_at && !self.reliable() {
            let _ = self.send_bytes(&r.bytes, r.dest);
            r.interval = (r.interval * 2).min(crate::core::transaction::T2_MS);
            r.next_at = now + r.interval;
        }
    }

    /// Whether an in-dialog request belongs to the current (or the pending, not yet
    /// acknowledged) session's dialog.
    pub(super) fn in_dialog(&self, m: &Message, from: SocketAddr) -> bool {
        let current = lock(&self.dialog)
            .as_ref()
            .is_some_and(|d| d.matches(m, from));
        current
            || lock(&self.pending)
                .as_ref()
                .is_some_and(|(_, d)| d.matches(m, from))
    }

    pub(super) fn handle_invite(&self, m: &Message, from: SocketAddr) {
        let reply = |r: Message| {
            let _ = self.send_bytes(&r.to_bytes(), from);
        };
        // A retransmitted INVITE: answer with the same 200 again.
        if let Some(r) = lock(&self.ok_retransmit).as_ref()
            && Some(r.call_id.as_str()) == m.call_id()
        {
            let _ = self.send_bytes(&r.bytes, from);
            return;
        }
        if lock(&self.session)
            .as_ref()
            .is_some_and(|s| Some(s.call_id.as_str()) == m.call_id())
        {
            return;
        }
        let offer = match sdp::parse(&m.body) {
            Ok(o) => o,
            Err(_) => {
                reply(Message::response_to(m, 488, "Not Acceptable Here", None));
                return;
            }
        };
        // A playback or download being sent is not cut by a live request (a camera with
        // one media channel is busy until the file ends or the platform hangs up).
        if offer.session_name.eq_ignore_ascii_case("Play")
            && lock(&self.session)
                .as_ref()
                .is_some_and(|s| !s.kind.eq_ignore_ascii_case("Play"))
        {
            reply(Message::response_to(m, 486, "Busy Here", None));
            return;
        }
        reply(Message::response_to(m, 100, "Trying", None));
        let ssrc_str = offer
            .ssrc
            .clone()
            .or_else(|| m.header("subject").and_then(Subject::parse).map(|s| s.ssrc))
            .unwrap_or_else(|| "0000000001".into());
        let Some(Answered {
            session,
            dialog,
            ok,
        }) = self.answer(m, &offer, &self.config.channel_id, &ssrc_str, from)
        else {
            reply(Message::response_to(m, 488, "Not Acceptable Here", None));
            return;
        };
        // A new INVITE replaces the current session.
        if let Some(old) = lock(&self.session).take() {
            (self.on_event)(DeviceEvent::SessionStopped {
                call_id: old.call_id,
                reason: "replaced".into(),
            });
        }
        *lock(&self.pending) = Some((session, dialog));
        let now = now_ms();
        *lock(&self.ok_retransmit) = Some(OkRetransmit::new(m, &ok, from, now));
        reply(ok);
    }

    /// Our answer to `offer` (INVITE `m` from `from`) for `channel_id`: the media socket
    /// (UDP, TCP connected to the platform, or TCP listening for it), the dialog and the 200
    /// with our SDP. None when the offer cannot be served (no usable address, no socket).
    pub(super) fn answer(
        &self,
        m: &Message,
        offer: &sdp::SessionDescription,
        channel_id: &str,
        ssrc_str: &str,
        from: SocketAddr,
    ) -> Option<Answered> {
        let ssrc: u32 = ssrc_str.parse().unwrap_or(1);
        let dest = offer.media_addr();
        // Media from our SIP address, or (another family, or a wildcard) from the address
        // facing the platform's media address.
        let sip_ip = self.local_addr().ip();
        let local_ip = dest.and_then(|d| {
            if !sip_ip.is_unspecified() && addr::can_reach(sip_ip, d.ip()) {
                Some(sip_ip)
            } else {
                addr::local_ip_towards(d).ok()
            }
        });
        let out = match (offer.transport(), dest, local_ip) {
            (_, None, _) | (_, _, None) => None,
            (MediaTransport::Udp, Some(d), Some(local_ip)) => UdpSocket::bind((local_ip, 0))
                .ok()
                .map(|s| MediaOut::Udp(s, d)),
            (MediaTransport::TcpPassive, Some(d), _) => {
                TcpStream::connect_timeout(&d, Duration::from_secs(3))
                    .ok()
                    .map(|s| {
                        let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
                        let _ = s.set_nodelay(true);
                        MediaOut::Tcp(s)
                    })
            }
            (MediaTransport::TcpActive, Some(_), Some(local_ip)) => {
                TcpListener::bind((local_ip, 0))
                    .and_then(|l| {
                        l.set_nonblocking(true)?;
                        Ok(l)
                    })
                    .ok()
                    .map(MediaOut::Listening)
            }
        }?;
        let media_addr = match &out {
            MediaOut::Udp(s, _) => s.local_addr(),
            MediaOut::Tcp(s) => s.local_addr(),
            MediaOut::Listening(l) => l.local_addr(),
        }
        .ok()?;
        let answer = sdp::build_answer(
            offer,
            channel_id,
            &addr::canonical(media_addr).ip().to_string(),
            media_addr.port(),
            ssrc_str,
        );
        let tag = random::tag();
        let mut ok = Message::response_to(m, 200, "OK", Some(&tag));
        ok.add_header("Contact", self.contact(channel_id));
        ok.set_body("APPLICATION/SDP", answer.into_bytes());
        let call_id = m.call_id().unwrap_or_default().to_string();
        let dialog = Dialog {
            call_id: call_id.clone(),
            local: ok.header("to").unwrap_or_default().to_string(),
            remote: m.header("from").unwrap_or_default().to_string(),
            local_tag: tag,
            remote_tag: m
                .from()
                .and_then(|f| f.tag().map(str::to_string))
                .unwrap_or_default(),
            peer: from,
            remote_target: m
                .contact()
                .map(|c| c.uri)
                .unwrap_or_else(|| format!("sip:{}@{}", self.config.server_id, from)),
            cseq: 0,
        };
        let session = MediaSession {
            call_id,
            kind: offer.session_name.clone(),
            range: (!offer.session_name.eq_ignore_ascii_case("Play") && offer.end > offer.start)
                .then_some((offer.start, offer.end)),
            download_speed: offer.download_speed,
            out,
            ssrc,
            seq: random::u64() as u16,
            need_gop: true,
            active: true,
            file_end_at: (!offer.session_name.eq_ignore_ascii_case("Play")
                && offer.end > offer.start)
                .then(|| now_ms().saturating_add((offer.end - offer.start).saturating_mul(1000))),
            file_ended: false,
            packets: 0,
            bytes: 0,
        };
        Some(Answered {
            session,
            dialog,
            ok,
        })
    }

    /// The input ended: for a Playback / Download session, tell the platform the "file"
    /// ended (MediaStatus 121), as devices do at the end of a recording.
    pub fn end_of_media(&self) {
        let kind = lock(&self.session).as_ref().map(|s| s.kind.clone());
        if kind.is_some_and(|k| !k.eq_ignore_ascii_case("Play")) {
            let sn = (now_ms() % 100_000) as u32;
            let body = manscdp::build_media_status(sn, &self.config.device_id, 121);
            let _ = self.send(&self.new_message(&body));
        }
    }

    /// Answers a MANSRTSP INFO of a dialog (200, or 400 when malformed or out of range: the
    /// session goes on) and returns what it asks.
    pub(super) fn playback_control(&self, m: &Message, from: SocketAddr) -> Option<DeviceEvent> {
        let reply = |r: Message| {
            let _ = self.send_bytes(&r.to_bytes(), from);
        };
        let (method, scale, npt) = match mansrtsp::Request::parse(&m.body) {
            Ok(r) => match r.command {
                mansrtsp::Command::Play { npt, scale } => ("PLAY", scale, npt),
                mansrtsp::Command::Pause => ("PAUSE", None, None),
            },
            Err(_) => {
                reply(Message::response_to(m, 400, "Bad Request", None));
                return None;
            }
        };
        reply(Message::response_to(m, 200, "OK", None));
        Some(DeviceEvent::PlaybackControl {
            call_id: m.call_id().unwrap_or_default().to_string(),
            method: method.into(),
            scale,
            npt,
        })
    }

    pub(super) fn in_dialog_request(&self, d: &Dialog, method: &str) -> Message {
        let mut m = Message::request(method, &d.remote_target);
        m.add_header("Via", self.via())
            .add_header("From", d.local.clone())
            .add_header("To", d.remote.clone())
            .add_header("Call-ID", d.call_id.clone())
            .add_header("CSeq", format!("{} {method}", d.cseq))
            .add_header("Max-Forwards", "70");
        m
    }
}

/// What [`DeviceAgent::answer`] makes of an INVITE.
pub(super) struct Answered {
    pub(super) session: MediaSession,
    pub(super) dialog: Dialog,
    pub(super) ok: Message,
}

impl OkRetransmit {
    /// Our 200 `ok` to INVITE `m` from `dest`, re-sent from `now` on until the ACK.
    pub(super) fn new(m: &Message, ok: &Message, dest: SocketAddr, now: u64) -> OkRetransmit {
        OkRetransmit {
            call_id: m.call_id().unwrap_or_default().to_string(),
            bytes: ok.to_bytes(),
            dest,
            next_at: now + crate::core::transaction::T1_MS,
            interval: crate::core::transaction::T1_MS,
            give_up_at: now + 64 * crate::core::transaction::T1_MS,
        }
    }
}

pub(super) fn no_dialog(m: &Message) -> Message {
    Message::response_to(m, 481, "Call/Transaction Does Not Exist", None)
}

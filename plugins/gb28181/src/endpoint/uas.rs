//! INVITEs that devices send to the platform: the audio leg of a voice broadcast (§9.12),
//! where the device INVITEs the platform's audio source after a Broadcast notification.
//! An INVITE is taken only from a registered device, from its registered address (over TCP:
//! its connection), for a source some caller is waiting for
//! ([`Endpoint::expect_invite`]); anything else is refused (403, or 603 when nobody waits).
//! Our 200 is re-sent until the ACK comes (RFC 3261 §13.3.1.4, UDP), at most 32 s.
//!
//! Limits: at most [`MAX_INVITE_WAITERS`] waiting callers and [`MAX_DIALOGS`] pending 200s.

use super::*;
use crate::core::transaction::T2_MS;

/// Callers waiting for a device's INVITE at once.
pub const MAX_INVITE_WAITERS: usize = 1024;

/// A caller waiting for `device_id` to INVITE `source_id`.
pub(super) struct InviteWaiter {
    source_id: String,
    tx: mpsc::Sender<Message>,
}

/// Our 200 to a device's INVITE, re-sent until its ACK.
pub(super) struct UasOk {
    bytes: Vec<u8>,
    dest: SocketAddr,
    next_at: u64,
    interval: u64,
    give_up_at: u64,
}

/// The To user of a request (whom it is for).
fn to_user(msg: &Message) -> Option<String> {
    msg.to()?.sip_uri().and_then(|u| u.user)
}

impl Endpoint {
    /// Waits for registered `device_id` to INVITE `source_id` (our audio source): the
    /// INVITE arrives on the returned channel, already answered 100; answer it with
    /// [`Endpoint::answer_invite`]. A later call for the same device replaces the waiter.
    pub fn expect_invite(
        &self,
        device_id: &str,
        source_id: &str,
    ) -> io::Result<mpsc::Receiver<Message>> {
        let (tx, rx) = mpsc::channel();
        let mut inner = lock(&self.inner);
        if !inner.invite_waiters.contains_key(device_id)
            && inner.invite_waiters.len() >= MAX_INVITE_WAITERS
        {
            return Err(io::Error::other("too many callers waiting for an INVITE"));
        }
        inner.invite_waiters.insert(
            device_id.to_string(),
            InviteWaiter {
                source_id: source_id.to_string(),
                tx,
            },
        );
        Ok(rx)
    }

    /// Stops waiting for `device_id`'s INVITE.
    pub fn forget_invite(&self, device_id: &str) {
        lock(&self.inner).invite_waiters.remove(device_id);
    }

    /// Answers a device's INVITE (from [`Endpoint::expect_invite`]) with 200 and `sdp`; the
    /// dialog's in-dialog requests (BYE) go to `owner`. Returns the dialog (to hang up with
    /// [`Dialog::bye`]) and the device's address.
    pub fn answer_invite(
        &self,
        invite: &Message,
        sdp: &str,
        owner: mpsc::Sender<Message>,
    ) -> io::Result<(Dialog, SocketAddr)> {
        let device = registrar::user_of(invite.from())
            .ok_or_else(|| io::Error::other("INVITE without a From user"))?;
        let dest = self
            .device_addr(&device)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "device not registered"))?;
        let tag = random::tag();
        let mut ok = Message::response_to(invite, 200, "OK", Some(&tag));
        let (server_id, ip) = (self.server_id(), self.local_ip_for(dest));
        ok.add_header(
            "Contact",
            format!(
                "<sip:{server_id}@{}>",
                addr::host_port(&ip, self.local_addr.port())
            ),
        );
        ok.set_body("APPLICATION/SDP", sdp.as_bytes().to_vec());
        let remote_target = invite
            .contact()
            .map(|c| c.uri)
            .unwrap_or_else(|| format!("sip:{device}@{dest}"));
        let dialog = Dialog {
            call_id: invite.call_id().unwrap_or_default().to_string(),
            local_tag: tag,
            remote_tag: invite
                .from()
                .and_then(|f| f.tag().map(str::to_string))
                .unwrap_or_default(),
            local: ok.header("to").unwrap_or_default().to_string(),
            remote: invite.header("from").unwrap_or_default().to_string(),
            remote_target,
            invite_cseq: 0,
            local_cseq: 0,
            via_base: format!(
                "SIP/2.0/{} {};rport",
                self.key.transport.as_str(),
                addr::host_port(&ip, self.local_addr.port())
            ),
            contact: ok.header("contact").map(str::to_string),
        };
        self.add_dialog(&dialog, dest, owner, None);
        let mut stamped = ok;
        stamped.stamp_via_source(dest);
        let bytes = stamped.to_bytes();
        self.send_bytes(&bytes, dest)?;
        if self.key.transport == SipTransport::Udp {
            let now = now_ms();
            let mut inner = lock(&self.inner);
            if inner.uas_oks.len() < MAX_DIALOGS {
                inner.uas_oks.insert(
                    dialog.call_id.clone(),
                    UasOk {
                        bytes,
                        dest,
                        next_at: now + crate::core::transaction::T1_MS,
                        interval: crate::core::transaction::T1_MS,
                        give_up_at: now + 64 * crate::core::transaction::T1_MS,
                    },
                );
            }
        }
        Ok((dialog, dest))
    }

    /// An INVITE that arrived: see the module docs for when it is taken.
    pub(super) fn handle_invite(
        &self,
        msg: &Message,
        peer: Peer,
        now: u64,
    ) -> (Option<Message>, Vec<EndpointEvent>) {
        let call_id = msg.call_id().unwrap_or_default().to_string();
        let mut inner = lock(&self.inner);
        // A retransmission of one we answered: the same 200 again.
        if let Some(ok) = inner.uas_oks.get(&call_id) {
            let (bytes, dest) = (ok.bytes.clone(), ok.dest);
            drop(inner);
            let _ = self.send_bytes(&bytes, dest);
            return (None, vec![]);
        }
        let sender = registrar::user_of(msg.from()).unwrap_or_default();
        let src = peer.addr.to_string();
        let refuse = |inner: &mut Inner, reason| {
            let ev = inner.registrar.forged(&sender, &src, "INVITE", reason);
            (
                Some(Message::response_to(msg, 403, "Forbidden", None)),
                wrap(vec![ev]),
            )
        };
        if let Err((_, ev)) = inner.registrar.check_id(&sender, &src, "INVITE") {
            return (
                Some(Message::response_to(msg, 403, "Forbidden", None)),
                wrap(vec![ev]),
            );
        }
        match inner.registrar.check_sender(&sender, &src, now) {
            SenderCheck::Registered => {}
            SenderCheck::NotRegistered => return refuse(&mut inner, reason::NOT_REGISTERED),
            SenderCheck::WrongSource => return refuse(&mut inner, reason::WRONG_SOURCE),
        }
        if let Some(c) = peer.connection
            && inner.device_conns.get(&sender) != Some(&c)
        {
            return refuse(&mut inner, reason::WRONG_CONNECTION);
        }
        let wanted = inner
            .invite_waiters
            .get(&sender)
            .is_some_and(|w| to_user(msg).as_deref() == Some(w.source_id.as_str()));
        if !wanted {
            return (
                Some(Message::response_to(msg, 603, "Decline", None)),
                vec![],
            );
        }
        let w = inner.invite_waiters.remove(&sender).expect("checked above");
        drop(inner);
        if w.tx.send(msg.clone()).is_err() {
            return (
                Some(Message::response_to(
                    msg,
                    480,
                    "Temporarily Unavailable",
                    None,
                )),
                vec![],
            );
        }
        (Some(Message::response_to(msg, 100, "Trying", None)), vec![])
    }

    /// The ACK to one of our 200s: stop re-sending it.
    pub(super) fn handle_ack(&self, msg: &Message) {
        if let Some(cid) = msg.call_id() {
            lock(&self.inner).uas_oks.remove(cid);
        }
    }

    /// Timer work: re-send 200s that got no ACK yet (doubling up to T2), give up after 32 s.
    pub(super) fn poll_uas(&self, now: u64) {
        let mut resend = Vec::new();
        lock(&self.inner).uas_oks.retain(|_, ok| {
            if now >= ok.give_up_at {
                return false;
            }
            if now >= ok.next_at {
                resend.push((ok.bytes.clone(), ok.dest));
                ok.interval = (ok.interval * 2).min(T2_MS);
                ok.next_at = now + ok.interval;
            }
            true
        });
        for (b, d) in resend {
            let _ = self.send_bytes(&b, d);
        }
    }
}

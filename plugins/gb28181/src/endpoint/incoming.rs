//! Requests and responses that arrive: REGISTER to the registrar, MESSAGE/NOTIFY (MANSCDP) from
//! registered devices only, in-dialog BYE/INFO, responses to our transactions.

use super::*;
use crate::core::notify;

impl Endpoint {
    /// Handles one incoming datagram from `source` (public for tests and the fuzz-like
    /// vector tests).
    pub fn handle_datagram(&self, data: &[u8], source: SocketAddr) {
        let source = addr::canonical(source);
        self.messages_in.fetch_add(1, Ordering::Relaxed);
        match Message::parse(data) {
            Ok(m) => self.handle_message(m, Peer::udp(source)),
            Err(_) => {
                self.parse_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub(super) fn handle_message(&self, msg: Message, peer: Peer) {
        let now = now_ms();
        if !msg.is_request() {
            self.handle_response(msg, now);
            self.wake_waiters();
            return;
        }
        let method = msg.method().unwrap_or_default().to_ascii_uppercase();
        let (response, events) = match method.as_str() {
            "REGISTER" => {
                let mut inner = lock(&self.inner);
                let out = inner
                    .registrar
                    .handle_register(&msg, &peer.addr.to_string(), now);
                let events = wrap(out.events);
                inner.track_bindings(&events, peer.connection);
                // Queued before the lock goes: whoever sees the device registered finds its
                // event queued (what `Endpoint::flush_events` waits for).
                self.publish(events);
                let mut response = out.response;
                // Cameras set their clock from it: the wall clock, not the timers' clock.
                if response.header("date").is_some() {
                    let offset = inner.registrar.config.utc_offset_minutes;
                    response.set_header("Date", registrar::format_gb_date(wall_ms(), offset));
                }
                (Some(response), vec![])
            }
            "MESSAGE" | "NOTIFY" => self.handle_manscdp(&msg, &method, peer, now),
            "BYE" | "INFO" => self.handle_in_dialog(&msg, &method, peer),
            "INVITE" => self.handle_invite(&msg, peer, now),
            "ACK" => {
                self.handle_ack(&msg);
                (None, vec![])
            }
            "OPTIONS" => (Some(Message::response_to(&msg, 200, "OK", None)), vec![]),
            _ => (
                Some(Message::response_to(&msg, 501, "Not Implemented", None)),
                vec![],
            ),
        };
        let accepted = response
            .as_ref()
            .is_some_and(|r| r.status().is_some_and(|s| (200..300).contains(&s)));
        if let Some(mut r) = response {
            r.stamp_via_source(peer.addr);
            let _ = self.send_to(&r, reply_addr(&msg, peer.addr, self.key.transport));
        }
        let mut events = events;
        if accepted && method == "NOTIFY" {
            events.extend(self.note_notify(&msg, now));
        }
        // Alarms are answered with a Response of their own (§9.4), after the 200.
        for e in &events {
            if let EndpointEvent::Alarm { device_id, alarm } = e {
                let body = notify::build_alarm_response(alarm.sn, &alarm.device_id);
                let _ = self.send_manscdp(device_id, &alarm.device_id, &body);
            }
        }
        self.publish(events);
        // A registration, a keepalive confirming a binding, a device's INVITE: whatever a
        // waiter waits for has been applied by now.
        self.wake_waiters();
    }

    /// BYE / INFO: only with the dialog's Call-ID, both its tags, from its peer.
    pub(super) fn handle_in_dialog(
        &self,
        msg: &Message,
        method: &str,
        peer: Peer,
    ) -> (Option<Message>, Vec<EndpointEvent>) {
        let no_dialog = || {
            Some(Message::response_to(
                msg,
                481,
                "Call/Transaction Does Not Exist",
                None,
            ))
        };
        let call_id = msg.call_id().unwrap_or_default();
        let mut inner = lock(&self.inner);
        let Some(d) = inner.dialogs.get(call_id) else {
            return (no_dialog(), vec![]);
        };
        let tag = |na: Option<NameAddr>| na.and_then(|n| n.tag().map(str::to_string));
        let matches = tag(msg.from()).as_deref() == Some(d.remote_tag.as_str())
            && tag(msg.to()).as_deref() == Some(d.local_tag.as_str())
            && peer.addr == d.peer;
        if !matches {
            let who = registrar::user_of(msg.from()).unwrap_or_default();
            let ev = inner.registrar.forged(
                &who,
                &peer.addr.to_string(),
                method,
                reason::DIALOG_MISMATCH,
            );
            return (no_dialog(), wrap(vec![ev]));
        }
        if method == "BYE"
            && let Some(d) = inner.dialogs.remove(call_id)
        {
            let _ = d.owner.send(msg.clone());
            if let Some(w) = &d.wake {
                w();
            }
        }
        (Some(Message::response_to(msg, 200, "OK", None)), vec![])
    }

    /// MESSAGE / NOTIFY with a MANSCDP body, from device D = the From user: see the module
    /// docs for when it is believed.
    pub(super) fn handle_manscdp(
        &self,
        msg: &Message,
        method: &str,
        peer: Peer,
        now: u64,
    ) -> (Option<Message>, Vec<EndpointEvent>) {
        let parsed = match Manscdp::parse(&msg.body) {
            Ok(p) => p,
            Err(_) => {
                return (
                    Some(Message::response_to(msg, 400, "Bad Request", None)),
                    vec![],
                );
            }
        };
        let src = peer.addr.to_string();
        let forbidden = || Some(Message::response_to(msg, 403, "Forbidden", None));
        let ok = Some(Message::response_to(msg, 200, "OK", None));
        let mut inner = lock(&self.inner);
        let sender = registrar::user_of(msg.from()).unwrap_or_default();
        if let Err((_, ev)) = inner.registrar.check_id(&sender, &src, "MESSAGE") {
            return (forbidden(), wrap(vec![ev]));
        }
        let body_id = parsed.device_id();
        if body_id != sender
            && !inner
                .channels
                .get(&sender)
                .is_some_and(|c| c.contains(body_id))
        {
            let ev = inner
                .registrar
                .forged(&sender, &src, method, reason::BODY_ID_MISMATCH);
            return (forbidden(), wrap(vec![ev]));
        }
        let keepalive = matches!(parsed, Manscdp::Keepalive(_));
        match inner.registrar.check_sender(&sender, &src, now) {
            SenderCheck::Registered => {
                if let Some(c) = peer.connection
                    && inner.device_conns.get(&sender) != Some(&c)
                {
                    let ev =
                        inner
                            .registrar
                            .forged(&sender, &src, method, reason::WRONG_CONNECTION);
                    return (forbidden(), wrap(vec![ev]));
                }
            }
            // The registrar refuses keepalives itself (404 so that the device registers).
            _ if keepalive => {}
            SenderCheck::NotRegistered => {
                let ev = inner
                    .registrar
                    .forged(&sender, &src, method, reason::NOT_REGISTERED);
                return (forbidden(), wrap(vec![ev]));
            }
            SenderCheck::WrongSource => {
                let ev = inner
                    .registrar
                    .forged(&sender, &src, method, reason::WRONG_SOURCE);
                return (forbidden(), wrap(vec![ev]));
            }
        }
        match parsed {
            Manscdp::Keepalive(k) => {
                let out = inner.registrar.handle_keepalive(msg, &k, &src, now);
                // Under the lock, as for REGISTER (a keepalive may confirm a binding).
                self.publish(wrap(out.events));
                (Some(out.response), vec![])
            }
            Manscdp::Catalog(mut list) => {
                // The list is the sender's (its body may name one of its channels).
                list.device_id = sender.clone();
                let mut invalid = 0usize;
                let mut example = String::new();
                let policy = inner.registrar.config.id_policy.clone();
                list.items.retain(|i| {
                    let valid = policy.is_valid(&i.device_id);
                    if !valid {
                        if invalid == 0 {
                            example = printable(&i.device_id);
                        }
                        invalid += 1;
                    }
                    valid
                });
                let before = inner.catalogs.dropped;
                let done = inner.catalogs.add_part(list, invalid, now);
                let over = (inner.catalogs.dropped - before) as usize;
                let mut events = Vec::new();
                if invalid + over > 0 {
                    inner.catalog_items_dropped += (invalid + over) as u64;
                    events.push(EndpointEvent::CatalogItemsDropped {
                        device_id: sender.clone(),
                        invalid: invalid as u32,
                        over_limit: over as u32,
                        example,
                    });
                }
                if let Some(l) = done {
                    events.extend(inner.catalog_event(l));
                }
                (ok, events)
            }
            Manscdp::RecordInfo(mut list) => {
                // Merged and told as the answer of the device that sent it: an NVR or a
                // lower platform answers for one of its channels (its DeviceID), and each
                // item names its channel.
                list.device_id = sender.clone();
                let done = inner.records.add(list, now);
                let ev = done
                    .map(|l| EndpointEvent::RecordInfo {
                        device_id: l.device_id,
                        sn: l.sn,
                        sum_num: l.sum_num,
                        items: l.items,
                    })
                    .into_iter()
                    .collect();
                (ok, ev)
            }
            Manscdp::MediaStatus {
                device_id,
                notify_type,
                ..
            } => (
                ok,
                vec![EndpointEvent::MediaStatus {
                    device_id: sender.clone(),
                    channel_id: device_id,
                    notify_type,
                }],
            ),
            Manscdp::CatalogNotify(mut list) => {
                let policy = inner.registrar.config.id_policy.clone();
                let before = list.items.len();
                list.items.retain(|i| policy.is_valid(&i.device_id));
                let invalid = before - list.items.len();
                let mut events = Vec::new();
                if invalid > 0 {
                    inner.catalog_items_dropped += invalid as u64;
                    events.push(EndpointEvent::CatalogItemsDropped {
                        device_id: sender.clone(),
                        invalid: invalid as u32,
                        over_limit: 0,
                        example: String::new(),
                    });
                }
                // Added channels are believed from now on (within the channel budget);
                // deleted ones no more.
                for i in &list.items {
                    if i.event.eq_ignore_ascii_case("DEL") {
                        if let Some(set) = inner.channels.get_mut(&sender) {
                            set.remove(&i.device_id);
                        }
                    } else {
                        inner.note_channel(&sender, &i.device_id);
                    }
                }
                events.push(EndpointEvent::CatalogChanged {
                    device_id: sender.clone(),
                    items: list.items,
                });
                (ok, events)
            }
            Manscdp::Alarm(alarm) => (
                ok,
                vec![EndpointEvent::Alarm {
                    device_id: sender.clone(),
                    alarm,
                }],
            ),
            Manscdp::MobilePosition(position) => (
                ok,
                vec![EndpointEvent::MobilePosition {
                    device_id: sender.clone(),
                    position,
                }],
            ),
            Manscdp::DeviceInfo { sn, info } => (ok, vec![EndpointEvent::DeviceInfo { sn, info }]),
            Manscdp::DeviceStatus { sn, status } => {
                (ok, vec![EndpointEvent::DeviceStatus { sn, status }])
            }
            _ => (ok, vec![]),
        }
    }

    pub(super) fn handle_response(&self, msg: Message, now: u64) {
        let Some(key) = tx_key(&msg) else { return };
        let status = msg.status().unwrap_or(0);
        let mut inner = lock(&self.inner);
        if let Some(p) = inner.transactions.get_mut(&key) {
            match p.tx.on_response(status, now) {
                TxAction::Deliver => {
                    let _ = p.reply.send(TxReply::Response(msg));
                }
                TxAction::ResendAck => {}
                _ => {}
            }
            if p.tx.is_terminated() {
                inner.transactions.remove(&key);
            }
            return;
        }
        // A retransmitted 2xx to an INVITE whose transaction is over: ACK again.
        if key.2 == "INVITE"
            && (200..300).contains(&status)
            && let Some((ack, dest)) = inner.dialogs.get(&key.0).and_then(|d| d.ack.clone())
        {
            drop(inner);
            let _ = self.send_bytes(&ack, dest);
        }
    }
}

pub(super) fn tx_key(msg: &Message) -> Option<(String, u32, String)> {
    let cseq = msg.cseq()?;
    Some((
        msg.call_id()?.to_string(),
        cseq.seq,
        cseq.method.to_ascii_uppercase(),
    ))
}

/// Where to answer a request: over TCP the connection it came on; over UDP the source
/// address (symmetric response routing, what cameras behind NAT need: `rport`).
pub(super) fn reply_addr(_req: &Message, source: SocketAddr, _t: SipTransport) -> SocketAddr {
    source
}

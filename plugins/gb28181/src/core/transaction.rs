//! RFC 3261 §17.1 client transactions over UDP as pure state machines driven by `now` (ms),
//! and dialog bookkeeping for the platform's INVITE / ACK / BYE / INFO (the MANSRTSP bodies
//! of playback control: [`super::mansrtsp`]).

use super::sip::{Message, NameAddr};

pub const T1_MS: u64 = 500;
pub const T2_MS: u64 = 4_000;
pub const T4_MS: u64 = 5_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionKind {
    Invite,
    NonInvite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxState {
    /// INVITE: Calling; non-INVITE: Trying.
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

/// What the owner should do after feeding the transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxAction {
    None,
    /// Send the request again (Timer A / E).
    Retransmit,
    /// Timer B / F fired: report a timeout (408) to the user.
    Timeout,
    /// Pass this response up (first of each final, every provisional).
    Deliver,
    /// A retransmitted final response to a completed INVITE: re-send the ACK.
    ResendAck,
}

#[derive(Debug, Clone)]
pub struct ClientTransaction {
    pub kind: TransactionKind,
    pub state: TxState,
    /// Retransmit timer (A or E) deadline and current interval.
    retransmit_at: Option<u64>,
    interval: u64,
    /// Timeout timer (B or F) deadline.
    timeout_at: Option<u64>,
    /// Timer D / K deadline (Completed → Terminated).
    linger_until: Option<u64>,
    /// Over a reliable transport (TCP) requests are never retransmitted (RFC 3261 §17.1.1.2,
    /// §17.1.2.2: Timers A and E are not started); Timers B / F still end the transaction.
    reliable: bool,
}

impl ClientTransaction {
    /// Starts the transaction; the request has just been sent at `now`.
    pub fn new(kind: TransactionKind, now: u64) -> Self {
        ClientTransaction {
            kind,
            state: TxState::Trying,
            retransmit_at: Some(now + T1_MS),
            interval: T1_MS,
            timeout_at: Some(now + 64 * T1_MS),
            linger_until: None,
            reliable: false,
        }
    }

    /// Like [`ClientTransaction::new`], for a request sent over a reliable transport (TCP):
    /// no retransmissions, only the timeout.
    pub fn new_reliable(kind: TransactionKind, now: u64) -> Self {
        ClientTransaction {
            retransmit_at: None,
            reliable: true,
            ..ClientTransaction::new(kind, now)
        }
    }

    /// Feeds a response with `status`.
    pub fn on_response(&mut self, status: u16, now: u64) -> TxAction {
        match (self.kind, self.state) {
            (_, TxState::Terminated) => TxAction::None,
            (TransactionKind::Invite, TxState::Completed) => {
                if status >= 300 {
                    TxAction::ResendAck
                } else {
                    TxAction::None
                }
            }
            (TransactionKind::NonInvite, TxState::Completed) => TxAction::None,
            (kind, _) => {
                if status < 200 {
                    self.state = TxState::Proceeding;
                    if kind == TransactionKind::Invite {
                        // Timer A stops once a provisional response arrives.
                        self.retransmit_at = None;
                    } else {
                        // Timer E continues at T2 in Proceeding (UDP only).
                        self.interval = T2_MS;
                        self.retransmit_at = (!self.reliable).then_some(now + T2_MS);
                    }
                    return TxAction::Deliver;
                }
                self.retransmit_at = None;
                self.timeout_at = None;
                if kind == TransactionKind::Invite && status < 300 {
                    // 2xx: the transaction ends, the dialog (TU) sends ACK.
                    self.state = TxState::Terminated;
                } else {
                    self.state = TxState::Completed;
                    // Timers D and K are zero over a reliable transport.
                    let linger = match (kind, self.reliable) {
                        (_, true) => 0,
                        (TransactionKind::Invite, false) => 32_000,
                        (TransactionKind::NonInvite, false) => T4_MS,
                    };
                    self.linger_until = Some(now + linger);
                }
                TxAction::Deliver
            }
        }
    }

    /// Advances timers.
    pub fn poll(&mut self, now: u64) -> TxAction {
        if let Some(t) = self.linger_until
            && now >= t
        {
            self.state = TxState::Terminated;
            self.linger_until = None;
            return TxAction::None;
        }
        if let Some(t) = self.timeout_at
            && now >= t
        {
            self.state = TxState::Terminated;
            self.timeout_at = None;
            self.retransmit_at = None;
            return TxAction::Timeout;
        }
        if let Some(t) = self.retransmit_at
            && now >= t
        {
            self.interval = match self.kind {
                TransactionKind::Invite => self.interval * 2,
                TransactionKind::NonInvite => (self.interval * 2).min(T2_MS),
            };
            self.retransmit_at = Some(now + self.interval);
            return TxAction::Retransmit;
        }
        TxAction::None
    }

    pub fn next_deadline(&self) -> Option<u64> {
        [self.retransmit_at, self.timeout_at, self.linger_until]
            .into_iter()
            .flatten()
            .min()
    }

    pub fn is_terminated(&self) -> bool {
        self.state == TxState::Terminated
    }
}

/// An INVITE dialog from the caller's (platform's) side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
    /// From header value of the INVITE (with our tag).
    pub local: String,
    /// To header value of the 200 OK (with their tag).
    pub remote: String,
    /// Where in-dialog requests go: the 200's Contact, else the INVITE's Request-URI.
    pub remote_target: String,
    pub invite_cseq: u32,
    pub local_cseq: u32,
    /// Via header for new requests (branch replaced per request).
    pub via_base: String,
    pub contact: Option<String>,
}

/// The Via with its branch parameter replaced.
fn via_with_branch(via: &str, branch: &str) -> String {
    let kept: Vec<&str> = via
        .split(';')
        .filter(|p| !p.trim().to_ascii_lowercase().starts_with("branch="))
        .collect();
    format!("{};branch={branch}", kept.join(";"))
}

impl Dialog {
    /// Builds the dialog from the INVITE we sent and its 2xx answer.
    pub fn from_invite(invite: &Message, ok: &Message) -> Option<Dialog> {
        let from = invite.from()?;
        let to = ok.to()?;
        let cseq = invite.cseq()?;
        let remote_target = ok
            .contact()
            .map(|c| c.uri)
            .or_else(|| invite.uri().map(str::to_string))?;
        Some(Dialog {
            call_id: invite.call_id()?.to_string(),
            local_tag: from.tag()?.to_string(),
            remote_tag: to.tag()?.to_string(),
            local: invite.header("from")?.to_string(),
            remote: ok.header("to")?.to_string(),
            remote_target,
            invite_cseq: cseq.seq,
            local_cseq: cseq.seq,
            via_base: invite.header("via")?.to_string(),
            contact: invite.header("contact").map(str::to_string),
        })
    }

    fn request(&self, method: &str, cseq: u32) -> Message {
        let mut m = Message::request(method, &self.remote_target);
        m.add_header(
            "Via",
            // Every request is a new transaction: a new random branch.
            via_with_branch(&self.via_base, &super::random::branch()),
        );
        m.add_header("From", self.local.clone());
        m.add_header("To", self.remote.clone());
        m.add_header("Call-ID", self.call_id.clone());
        m.add_header("CSeq", format!("{cseq} {method}"));
        if let Some(c) = &self.contact {
            m.add_header("Contact", c.clone());
        }
        m.add_header("Max-Forwards", "70");
        m
    }

    /// ACK for the 2xx: same CSeq number as the INVITE.
    pub fn ack(&self) -> Message {
        self.request("ACK", self.invite_cseq)
    }

    /// BYE with the next CSeq.
    pub fn bye(&mut self) -> Message {
        self.local_cseq += 1;
        self.request("BYE", self.local_cseq)
    }

    /// Any in-dialog request with the next CSeq (e.g. a SUBSCRIBE refresh).
    pub fn next_request(&mut self, method: &str) -> Message {
        self.local_cseq += 1;
        self.request(method, self.local_cseq)
    }

    /// INFO carrying a MANSRTSP body, with the next CSeq.
    pub fn info(&mut self, mansrtsp: &str) -> Message {
        self.local_cseq += 1;
        let mut m = self.request("INFO", self.local_cseq);
        m.set_body("Application/MANSRTSP", mansrtsp.as_bytes().to_vec());
        m
    }

    /// Whether an incoming request belongs to this dialog (Call-ID and both tags).
    pub fn matches(&self, req: &Message) -> bool {
        let tag = |na: Option<NameAddr>| na.and_then(|n| n.tag().map(str::to_string));
        req.call_id() == Some(self.call_id.as_str())
            && tag(req.from()).as_deref() == Some(self.remote_tag.as_str())
            && tag(req.to()).as_deref() == Some(self.local_tag.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invite_timers_a_b() {
        let mut t = ClientTransaction::new(TransactionKind::Invite, 0);
        let mut sends = vec![];
        let mut now = 0;
        while !t.is_terminated() && now <= 40_000 {
            if t.poll(now) == TxAction::Retransmit {
                sends.push(now);
            }
            now += 100;
        }
        // A: 500, 1500, 3500, 7500, 15500, 31500; B at 32000.
        assert_eq!(sends, vec![500, 1500, 3500, 7500, 15500, 31500]);
        assert_eq!(now, 32_100);
    }

    #[test]
    fn invite_provisional_then_ok() {
        let mut t = ClientTransaction::new(TransactionKind::Invite, 0);
        assert_eq!(t.on_response(100, 100), TxAction::Deliver);
        assert_eq!(t.poll(5_000), TxAction::None);
        assert_eq!(t.on_response(200, 6_000), TxAction::Deliver);
        assert!(t.is_terminated());
        let mut t = ClientTransaction::new(TransactionKind::Invite, 0);
        assert_eq!(t.on_response(486, 10), TxAction::Deliver);
        assert_eq!(t.on_response(486, 20), TxAction::ResendAck);
        assert_eq!(t.poll(32_010), TxAction::None);
        assert!(t.is_terminated());
    }

    #[test]
    fn non_invite_timers_e_f() {
        let mut t = ClientTransaction::new(TransactionKind::NonInvite, 0);
        let mut sends = vec![];
        let mut timeout = None;
        for now in (0..=40_000).step_by(100) {
            match t.poll(now) {
                TxAction::Retransmit => sends.push(now),
                TxAction::Timeout => timeout = Some(now),
                _ => {}
            }
        }
        assert_eq!(&sends[..5], &[500, 1500, 3500, 7500, 11500]);
        assert_eq!(timeout, Some(32_000));
        let mut t = ClientTransaction::new(TransactionKind::NonInvite, 0);
        t.on_response(100, 0);
        assert_eq!(t.poll(3_999), TxAction::None);
        assert_eq!(t.poll(4_000), TxAction::Retransmit);
        assert_eq!(t.on_response(200, 4_100), TxAction::Deliver);
        assert_eq!(t.next_deadline(), Some(9_100));
        t.poll(9_100);
        assert!(t.is_terminated());
    }

    #[test]
    fn reliable_never_retransmits() {
        let mut t = ClientTransaction::new_reliable(TransactionKind::NonInvite, 0);
        for now in (0..64 * T1_MS).step_by(100) {
            assert_eq!(t.poll(now), TxAction::None, "at {now}");
        }
        assert_eq!(t.poll(64 * T1_MS), TxAction::Timeout);
        let mut t = ClientTransaction::new_reliable(TransactionKind::NonInvite, 0);
        assert_eq!(t.on_response(100, 10), TxAction::Deliver);
        assert_eq!(t.poll(10 + T2_MS), TxAction::None);
        assert_eq!(t.on_response(200, 20), TxAction::Deliver);
        assert_eq!(t.poll(20), TxAction::None);
        assert!(t.is_terminated());
        let mut t = ClientTransaction::new_reliable(TransactionKind::Invite, 0);
        assert_eq!(t.poll(T1_MS * 4), TxAction::None);
        assert_eq!(t.poll(64 * T1_MS), TxAction::Timeout);
    }
}

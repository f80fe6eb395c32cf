//! A platform's subscription to one kind of device event (RFC 6665 as GB/T 28181-2016 §9.11
//! uses it): SUBSCRIBE with `Event` and `Expires` and a MANSCDP query body, refreshed in its
//! dialog before it expires, started again with back-off when refused or terminated, ended
//! with `Expires: 0`. A state machine without I/O: time is passed in, requests come out, the
//! caller sends them in client transactions and feeds back the final answer.
//!
//! Many devices answer 200 and never NOTIFY; the subscription still counts as active (the
//! caller can poll as a fallback). NOTIFYs arrive through the endpoint's normal trust checks
//! (registered address, IDs); [`Subscription::on_notify`] only tracks the dialog's state.

use super::manscdp::{self, Charset};
use super::notify;
use super::sip::Message;
use super::transaction::Dialog;

/// Retry after a refusal or timeout: 5 s, doubling up to 5 min.
pub const RETRY_MIN_MS: u64 = 5_000;
pub const RETRY_MAX_MS: u64 = 300_000;
/// Expires asked for and accepted from the device (s).
pub const MIN_EXPIRES_S: u32 = 2;
pub const MAX_EXPIRES_S: u32 = 86_400;

/// What a subscription is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// Channels added, removed, changed, on/offline.
    Catalog,
    Alarm,
    /// Position reports every `interval_s`.
    MobilePosition {
        interval_s: u32,
    },
}

impl EventKind {
    /// The `Event` header's package (also the name in APIs and bus messages).
    pub fn as_str(&self) -> &'static str {
        match self {
            EventKind::Catalog => "Catalog",
            EventKind::Alarm => "Alarm",
            EventKind::MobilePosition { .. } => "MobilePosition",
        }
    }

    fn body(&self, sn: u32, device_id: &str) -> String {
        match self {
            EventKind::Catalog => manscdp::build_query("Catalog", sn, device_id),
            EventKind::Alarm => notify::build_alarm_query(sn, device_id),
            EventKind::MobilePosition { interval_s } => {
                notify::build_mobile_position_query(sn, device_id, *interval_s)
            }
        }
    }
}

/// Where a subscription is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// To be (re)sent at `at_ms`.
    Waiting { at_ms: u64 },
    /// A SUBSCRIBE is out, its answer not in yet.
    Pending,
    /// Accepted until `expires_at_ms`; refreshed at `refresh_at_ms`.
    Active {
        expires_at_ms: u64,
        refresh_at_ms: u64,
    },
    /// Unsubscribed.
    Ended,
}

/// What changed, for the caller's events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Active {
        expires_s: u32,
    },
    /// Refused (`status`) or not answered (`None`); tried again in `retry_in_ms`.
    Failed {
        status: Option<u16>,
        retry_in_ms: u64,
    },
    /// The device ended it (NOTIFY `Subscription-State: terminated`); started again later.
    Terminated {
        reason: String,
    },
}

#[derive(Debug, Clone)]
pub struct Subscription {
    pub device_id: String,
    pub kind: EventKind,
    /// Expires asked for (s).
    pub expires_s: u32,
    pub phase: Phase,
    dialog: Option<Dialog>,
    /// The SUBSCRIBE waiting for its answer (to build the dialog from).
    sent: Option<Message>,
    /// Refusals/timeouts in a row.
    pub failures: u32,
    /// NOTIFYs received in the dialog.
    pub notifies: u64,
    /// SUBSCRIBEs sent (initial and refreshes).
    pub requests: u64,
}

impl Subscription {
    /// Starts at once (the first [`Subscription::poll`] sends).
    pub fn new(device_id: &str, kind: EventKind, expires_s: u32, now_ms: u64) -> Subscription {
        Subscription {
            device_id: device_id.to_string(),
            kind,
            expires_s: expires_s.clamp(MIN_EXPIRES_S, MAX_EXPIRES_S),
            phase: Phase::Waiting { at_ms: now_ms },
            dialog: None,
            sent: None,
            failures: 0,
            notifies: 0,
            requests: 0,
        }
    }

    /// The dialog's Call-ID once accepted.
    pub fn call_id(&self) -> Option<&str> {
        self.dialog.as_ref().map(|d| d.call_id.as_str())
    }

    /// Whether a NOTIFY with `call_id` is ours: in the dialog, or for the SUBSCRIBE still
    /// waiting for its answer (devices often NOTIFY before their 200 arrives).
    pub fn owns_call_id(&self, call_id: &str) -> bool {
        self.call_id() == Some(call_id)
            || self
                .sent
                .as_ref()
                .is_some_and(|m| m.call_id() == Some(call_id))
    }

    pub fn is_active(&self) -> bool {
        matches!(self.phase, Phase::Active { .. })
    }

    /// The SUBSCRIBE to send now, if one is due. `new_request` gives a fresh out-of-dialog
    /// SUBSCRIBE to the device (Via, From with a new tag, To, Call-ID, CSeq, Contact); a
    /// refresh of an accepted subscription is built in its dialog instead.
    pub fn poll(
        &mut self,
        now_ms: u64,
        sn: u32,
        new_request: impl FnOnce() -> Message,
    ) -> Option<Message> {
        let due = match self.phase {
            Phase::Waiting { at_ms } => now_ms >= at_ms,
            Phase::Active { refresh_at_ms, .. } => now_ms >= refresh_at_ms,
            Phase::Pending | Phase::Ended => false,
        };
        if !due {
            return None;
        }
        let mut m = match self.dialog.as_mut() {
            Some(d) => d.next_request("SUBSCRIBE"),
            None => new_request(),
        };
        self.decorate(&mut m, sn, self.expires_s);
        self.sent = Some(m.clone());
        self.phase = Phase::Pending;
        self.requests += 1;
        Some(m)
    }

    fn decorate(&self, m: &mut Message, sn: u32, expires_s: u32) {
        m.set_header("Event", format!("{};id={sn}", self.kind.as_str()));
        m.set_header("Expires", expires_s.to_string());
        m.set_body(
            "Application/MANSCDP+xml",
            manscdp::encode_body(&self.kind.body(sn, &self.device_id), Charset::Gb2312),
        );
    }

    /// The final answer to the SUBSCRIBE sent last (provisional ones are ignored).
    pub fn on_response(&mut self, resp: &Message, now_ms: u64) -> Option<Change> {
        let status = resp.status()?;
        if status < 200 || self.phase != Phase::Pending {
            return None;
        }
        let sent = self.sent.take()?;
        if (200..300).contains(&status) {
            if self.dialog.is_none() {
                self.dialog = Dialog::from_invite(&sent, resp);
            }
            let expires_s = resp
                .expires()
                .unwrap_or(self.expires_s)
                .clamp(MIN_EXPIRES_S, MAX_EXPIRES_S);
            self.failures = 0;
            self.set_active(expires_s, now_ms);
            return Some(Change::Active { expires_s });
        }
        Some(self.failed(Some(status), now_ms))
    }

    /// The SUBSCRIBE got no final answer.
    pub fn on_timeout(&mut self, now_ms: u64) -> Option<Change> {
        if self.phase != Phase::Pending {
            return None;
        }
        self.sent = None;
        Some(self.failed(None, now_ms))
    }

    fn set_active(&mut self, expires_s: u32, now_ms: u64) {
        let ms = u64::from(expires_s) * 1000;
        self.phase = Phase::Active {
            expires_at_ms: now_ms + ms,
            // Refresh at three quarters of the time (at least 1 s before the end).
            refresh_at_ms: now_ms + (ms * 3 / 4).min(ms.saturating_sub(1000)).max(ms / 2),
        };
    }

    fn failed(&mut self, status: Option<u16>, now_ms: u64) -> Change {
        self.failures = self.failures.saturating_add(1);
        // A refused refresh means the device lost the dialog: start a new one.
        self.dialog = None;
        let retry_in_ms = RETRY_MIN_MS
            .saturating_mul(1 << self.failures.saturating_sub(1).min(10))
            .min(RETRY_MAX_MS);
        self.phase = Phase::Waiting {
            at_ms: now_ms + retry_in_ms,
        };
        Change::Failed {
            status,
            retry_in_ms,
        }
    }

    /// A NOTIFY in this subscription's dialog (the caller matched its Call-ID): counted, and
    /// `Subscription-State` followed (`terminated` starts a new subscription after a while;
    /// `active;expires=N` moves the expiry).
    pub fn on_notify(&mut self, notify: &Message, now_ms: u64) -> Option<Change> {
        self.notifies += 1;
        let state = notify.header("subscription-state")?.to_ascii_lowercase();
        let mut parts = state.split(';').map(str::trim);
        let what = parts.next().unwrap_or_default();
        let param = |name: &str| {
            state
                .split(';')
                .filter_map(|p| p.trim().split_once('='))
                .find(|(k, _)| k.trim() == name)
                .map(|(_, v)| v.trim().to_string())
        };
        if what == "terminated" {
            self.dialog = None;
            self.sent = None;
            self.phase = Phase::Waiting {
                at_ms: now_ms + RETRY_MIN_MS,
            };
            return Some(Change::Terminated {
                reason: param("reason").unwrap_or_default(),
            });
        }
        if what == "active"
            && self.is_active()
            && let Some(e) = param("expires").and_then(|e| e.parse::<u32>().ok())
        {
            self.set_active(e.clamp(MIN_EXPIRES_S, MAX_EXPIRES_S), now_ms);
        }
        None
    }

    /// The SUBSCRIBE with `Expires: 0` that ends an accepted subscription (None when there
    /// is no dialog to end); the subscription is over either way.
    pub fn unsubscribe(&mut self, sn: u32) -> Option<Message> {
        self.phase = Phase::Ended;
        self.sent = None;
        let mut d = self.dialog.take()?;
        let mut m = d.next_request("SUBSCRIBE");
        self.decorate(&mut m, sn, 0);
        Some(m)
    }

    /// The device registered again (rebooted): its dialogs are gone; subscribe anew now.
    pub fn restart(&mut self, now_ms: u64) {
        if self.phase == Phase::Ended {
            return;
        }
        self.dialog = None;
        self.sent = None;
        self.failures = 0;
        self.phase = Phase::Waiting { at_ms: now_ms };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: &str = "34020000001320000001";

    fn base() -> Message {
        let mut m = Message::request("SUBSCRIBE", &format!("sip:{DEV}@127.0.0.1:5062"));
        m.add_header("Via", "SIP/2.0/UDP 127.0.0.1:5060;rport;branch=z9hG4bK1")
            .add_header("From", "<sip:34020000002000000001@3402000000>;tag=p1")
            .add_header("To", format!("<sip:{DEV}@3402000000>"))
            .add_header("Call-ID", "sub1")
            .add_header("CSeq", "1 SUBSCRIBE")
            .add_header("Contact", "<sip:34020000002000000001@127.0.0.1:5060>");
        m
    }

    fn answer(req: &Message, status: u16, expires: Option<u32>) -> Message {
        let mut r = Message::response_to(req, status, "X", Some("d1"));
        if let Some(e) = expires {
            r.add_header("Expires", e.to_string());
        }
        r.add_header("Contact", format!("<sip:{DEV}@127.0.0.1:5062>"));
        r
    }

    #[test]
    fn subscribe_accept_refresh_in_dialog_and_end() {
        let mut s = Subscription::new(DEV, EventKind::MobilePosition { interval_s: 5 }, 60, 0);
        let req = s.poll(0, 1, base).expect("sent at once");
        assert!(s.poll(10, 2, base).is_none(), "one at a time");
        assert!(req.header("event").unwrap().starts_with("MobilePosition"));
        assert_eq!(req.expires(), Some(60));
        let body = manscdp::Manscdp::parse(&req.body).unwrap();
        assert!(matches!(
            body,
            manscdp::Manscdp::MobilePositionQuery { interval_s: 5, .. }
        ));
        // The device grants 40 s: refreshed at 30 s, in the dialog (same Call-ID, CSeq 2,
        // both tags, to the device's Contact).
        assert!(s.on_response(&answer(&req, 100, None), 5).is_none());
        assert_eq!(
            s.on_response(&answer(&req, 200, Some(40)), 10),
            Some(Change::Active { expires_s: 40 })
        );
        assert!(s.poll(30_000, 3, base).is_none());
        let refresh = s.poll(30_010, 3, || panic!("in dialog")).expect("refresh");
        assert_eq!(refresh.call_id(), Some("sub1"));
        assert_eq!(refresh.cseq().unwrap().seq, 2);
        assert!(refresh.header("to").unwrap().contains("tag=d1"));
        assert_eq!(
            refresh.uri(),
            Some(format!("sip:{DEV}@127.0.0.1:5062").as_str())
        );
        assert_eq!(
            s.on_response(&answer(&refresh, 200, None), 30_020),
            Some(Change::Active { expires_s: 60 })
        );
        // Unsubscribe: Expires 0 in the dialog; nothing more is sent.
        let end = s.unsubscribe(4).expect("in dialog");
        assert_eq!(end.expires(), Some(0));
        assert_eq!(end.cseq().unwrap().seq, 3);
        assert!(s.poll(10_000_000, 5, base).is_none());
        assert_eq!(s.requests, 2);
    }

    #[test]
    fn refusals_back_off_and_a_refused_refresh_starts_over() {
        let mut s = Subscription::new(DEV, EventKind::Catalog, 3600, 0);
        let r = s.poll(0, 1, base).unwrap();
        assert_eq!(
            s.on_response(&answer(&r, 489, None), 0),
            Some(Change::Failed {
                status: Some(489),
                retry_in_ms: 5_000
            })
        );
        assert!(s.poll(4_999, 2, base).is_none());
        let r = s.poll(5_000, 2, base).unwrap();
        assert_eq!(
            s.on_timeout(37_000),
            Some(Change::Failed {
                status: None,
                retry_in_ms: 10_000
            })
        );
        // Back-off is capped.
        let mut last = None;
        for _ in 0..20 {
            let now = match s.phase {
                Phase::Waiting { at_ms } => at_ms,
                p => panic!("{p:?}"),
            };
            s.poll(now, 3, base).unwrap();
            last = s.on_timeout(now);
        }
        assert!(matches!(
            last,
            Some(Change::Failed {
                retry_in_ms: RETRY_MAX_MS,
                ..
            })
        ));
        let Some(Change::Failed { retry_in_ms, .. }) = ({
            let now = 100_000_000;
            s.restart(now);
            let r = s.poll(now, 4, base).unwrap();
            s.on_response(&answer(&r, 500, None), now)
        }) else {
            panic!()
        };
        assert_eq!(retry_in_ms, 5_000, "restart() resets the back-off");
        drop(r);
        // Accepted, then the refresh is refused (481: the device lost the dialog): a new,
        // out-of-dialog SUBSCRIBE follows.
        let mut s = Subscription::new(DEV, EventKind::Catalog, 10, 0);
        let r = s.poll(0, 1, base).unwrap();
        s.on_response(&answer(&r, 200, None), 0);
        let refresh = s.poll(7_500, 2, || panic!("in dialog")).unwrap();
        s.on_response(&answer(&refresh, 481, None), 7_600);
        assert_eq!(s.call_id(), None);
        let fresh = s.poll(12_600, 3, base).expect("new subscription");
        assert_eq!(fresh.cseq().unwrap().seq, 1);
    }

    #[test]
    fn notify_states() {
        let mut s = Subscription::new(DEV, EventKind::Alarm, 60, 0);
        let r = s.poll(0, 1, base).unwrap();
        s.on_response(&answer(&r, 200, None), 0);
        let mut n = Message::request("NOTIFY", "sip:x@y");
        n.add_header("Subscription-State", "active;expires=100");
        assert_eq!(s.on_notify(&n, 1_000), None);
        assert_eq!(
            s.phase,
            Phase::Active {
                expires_at_ms: 101_000,
                refresh_at_ms: 76_000
            }
        );
        n.set_header("Subscription-State", "terminated;reason=timeout");
        assert_eq!(
            s.on_notify(&n, 2_000),
            Some(Change::Terminated {
                reason: "timeout".into()
            })
        );
        assert_eq!(s.notifies, 2);
        assert_eq!(s.phase, Phase::Waiting { at_ms: 7_000 });
        // Expires far out of range are clamped.
        let s = Subscription::new(DEV, EventKind::Alarm, u32::MAX, 0);
        assert_eq!(s.expires_s, MAX_EXPIRES_S);
    }
}

//! The platform's subscriptions to its devices' events (Catalog changes, Alarm,
//! MobilePosition): [`Endpoint::subscribe_events`] starts one, the timer thread sends and
//! refreshes them ([`crate::core::subscription`] decides what and when), answers come back
//! through client transactions, a re-registered device is subscribed anew. The NOTIFYs
//! themselves go through the same trust checks as every MESSAGE (see the module docs).
//!
//! Limits: at most [`MAX_SUBSCRIPTIONS`] at once, one per (device, event package); only
//! devices the registrar knows can be subscribed to.

use super::*;
use crate::core::subscription::{EventKind, Phase, Subscription};

/// Subscriptions at once (three packages for 4096 devices).
pub const MAX_SUBSCRIPTIONS: usize = 3 * 4096;

pub(in crate::endpoint) struct SubEntry {
    sub: Subscription,
    /// The answer to the SUBSCRIBE in flight.
    reply: Option<mpsc::Receiver<TxReply>>,
}

impl SubEntry {
    pub(in crate::endpoint) fn restart(&mut self, now: u64) {
        self.sub.restart(now);
        self.reply = None;
    }
}

/// A subscription as applications see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionInfo {
    pub device_id: String,
    /// Catalog, Alarm or MobilePosition.
    pub event: String,
    pub active: bool,
    /// Accepted until (ms since the Unix epoch), when active.
    pub expires_at_ms: Option<u64>,
    pub requests: u64,
    pub notifies: u64,
    /// Refusals or timeouts in a row.
    pub failures: u32,
}

impl Endpoint {
    /// Subscribes to `kind` events of registered `device_id` for `expires_s` (refreshed until
    /// [`Endpoint::unsubscribe_events`]); replaces a subscription of the same package.
    pub fn subscribe_events(
        &self,
        device_id: &str,
        kind: EventKind,
        expires_s: u32,
    ) -> io::Result<()> {
        let mut inner = lock(&self.inner);
        if inner.registrar.device(device_id).is_none() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "device not registered",
            ));
        }
        let key = (device_id.to_string(), kind.as_str());
        if !inner.subscriptions.contains_key(&key) && inner.subscriptions.len() >= MAX_SUBSCRIPTIONS
        {
            return Err(io::Error::other("too many subscriptions"));
        }
        inner.subscriptions.insert(
            key,
            SubEntry {
                sub: Subscription::new(device_id, kind, expires_s, now_ms()),
                reply: None,
            },
        );
        Ok(())
    }

    /// Ends the subscription to `event` (Catalog, Alarm, MobilePosition) of `device_id`:
    /// `Expires: 0` in its dialog when the device accepted it. Whether there was one.
    pub fn unsubscribe_events(&self, device_id: &str, event: &str) -> bool {
        let entry = {
            let mut inner = lock(&self.inner);
            let key = inner
                .subscriptions
                .keys()
                .find(|(d, e)| d == device_id && e.eq_ignore_ascii_case(event))
                .cloned();
            key.and_then(|k| inner.subscriptions.remove(&k))
        };
        let Some(mut e) = entry else { return false };
        let sn = self.next_sn();
        if let Some(m) = e.sub.unsubscribe(sn)
            && let Some(dest) = self.device_addr(device_id)
        {
            let _ = self.request(&m, dest);
        }
        true
    }

    /// Every subscription and its state.
    pub fn subscriptions(&self) -> Vec<SubscriptionInfo> {
        let inner = lock(&self.inner);
        let mut v: Vec<SubscriptionInfo> = inner
            .subscriptions
            .values()
            .map(|e| SubscriptionInfo {
                device_id: e.sub.device_id.clone(),
                event: e.sub.kind.as_str().to_string(),
                active: e.sub.is_active(),
                expires_at_ms: match e.sub.phase {
                    Phase::Active { expires_at_ms, .. } => Some(expires_at_ms),
                    _ => None,
                },
                requests: e.sub.requests,
                notifies: e.sub.notifies,
                failures: e.sub.failures,
            })
            .collect();
        v.sort_by(|a, b| (&a.device_id, &a.event).cmp(&(&b.device_id, &b.event)));
        v
    }

    /// A NOTIFY that passed the trust checks: counted by the subscription whose dialog it is
    /// in, and its `Subscription-State` followed.
    pub(super) fn note_notify(&self, msg: &Message, now: u64) -> Option<EndpointEvent> {
        let call_id = msg.call_id()?;
        let mut inner = lock(&self.inner);
        let e = inner
            .subscriptions
            .values_mut()
            .find(|e| e.sub.owns_call_id(call_id))?;
        let change = e.sub.on_notify(msg, now)?;
        Some(EndpointEvent::Subscription {
            device_id: e.sub.device_id.clone(),
            event: e.sub.kind.as_str().to_string(),
            change,
        })
    }

    /// Timer work: answers that came in, SUBSCRIBEs that are due.
    pub(super) fn poll_subscriptions(&self, now: u64) -> Vec<EndpointEvent> {
        let mut events = Vec::new();
        let mut due = Vec::new();
        {
            let mut inner = lock(&self.inner);
            for (key, e) in inner.subscriptions.iter_mut() {
                let change = match e.reply.as_ref().map(|r| r.try_recv()) {
                    Some(Ok(TxReply::Response(m))) => e.sub.on_response(&m, now),
                    Some(Ok(TxReply::Timeout)) | Some(Err(mpsc::TryRecvError::Disconnected)) => {
                        e.reply = None;
                        e.sub.on_timeout(now)
                    }
                    _ => None,
                };
                if change.is_some() {
                    e.reply = None;
                }
                if let Some(change) = change {
                    events.push(EndpointEvent::Subscription {
                        device_id: e.sub.device_id.clone(),
                        event: e.sub.kind.as_str().to_string(),
                        change,
                    });
                }
                let waiting = match e.sub.phase {
                    Phase::Waiting { at_ms } => now >= at_ms,
                    Phase::Active { refresh_at_ms, .. } => now >= refresh_at_ms,
                    _ => false,
                };
                if waiting {
                    due.push(key.clone());
                }
            }
        }
        for key in due {
            // Not registered (or restored, waiting for its keepalive): later.
            let Some(dest) = self.device_addr(&key.0) else {
                continue;
            };
            let base = self.new_request("SUBSCRIBE", &key.0, dest);
            let sn = self.next_sn();
            let msg = {
                let mut inner = lock(&self.inner);
                inner
                    .subscriptions
                    .get_mut(&key)
                    .and_then(|e| e.sub.poll(now, sn, || base))
            };
            let Some(msg) = msg else { continue };
            match self.request(&msg, dest) {
                Ok(rx) => {
                    if let Some(e) = lock(&self.inner).subscriptions.get_mut(&key) {
                        e.reply = Some(rx);
                    }
                }
                Err(_) => {
                    if let Some(e) = lock(&self.inner).subscriptions.get_mut(&key)
                        && let Some(change) = e.sub.on_timeout(now)
                    {
                        events.push(EndpointEvent::Subscription {
                            device_id: key.0.clone(),
                            event: key.1.to_string(),
                            change,
                        });
                    }
                }
            }
        }
        events
    }
}

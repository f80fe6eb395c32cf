//! The device side of subscriptions (GB/T 28181-2016 §9.11): the platform SUBSCRIBEs to our
//! Catalog changes, alarms or position; we answer 200 with the granted Expires, send an
//! initial NOTIFY (the channel for Catalog, the position for MobilePosition), then NOTIFYs
//! as things change (and the position every `Interval` seconds) until the subscription
//! expires or the platform ends it with `Expires: 0`. Alarms go out as MESSAGE (§9.4),
//! whether subscribed or not.
//!
//! Only our server may subscribe (its address; over TCP the connection to it); one
//! subscription per event package (a new one replaces the old); Expires at most
//! [`MAX_EXPIRES_S`]; Interval 1..=3600 s.

use super::*;
use crate::core::notify::{self, Alarm, MobilePosition};

pub const MAX_EXPIRES_S: u32 = 86_400;

struct DevSub {
    /// Catalog, Alarm or MobilePosition (as the platform's `Event` header named it).
    event: &'static str,
    /// The Event header as received (`Catalog;id=12`), echoed in our NOTIFYs.
    event_header: String,
    dialog: Dialog,
    expires_at: u64,
    interval_ms: u64,
    next_report_at: u64,
}

#[derive(Default)]
pub(super) struct DeviceSubs {
    subs: Vec<DevSub>,
    position: Option<(f64, f64)>,
    sn: u32,
}

fn package(event_header: &str) -> Option<&'static str> {
    let name = event_header.split(';').next()?.trim();
    ["Catalog", "Alarm", "MobilePosition"]
        .into_iter()
        .find(|p| p.eq_ignore_ascii_case(name))
}

impl DeviceAgent {
    pub(super) fn handle_subscribe(&self, m: &Message, from: SocketAddr) {
        let reply = |r: Message| {
            let _ = self.send_bytes(&r.to_bytes(), from);
        };
        // Only our platform subscribes (over TCP every request comes on its connection).
        if !self.reliable() && addr::canonical(from) != addr::canonical(self.config.server) {
            reply(Message::response_to(m, 403, "Forbidden", None));
            return;
        }
        let Some(event) = m.header("event").and_then(package) else {
            let mut r = Message::response_to(m, 489, "Bad Event", None);
            r.add_header("Allow-Events", "Catalog, Alarm, MobilePosition");
            reply(r);
            return;
        };
        let expires_s = m.expires().unwrap_or(3600).min(MAX_EXPIRES_S);
        let interval_s = match Manscdp::parse(&m.body) {
            Ok(Manscdp::MobilePositionQuery { interval_s, .. }) => interval_s.clamp(1, 3600),
            _ => 5,
        };
        let now = now_ms();
        let mut subs = lock(&self.subs);
        // A refresh (or end) in an existing dialog keeps its tag.
        let existing = subs
            .subs
            .iter()
            .position(|s| s.dialog.matches(m, addr::canonical(from)));
        let tag = match existing {
            Some(i) => subs.subs[i].dialog.local_tag.clone(),
            None => random::tag(),
        };
        let mut ok = Message::response_to(m, 200, "OK", Some(&tag));
        ok.add_header("Expires", expires_s.to_string());
        ok.add_header("Contact", self.contact(&self.config.device_id));
        if expires_s == 0 {
            if let Some(i) = existing {
                subs.subs.remove(i);
            }
            drop(subs);
            reply(ok);
            (self.on_event)(DeviceEvent::Subscribed {
                event: event.into(),
                expires_s: 0,
            });
            return;
        }
        match existing {
            Some(i) => {
                let s = &mut subs.subs[i];
                s.expires_at = now + u64::from(expires_s) * 1000;
                s.interval_ms = u64::from(interval_s) * 1000;
            }
            None => {
                let dialog = Dialog {
                    call_id: m.call_id().unwrap_or_default().to_string(),
                    local: ok.header("to").unwrap_or_default().to_string(),
                    remote: m.header("from").unwrap_or_default().to_string(),
                    local_tag: tag,
                    remote_tag: m
                        .from()
                        .and_then(|f| f.tag().map(str::to_string))
                        .unwrap_or_default(),
                    peer: addr::canonical(from),
                    remote_target: m
                        .contact()
                        .map(|c| c.uri)
                        .unwrap_or_else(|| format!("sip:{}@{}", self.config.server_id, from)),
                    cseq: 0,
                };
                // One per package: a new subscription replaces the old.
                subs.subs.retain(|s| s.event != event);
                subs.subs.push(DevSub {
                    event,
                    event_header: m.header("event").unwrap_or(event).to_string(),
                    dialog,
                    expires_at: now + u64::from(expires_s) * 1000,
                    interval_ms: u64::from(interval_s) * 1000,
                    // The first report goes with the initial NOTIFY below.
                    next_report_at: now + u64::from(interval_s) * 1000,
                });
            }
        }
        drop(subs);
        reply(ok);
        (self.on_event)(DeviceEvent::Subscribed {
            event: event.into(),
            expires_s,
        });
        if existing.is_none() {
            // The initial NOTIFY (RFC 6665 §4.2.1): what there is now.
            match event {
                "Catalog" => {
                    let (mut items, page) = match &self.channels {
                        Some(c) => {
                            let items = self.shared_catalog(c);
                            self.remember_catalog(&items);
                            (items, c.catalog_page)
                        }
                        None => (vec![self.catalog_item()], 1),
                    };
                    for i in &mut items {
                        i.event = "ADD".into();
                    }
                    for p in super::catalog_pages(&items, page) {
                        self.notify_catalog(p);
                    }
                }
                "MobilePosition" => self.report_position(),
                _ => {}
            }
        }
    }

    /// Sends a NOTIFY with `body` in the subscription to `event`; whether there was one.
    fn notify(&self, event: &str, body: impl FnOnce(u32) -> String) -> bool {
        let now = now_ms();
        let msg = {
            let mut subs = lock(&self.subs);
            subs.sn = subs.sn.wrapping_add(1);
            let sn = subs.sn;
            let Some(s) = subs.subs.iter_mut().find(|s| s.event == event) else {
                return false;
            };
            s.dialog.cseq += 1;
            let mut n = self.in_dialog_request(&s.dialog, "NOTIFY");
            n.add_header("Event", s.event_header.clone());
            n.add_header(
                "Subscription-State",
                format!("active;expires={}", s.expires_at.saturating_sub(now) / 1000),
            );
            n.set_body(
                "Application/MANSCDP+xml",
                manscdp::encode_body(&body(sn), manscdp::Charset::Gb2312),
            );
            n
        };
        self.send(&msg).is_ok()
    }

    /// Tells a Catalog subscriber about changed channels (each item's `event`: ADD, DEL,
    /// UPDATE, ON, OFF...). Whether the platform is subscribed.
    pub fn notify_catalog(&self, items: &[CatalogItem]) -> bool {
        let id = self.config.device_id.clone();
        self.notify("Catalog", |sn| notify::build_catalog_notify(sn, &id, items))
    }

    /// Our position (longitude, latitude), reported to a MobilePosition subscriber at once
    /// and every interval.
    pub fn set_position(&self, longitude: f64, latitude: f64) {
        lock(&self.subs).position = Some((longitude, latitude));
        self.report_position();
    }

    fn report_position(&self) {
        let Some((lon, lat)) = lock(&self.subs).position else {
            return;
        };
        let id = self.config.device_id.clone();
        let time = crate::core::registrar::format_gb_date(crate::endpoint::wall_ms(), 480)
            .chars()
            .take(19)
            .collect::<String>();
        self.notify("MobilePosition", |sn| {
            notify::build_mobile_position_notify(&MobilePosition {
                sn,
                device_id: id,
                time,
                longitude: Some(lon),
                latitude: Some(lat),
                speed: Some(0.0),
                direction: Some(0.0),
                altitude: Some(0.0),
            })
        });
    }

    /// Sends an alarm to the platform (a MESSAGE, §9.4); `alarm.device_id` empty: ours.
    pub fn send_alarm(&self, alarm: &Alarm) -> io::Result<()> {
        let mut a = alarm.clone();
        if a.device_id.is_empty() {
            a.device_id = self.config.device_id.clone();
        }
        if a.sn == 0 {
            let mut subs = lock(&self.subs);
            subs.sn = subs.sn.wrapping_add(1);
            a.sn = subs.sn;
        }
        if a.time.is_empty() {
            a.time = crate::core::registrar::format_gb_date(crate::endpoint::wall_ms(), 480)
                .chars()
                .take(19)
                .collect();
        }
        self.send(&self.new_message(&notify::build_alarm_notify(&a)))
    }

    /// Whether the platform is subscribed to `event` now.
    pub(super) fn is_subscribed(&self, event: &str) -> bool {
        lock(&self.subs).subs.iter().any(|s| s.event == event)
    }

    /// The platform's current subscriptions: (event package, ms until they expire).
    pub fn subscriptions(&self) -> Vec<(String, u64)> {
        let now = now_ms();
        lock(&self.subs)
            .subs
            .iter()
            .map(|s| (s.event.to_string(), s.expires_at.saturating_sub(now)))
            .collect()
    }

    /// Expiry and periodic position reports.
    pub(super) fn tick_subscriptions(&self, now: u64) {
        let report = {
            let mut subs = lock(&self.subs);
            subs.subs.retain(|s| s.expires_at > now);
            let has_position = subs.position.is_some();
            match subs
                .subs
                .iter_mut()
                .find(|s| s.event == "MobilePosition" && now >= s.next_report_at)
            {
                Some(s) if has_position => {
                    s.next_report_at = now + s.interval_ms;
                    true
                }
                _ => false,
            }
        };
        if report {
            self.report_position();
        }
    }
}

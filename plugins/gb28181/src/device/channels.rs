//! A device with many channels: what a lower platform is to an upper one (GB/T 28181 §9.1
//! cascade). The agent registers, keeps alive and answers queries as for one channel; here
//! it answers the Catalog with the channels a [`ChannelDirectory`] shares (paged over several
//! MESSAGEs, `SumNum` = all of them) and serves any number of INVITEs at once (bounded), one
//! [`MediaSession`] per call, each fed by [`DeviceAgent::send_call_frame`].
//!
//! The upper platform is trusted only as far as this: requests must come from its address
//! (the server we register with; anything else gets 403); the channel must be one the
//! directory shares (404); the media target of its SDP must be a unicast address of the
//! family it signals from with a non-privileged port, the SSRC 10 digits and the session a
//! live view (`s=Play`; playback and download are not forwarded: 488); at most
//! [`Channels::max_sessions`] calls run (486).

use super::invite::Answered;
use super::media::send_rtp;
use super::*;
use crate::core::id;
use crate::core::registrar::user_of;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

/// Most catalog items answered (a directory listing more is cut).
pub const MAX_CATALOG_ITEMS: usize = 100_000;
/// How often a Catalog subscriber's view is compared with the shared channels.
pub const CATALOG_CHECK_MS: u64 = 2000;

/// What the device shares, asked at each query and INVITE.
pub trait ChannelDirectory: Send + Sync {
    /// The shared channels as Catalog items (ParentID is set to the device's ID).
    fn catalog(&self) -> Vec<CatalogItem>;
    /// Whether `channel` (shape-checked) is shared and can be served now; Err: the status
    /// and reason to refuse the INVITE with.
    fn admit(&self, channel: &str) -> Result<(), (u16, &'static str)>;
}

/// The many-channel settings of an agent ([`DeviceAgent::start_with_channels`]).
#[derive(Clone)]
pub struct Channels {
    pub directory: Arc<dyn ChannelDirectory>,
    /// Calls served at once; the next INVITE gets 486.
    pub max_sessions: usize,
    /// Catalog items per MESSAGE (at least 1).
    pub catalog_page: usize,
}

/// Longest recording range a Playback / Download INVITE may ask for (`t=` end - start).
pub const MAX_RECORDING_RANGE_S: u64 = 7 * 86_400;

/// One call of a many-channel device.
pub(super) struct ChannelCall {
    channel: String,
    session: MediaSession,
    dialog: Dialog,
    /// Our 200 until the ACK comes (None once acknowledged).
    ok: Option<OkRetransmit>,
}

/// What a Catalog subscriber was last told: channel → status; when to look again.
#[derive(Default)]
pub(super) struct CatalogWatch {
    seen: Option<HashMap<String, String>>,
    next_at: u64,
}

/// The Catalog NOTIFY items telling a subscriber who saw `old` (channel → status) about
/// `new`: ADD for a new channel, DEL for one gone, ON / OFF for a status change. Pure.
pub fn catalog_changes(old: &HashMap<String, String>, new: &[CatalogItem]) -> Vec<CatalogItem> {
    let mut out = Vec::new();
    for i in new {
        let event = match old.get(&i.device_id) {
            None => "ADD",
            Some(s) if !s.eq_ignore_ascii_case(&i.status) => {
                if i.status.eq_ignore_ascii_case("ON") {
                    "ON"
                } else {
                    "OFF"
                }
            }
            Some(_) => continue,
        };
        let mut i = i.clone();
        i.event = event.into();
        out.push(i);
    }
    let now: HashSet<&str> = new.iter().map(|i| i.device_id.as_str()).collect();
    let mut gone: Vec<&String> = old.keys().filter(|k| !now.contains(k.as_str())).collect();
    gone.sort();
    out.extend(gone.into_iter().map(|id| CatalogItem {
        device_id: id.clone(),
        event: "DEL".into(),
        ..Default::default()
    }));
    out
}

/// Where media for an upper platform may go: `target`'s address must be unicast, of the
/// family of `signalling` (the platform's SIP address), and, when we send or connect to
/// it (`port_used`: not TCP active, where the platform connects and offers the discard
/// port 9), its port 1024 or above. Pure.
pub fn check_media_target(
    target: Option<SocketAddr>,
    signalling: SocketAddr,
    port_used: bool,
) -> Result<SocketAddr, String> {
    let t = target.ok_or("no media address in the SDP")?;
    let t = addr::canonical(t);
    let ip = t.ip();
    if IpAddr::is_ipv4(&ip) != signalling.ip().to_canonical().is_ipv4() {
        return Err(format!(
            "media address {ip} is of another family than {signalling}"
        ));
    }
    let bad = ip.is_unspecified()
        || ip.is_multicast()
        || match ip {
            IpAddr::V4(v4) => v4.is_broadcast() || v4.octets()[0] == 0,
            IpAddr::V6(_) => false,
        };
    if bad {
        return Err(format!("media address {ip} is not a unicast address"));
    }
    if port_used && t.port() < 1024 {
        return Err(format!("media port {} is not within 1024-65535", t.port()));
    }
    Ok(t)
}

/// Whether `s` is a GB/T 28181 SSRC: 10 decimal digits.
pub fn is_ssrc(s: &str) -> bool {
    s.len() == 10 && s.bytes().all(|b| b.is_ascii_digit())
}

/// The pages of a Catalog answer: `page` items each (at least one page, maybe empty).
pub fn catalog_pages(items: &[CatalogItem], page: usize) -> Vec<&[CatalogItem]> {
    if items.is_empty() {
        return vec![&[]];
    }
    items.chunks(page.max(1)).collect()
}

impl DeviceAgent {
    /// An agent serving many channels (a lower platform): see the module documentation.
    /// `config.channel_id` is not used.
    pub fn start_with_channels(
        config: DeviceConfig,
        channels: Channels,
        on_event: impl Fn(DeviceEvent) + Send + Sync + 'static,
    ) -> io::Result<Arc<DeviceAgent>> {
        Self::start_inner(config, Some(channels), on_event)
    }

    /// Many-channel mode: whether `from` is the upper platform.
    pub(super) fn is_upper(&self, from: SocketAddr) -> bool {
        addr::canonical(from) == addr::canonical(self.config.server)
    }

    /// The shared channels, ParentID ours, at most [`MAX_CATALOG_ITEMS`].
    pub(super) fn shared_catalog(&self, c: &Channels) -> Vec<CatalogItem> {
        let mut items = c.directory.catalog();
        items.truncate(MAX_CATALOG_ITEMS);
        for i in &mut items {
            i.parent_id = self.config.device_id.clone();
        }
        items
    }

    /// The shared channels as a Catalog subscriber now knows them.
    pub(super) fn remember_catalog(&self, items: &[CatalogItem]) {
        lock(&self.catalog_watch).seen = Some(
            items
                .iter()
                .map(|i| (i.device_id.clone(), i.status.clone()))
                .collect(),
        );
    }

    /// Every [`CATALOG_CHECK_MS`]: a Catalog subscriber is told what changed (channels
    /// mounted or gone, cameras on or off line) in NOTIFYs of `catalog_page` items.
    pub(super) fn tick_catalog(&self, now: u64) {
        let Some(c) = &self.channels else { return };
        {
            let mut w = lock(&self.catalog_watch);
            if now < w.next_at {
                return;
            }
            w.next_at = now + CATALOG_CHECK_MS;
        }
        if !self.is_subscribed("Catalog") {
            lock(&self.catalog_watch).seen = None;
            return;
        }
        let items = self.shared_catalog(c);
        let changes = match &lock(&self.catalog_watch).seen {
            Some(old) => catalog_changes(old, &items),
            None => Vec::new(),
        };
        self.remember_catalog(&items);
        for page in changes.chunks(c.catalog_page.max(1)) {
            let mut page = page.to_vec();
            for i in &mut page {
                i.parent_id = self.config.device_id.clone();
            }
            self.notify_catalog(&page);
        }
    }

    /// Answers a Catalog query with every shared channel, `catalog_page` items a MESSAGE.
    pub(super) fn send_catalog(&self, c: &Channels, sn: u32) {
        let items = self.shared_catalog(c);
        let sum = items.len() as u32;
        for page in catalog_pages(&items, c.catalog_page) {
            let body = manscdp::build_catalog_response(sn, &self.config.device_id, sum, page);
            let _ = self.send(&self.new_message(&body));
        }
    }

    /// An INVITE in many-channel mode.
    pub(super) fn handle_channel_invite(&self, c: &Channels, m: &Message, from: SocketAddr) {
        let reply = |r: Message| {
            let _ = self.send_bytes(&r.to_bytes(), from);
        };
        let cid = m.call_id().unwrap_or_default();
        // A retransmitted INVITE: the same 200 again.
        if let Some(call) = lock(&self.calls).iter().find(|k| k.dialog.call_id == cid) {
            if let Some(ok) = &call.ok {
                let _ = self.send_bytes(&ok.bytes, from);
            }
            return;
        }
        let refuse = |status: u16, reason: &str, why: String| {
            reply(Message::response_to(m, status, reason, None));
            (self.on_event)(DeviceEvent::Refused {
                method: "INVITE".into(),
                status,
                why,
            });
        };
        let channel = user_of(m.uri().and_then(NameAddr::parse)).unwrap_or_default();
        if let Err(e) = id::check_shape(&channel) {
            return refuse(
                404,
                "Not Found",
                format!("channel {:?}: {e}", id::printable(&channel)),
            );
        }
        let offer = match sdp::parse(&m.body) {
            Ok(o) => o,
            Err(e) => return refuse(488, "Not Acceptable Here", format!("SDP: {e:?}")),
        };
        // Play, or a recording (Playback / Download) over a sane range, which the owner of
        // the agent serves from the camera's recordings (`SessionStarted`'s range).
        match sdp::SessionKind::parse(&offer.session_name) {
            Some(sdp::SessionKind::Play) => {}
            Some(_)
                if offer.end > offer.start && offer.end - offer.start <= MAX_RECORDING_RANGE_S =>
            {
                if offer.download_speed.is_some_and(|v| !(1..=16).contains(&v)) {
                    return refuse(488, "Not Acceptable Here", "downloadspeed: 1 to 16".into());
                }
            }
            Some(_) => {
                return refuse(
                    488,
                    "Not Acceptable Here",
                    format!(
                        "recording range {}..{}: at most {} days",
                        offer.start,
                        offer.end,
                        MAX_RECORDING_RANGE_S / 86_400
                    ),
                );
            }
            None => {
                return refuse(
                    488,
                    "Not Acceptable Here",
                    format!(
                        "session {:?}: Play, Playback or Download",
                        id::printable(&offer.session_name)
                    ),
                );
            }
        }
        let port_used = offer.transport() != MediaTransport::TcpActive;
        if let Err(e) = check_media_target(offer.media_addr(), from, port_used) {
            return refuse(488, "Not Acceptable Here", e);
        }
        let ssrc = offer
            .ssrc
            .clone()
            .or_else(|| m.header("subject").and_then(Subject::parse).map(|s| s.ssrc))
            .unwrap_or_default();
        if !is_ssrc(&ssrc) {
            return refuse(
                488,
                "Not Acceptable Here",
                format!("SSRC {:?} is not 10 digits", id::printable(&ssrc)),
            );
        }
        if let Err((status, reason)) = c.directory.admit(&channel) {
            return refuse(status, reason, format!("channel {channel}: {reason}"));
        }
        if lock(&self.calls).len() >= c.max_sessions {
            return refuse(
                486,
                "Busy Here",
                format!("{} sessions already", c.max_sessions),
            );
        }
        reply(Message::response_to(m, 100, "Trying", None));
        let Some(Answered {
            session,
            dialog,
            ok,
        }) = self.answer(m, &offer, &channel, &ssrc, from)
        else {
            return refuse(488, "Not Acceptable Here", "no media socket".into());
        };
        let retransmit = OkRetransmit::new(m, &ok, from, now_ms());
        {
            let mut calls = lock(&self.calls);
            // Checked again: INVITEs are handled one at a time, but be exact.
            if calls.len() >= c.max_sessions {
                drop(calls);
                return refuse(486, "Busy Here", "sessions full".into());
            }
            calls.push(ChannelCall {
                channel,
                session,
                dialog,
                ok: Some(retransmit),
            });
        }
        reply(ok);
    }

    /// ACK of a call: it starts. True when it was one of the calls.
    pub(super) fn channel_ack(&self, m: &Message) -> bool {
        let ev = {
            let mut calls = lock(&self.calls);
            let Some(call) = calls
                .iter_mut()
                .find(|k| Some(k.dialog.call_id.as_str()) == m.call_id())
            else {
                return false;
            };
            if call.ok.take().is_none() {
                // A repeated ACK.
                return true;
            }
            call.session.started_event(&call.channel)
        };
        (self.on_event)(ev);
        true
    }

    /// BYE of a call from the upper platform (its dialog, its address). True when handled.
    pub(super) fn channel_bye(&self, m: &Message, from: SocketAddr) -> bool {
        let gone = {
            let mut calls = lock(&self.calls);
            let Some(i) = calls.iter().position(|k| k.dialog.matches(m, from)) else {
                return false;
            };
            calls.remove(i)
        };
        let _ = self.send_bytes(&Message::response_to(m, 200, "OK", None).to_bytes(), from);
        if gone.ok.is_none() {
            (self.on_event)(DeviceEvent::SessionStopped {
                call_id: gone.dialog.call_id,
                reason: "bye".into(),
            });
        }
        true
    }

    /// MANSRTSP INFO in a call of the upper platform (its dialog, its address): answered and
    /// told as [`DeviceEvent::PlaybackControl`]. True when handled.
    pub(super) fn channel_info(&self, m: &Message, from: SocketAddr) -> bool {
        let ours = lock(&self.calls)
            .iter()
            .any(|k| k.ok.is_none() && k.dialog.matches(m, from));
        if ours && let Some(ev) = self.playback_control(m, from) {
            (self.on_event)(ev);
        }
        ours
    }

    /// Re-sends unacknowledged 200s; forgets calls never acknowledged.
    pub(super) fn tick_calls(&self, now: u64) {
        let reliable = self.reliable();
        let mut resend = Vec::new();
        lock(&self.calls).retain_mut(|k| {
            let Some(r) = k.ok.as_mut() else { return true };
            if now >= r.give_up_at {
                return false;
            }
            if now >= r.next_at && !reliable {
                resend.push((r.bytes.clone(), r.dest));
                r.interval = (r.interval * 2).min(crate::core::transaction::T2_MS);
                r.next_at = now + r.interval;
            }
            true
        });
        for (bytes, dest) in resend {
            let _ = self.send_bytes(&bytes, dest);
        }
    }

    /// Sends one PS frame (`rtp_ts` 90 kHz) to call `call_id`. False when the call is not
    /// running (ended, or its media could not be sent: it is then ended with BYE).
    pub fn send_call_frame(&self, call_id: &str, frame: &[u8], rtp_ts: u32) -> bool {
        let failed = {
            let mut calls = lock(&self.calls);
            let Some(call) = calls
                .iter_mut()
                .find(|k| k.dialog.call_id == call_id && k.ok.is_none())
            else {
                return false;
            };
            if !call.session.out.accept_if_listening() {
                // TCP: the upper platform has not connected yet.
                return true;
            }
            send_rtp(&mut call.session, frame, rtp_ts).is_err()
        };
        if failed {
            self.hang_up(call_id);
            (self.on_event)(DeviceEvent::SessionStopped {
                call_id: call_id.to_string(),
                reason: "media send failed".into(),
            });
        }
        !failed
    }

    /// Tells the upper platform that the recording played in call `call_id` ended
    /// (MediaStatus 121 for the call's channel, as a device does at the end of a file); it
    /// is expected to hang up. False if the call is unknown.
    pub fn call_file_ended(&self, call_id: &str) -> bool {
        let channel = lock(&self.calls)
            .iter()
            .find(|k| k.dialog.call_id == call_id)
            .map(|k| k.channel.clone());
        let Some(channel) = channel else {
            return false;
        };
        let sn = (now_ms() % 100_000) as u32;
        let body = manscdp::build_media_status(sn, &channel, 121);
        let _ = self.send(&self.new_message(&body));
        true
    }

    /// Ends call `call_id` from our side (BYE to the upper platform). False if unknown.
    pub fn hang_up(&self, call_id: &str) -> bool {
        let gone = {
            let mut calls = lock(&self.calls);
            let Some(i) = calls.iter().position(|k| k.dialog.call_id == call_id) else {
                return false;
            };
            calls.remove(i)
        };
        let mut d = gone.dialog;
        d.cseq += 1;
        let bye = self.in_dialog_request(&d, "BYE");
        let _ = self.send_bytes(&bye.to_bytes(), d.peer);
        true
    }

    /// The running calls: (Call-ID, channel), acknowledged ones only.
    pub fn calls(&self) -> Vec<(String, String)> {
        lock(&self.calls)
            .iter()
            .filter(|k| k.ok.is_none())
            .map(|k| (k.dialog.call_id.clone(), k.channel.clone()))
            .collect()
    }

    /// Packets and bytes sent to call `call_id`.
    pub fn call_counts(&self, call_id: &str) -> Option<(u64, u64)> {
        lock(&self.calls)
            .iter()
            .find(|k| k.dialog.call_id == call_id)
            .map(|k| (k.session.packets, k.session.bytes))
    }

    /// BYE to every call (stopping).
    pub(super) fn hang_up_all(&self) {
        let ids: Vec<String> = lock(&self.calls)
            .iter()
            .map(|k| k.dialog.call_id.clone())
            .collect();
        for id in ids {
            self.hang_up(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn media_targets() {
        let sig = a("127.0.0.1:5060");
        assert_eq!(
            check_media_target(Some(a("127.0.0.1:30000")), sig, true),
            Ok(a("127.0.0.1:30000"))
        );
        // TCP active: the platform connects; its offer's port (9) is not used.
        assert!(check_media_target(Some(a("127.0.0.1:9")), sig, false).is_ok());
        assert!(check_media_target(Some(a("0.0.0.0:9")), sig, false).is_err());
        for bad in [
            "0.0.0.0:30000",
            "255.255.255.255:30000",
            "224.0.0.1:30000",
            "0.1.2.3:30000",
            "127.0.0.1:0",
            "127.0.0.1:22",
            "[::1]:30000",
        ] {
            assert!(
                check_media_target(Some(a(bad)), sig, true).is_err(),
                "{bad}"
            );
        }
        assert!(check_media_target(None, sig, true).is_err());
        let sig6 = a("[::1]:5060");
        assert!(check_media_target(Some(a("[::1]:30000")), sig6, true).is_ok());
        assert!(check_media_target(Some(a("[ff02::1]:30000")), sig6, true).is_err());
        assert!(check_media_target(Some(a("127.0.0.1:30000")), sig6, true).is_err());
        // A v4-mapped signalling address is IPv4.
        let mapped = a("[::ffff:127.0.0.1]:5060");
        assert!(check_media_target(Some(a("127.0.0.1:30000")), mapped, true).is_ok());
    }

    #[test]
    fn changes_for_a_subscriber() {
        let item = |id: &str, status: &str| CatalogItem {
            device_id: id.into(),
            status: status.into(),
            ..Default::default()
        };
        let old: HashMap<String, String> = [("a", "ON"), ("b", "ON"), ("c", "OFF"), ("d", "ON")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let new = [
            item("a", "ON"),
            item("b", "OFF"),
            item("c", "ON"),
            item("e", "ON"),
        ];
        let got: Vec<(String, String)> = catalog_changes(&old, &new)
            .into_iter()
            .map(|i| (i.device_id, i.event))
            .collect();
        let want: Vec<(String, String)> = [("b", "OFF"), ("c", "ON"), ("e", "ADD"), ("d", "DEL")]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(got, want);
        assert!(
            catalog_changes(
                &old,
                &[
                    item("a", "ON"),
                    item("b", "ON"),
                    item("c", "OFF"),
                    item("d", "ON")
                ]
            )
            .is_empty()
        );
    }

    #[test]
    fn ssrcs() {
        assert!(is_ssrc("0200000001"));
        assert!(!is_ssrc("020000001"));
        assert!(!is_ssrc("02000000011"));
        assert!(!is_ssrc("02000a0001"));
        assert!(!is_ssrc(""));
    }

    #[test]
    fn pages() {
        let item = |n: u32| CatalogItem {
            device_id: format!("{n}"),
            ..Default::default()
        };
        let items: Vec<CatalogItem> = (0..5).map(item).collect();
        let p = catalog_pages(&items, 2);
        assert_eq!(p.iter().map(|p| p.len()).collect::<Vec<_>>(), vec![2, 2, 1]);
        assert_eq!(catalog_pages(&items, 0).len(), 5);
        assert_eq!(catalog_pages(&[], 3), vec![&[] as &[CatalogItem]]);
    }
}

use gst_ipcam_common::sync::lock;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::base_src::CreateSuccess;
use gst_base::subclass::prelude::*;

use super::{MediaTransportMode, SessionKindMode, SipTransportMode};
use crate::core::addr;
use crate::core::id::{self, IdPolicy};
use crate::core::manscdp::PtzCmd;
use crate::core::mansrtsp::Command;
use crate::core::media::SsrcPolicy;
use crate::core::registrar::{self, RegistrarConfig};
use crate::core::retime::{self, Scaler};
use crate::core::sdp::{MediaTransport, SessionKind};
use crate::core::subscription::EventKind;
use crate::endpoint::{Endpoint, EndpointEvent, EndpointKey};
use crate::messages::{describe, event_structure, is_security_event};
use crate::platform::{
    CONTROL_TIMEOUT, Call, CallError, CallEvent, CallParams, ControlError, send_control,
};
use crate::receiver::MediaReceiver;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "gb28181src",
        gst::DebugColorFlags::empty(),
        Some("GB/T 28181 platform-side live source"),
    )
});

const DEFAULT_SERVER_ID: &str = "34020000002000000001";
const MAX_FRAME_SIZE: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone)]
struct Settings {
    sip_address: String,
    sip_port: u32,
    sip_transport: SipTransportMode,
    server_id: String,
    domain: String,
    password: String,
    device_passwords: String,
    device_id: String,
    channel_id: String,
    transport: MediaTransportMode,
    media_address: String,
    sdp_address: String,
    media_port: u32,
    wait_timeout: u32,
    stream_timeout: u32,
    buffer_size: u32,
    strict_ssrc: bool,
    /// Events to subscribe to once the call is up: (event, interval s).
    subscribe: Vec<(String, u32)>,
    keepalive_interval: u32,
    keepalive_max_missed: u32,
    media_port_range: String,
    session_kind: SessionKindMode,
    start_time: u64,
    end_time: u64,
    download_speed: u32,
    id_pattern: String,
    max_channels_per_device: u32,
    max_devices: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            sip_address: "0.0.0.0".into(),
            sip_port: 5060,
            sip_transport: SipTransportMode::Udp,
            server_id: DEFAULT_SERVER_ID.into(),
            domain: String::new(),
            password: String::new(),
            device_passwords: String::new(),
            device_id: String::new(),
            channel_id: String::new(),
            transport: MediaTransportMode::Udp,
            media_address: String::new(),
            sdp_address: String::new(),
            media_port: 0,
            wait_timeout: 30,
            stream_timeout: 10,
            buffer_size: DEFAULT_BUFFER_SIZE,
            strict_ssrc: false,
            subscribe: Vec::new(),
            keepalive_interval: 60_000,
            keepalive_max_missed: 3,
            media_port_range: String::new(),
            session_kind: SessionKindMode::Play,
            start_time: 0,
            end_time: 0,
            download_speed: 1,
            id_pattern: id::DEFAULT_PATTERN.into(),
            max_channels_per_device: registrar::DEFAULT_MAX_CHANNELS_PER_DEVICE as u32,
            max_devices: RegistrarConfig::default().max_devices as u32,
        }
    }
}

/// `min-max` → the ports to try.
fn parse_port_range(s: &str) -> Option<std::ops::RangeInclusive<u16>> {
    let (a, b) = s.split_once('-')?;
    let (a, b) = (a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?);
    (a > 0 && a <= b).then_some(a..=b)
}

impl Settings {
    fn domain(&self) -> String {
        if self.domain.is_empty() {
            self.server_id.chars().take(10).collect()
        } else {
            self.domain.clone()
        }
    }

    fn channel(&self) -> String {
        if self.channel_id.is_empty() {
            self.device_id.clone()
        } else {
            self.channel_id.clone()
        }
    }

    fn key(&self) -> EndpointKey {
        super::endpoint_key(&self.sip_address, self.sip_port, self.sip_transport)
    }
}

/// `catalog,alarm,mobile-position=5` → the events and position interval (5 s by default).
fn parse_subscribe(s: &str) -> Result<Vec<(String, u32)>, String> {
    let mut v = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, interval) = match part.split_once('=') {
            Some((n, i)) => (
                n.trim(),
                i.trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|i| (1..=3600).contains(i))
                    .ok_or_else(|| format!("interval of {n:?} must be 1..3600 s"))?,
            ),
            None => (part, 5),
        };
        let name = name.to_ascii_lowercase();
        if !["catalog", "alarm", "mobile-position"].contains(&name.as_str()) {
            return Err(format!(
                "unknown event {name:?} (catalog, alarm, mobile-position)"
            ));
        }
        if v.len() < 3 && !v.iter().any(|(n, _)| *n == name) {
            v.push((name, interval));
        }
    }
    Ok(v)
}

/// `id=pw,id=pw` (also `;` separated).
fn parse_device_passwords(s: &str) -> HashMap<String, String> {
    s.split([',', ';'])
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            let k = k.trim();
            (!k.is_empty()).then(|| (k.to_string(), v.trim().to_string()))
        })
        .collect()
}

/// 2 MiB: about 4 s of a 4 Mbit/s camera stream before the kernel drops packets.
const DEFAULT_BUFFER_SIZE: u32 = 2 * 1024 * 1024;

struct Session {
    /// The INVITE session (dialog, device address, BYE channel).
    call: Call,
    kind: SessionKindMode,
    /// Playback/download: the camera's content time to output time ([`retime`]); the PS
    /// timestamps are rewritten with it. None for live view (arrival time).
    scaler: Option<Scaler>,
    /// The camera was told to PAUSE (no stream timeout meanwhile).
    paused: bool,
    /// ... by the element going from PLAYING to PAUSED (resumed on the way back).
    paused_by_state: bool,
    /// Taken out by the streaming thread while it waits on the socket, so that the state
    /// lock is never held across a blocking receive (`stats` reads `media` instead).
    receiver: Option<MediaReceiver>,
    media: MediaSnapshot,
    last_data: Instant,
    frames: u64,
    bytes: u64,
}

/// The receiver's counters as of its last receive, for the `stats` property.
#[derive(Debug, Clone, Copy, Default)]
struct MediaSnapshot {
    depay: gstmpegps::rtp::depacketizer::Stats,
    foreign: u64,
    reordered: u64,
    ssrc_mismatch: Option<u32>,
    ssrc_changes: u64,
    local_port: u32,
    sender: Option<(SocketAddr, u32)>,
}

impl MediaSnapshot {
    fn of(receiver: &MediaReceiver) -> Self {
        MediaSnapshot {
            depay: receiver.depay_stats(),
            foreign: receiver.dropped_foreign(),
            ssrc_mismatch: receiver.ssrc_mismatch(),
            ssrc_changes: receiver.ssrc_changes(),
            reordered: receiver.reordered(),
            local_port: receiver
                .local_addr()
                .map(|a| u32::from(a.port()))
                .unwrap_or(0),
            sender: receiver.sender(),
        }
    }
}

#[derive(Default)]
struct State {
    endpoint: Option<Arc<Endpoint>>,
    subscription: Option<u64>,
    session: Option<Session>,
    /// The device hung up: EOS after the remaining frames.
    ended: bool,
    invites: u64,
}

#[derive(Default)]
pub struct Gb28181Src {
    settings: Mutex<Settings>,
    state: Mutex<State>,
    flushing: Arc<AtomicBool>,
    /// The device reported the end of the file (MediaStatus 121) during playback/download.
    media_ended: Arc<AtomicBool>,
    /// Wakes `create` from its wait on the media sockets (unlock, BYE, end of file).
    waker: Arc<Mutex<Option<Arc<mio::Waker>>>>,
}

/// Wakes the receiver `create` waits on, if there is one.
fn wake(waker: &Mutex<Option<Arc<mio::Waker>>>) {
    if let Some(w) = lock(waker).as_ref() {
        let _ = w.wake();
    }
}

#[glib::object_subclass]
impl ObjectSubclass for Gb28181Src {
    const NAME: &'static str = "GstIpcamGb28181Src";
    type Type = super::Gb28181Src;
    type ParentType = gst_base::PushSrc;
}

impl Gb28181Src {
    fn endpoint(&self) -> Option<Arc<Endpoint>> {
        lock(&self.state).endpoint.clone()
    }

    /// Starts (or joins) the shared SIP endpoint and forwards its events to the bus.
    fn open_endpoint(&self) -> Result<(), gst::ErrorMessage> {
        let s = lock(&self.settings).clone();
        if !s.media_address.is_empty() && addr::parse_ip(&s.media_address).is_none() {
            return Err(gst::error_msg!(
                gst::ResourceError::Settings,
                [
                    "media-address {:?} is not an IPv4 or IPv6 address",
                    s.media_address
                ]
            ));
        }
        if !s.sdp_address.is_empty() && addr::parse_ip(&s.sdp_address).is_none() {
            return Err(gst::error_msg!(
                gst::ResourceError::Settings,
                [
                    "sdp-address {:?} is not an IPv4 or IPv6 address",
                    s.sdp_address
                ]
            ));
        }
        let id_policy = IdPolicy::with_pattern(&s.id_pattern)
            .map_err(|e| gst::error_msg!(gst::ResourceError::Settings, ["id-pattern: {e}"]))?;
        let config = RegistrarConfig {
            server_id: s.server_id.clone(),
            realm: s.domain(),
            default_password: (!s.password.is_empty()).then(|| s.password.clone()),
            passwords: parse_device_passwords(&s.device_passwords),
            keepalive_interval_ms: u64::from(s.keepalive_interval.max(1)),
            max_missed_keepalives: s.keepalive_max_missed.max(1),
            id_policy,
            max_channels_per_device: s.max_channels_per_device.max(1) as usize,
            max_devices: s.max_devices.max(1) as usize,
            ..RegistrarConfig::default()
        };
        let ep = Endpoint::obtain(&s.key(), config).map_err(|e| {
            gst::error_msg!(
                gst::ResourceError::OpenRead,
                [
                    "Could not open SIP endpoint {}:{}: {e}",
                    s.sip_address,
                    s.sip_port
                ]
            )
        })?;
        if s.keepalive_interval != Settings::default().keepalive_interval
            || s.keepalive_max_missed != Settings::default().keepalive_max_missed
        {
            ep.set_keepalive(u64::from(s.keepalive_interval), s.keepalive_max_missed);
        }
        gst::info!(
            CAT,
            imp = self,
            "Using SIP endpoint {} ({:?})",
            ep.local_addr(),
            s.sip_transport
        );
        let weak = self.obj().downgrade();
        let media_ended = self.media_ended.clone();
        let waker = self.waker.clone();
        let device = s.device_id.clone();
        let channel = s.channel();
        let sub = ep.subscribe(move |e| {
            // From our device, about it or the channel played (an NVR, a lower platform).
            if let EndpointEvent::MediaStatus {
                device_id,
                channel_id,
                notify_type: 121,
            } = e
                && *device_id == device
                && (*channel_id == device || *channel_id == channel)
            {
                media_ended.store(true, Ordering::SeqCst);
                wake(&waker);
            }
            if let Some(obj) = weak.upgrade() {
                let st = event_structure(e);
                if is_security_event(e) {
                    gst::warning!(CAT, obj = obj, "{}", describe(e));
                } else {
                    gst::debug!(CAT, obj = obj, "Endpoint event {st}");
                }
                let _ = obj.post_message(gst::message::Element::builder(st).src(&obj).build());
            }
        });
        let mut state = lock(&self.state);
        state.endpoint = Some(ep);
        state.subscription = Some(sub);
        Ok(())
    }

    fn close_endpoint(&self) {
        let mut state = lock(&self.state);
        let sub = state.subscription.take();
        if let (Some(ep), Some(sub)) = (state.endpoint.take(), sub) {
            ep.unsubscribe(sub);
        }
    }

    fn sip_port(&self) -> u32 {
        self.endpoint()
            .map(|e| u32::from(e.local_addr().port()))
            .unwrap_or_else(|| lock(&self.settings).sip_port)
    }

    fn flushing(&self) -> bool {
        self.flushing.load(Ordering::SeqCst)
    }

    /// Waits for the device, opens the media receiver, INVITE / 200 / ACK.
    fn start_session(&self) -> Result<Session, gst::FlowError> {
        let s = lock(&self.settings).clone();
        let ep = self.endpoint().ok_or(gst::FlowError::Flushing)?;
        if s.device_id.is_empty() {
            gst::element_imp_error!(self, gst::ResourceError::Settings, ["device-id is not set"]);
            return Err(gst::FlowError::Error);
        }
        let channel = s.channel();
        let params = CallParams {
            server_id: s.server_id.clone(),
            domain: s.domain(),
            device_id: s.device_id.clone(),
            channel_id: channel.clone(),
            kind: match s.session_kind {
                SessionKindMode::Play => SessionKind::Play,
                SessionKindMode::Playback => SessionKind::Playback,
                SessionKindMode::Download => SessionKind::Download,
            },
            transport: match s.transport {
                MediaTransportMode::Udp => MediaTransport::Udp,
                MediaTransportMode::TcpPassive => MediaTransport::TcpPassive,
                MediaTransportMode::TcpActive => MediaTransport::TcpActive,
            },
            // Both checked when the endpoint was opened.
            media_address: addr::parse_ip(&s.media_address),
            sdp_address: addr::parse_ip(&s.sdp_address),
            ports: match (s.media_port, parse_port_range(&s.media_port_range)) {
                (0, Some(r)) => r.collect(),
                (p, _) => vec![p as u16],
            },
            start: s.start_time,
            end: s.end_time,
            download_speed: s.download_speed,
            wait_timeout: Duration::from_secs(u64::from(s.wait_timeout)),
            buffer_size: s.buffer_size as usize,
            max_frame_size: MAX_FRAME_SIZE,
            ssrc_policy: if s.strict_ssrc {
                SsrcPolicy::Strict
            } else {
                SsrcPolicy::Dialog
            },
        };
        self.media_ended.store(false, Ordering::SeqCst);
        let flushing = self.flushing.clone();
        let cancelled = move || flushing.load(Ordering::SeqCst);
        let mut on_event = |e: CallEvent<'_>| match e {
            CallEvent::Inviting {
                dest,
                media,
                transport,
                ssrc,
            } => {
                gst::info!(
                    CAT,
                    imp = self,
                    "INVITE {channel} at {dest}: media {media} {transport:?}, ssrc {ssrc}"
                );
                lock(&self.state).invites += 1;
            }
            CallEvent::ReceiveBuffer(Ok(Some(granted))) => gst::debug!(
                CAT,
                imp = self,
                "UDP receive buffer: asked {} bytes, got {granted}",
                s.buffer_size
            ),
            CallEvent::ReceiveBuffer(Ok(None)) => {}
            CallEvent::ReceiveBuffer(Err(e)) => {
                gst::warning!(CAT, imp = self, "Could not set the receive buffer: {e}")
            }
        };
        let mut call = match Call::start(&ep, &params, &cancelled, &mut on_event) {
            Ok(c) => c,
            Err(CallError::Cancelled) => return Err(gst::FlowError::Flushing),
            Err(e) => {
                let kind = match e {
                    CallError::NotRegistered { .. } => gst::ResourceError::NotFound,
                    _ => gst::ResourceError::OpenRead,
                };
                gst::element_imp_error!(self, kind, ("{e}"));
                return Err(gst::FlowError::Error);
            }
        };
        gst::info!(
            CAT,
            imp = self,
            "Session {} established, answer SSRC {:?}",
            call.dialog.call_id,
            call.answer_ssrc
        );
        let _ = self.obj().post_message(
            gst::message::Element::builder(
                gst::Structure::builder("gb28181-stream-started")
                    .field("device-id", &s.device_id)
                    .field("channel-id", &channel)
                    .field("call-id", &call.dialog.call_id)
                    .field("ssrc", &call.ssrc)
                    .build(),
            )
            .src(&*self.obj())
            .build(),
        );
        for (event, interval) in &s.subscribe {
            self.subscribe(event, 3600, *interval);
        }
        let receiver = call.receiver.take().expect("a new call has its receiver");
        let w = receiver.waker();
        *lock(&self.waker) = Some(w.clone());
        ep.set_dialog_wake(
            &call.dialog.call_id,
            Arc::new(move || {
                let _ = w.wake();
            }),
        );
        Ok(Session {
            kind: s.session_kind,
            scaler: match s.session_kind {
                SessionKindMode::Play => None,
                SessionKindMode::Playback => Some(Scaler::playback()),
                SessionKindMode::Download => Some(Scaler::download()),
            },
            paused: false,
            paused_by_state: false,
            media: MediaSnapshot::of(&receiver),
            receiver: Some(receiver),
            call,
            last_data: Instant::now(),
            frames: 0,
            bytes: 0,
        })
    }

    fn end_session(&self) {
        *lock(&self.waker) = None;
        let (session, ep) = {
            let mut st = lock(&self.state);
            (st.session.take(), st.endpoint.clone())
        };
        if let (Some(sess), Some(ep)) = (session, ep) {
            gst::info!(CAT, imp = self, "BYE {}", sess.call.dialog.call_id);
            sess.call.hang_up(&ep);
        }
    }

    fn stats(&self) -> gst::Structure {
        let st = lock(&self.state);
        let mut b = gst::Structure::builder("application/x-gb28181src-stats")
            .field("invites", st.invites)
            .field("streaming", st.session.is_some());
        if let Some(s) = &st.session {
            let m = &s.media;
            b = b
                .field("frames", s.frames)
                .field("bytes", s.bytes)
                .field("packets-received", m.depay.packets)
                .field("packets-lost", m.depay.packets_lost)
                .field("frames-dropped", m.depay.frames_dropped)
                .field("packets-foreign", m.foreign)
                .field("ssrc-mismatch", m.ssrc_mismatch.is_some())
                .field("ssrc-changes", m.ssrc_changes)
                .field("packets-reordered", m.reordered)
                .field("media-port", m.local_port);
            if let Some((addr, ssrc)) = m.sender {
                b = b.field("sender", addr.to_string()).field("ssrc", ssrc);
            }
            if let Some(a) = s.call.answer_ssrc {
                b = b.field("ssrc-answered", a);
            }
            if let Some(sc) = &s.scaler {
                b = b.field("scale", sc.scale()).field("paused", s.paused);
            }
        }
        if let Some(ep) = &st.endpoint {
            let e = ep.stats();
            b = b
                .field("devices", e.devices as u32)
                .field("devices-online", e.devices_online as u32)
                .field("registers", e.registrar.registers)
                .field("auth-failures", e.registrar.auth_failures)
                .field("auth-rate-limited", e.registrar.rate_limited)
                .field("keepalives", e.registrar.keepalives)
                .field("forged-requests", e.registrar.forged_requests)
                .field("invalid-ids", e.registrar.invalid_ids)
                .field("catalog-items-dropped", e.catalog_items_dropped)
                .field("events-dropped", e.events_dropped)
                .field("events-suppressed", e.events_suppressed);
        }
        b.build()
    }

    fn query(&self, cmd_type: &str) -> u32 {
        let device = lock(&self.settings).device_id.clone();
        match self.endpoint().map(|ep| ep.query(&device, cmd_type)) {
            Some(Ok(sn)) => sn,
            Some(Err(e)) => {
                gst::warning!(CAT, imp = self, "{cmd_type} query to {device} failed: {e}");
                0
            }
            None => {
                gst::warning!(CAT, imp = self, "{cmd_type} query: element not started");
                0
            }
        }
    }

    fn query_record_info(&self, start: &str, end: &str) -> u32 {
        let (device, channel) = {
            let s = lock(&self.settings);
            (s.device_id.clone(), s.channel())
        };
        match self
            .endpoint()
            .map(|ep| ep.query_record_info(&device, &channel, start, end))
        {
            Some(Ok(sn)) => sn,
            _ => {
                gst::warning!(CAT, imp = self, "RecordInfo query to {device} failed");
                0
            }
        }
    }

    /// MANSRTSP INFO in the playback dialog: PAUSE, or PLAY with `scale` (None: as it is)
    /// from `npt` seconds (None: where it is). Waits for the device's answer (at most
    /// [`CONTROL_TIMEOUT`]) unless `wait` is false; once the device agreed (or, without
    /// waiting, once sent) the output timestamps follow the new scale.
    fn playback_control(&self, command: Command, wait: bool) -> Result<(), ControlError> {
        let ep = self.endpoint().ok_or(ControlError::Cancelled)?;
        let (info, dest) = {
            let mut st = lock(&self.state);
            let sess = st.session.as_mut().ok_or(ControlError::Cancelled)?;
            if sess.kind != SessionKindMode::Playback {
                return Err(ControlError::Invalid("session kind (playback only)"));
            }
            (sess.call.control_info(command)?, sess.call.dest)
        };
        gst::debug!(CAT, imp = self, "Playback control {command:?}");
        if wait {
            let flushing = self.flushing.clone();
            send_control(&ep, &info, dest, CONTROL_TIMEOUT, &move || {
                flushing.load(Ordering::SeqCst)
            })?;
        } else {
            ep.request(&info, dest).map_err(ControlError::NoAnswer)?;
        }
        let mut st = lock(&self.state);
        if let Some(sess) = st.session.as_mut() {
            match command {
                Command::Pause => sess.paused = true,
                Command::Play { scale, .. } => {
                    if sess.paused {
                        // The stream timeout starts again.
                        sess.last_data = Instant::now();
                    }
                    sess.paused = false;
                    if let (Some(x), Some(sc)) = (scale, sess.scaler.as_mut()) {
                        sc.set_scale(x);
                    }
                }
            }
        }
        Ok(())
    }

    /// The `playback-play` / `playback-pause` signals: false (and a warning) on failure.
    fn playback_signal(&self, command: Command) -> bool {
        match self.playback_control(command, true) {
            Ok(()) => true,
            Err(e) => {
                gst::warning!(CAT, imp = self, "Playback control {command:?} failed: {e}");
                false
            }
        }
    }

    /// A playback session follows the pipeline as rtspsrc does: PAUSE to the camera when the
    /// element goes from PLAYING to PAUSED (a live source produces nothing in PAUSED), PLAY
    /// when it comes back. Sent without waiting: a state change does not block on the
    /// network (the transaction retransmits by itself, CSeq keeps the order).
    fn pause_with_pipeline(&self, pause: bool) {
        let due = {
            let mut st = lock(&self.state);
            match st.session.as_mut() {
                Some(s) if s.kind == SessionKindMode::Playback && s.paused_by_state != pause => {
                    s.paused_by_state = pause;
                    true
                }
                _ => false,
            }
        };
        if !due {
            return;
        }
        let command = if pause {
            Command::Pause
        } else {
            Command::Play {
                npt: None,
                scale: None,
            }
        };
        if let Err(e) = self.playback_control(command, false) {
            gst::warning!(CAT, imp = self, "{command:?} with the pipeline failed: {e}");
        }
    }

    /// Some(handled) for a seek during a playback session, None for anything else.
    fn seek_event(&self, event: &gst::Event) -> Option<bool> {
        let gst::EventView::Seek(seek) = event.view() else {
            return None;
        };
        let playback = lock(&self.state)
            .session
            .as_ref()
            .is_some_and(|s| s.kind == SessionKindMode::Playback);
        playback.then(|| self.handle_seek(seek))
    }

    /// A seek event on a playback session: its rate becomes the camera's Scale, a start
    /// position (SET, TIME) the npt to play from (seconds from start-time). Nothing is
    /// flushed: the camera keeps the dialog and the output timestamps stay continuous (a
    /// jump in the content is a DISCONT buffer).
    fn handle_seek(&self, seek: &gst::event::Seek) -> bool {
        let (rate, _flags, start_type, start, _, _) = seek.get();
        let npt = match (start_type, start) {
            (gst::SeekType::Set, gst::GenericFormattedValue::Time(Some(t))) => {
                Some(t.nseconds() as f64 / 1e9)
            }
            (gst::SeekType::None, _) => None,
            _ => {
                gst::warning!(CAT, imp = self, "Seek refused: only SET in TIME format");
                return false;
            }
        };
        let current = lock(&self.state)
            .session
            .as_ref()
            .and_then(|s| s.scaler.as_ref().map(Scaler::scale));
        let scale = (Some(rate) != current).then_some(rate);
        self.playback_signal(Command::Play { npt, scale })
    }

    /// Subscribes to `event` (catalog, alarm, mobile-position; `interval` seconds for
    /// positions) of this element's device for `expires` seconds (renewed until
    /// unsubscribed). Events arrive as bus messages (`gb28181-catalog-changed`,
    /// `gb28181-alarm`, `gb28181-mobile-position`, `gb28181-subscription`).
    fn subscribe(&self, event: &str, expires: u32, interval: u32) -> bool {
        let kind = match event.to_ascii_lowercase().as_str() {
            "catalog" => EventKind::Catalog,
            "alarm" => EventKind::Alarm,
            "mobile-position" | "mobileposition" => EventKind::MobilePosition {
                interval_s: interval.clamp(1, 3600),
            },
            _ => {
                gst::warning!(CAT, imp = self, "Unknown event {event:?} to subscribe to");
                return false;
            }
        };
        let device = lock(&self.settings).device_id.clone();
        match self
            .endpoint()
            .map(|ep| ep.subscribe_events(&device, kind, expires))
        {
            Some(Ok(())) => true,
            Some(Err(e)) => {
                gst::warning!(
                    CAT,
                    imp = self,
                    "Could not subscribe to {event} of {device}: {e}"
                );
                false
            }
            None => false,
        }
    }

    fn unsubscribe(&self, event: &str) -> bool {
        let device = lock(&self.settings).device_id.clone();
        let package = match event.to_ascii_lowercase().as_str() {
            "mobile-position" => "MobilePosition".to_string(),
            e => e.to_string(),
        };
        self.endpoint()
            .is_some_and(|ep| ep.unsubscribe_events(&device, &package))
    }

    fn ptz(&self, command: &str, speed: u32) -> bool {
        let speed = speed.min(255) as u8;
        let cmd = match command {
            "stop" => PtzCmd::stop(),
            "right" => PtzCmd::motion(0x01, speed, speed, 0),
            "left" => PtzCmd::motion(0x02, speed, speed, 0),
            "down" => PtzCmd::motion(0x04, speed, speed, 0),
            "up" => PtzCmd::motion(0x08, speed, speed, 0),
            "up-left" => PtzCmd::motion(0x0A, speed, speed, 0),
            "up-right" => PtzCmd::motion(0x09, speed, speed, 0),
            "down-left" => PtzCmd::motion(0x06, speed, speed, 0),
            "down-right" => PtzCmd::motion(0x05, speed, speed, 0),
            "zoom-in" => PtzCmd::motion(0x10, 0, 0, speed.min(15)),
            "zoom-out" => PtzCmd::motion(0x20, 0, 0, speed.min(15)),
            "preset-set" => PtzCmd::preset(0x81, speed),
            "preset-call" => PtzCmd::preset(0x82, speed),
            "preset-delete" => PtzCmd::preset(0x83, speed),
            _ => {
                gst::warning!(CAT, imp = self, "Unknown PTZ command {command}");
                return false;
            }
        };
        let (device, channel) = {
            let s = lock(&self.settings);
            (s.device_id.clone(), s.channel())
        };
        matches!(
            self.endpoint().map(|ep| ep.ptz(&device, &channel, cmd)),
            Some(Ok(_))
        )
    }
}

impl ObjectImpl for Gb28181Src {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            let d = Settings::default();
            vec![
                glib::ParamSpecString::builder("sip-address")
                    .nick("SIP address")
                    .blurb("Local address of the shared SIP endpoint: IPv4 or IPv6 (:: or [::] for both families)")
                    .default_value(Some(d.sip_address.as_str()))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("sip-port")
                    .nick("SIP port")
                    .blurb("Local port of the shared SIP endpoint (0 = any; read back the bound port)")
                    .maximum(65_535)
                    .default_value(d.sip_port)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("sip-transport", d.sip_transport)
                    .nick("SIP transport")
                    .blurb("Transport of the shared SIP endpoint")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("server-id")
                    .nick("Server ID")
                    .blurb("The platform's 20-digit GB/T 28181 ID")
                    .default_value(Some(DEFAULT_SERVER_ID))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("domain")
                    .nick("Domain")
                    .blurb("SIP domain and digest realm (default: first 10 digits of server-id)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("password")
                    .nick("Password")
                    .blurb("Digest password for devices without their own entry (empty: such devices are refused)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("device-passwords")
                    .nick("Device passwords")
                    .blurb("Per-device passwords as \"id=password,id=password\"")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("device-id")
                    .nick("Device ID")
                    .blurb("20-digit ID of the device to play")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("channel-id")
                    .nick("Channel ID")
                    .blurb("20-digit ID of the channel to play (default: device-id)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("transport", d.transport)
                    .nick("Media transport")
                    .blurb("How the device sends media: UDP, TCP to us (tcp-passive), or TCP from us (tcp-active)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("media-address")
                    .nick("Media address")
                    .blurb("Address to receive media on, written into the SDP (IN IP4 or IN IP6; default: the local address facing the device)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("sdp-address")
                    .nick("SDP address")
                    .blurb("Address announced in the SDP instead of the one media is received on (NAT, relays; default: the receiving address)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("media-port")
                    .nick("Media port")
                    .blurb("Port to receive media on (0 = any free port)")
                    .maximum(65_535)
                    .default_value(d.media_port)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("wait-timeout")
                    .nick("Wait timeout")
                    .blurb("Seconds to wait for the device to be registered before failing")
                    .default_value(d.wait_timeout)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("stream-timeout")
                    .nick("Stream timeout")
                    .blurb("Seconds without media before the stream fails")
                    .minimum(1)
                    .default_value(d.stream_timeout)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("buffer-size")
                    .nick("Receive buffer size")
                    .blurb("Kernel receive buffer for UDP media in bytes (0 = system default); \
                            the kernel caps it at net.core.rmem_max. 2 MiB holds 4 s of a 4 Mbit/s stream")
                    .default_value(d.buffer_size)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("subscribe")
                    .nick("Subscribe")
                    .blurb("Events of the device to subscribe to once streaming: comma-separated \
                            catalog, alarm, mobile-position[=interval s] (1 h, renewed); they \
                            arrive as bus messages")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("strict-ssrc")
                    .nick("Strict SSRC")
                    .blurb("Accept media only with the SSRC the device answered, from one address. \
                            Off (default): by dialog, as devices need: a device sending another SSRC \
                            than it answered is accepted from its own IP, an SSRC change mid-stream \
                            from the same address is followed (both shown in stats)")
                    .default_value(false)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("keepalive-interval")
                    .nick("Keepalive interval")
                    .blurb("Expected device keepalive interval in milliseconds (offline after keepalive-max-missed intervals)")
                    .minimum(1)
                    .default_value(d.keepalive_interval)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("keepalive-max-missed")
                    .nick("Missed keepalives")
                    .blurb("Missed keepalive intervals before a device is reported offline")
                    .minimum(1)
                    .default_value(d.keepalive_max_missed)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("media-port-range")
                    .nick("Media port range")
                    .blurb("Ports to receive media on as \"min-max\" (first free one), when media-port is 0")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("session-kind", d.session_kind)
                    .nick("Session kind")
                    .blurb("Live view, or playback / download of the recording from start-time to end-time")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("start-time")
                    .nick("Start time")
                    .blurb("Playback/download start, Unix seconds")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("end-time")
                    .nick("End time")
                    .blurb("Playback/download end, Unix seconds")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("download-speed")
                    .nick("Download speed")
                    .blurb("Download speed factor asked for (a=downloadspeed)")
                    .minimum(1)
                    .maximum(64)
                    .default_value(d.download_speed)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("id-pattern")
                    .nick("ID pattern")
                    .blurb("Regular expression device and channel IDs from the network must match \
                            as a whole (always at most 64 of A-Z a-z 0-9 - _); shared endpoint: \
                            the first element's setting applies")
                    .default_value(Some(id::DEFAULT_PATTERN))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("max-channels-per-device")
                    .nick("Channels per device")
                    .blurb("Catalog channels remembered per device; further items are dropped \
                            (shared endpoint: the first element's setting applies)")
                    .minimum(1)
                    .default_value(d.max_channels_per_device)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("max-devices")
                    .nick("Devices")
                    .blurb("Registrations accepted at once, then 503 (shared endpoint: the first \
                            element's setting applies)")
                    .minimum(1)
                    .default_value(d.max_devices)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb("Session and endpoint statistics")
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn signals() -> &'static [glib::subclass::Signal] {
        static SIGNALS: LazyLock<Vec<glib::subclass::Signal>> = LazyLock::new(|| {
            let query = |name: &'static str, cmd: &'static str| {
                glib::subclass::Signal::builder(name)
                    .action()
                    .return_type::<u32>()
                    .class_handler(move |args| {
                        let obj = args[0].get::<super::Gb28181Src>().ok()?;
                        Some(obj.imp().query(cmd).to_value())
                    })
                    .build()
            };
            vec![
                glib::subclass::Signal::builder("query-record-info")
                    .action()
                    .param_types([String::static_type(), String::static_type()])
                    .return_type::<u32>()
                    .class_handler(|args| {
                        let obj = args[0].get::<super::Gb28181Src>().ok()?;
                        let start = args[1].get::<String>().ok()?;
                        let end = args[2].get::<String>().ok()?;
                        Some(obj.imp().query_record_info(&start, &end).to_value())
                    })
                    .build(),
                glib::subclass::Signal::builder("playback-pause")
                    .action()
                    .return_type::<bool>()
                    .class_handler(|args| {
                        let obj = args[0].get::<super::Gb28181Src>().ok()?;
                        Some(obj.imp().playback_signal(Command::Pause).to_value())
                    })
                    .build(),
                glib::subclass::Signal::builder("playback-play")
                    .action()
                    .param_types([f64::static_type(), f64::static_type()])
                    .return_type::<bool>()
                    .class_handler(|args| {
                        let obj = args[0].get::<super::Gb28181Src>().ok()?;
                        let scale = args[1].get::<f64>().ok()?;
                        let npt = args[2].get::<f64>().ok()?;
                        let command = Command::Play {
                            npt: (npt >= 0.0).then_some(npt),
                            scale: (scale > 0.0).then_some(scale),
                        };
                        Some(obj.imp().playback_signal(command).to_value())
                    })
                    .build(),
                query("query-catalog", "Catalog"),
                query("query-device-info", "DeviceInfo"),
                query("query-device-status", "DeviceStatus"),
                glib::subclass::Signal::builder("subscribe")
                    .action()
                    .param_types([
                        String::static_type(),
                        u32::static_type(),
                        u32::static_type(),
                    ])
                    .return_type::<bool>()
                    .class_handler(|args| {
                        let obj = args[0].get::<super::Gb28181Src>().ok()?;
                        let event = args[1].get::<String>().ok()?;
                        let expires = args[2].get::<u32>().ok()?;
                        let interval = args[3].get::<u32>().ok()?;
                        Some(obj.imp().subscribe(&event, expires, interval).to_value())
                    })
                    .build(),
                glib::subclass::Signal::builder("unsubscribe")
                    .action()
                    .param_types([String::static_type()])
                    .return_type::<bool>()
                    .class_handler(|args| {
                        let obj = args[0].get::<super::Gb28181Src>().ok()?;
                        let event = args[1].get::<String>().ok()?;
                        Some(obj.imp().unsubscribe(&event).to_value())
                    })
                    .build(),
                glib::subclass::Signal::builder("ptz")
                    .action()
                    .param_types([String::static_type(), u32::static_type()])
                    .return_type::<bool>()
                    .class_handler(|args| {
                        let obj = args[0].get::<super::Gb28181Src>().ok()?;
                        let cmd = args[1].get::<String>().ok()?;
                        let speed = args[2].get::<u32>().ok()?;
                        Some(obj.imp().ptz(&cmd, speed).to_value())
                    })
                    .build(),
            ]
        });
        SIGNALS.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = lock(&self.settings);
        let string = || {
            value
                .get::<Option<String>>()
                .ok()
                .flatten()
                .unwrap_or_default()
        };
        match pspec.name() {
            "sip-address" => s.sip_address = string(),
            "sip-port" => s.sip_port = value.get().unwrap_or(5060),
            "sip-transport" => s.sip_transport = value.get().unwrap_or_default(),
            "server-id" => s.server_id = string(),
            "domain" => s.domain = string(),
            "password" => s.password = string(),
            "device-passwords" => s.device_passwords = string(),
            "device-id" => s.device_id = string(),
            "channel-id" => s.channel_id = string(),
            "transport" => s.transport = value.get().unwrap_or_default(),
            "media-address" => s.media_address = string(),
            "sdp-address" => s.sdp_address = string(),
            "media-port" => s.media_port = value.get().unwrap_or(0),
            "wait-timeout" => s.wait_timeout = value.get().unwrap_or(30),
            "stream-timeout" => s.stream_timeout = value.get().unwrap_or(10),
            "buffer-size" => s.buffer_size = value.get().unwrap_or(DEFAULT_BUFFER_SIZE),
            "strict-ssrc" => s.strict_ssrc = value.get().expect("type checked upstream"),
            "subscribe" => match parse_subscribe(&string()) {
                Ok(v) => s.subscribe = v,
                Err(e) => {
                    gst::warning!(CAT, imp = self, "subscribe refused: {e}");
                    s.subscribe.clear();
                }
            },
            "keepalive-interval" => s.keepalive_interval = value.get().unwrap_or(60_000),
            "keepalive-max-missed" => s.keepalive_max_missed = value.get().unwrap_or(3),
            "media-port-range" => s.media_port_range = string(),
            "session-kind" => s.session_kind = value.get().unwrap_or_default(),
            "start-time" => s.start_time = value.get().unwrap_or(0),
            "end-time" => s.end_time = value.get().unwrap_or(0),
            "download-speed" => s.download_speed = value.get().unwrap_or(1),
            "id-pattern" => {
                let p = string();
                s.id_pattern = if p.is_empty() {
                    id::DEFAULT_PATTERN.into()
                } else {
                    p
                };
            }
            "max-channels-per-device" => {
                s.max_channels_per_device = value
                    .get()
                    .unwrap_or(registrar::DEFAULT_MAX_CHANNELS_PER_DEVICE as u32)
            }
            "max-devices" => s.max_devices = value.get().unwrap_or(Settings::default().max_devices),
            _ => {}
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        if pspec.name() == "stats" {
            return self.stats().to_value();
        }
        if pspec.name() == "sip-port" {
            return self.sip_port().to_value();
        }
        let s = lock(&self.settings);
        match pspec.name() {
            "sip-address" => s.sip_address.to_value(),
            "sip-transport" => s.sip_transport.to_value(),
            "server-id" => s.server_id.to_value(),
            "domain" => s.domain().to_value(),
            // Never read back the password.
            "password" => None::<String>.to_value(),
            "device-passwords" => None::<String>.to_value(),
            "device-id" => s.device_id.to_value(),
            "channel-id" => s.channel().to_value(),
            "transport" => s.transport.to_value(),
            "media-address" => s.media_address.to_value(),
            "sdp-address" => s.sdp_address.to_value(),
            "media-port" => s.media_port.to_value(),
            "wait-timeout" => s.wait_timeout.to_value(),
            "stream-timeout" => s.stream_timeout.to_value(),
            "buffer-size" => s.buffer_size.to_value(),
            "strict-ssrc" => s.strict_ssrc.to_value(),
            "subscribe" => s
                .subscribe
                .iter()
                .map(|(e, i)| match e.as_str() {
                    "mobile-position" => format!("{e}={i}"),
                    _ => e.clone(),
                })
                .collect::<Vec<_>>()
                .join(",")
                .to_value(),
            "keepalive-interval" => s.keepalive_interval.to_value(),
            "keepalive-max-missed" => s.keepalive_max_missed.to_value(),
            "media-port-range" => s.media_port_range.to_value(),
            "session-kind" => s.session_kind.to_value(),
            "start-time" => s.start_time.to_value(),
            "end-time" => s.end_time.to_value(),
            "download-speed" => s.download_speed.to_value(),
            "id-pattern" => s.id_pattern.to_value(),
            "max-channels-per-device" => s.max_channels_per_device.to_value(),
            "max-devices" => s.max_devices.to_value(),
            _ => None::<String>.to_value(),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.set_live(true);
        obj.set_format(gst::Format::Time);
    }
}

impl GstObjectImpl for Gb28181Src {}

impl ElementImpl for Gb28181Src {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "GB/T 28181 live source",
                "Source/Network",
                "Platform side of GB/T 28181: registrar for cameras on a shared SIP endpoint, \
                 INVITEs a channel and outputs its MPEG-PS stream (RTP over UDP or TCP)",
                "gst-ipcam developers",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = gst::Caps::builder("video/mpeg")
                .field("systemstream", true)
                .field("mpegversion", 2i32)
                .field("alignment", "frame")
                .build();
            vec![
                gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &caps,
                )
                .expect("valid src template"),
            ]
        });
        PAD_TEMPLATES.as_ref()
    }

    /// A seek given to the element itself (as `gst_element_seek` does) is handled as one
    /// coming up from downstream.
    fn send_event(&self, event: gst::Event) -> bool {
        self.seek_event(&event)
            .unwrap_or_else(|| self.parent_send_event(event))
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        if transition == gst::StateChange::NullToReady
            && let Err(e) = self.open_endpoint()
        {
            self.post_error_message(e);
            return Err(gst::StateChangeError);
        }
        if transition == gst::StateChange::PlayingToPaused {
            self.pause_with_pipeline(true);
        }
        let ret = self.parent_change_state(transition);
        match transition {
            gst::StateChange::ReadyToNull => self.close_endpoint(),
            gst::StateChange::PausedToPlaying => self.pause_with_pipeline(false),
            _ => {}
        }
        ret
    }
}

impl BaseSrcImpl for Gb28181Src {
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let mut st = lock(&self.state);
        st.ended = false;
        st.session = None;
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        self.end_session();
        Ok(())
    }

    fn is_seekable(&self) -> bool {
        false
    }

    fn event(&self, event: &gst::Event) -> bool {
        self.seek_event(event)
            .unwrap_or_else(|| self.parent_event(event))
    }

    fn unlock(&self) -> Result<(), gst::ErrorMessage> {
        gst::debug!(CAT, imp = self, "unlock");
        self.flushing.store(true, Ordering::SeqCst);
        // `create` sleeps on the media sockets, the session set-up on the endpoint's
        // changes: woken, they see the flag at once.
        wake(&self.waker);
        if let Some(ep) = self.endpoint() {
            ep.wake_waiters();
        }
        Ok(())
    }

    fn unlock_stop(&self) -> Result<(), gst::ErrorMessage> {
        gst::debug!(CAT, imp = self, "unlock_stop");
        self.flushing.store(false, Ordering::SeqCst);
        Ok(())
    }
}

impl PushSrcImpl for Gb28181Src {
    fn create(
        &self,
        _buffer: Option<&mut gst::BufferRef>,
    ) -> Result<CreateSuccess, gst::FlowError> {
        if lock(&self.state).ended {
            return Err(gst::FlowError::Eos);
        }
        if lock(&self.state).session.is_none() {
            let session = self.start_session()?;
            lock(&self.state).session = Some(session);
        }
        let stream_timeout =
            Duration::from_secs(u64::from(lock(&self.settings).stream_timeout.max(1)));
        loop {
            if self.flushing() {
                return Err(gst::FlowError::Flushing);
            }
            let mut st = lock(&self.state);
            let Some(sess) = st.session.as_mut() else {
                return Err(gst::FlowError::Flushing);
            };
            if sess.kind != SessionKindMode::Play && self.media_ended.load(Ordering::SeqCst) {
                gst::info!(CAT, imp = self, "Device reported the end of the recording");
                let sess = st.session.take().expect("checked above");
                st.ended = true;
                drop(st);
                // Hang up and end the stream.
                if let Some(ep) = self.endpoint() {
                    sess.call.hang_up(&ep);
                }
                return Err(gst::FlowError::Eos);
            }
            if let Ok(bye) = sess.call.bye_rx.try_recv() {
                gst::info!(
                    CAT,
                    imp = self,
                    "Device ended the session {} (BYE)",
                    bye.call_id().unwrap_or_default()
                );
                st.session = None;
                st.ended = true;
                drop(st);
                let _ = self.obj().post_message(
                    gst::message::Element::builder(
                        gst::Structure::builder("gb28181-stream-ended")
                            .field("reason", "bye")
                            .build(),
                    )
                    .src(&*self.obj())
                    .build(),
                );
                return Err(gst::FlowError::Eos);
            }
            let Some(mut receiver) = sess.receiver.take() else {
                return Err(gst::FlowError::Flushing);
            };
            drop(st);
            // Sleeps until media comes or a waker ends the wait (unlock, BYE, end of file);
            // the timeout only paces the no-media check.
            let received = receiver.next_frame(Duration::from_secs(1));
            receiver.take_woken();
            let media = MediaSnapshot::of(&receiver);
            let mut st = lock(&self.state);
            // Stopped while we waited: the session (and with it the dialog) is gone.
            let Some(sess) = st.session.as_mut() else {
                return Err(gst::FlowError::Flushing);
            };
            sess.receiver = Some(receiver);
            if let (None, Some(sent)) = (sess.media.ssrc_mismatch, media.ssrc_mismatch) {
                gst::warning!(
                    CAT,
                    imp = self,
                    "The device sends SSRC {sent} but answered {:?}: accepted by dialog \
                     (strict-ssrc refuses it)",
                    sess.call.answer_ssrc
                );
            }
            sess.media = media;
            let frame = match received {
                Ok(f) => f,
                Err(e) => {
                    drop(st);
                    gst::element_imp_error!(
                        self,
                        gst::ResourceError::Read,
                        ["Media receive failed: {e}"]
                    );
                    return Err(gst::FlowError::Error);
                }
            };
            let Some(mut frame) = frame else {
                if !sess.paused && sess.last_data.elapsed() > stream_timeout {
                    drop(st);
                    gst::element_imp_error!(
                        self,
                        gst::ResourceError::Read,
                        (
                            "No media from the device for {} s",
                            stream_timeout.as_secs()
                        )
                    );
                    return Err(gst::FlowError::Error);
                }
                continue;
            };
            sess.last_data = Instant::now();
            sess.frames += 1;
            sess.bytes += frame.data.len() as u64;
            let first = sess.frames == 1;
            let obj = self.obj();
            let mut pts = match (obj.clock(), obj.base_time()) {
                (Some(c), Some(b)) => c.time().checked_sub(b),
                _ => None,
            };
            if let (Some(scaler), Some(now)) = (sess.scaler.as_mut(), pts) {
                // Playback/download: the camera's timestamps, scaled, in the PS and on the
                // buffer (running time), so that a downstream syncing to the clock plays at
                // the speed asked for.
                let t = scaler.frame(retime::frame_timestamp(&frame.data), now.nseconds());
                retime::retime_ps(&mut frame.data, |ts| scaler.map_ticks(ts));
                pts = Some(gst::ClockTime::from_nseconds(t.pts_ns));
                frame.discont |= t.discont;
            }
            drop(st);
            let mut buffer = gst::Buffer::from_mut_slice(frame.data);
            {
                let b = buffer.get_mut().expect("new buffer");
                b.set_pts(pts);
                b.set_dts(pts);
                if frame.discont || first {
                    b.set_flags(gst::BufferFlags::DISCONT);
                }
            }
            gst::trace!(
                CAT,
                imp = self,
                "Frame of {} bytes, RTP time {}, pts {:?}",
                buffer.size(),
                frame.rtp_timestamp,
                pts
            );
            return Ok(CreateSuccess::NewBuffer(buffer));
        }
    }
}

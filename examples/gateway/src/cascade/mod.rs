//! GB28181 cascade (级联, GB/T 28181 §9.1): the gateway registers as a lower platform with
//! each upper platform of its `[[cascade]]` tables and serves them its cameras' channels.
//!
//! Per upper platform one many-channel [`DeviceAgent`] (gstgb28181's device side: digest
//! registration, keepalives, re-registration with back-off, Catalog paged over several
//! MESSAGEs, DeviceInfo/DeviceStatus, INVITE answers over UDP / TCP active / TCP passive)
//! with [`share::Shared`] as its channel directory: the mounted channels it shares, names
//! and status from the gateway's directory (a channel whose camera is offline is `OFF`).
//! An INVITE the agent admits becomes, at its ACK, a [`session`]: the channel's ingest
//! (started if nobody watched, which INVITEs the camera) feeds `appsrc ! parse ! psmux !
//! appsink`, whose PS frames the agent sends as RTP to the address of the upper's SDP. The
//! upper's BYE ends it and releases the ingest (the camera gets BYE when nobody else
//! watches); the camera going away (channel unmounted, session failed) makes the gateway BYE
//! the upper.
//!
//! PTZ, key-frame requests and RecordInfo queries for a shared channel go on to its camera
//! ([`forward`]).
//!
//! Bounds: [`settings::MAX_UPPERS`] upper platforms, `max_sessions` calls each (the agent
//! answers 486 beyond), catalog bounded by the agent; requests not from the upper's address
//! get 403, unshared or malformed channel IDs 404, hostile SDP (address, port, SSRC) 488.

pub mod api;
mod forward;
mod session;
pub mod settings;
mod share;

use crate::factory::ChannelHooks;
use crate::gateway::Control;
use gst_ipcam_common::sync::lock;
use gstgb28181::core::addr;
use gstgb28181::device::{Channels, DeviceAgent, DeviceConfig, DeviceEvent, SipTransport};
pub use settings::CascadeConfig;
use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// One upper platform.
pub(crate) struct Upper {
    cfg: CascadeConfig,
    agent: OnceLock<Arc<DeviceAgent>>,
    /// Why the agent could not start, if it could not.
    error: Mutex<Option<String>>,
    registered: AtomicBool,
    registrations: AtomicU64,
    refused: AtomicU64,
    sessions: Mutex<HashMap<String, session::Handle>>,
    sessions_total: AtomicU64,
    /// RecordInfo queries waiting on cameras ([`forward::MAX_RECORD_QUERIES`]).
    record_queries: std::sync::atomic::AtomicUsize,
    hooks: Arc<dyn ChannelHooks>,
    control: Arc<Control>,
}

/// The running cascade: one agent per upper platform.
pub struct Cascade {
    uppers: Vec<Arc<Upper>>,
    stopped: AtomicBool,
}

/// The address the gateway's SIP toward `server` goes from: `sip_address` unless it is a
/// wildcard, else the local address facing the server.
fn local_ip(sip_address: &str, server: SocketAddr) -> String {
    match addr::parse_ip(sip_address) {
        Some(ip) if !ip.is_unspecified() => ip.to_string(),
        _ => addr::local_ip_towards(server)
            .map(|ip| ip.to_string())
            .unwrap_or_else(|_| "0.0.0.0".into()),
    }
}

impl Cascade {
    /// Starts one agent per upper platform (an upper that cannot be started is reported in
    /// the API and skipped). `hooks` gives the channels' ingests, `control` their list,
    /// names and status.
    pub fn start(
        uppers: &[CascadeConfig],
        sip_address: &str,
        control: Arc<Control>,
        hooks: Arc<dyn ChannelHooks>,
    ) -> Cascade {
        let uppers = uppers
            .iter()
            .map(|cfg| {
                let u = Arc::new(Upper {
                    cfg: cfg.clone(),
                    agent: OnceLock::new(),
                    error: Mutex::new(None),
                    registered: AtomicBool::new(false),
                    registrations: AtomicU64::new(0),
                    refused: AtomicU64::new(0),
                    sessions: Mutex::new(HashMap::new()),
                    sessions_total: AtomicU64::new(0),
                    record_queries: Default::default(),
                    hooks: hooks.clone(),
                    control: control.clone(),
                });
                if let Err(e) = u.start_agent(sip_address) {
                    crate::gateway::warn(&format!("cascade {}: {e}", cfg.server_id));
                    *lock(&u.error) = Some(e);
                }
                u
            })
            .collect();
        Cascade {
            uppers,
            stopped: AtomicBool::new(false),
        }
    }

    /// BYE to every session of every upper platform, then unregister.
    pub fn stop(&self) {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        for u in &self.uppers {
            let handles: Vec<session::Handle> = lock(&u.sessions).drain().map(|(_, h)| h).collect();
            for h in handles {
                h.stop_and_join();
            }
            if let Some(a) = u.agent.get() {
                a.stop();
            }
        }
    }

    /// Prometheus text: per upper platform, registered (0/1), sessions, refused requests.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        if self.uppers.is_empty() {
            return String::new();
        }
        let mut o = String::from(
            "# HELP gateway_cascade_registered Registered with the upper platform (1) or not (0)
# TYPE gateway_cascade_registered gauge
",
        );
        for u in &self.uppers {
            let _ = writeln!(
                o,
                "gateway_cascade_registered{{upper=\"{}\"}} {}",
                u.cfg.server_id,
                u8::from(u.registered.load(Ordering::SeqCst))
            );
        }
        o.push_str(
            "# HELP gateway_cascade_sessions Live sessions the upper platform has open
# TYPE gateway_cascade_sessions gauge
",
        );
        for u in &self.uppers {
            let _ = writeln!(
                o,
                "gateway_cascade_sessions{{upper=\"{}\"}} {}",
                u.cfg.server_id,
                lock(&u.sessions).len()
            );
        }
        o.push_str(
            "# HELP gateway_cascade_refused_total Requests refused (stranger, unshared channel, hostile SDP, busy)
# TYPE gateway_cascade_refused_total counter
",
        );
        for u in &self.uppers {
            let _ = writeln!(
                o,
                "gateway_cascade_refused_total{{upper=\"{}\"}} {}",
                u.cfg.server_id,
                u.refused.load(Ordering::SeqCst)
            );
        }
        o
    }

    /// The state of each upper platform (API).
    pub fn state(&self) -> Vec<api::UpperView> {
        self.uppers.iter().map(|u| u.view()).collect()
    }
}

impl Drop for Cascade {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Upper {
    fn start_agent(self: &Arc<Self>, sip_address: &str) -> Result<(), String> {
        let c = &self.cfg;
        let server = (c.address.as_str(), c.port)
            .to_socket_addrs()
            .map_err(|e| format!("{}: {e}", c.address))?
            .next()
            .ok_or_else(|| format!("{}: no address", c.address))?;
        let config = DeviceConfig {
            server,
            server_id: c.server_id.clone(),
            domain: c.sip_domain(),
            device_id: c.device_id.clone(),
            channel_id: c.device_id.clone(),
            password: c.password.clone(),
            local_ip: local_ip(sip_address, server),
            local_port: 0,
            expires: c.register_expires_s,
            keepalive_interval_ms: u64::from(c.keepalive_interval_s) * 1000,
            retry_ms: u64::from(c.register_retry_s) * 1000,
            device_name: c.name.clone(),
            transport: if c.transport == "tcp" {
                SipTransport::Tcp
            } else {
                SipTransport::Udp
            },
            records: Vec::new(),
        };
        let channels = Channels {
            directory: Arc::new(share::Shared::new(c, self.control.clone())),
            max_sessions: c.max_sessions,
            catalog_page: c.catalog_page,
        };
        let weak = Arc::downgrade(self);
        let agent = DeviceAgent::start_with_channels(config, channels, move |ev| {
            if let Some(u) = weak.upgrade() {
                u.on_event(ev);
            }
        })
        .map_err(|e| format!("SIP: {e}"))?;
        let _ = self.agent.set(agent);
        Ok(())
    }

    fn on_event(self: &Arc<Self>, ev: DeviceEvent) {
        let id = &self.cfg.server_id;
        match ev {
            DeviceEvent::Registered { .. } => {
                if !self.registered.swap(true, Ordering::SeqCst) {
                    println!("[gateway] cascade {id}: registered");
                }
                self.registrations.fetch_add(1, Ordering::SeqCst);
            }
            DeviceEvent::RegisterFailed { .. }
            | DeviceEvent::Unregistered
            | DeviceEvent::Disconnected { .. }
                if self.registered.swap(false, Ordering::SeqCst) =>
            {
                println!("[gateway] cascade {id}: not registered");
            }
            DeviceEvent::SessionStarted {
                call_id,
                channel,
                kind,
                range,
                download_speed,
                ..
            } => {
                self.sessions_total.fetch_add(1, Ordering::SeqCst);
                // Playback / Download of the camera's recordings over the asked range.
                let recording = range.map(|(start, end)| session::Recording {
                    start,
                    end,
                    download: kind.eq_ignore_ascii_case("Download"),
                    speed: download_speed,
                });
                session::start(self, call_id, channel, recording);
            }
            DeviceEvent::SessionStopped { call_id, .. } => {
                // Not joined here: this may be the session's own streaming thread.
                if let Some(h) = lock(&self.sessions).get(&call_id) {
                    h.stop();
                }
            }
            DeviceEvent::Ptz { channel, command } => self.forward_ptz(&channel, &command),
            DeviceEvent::PlaybackControl {
                call_id,
                method,
                scale,
                npt,
            } => self.forward_playback_control(&call_id, method == "PAUSE", scale, npt),
            DeviceEvent::KeyFrameRequested { channel } => self.forward_key_frame(&channel),
            DeviceEvent::RecordInfoQuery {
                sn,
                channel,
                start,
                end,
            } => self.forward_record_info(sn, channel, start, end),
            DeviceEvent::Refused {
                method,
                status,
                why,
            } => {
                self.refused.fetch_add(1, Ordering::SeqCst);
                crate::gateway::warn(&format!(
                    "cascade {id}: {method} refused with {status}: {why}"
                ));
            }
            _ => {}
        }
    }

    fn agent(&self) -> Option<&Arc<DeviceAgent>> {
        self.agent.get()
    }

    fn view(&self) -> api::UpperView {
        let agent = self.agent();
        let sessions = lock(&self.sessions)
            .iter()
            .map(|(call_id, h)| {
                let (packets, bytes) = agent
                    .and_then(|a| a.call_counts(call_id))
                    .unwrap_or_default();
                api::CascadeSessionView {
                    channel: h.channel.clone(),
                    started_s_ago: h.started.elapsed().as_secs(),
                    packets,
                    bytes,
                }
            })
            .collect();
        let now = gstgb28181::endpoint::now_ms();
        api::UpperView {
            server_id: self.cfg.server_id.clone(),
            address: format!("{}:{}", self.cfg.address, self.cfg.port),
            transport: self.cfg.transport.clone(),
            device_id: self.cfg.device_id.clone(),
            registered: self.registered.load(Ordering::SeqCst),
            registrations: self.registrations.load(Ordering::SeqCst),
            last_keepalive_s_ago: agent
                .and_then(|a| a.last_keepalive_ms())
                .map(|t| now.saturating_sub(t) / 1000),
            sessions,
            sessions_total: self.sessions_total.load(Ordering::SeqCst),
            refused: self.refused.load(Ordering::SeqCst),
            error: lock(&self.error).clone(),
        }
    }
}

/// A weak handle on an upper platform for the session threads.
type WeakUpper = Weak<Upper>;

//! What the control API may see and do in a running gateway (the `/v1` handlers in
//! [`crate::api`] call only this): devices and channels, device queries, PTZ and key frames,
//! reader sessions, recordings and the configuration, and its reload. Holds the gateway
//! weakly: after it stops, every call answers "gone".

use super::{Shared, lock, snapshot, unmount_device};
use crate::api::directory::Directory;
use crate::config::Config;
use crate::metrics::SessionStat;
use gst_rtsp_server::prelude::*;
use gstgb28181::core::id::printable;
use gstgb28181::core::manscdp::PtzCmd;
use gstgb28181::core::registrar::Device;
use gstgb28181::endpoint::Endpoint;
use std::sync::{Arc, Weak};

/// Reads the configuration again (the file and flags the gateway started with).
pub type Loader = Box<dyn Fn() -> Result<Config, String> + Send + Sync>;

/// The reload state of a gateway.
pub(super) struct Reload {
    pub(super) loader: Option<Loader>,
    /// The configuration as given at start, with the reloadable settings as last applied.
    applied: Config,
}

impl Reload {
    pub(super) fn new(applied: Config) -> Reload {
        Reload {
            loader: None,
            applied,
        }
    }
}

/// What a reload applied, and what it could not.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ReloadReport {
    /// The user names now configured.
    pub users: Vec<String>,
    pub users_added: Vec<String>,
    pub users_removed: Vec<String>,
    /// Users whose entry changed (password, tokens, permissions, addresses).
    pub users_changed: Vec<String>,
    /// Whether the default or a per-device password changed.
    pub device_passwords_changed: bool,
    /// Settings that differ in the file but apply only after a restart.
    pub restart_needed: Vec<String>,
}

/// Why a reload changed nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadError {
    /// The gateway was started without a configuration source.
    NoSource,
    /// The file or flags are invalid (the old configuration stays).
    Invalid(String),
    Gone,
}

impl std::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReloadError::NoSource => f.write_str("the gateway was started without a config file"),
            ReloadError::Invalid(m) => write!(f, "configuration refused, nothing changed: {m}"),
            ReloadError::Gone => f.write_str("gateway stopping"),
        }
    }
}

/// Re-reads the configuration, checks all of it, then swaps the users (RTSP and HTTP share
/// one table: new requests are authenticated against the new users at once; sessions
/// already playing go on) and the device passwords (registrations challenged from now on).
/// One reload at a time.
pub(super) fn reload(sh: &Shared) -> Result<ReloadReport, ReloadError> {
    let mut state = lock(&sh.reload);
    let loader = state.loader.as_ref().ok_or(ReloadError::NoSource)?;
    let new = loader().map_err(ReloadError::Invalid)?;
    new.check().map_err(ReloadError::Invalid)?;
    let users = sh.rtsp_guard.users();
    let before = users.names();
    users
        .replace(&new.users)
        .map_err(|e| ReloadError::Invalid(format!("users: {e}")))?;
    let old = &state.applied;
    let device_passwords_changed =
        old.password != new.password || old.device_passwords != new.device_passwords;
    if device_passwords_changed {
        sh.endpoint.set_passwords(
            (!new.password.is_empty()).then(|| new.password.clone()),
            new.device_password_map(),
        );
    }
    let name_set = |v: &[crate::auth::UserConfig]| -> Vec<String> {
        v.iter().map(|u| u.user.clone()).collect()
    };
    let now = users.names();
    let report = ReloadReport {
        users_added: now
            .iter()
            .filter(|u| !before.contains(u))
            .cloned()
            .collect(),
        users_removed: before
            .iter()
            .filter(|u| !now.contains(u))
            .cloned()
            .collect(),
        users_changed: name_set(&new.users)
            .into_iter()
            .filter(|n| {
                let o = old.users.iter().find(|u| &u.user == n);
                let m = new.users.iter().find(|u| &u.user == n);
                o.is_some() && o != m
            })
            .collect(),
        users: now,
        device_passwords_changed,
        restart_needed: old.restart_needed(&new),
    };
    state.applied.users = new.users;
    state.applied.password = new.password;
    state.applied.device_passwords = new.device_passwords;
    eprintln!(
        "[gateway] configuration reloaded: {} user(s) (+{} -{} ~{}), device passwords {}{}",
        report.users.len(),
        report.users_added.len(),
        report.users_removed.len(),
        report.users_changed.len(),
        if device_passwords_changed {
            "changed"
        } else {
            "unchanged"
        },
        if report.restart_needed.is_empty() {
            String::new()
        } else {
            format!(
                "; a restart is needed for: {}",
                report.restart_needed.join(", ")
            )
        }
    );
    Ok(report)
}

/// The gateway stopped (the API answers 503).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone;

pub struct Control {
    shared: Weak<Shared>,
    endpoint: Arc<Endpoint>,
    directory: Arc<Directory>,
    subscription: u64,
    api_requests: crate::api::RequestCounts,
}

impl Drop for Control {
    fn drop(&mut self) {
        self.endpoint.unsubscribe(self.subscription);
    }
}

impl Control {
    pub(super) fn new(sh: &Arc<Shared>) -> Arc<Control> {
        let directory = Arc::new(Directory::new(
            sh.cfg.max_devices,
            sh.cfg.max_channels_per_device,
        ));
        for d in sh.endpoint.devices() {
            // Answers to these come as events like any other.
            let _ = sh.endpoint.query(&d.id, "DeviceInfo");
        }
        let weak_dir = Arc::downgrade(&directory);
        let weak_ep = Arc::downgrade(&sh.endpoint);
        let cfg = sh.cfg.clone();
        let subscription = sh.endpoint.subscribe(move |ev| {
            if let (Some(dir), Some(ep)) = (weak_dir.upgrade(), weak_ep.upgrade()) {
                dir.apply(ev, |id| ep.device(id).is_some());
                // Manufacturer and model of a new device, as wvp shows them.
                if let gstgb28181::endpoint::EndpointEvent::Registrar(
                    gstgb28181::core::registrar::Event::Registered {
                        device_id,
                        refresh: false,
                        ..
                    },
                ) = ev
                {
                    let _ = ep.query(device_id, "DeviceInfo");
                    subscribe_events(&ep, &cfg, device_id);
                }
            }
        });
        Arc::new(Control {
            shared: Arc::downgrade(sh),
            endpoint: sh.endpoint.clone(),
            directory,
            subscription,
            api_requests: Default::default(),
        })
    }

    /// The endpoint's subscriptions to `device`'s events.
    pub fn subscriptions(&self, device: &str) -> Vec<gstgb28181::endpoint::SubscriptionInfo> {
        self.endpoint
            .subscriptions()
            .into_iter()
            .filter(|s| s.device_id == device)
            .collect()
    }

    fn sh(&self) -> Result<Arc<Shared>, Gone> {
        self.shared
            .upgrade()
            .filter(|s| !s.stopping.load(std::sync::atomic::Ordering::SeqCst))
            .ok_or(Gone)
    }

    /// API requests answered, by status.
    pub fn api_requests(&self) -> &crate::api::RequestCounts {
        &self.api_requests
    }

    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }

    /// Checks a device or channel ID against the gateway's ID policy.
    pub fn check_id(&self, id: &str) -> Result<(), String> {
        let sh = self.sh().map_err(|_| "gateway stopped".to_string())?;
        sh.ids
            .check(id)
            .map_err(|e| format!("{}: {e}", gstgb28181::core::id::printable(id)))
    }

    pub fn devices(&self) -> Vec<Device> {
        let mut d = self.endpoint.devices();
        d.sort_by(|a, b| a.id.cmp(&b.id));
        d
    }

    pub fn device(&self, id: &str) -> Option<Device> {
        self.endpoint.device(id)
    }

    /// `udp` or `tcp`: the SIP transport devices use.
    pub fn transport(&self) -> &'static str {
        match self.endpoint.transport() {
            gstgb28181::endpoint::SipTransport::Udp => "udp",
            gstgb28181::endpoint::SipTransport::Tcp => "tcp",
        }
    }

    /// Paths pushed to external RTMP servers.
    pub fn pushes(&self) -> Result<Vec<super::PushView>, Gone> {
        Ok(super::push::list(&*self.sh()?))
    }

    /// Starts pushing `cfg.path` to `cfg.url`.
    pub fn add_push(
        &self,
        cfg: crate::push::PushConfig,
    ) -> Result<Result<super::PushView, super::PushError>, Gone> {
        Ok(super::push::add(&self.sh()?, cfg, "api"))
    }

    /// Stops push `id`; false when there is none.
    pub fn remove_push(&self, id: u64) -> Result<bool, Gone> {
        Ok(super::push::remove(&*self.sh()?, id))
    }

    /// Voice broadcasts to devices.
    pub fn talks(&self) -> Result<Vec<super::TalkView>, Gone> {
        Ok(super::talk::list(&*self.sh()?))
    }

    /// Starts sending the audio of `req.source` to `req.device_id`.
    pub fn add_talk(
        &self,
        req: super::TalkRequest,
    ) -> Result<Result<super::TalkView, super::TalkError>, Gone> {
        Ok(super::talk::add(&self.sh()?, req))
    }

    /// Ends talk `id` (BYE); false when there is none.
    pub fn remove_talk(&self, id: u64) -> Result<bool, Gone> {
        Ok(super::talk::remove(&*self.sh()?, id))
    }

    /// The upper platforms of the cascade and their state.
    pub fn cascade(&self) -> Result<Vec<crate::cascade::api::UpperView>, Gone> {
        Ok(self
            .sh()?
            .cascade
            .get()
            .map(|c| c.state())
            .unwrap_or_default())
    }

    /// Mounted channels and their devices, by channel ID.
    pub fn channels(&self) -> Result<Vec<(String, String)>, Gone> {
        let sh = self.sh()?;
        let chans = lock(&sh.channels);
        Ok(chans
            .iter()
            .map(|(id, c)| (id.clone(), c.device_id.clone()))
            .collect())
    }

    /// The device a mounted channel belongs to.
    pub fn channel_device(&self, channel: &str) -> Result<Option<String>, Gone> {
        let sh = self.sh()?;
        let chans = lock(&sh.channels);
        Ok(chans.get(channel).map(|c| c.device_id.clone()))
    }

    pub fn rtsp_url(&self, channel: &str) -> Result<String, Gone> {
        let sh = self.sh()?;
        Ok(format!(
            "rtsp://{}:{}/{channel}",
            sh.cfg.public_host, sh.rtsp_port
        ))
    }

    pub fn hls_url(&self, channel: &str) -> Result<Option<String>, Gone> {
        let sh = self.sh()?;
        Ok(sh.cfg.hls.then(|| {
            format!(
                "http://{}:{}/{channel}/index.m3u8",
                sh.cfg.public_host, sh.cfg.hls_port
            )
        }))
    }

    /// Forgets a device: its registration (it must register again), what the API knew of
    /// it, and its channels' mounts (readers are cut). Whether it was known.
    pub fn delete_device(&self, id: &str) -> Result<bool, Gone> {
        let sh = self.sh()?;
        let registered = self.endpoint.remove_device(id);
        self.directory.remove(id);
        let mounted = lock(&sh.channels).values().any(|c| c.device_id == id);
        unmount_device(&sh, id);
        Ok(registered || mounted)
    }

    /// Sends a MANSCDP query (`Catalog`, `DeviceInfo`, `DeviceStatus`); the SN to wait for.
    pub fn query(&self, device: &str, kind: &str) -> std::io::Result<u32> {
        self.endpoint.query(device, kind)
    }

    /// Sends a RecordInfo query for `channel` of `device` (times `yyyy-MM-ddTHH:mm:ss`);
    /// the SN to wait for.
    pub fn query_records(
        &self,
        device: &str,
        channel: &str,
        start: &str,
        end: &str,
    ) -> std::io::Result<u32> {
        self.endpoint.query_record_info(device, channel, start, end)
    }

    pub fn ptz(&self, device: &str, channel: &str, cmd: PtzCmd) -> std::io::Result<u32> {
        self.endpoint.ptz(device, channel, cmd)
    }

    pub fn force_key_frame(&self, device: &str, channel: &str) -> std::io::Result<u32> {
        self.endpoint.force_key_frame(device, channel)
    }

    /// RTSP reader sessions now (as the metrics show them).
    pub fn sessions(&self) -> Result<Vec<SessionStat>, Gone> {
        let sh = self.sh()?;
        let snap = snapshot(&sh);
        Ok(snap
            .sessions
            .into_iter()
            .chain(snap.webrtc_sessions)
            .collect())
    }

    /// Every path (GB28181 channels, published paths, pulled cameras) with its figures, as
    /// the metrics show it.
    pub fn paths(&self) -> Result<Vec<crate::metrics::PathStat>, Gone> {
        Ok(snapshot(&*self.sh()?).paths)
    }

    /// The user an RTSP reader session (by its number) authenticated as.
    pub fn session_user(&self, number: u64) -> Result<Option<String>, Gone> {
        Ok(self.sh()?.rtsp_guard.session_user(number))
    }

    /// Ends the reader session shown as `number`: removed from the session pool (its media
    /// stops sending) and its connection closed. Whether it existed.
    pub fn kick(&self, number: u64) -> Result<bool, Gone> {
        let sh = self.sh()?;
        if number >= crate::webrtc::FIRST_NUMBER {
            return Ok(sh.webrtc.kick(number));
        }
        if sh.direct.kick(number) {
            return Ok(true);
        }
        let mut found = false;
        for client in sh.server.client_filter(None) {
            for session in client.session_filter(None) {
                let Some(sid) = session.sessionid() else {
                    continue;
                };
                if sh.rtsp_guard.session_number(&sid) != Some(number) {
                    continue;
                }
                found = true;
                if let Some(pool) = sh.server.session_pool() {
                    let _ = pool.remove(&session);
                }
                let target = client.clone();
                let _ = sh.server.client_filter(Some(&mut |_, c| {
                    if *c == target {
                        gst_rtsp_server::RTSPFilterResult::Remove
                    } else {
                        gst_rtsp_server::RTSPFilterResult::Keep
                    }
                }));
            }
        }
        Ok(found)
    }

    /// Mounts a playback/download session of a camera's recordings; its number, RTSP URL
    /// and path.
    pub fn start_playback(
        &self,
        r: &super::PlaybackRequest,
    ) -> Result<Result<(u64, String), super::PlaybackError>, Gone> {
        let sh = self.sh()?;
        Ok(super::playback::start(&sh, r).map(|(n, path)| {
            (
                n,
                format!("rtsp://{}:{}/{path}", sh.cfg.public_host, sh.rtsp_port),
            )
        }))
    }

    /// The ingest (camera session) of playback session `n`, while it exists.
    pub fn playback_ingest(&self, n: u64) -> Result<Option<Arc<crate::ingest::Ingest>>, Gone> {
        Ok(super::playback::ingest(&*self.sh()?, n))
    }

    /// Pauses or plays (scale, seek seconds) playback session `n`.
    pub fn control_playback(
        &self,
        n: u64,
        pause: bool,
        scale: Option<f64>,
        seek: Option<f64>,
    ) -> Result<Result<bool, super::PlaybackError>, Gone> {
        Ok(super::playback::control(
            &*self.sh()?,
            n,
            pause,
            scale,
            seek,
        ))
    }

    /// Stops playback session `n` (unmounted, readers cut, BYE to the camera).
    pub fn stop_playback(&self, n: u64) -> Result<Result<(), super::PlaybackError>, Gone> {
        Ok(super::playback::stop(&*self.sh()?, n))
    }

    /// The running playback sessions: number and request.
    pub fn list_playbacks(&self) -> Result<Vec<(u64, super::PlaybackRequest)>, Gone> {
        Ok(super::playback::list(&*self.sh()?))
    }

    /// Mounted playback paths.
    pub fn playback_paths(&self) -> Result<Vec<String>, Gone> {
        Ok(super::playback::paths(&*self.sh()?))
    }

    /// The running configuration (users and device passwords as last reloaded).
    pub fn config(&self) -> Result<Config, Gone> {
        let sh = self.sh()?;
        let mut cfg = sh.cfg.clone();
        let state = lock(&sh.reload);
        cfg.users = state.applied.users.clone();
        cfg.password = state.applied.password.clone();
        cfg.device_passwords = state.applied.device_passwords.clone();
        Ok(cfg)
    }

    /// [`reload`]: re-reads and applies the configuration.
    pub fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let sh = self.shared.upgrade().ok_or(ReloadError::Gone)?;
        reload(&sh)
    }
}

/// Subscribes to the events of a device that registered, as the config says (the endpoint
/// renews them, and subscribes anew when the device registers again).
fn subscribe_events(ep: &Endpoint, cfg: &Config, device: &str) {
    use gstgb28181::core::subscription::EventKind;
    let wanted = [
        (cfg.subscribe_catalog, EventKind::Catalog),
        (cfg.subscribe_alarm, EventKind::Alarm),
        (
            cfg.subscribe_mobile_position,
            EventKind::MobilePosition {
                interval_s: cfg.mobile_position_interval_s,
            },
        ),
    ];
    for (on, kind) in wanted {
        if on && let Err(e) = ep.subscribe_events(device, kind, cfg.subscription_expires_s) {
            eprintln!(
                "[gateway] device {}: no {} subscription: {e}",
                printable(device),
                kind.as_str()
            );
        }
    }
}

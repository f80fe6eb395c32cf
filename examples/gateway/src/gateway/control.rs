//! What the control API may see and do in a running gateway (the `/v1` handlers in
//! [`crate::api`] call only this): devices and channels, device queries, PTZ and key frames,
//! reader sessions, recordings and the configuration. Holds the gateway weakly: after it
//! stops, every call answers "gone".

use super::{Shared, lock, snapshot, unmount_device};
use crate::api::directory::Directory;
use crate::config::Config;
use crate::metrics::SessionStat;
use gst_rtsp_server::prelude::*;
use gstgb28181::core::manscdp::PtzCmd;
use gstgb28181::core::registrar::Device;
use gstgb28181::endpoint::Endpoint;
use std::sync::{Arc, Weak};

/// The gateway stopped (the API answers 503).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone;

pub struct Control {
    shared: Weak<Shared>,
    endpoint: Arc<Endpoint>,
    directory: Arc<Directory>,
    subscription: u64,
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
                }
            }
        });
        Arc::new(Control {
            shared: Arc::downgrade(sh),
            endpoint: sh.endpoint.clone(),
            directory,
            subscription,
        })
    }

    fn sh(&self) -> Result<Arc<Shared>, Gone> {
        self.shared
            .upgrade()
            .filter(|s| !s.stopping.load(std::sync::atomic::Ordering::SeqCst))
            .ok_or(Gone)
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

    /// Ends the reader session shown as `number`: removed from the session pool (its media
    /// stops sending) and its connection closed. Whether it existed.
    pub fn kick(&self, number: u64) -> Result<bool, Gone> {
        let sh = self.sh()?;
        if number >= crate::webrtc::FIRST_NUMBER {
            return Ok(sh.webrtc.kick(number));
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

    /// The running configuration.
    pub fn config(&self) -> Result<Config, Gone> {
        Ok(self.sh()?.cfg.clone())
    }
}

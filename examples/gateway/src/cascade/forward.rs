//! What an upper platform asks about a shared channel, forwarded to the camera behind it:
//! PTZ and key-frame DeviceControl (sent on as they came), RecordInfo (the camera is asked,
//! its answer relayed under the upper's SN, as wvp's cascade does), and MANSRTSP INFO of a
//! recording call (pause, scale, seek: to the camera's playback session). A channel whose
//! camera is not registered gets nothing forwarded (RecordInfo: an empty answer).
//!
//! Bounds: at most [`MAX_RECORD_QUERIES`] RecordInfo queries waiting per upper platform (more
//! get an empty answer at once), each waiting at most the API's answer timeout.

use super::Upper;
use crate::api::devices::ANSWER_TIMEOUT;
use gst_ipcam_common::sync::lock;
use gstgb28181::core::manscdp::PtzCmd;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// RecordInfo queries an upper platform may have waiting on cameras at once.
pub(super) const MAX_RECORD_QUERIES: usize = 4;

impl Upper {
    /// The registered camera of a shared `channel`.
    pub(super) fn camera_of(&self, channel: &str) -> Option<String> {
        let device = self.control.channel_device(channel).ok().flatten()?;
        self.control
            .device(&device)
            .is_some_and(|d| d.online)
            .then_some(device)
    }

    pub(super) fn forward_ptz(&self, channel: &str, command: &str) {
        let (Some(device), Some(cmd)) = (self.camera_of(channel), PtzCmd::parse_hex(command))
        else {
            return;
        };
        if let Err(e) = self.control.ptz(&device, channel, cmd) {
            crate::gateway::warn(&format!(
                "cascade {}: PTZ for {channel} not forwarded: {e}",
                self.cfg.server_id
            ));
        }
    }

    pub(super) fn forward_key_frame(&self, channel: &str) {
        if let Some(device) = self.camera_of(channel) {
            let _ = self.control.force_key_frame(&device, channel);
        }
    }

    /// PAUSE, or PLAY (scale, npt) in recording call `call_id`: to its playback session, on a
    /// thread (the camera's answer is waited for).
    pub(super) fn forward_playback_control(
        &self,
        call_id: &str,
        pause: bool,
        scale: Option<f64>,
        npt: Option<f64>,
    ) {
        let n = lock(&self.sessions)
            .get(call_id)
            .and_then(|h| *lock(&h.playback));
        let Some(n) = n else { return };
        let control = self.control.clone();
        let _ = std::thread::Builder::new()
            .name("cascade-playback-control".into())
            .spawn(move || {
                if let Ok(Err(e)) = control.control_playback(n, pause, scale, npt) {
                    crate::gateway::warn(&format!("cascade: playback {n} control: {e}"));
                }
            });
    }

    /// Asks the camera of `channel` for its recordings and answers the upper with them, on a
    /// thread of its own (the agent's thread must not wait).
    pub(super) fn forward_record_info(
        self: &Arc<Self>,
        sn: u32,
        channel: String,
        start: String,
        end: String,
    ) {
        let Some(agent) = self.agent().cloned() else {
            return;
        };
        let busy = self.record_queries.fetch_add(1, Ordering::SeqCst) >= MAX_RECORD_QUERIES;
        let device = self.camera_of(&channel);
        let (true, Some(device)) = (!busy, device) else {
            self.record_queries.fetch_sub(1, Ordering::SeqCst);
            agent.answer_record_info(sn, &channel, &[]);
            return;
        };
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("cascade-records".into())
            .spawn(move || {
                let items = me.camera_records(&device, &channel, &start, &end);
                agent.answer_record_info(sn, &channel, &items);
                me.record_queries.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            self.record_queries.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// The camera's RecordInfo answer (none when it does not answer in time).
    fn camera_records(
        &self,
        device: &str,
        channel: &str,
        start: &str,
        end: &str,
    ) -> Vec<gstgb28181::core::manscdp::RecordItem> {
        let Ok(sn) = self.control.query_records(device, channel, start, end) else {
            return Vec::new();
        };
        // The API's directory collects the answer; its wait is async.
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        else {
            return Vec::new();
        };
        rt.block_on(
            self.control
                .directory()
                .wait_for(device, ANSWER_TIMEOUT, |e| {
                    e.records
                        .as_ref()
                        .filter(|(s, _)| *s == sn)
                        .map(|(_, i)| i.clone())
                }),
        )
        .unwrap_or_default()
    }
}

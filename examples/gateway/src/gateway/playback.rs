//! Playback and download sessions of a camera's recordings: each one a temporary RTSP mount
//! (`/playback-<n>`) served from a gb28181src in session kind playback/download (it shares
//! the gateway's SIP endpoint), controlled through the element's `playback-play` /
//! `playback-pause` signals and stopped by unmounting (the pipeline stops: BYE). At most
//! `max_playbacks` (setting) at once. The stream ends by itself (EOS) on the device's
//! MediaStatus 121.

use super::{Shared, lock};
use gst::glib;
use gst::prelude::*;
use gst_rtsp_server::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What a playback session is asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct PlaybackRequest {
    pub device: String,
    pub channel: String,
    /// Unix seconds.
    pub start: u64,
    pub end: u64,
    pub download: bool,
    /// Download speed factor (download only).
    pub speed: Option<u32>,
}

struct Session {
    path: String,
    /// The gb28181src of the (shared) media, once a reader prepared it.
    source: Option<glib::WeakRef<gst::Element>>,
}

#[derive(Default)]
pub(super) struct Playbacks {
    next: u64,
    sessions: BTreeMap<u64, Session>,
}

/// Why a playback operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlaybackError {
    TooMany(usize),
    NotFound,
    /// No reader has started the session yet (nothing to control).
    NotStarted,
}

impl std::fmt::Display for PlaybackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlaybackError::TooMany(n) => write!(f, "at most {n} playback sessions"),
            PlaybackError::NotFound => f.write_str("no such playback session"),
            PlaybackError::NotStarted => f.write_str("no reader has started it yet"),
        }
    }
}

/// The launch line of a playback media. The IDs were checked with the gateway's ID policy.
/// The SIP address, port (as bound: with port 0 configured, the one the endpoint got, under
/// which it is also registered) and transport are the gateway endpoint's, so the element
/// shares that endpoint rather than opening another.
fn launch_line(sh: &Shared, r: &PlaybackRequest) -> String {
    let kind = if r.download { "download" } else { "playback" };
    let speed = r
        .speed
        .filter(|_| r.download)
        .map(|s| format!(" download-speed={s}"))
        .unwrap_or_default();
    format!(
        "( gb28181src name=src sip-address={} sip-port={} sip-transport={} device-id={} \
         channel-id={} session-kind={kind} start-time={} end-time={}{speed} wait-timeout={} \
         ! mpegpsdemux ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=-1 )",
        sh.cfg.sip_address,
        sh.cfg.sip_port,
        sh.cfg.sip_transport,
        r.device,
        r.channel,
        r.start,
        r.end,
        sh.cfg.wait_timeout_s.max(1)
    )
}

/// Mounts a playback session; its number and path.
pub(super) fn start(sh: &Arc<Shared>, r: &PlaybackRequest) -> Result<(u64, String), PlaybackError> {
    let mut pb = lock(&sh.playbacks);
    if pb.sessions.len() >= sh.cfg.max_playbacks {
        return Err(PlaybackError::TooMany(sh.cfg.max_playbacks));
    }
    pb.next += 1;
    let n = pb.next;
    let path = format!("playback-{n}");
    let factory = gst_rtsp_server::RTSPMediaFactory::new();
    factory.set_launch(&launch_line(sh, r));
    factory.set_shared(true);
    let weak = Arc::downgrade(sh);
    factory.connect_media_configure(move |_, media| {
        let Some(sh) = weak.upgrade() else { return };
        let src = media
            .element()
            .downcast::<gst::Bin>()
            .ok()
            .and_then(|b| b.by_name("src"));
        if let (Some(src), Some(s)) = (src, lock(&sh.playbacks).sessions.get_mut(&n)) {
            s.source = Some(src.downgrade());
        }
    });
    if let Some(m) = sh.server.mount_points() {
        m.add_factory(&format!("/{path}"), factory);
    }
    pb.sessions.insert(
        n,
        Session {
            path: path.clone(),
            source: None,
        },
    );
    println!(
        "[gateway] playback {n} of {} channel {}: /{path}",
        r.device, r.channel
    );
    Ok((n, path))
}

/// Pause, or play at `scale` from `seek` seconds (npt) or where it is.
pub(super) fn control(
    sh: &Shared,
    n: u64,
    pause: bool,
    scale: Option<f64>,
    seek: Option<f64>,
) -> Result<bool, PlaybackError> {
    let src = {
        let pb = lock(&sh.playbacks);
        let s = pb.sessions.get(&n).ok_or(PlaybackError::NotFound)?;
        s.source
            .as_ref()
            .and_then(|w| w.upgrade())
            .ok_or(PlaybackError::NotStarted)?
    };
    Ok(if pause {
        src.emit_by_name::<bool>("playback-pause", &[])
    } else {
        src.emit_by_name::<bool>(
            "playback-play",
            &[&scale.unwrap_or(1.0), &seek.unwrap_or(-1.0)],
        )
    })
}

/// Unmounts a session and ends its readers' sessions (the media stops: BYE to the camera).
pub(super) fn stop(sh: &Shared, n: u64) -> Result<(), PlaybackError> {
    let s = lock(&sh.playbacks)
        .sessions
        .remove(&n)
        .ok_or(PlaybackError::NotFound)?;
    let mount = format!("/{}", s.path);
    if let Some(m) = sh.server.mount_points() {
        m.remove_factory(&mount);
    }
    // As a kick: each reader's session leaves the pool (its media stops) and its
    // connection is closed.
    let mut readers = Vec::new();
    for client in sh.server.client_filter(None) {
        for session in client.session_filter(None) {
            let on_mount = session
                .filter(None)
                .iter()
                .any(|sm| sm.matches(&mount).is_some());
            if on_mount {
                if let Some(pool) = sh.server.session_pool() {
                    let _ = pool.remove(&session);
                }
                readers.push(client.clone());
            }
        }
    }
    if !readers.is_empty() {
        let _ = sh.server.client_filter(Some(&mut |_, c| {
            if readers.contains(c) {
                gst_rtsp_server::RTSPFilterResult::Remove
            } else {
                gst_rtsp_server::RTSPFilterResult::Keep
            }
        }));
    }
    println!("[gateway] playback {n} stopped");
    Ok(())
}

/// The playback sessions as metrics (a gauge, and each mounted path).
pub(super) fn render(sh: &Shared) -> String {
    use std::fmt::Write;
    let pb = lock(&sh.playbacks);
    let mut o = format!(
        "# HELP gateway_playback_sessions Playback/download sessions of camera recordings
         # TYPE gateway_playback_sessions gauge
gateway_playback_sessions {}
",
        pb.sessions.len()
    );
    if !pb.sessions.is_empty() {
        o.push_str(
            "# HELP gateway_playback_path A mounted playback path
# TYPE gateway_playback_path gauge
",
        );
    }
    for s in pb.sessions.values() {
        let _ = writeln!(o, "gateway_playback_path{{path=\"{}\"}} 1", s.path);
    }
    o
}

/// The mounted playback paths (metrics, console).
pub(super) fn paths(sh: &Shared) -> Vec<String> {
    lock(&sh.playbacks)
        .sessions
        .values()
        .map(|s| s.path.clone())
        .collect()
}

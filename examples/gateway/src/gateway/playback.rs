//! Playback and download sessions of a camera's recordings. Each one is the live path's
//! machinery under its own path name `playback-<n>`: an [`Ingest`] (gb28181src in session
//! kind playback/download, sharing the gateway's SIP endpoint, then our psdemux: H.264,
//! H.265 and the audio codecs the live path takes), an RTSP mount served from it by a
//! [`ChannelFactory`], and HLS (`<hls_dir>/playback-<n>/`) when HLS is on. The camera
//! session starts when the session is created (HLS needs it without an RTSP reader).
//! Controlled through the element's `playback-play` / `playback-pause` signals. It ends on
//! DELETE, or by itself when the camera says the file ended (MediaStatus 121: gb28181src
//! hangs up and ends its stream): readers get end-of-stream, the mount, HLS directory and
//! session go. At most `max_playbacks` (setting) at once.

use super::{Shared, lock};
use crate::factory::{ChannelFactory, ChannelHooks, MediaCounters};
use crate::ingest::Ingest;
use crate::outputs::{ChannelOutputs, OutputSettings, path_inside};
use gst::prelude::*;
use gst_rtsp_server::prelude::*;
use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

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
    request: PlaybackRequest,
    ingest: Arc<Ingest>,
    /// HLS, once the streams are known (started in the background).
    outputs: Option<ChannelOutputs>,
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
    /// The camera session is not up (nothing to control).
    NotStarted,
    /// The camera session could not be started.
    Failed(String),
}

impl std::fmt::Display for PlaybackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlaybackError::TooMany(n) => write!(f, "at most {n} playback sessions"),
            PlaybackError::NotFound => f.write_str("no such playback session"),
            PlaybackError::NotStarted => f.write_str("the camera session is not up"),
            PlaybackError::Failed(e) => write!(f, "playback not started: {e}"),
        }
    }
}

/// The gb28181src properties of a playback: the live ones (the gateway endpoint's SIP
/// address, port as bound and transport, so the element shares that endpoint), plus the
/// session kind and range. The IDs were checked with the gateway's ID policy.
fn src_properties(sh: &Shared, r: &PlaybackRequest) -> Vec<(String, String)> {
    let mut p = super::mount::src_properties(&sh.cfg, &r.device, &r.channel);
    let kind = if r.download { "download" } else { "playback" };
    p.push(("session-kind".into(), kind.into()));
    p.push(("start-time".into(), r.start.to_string()));
    p.push(("end-time".into(), r.end.to_string()));
    if let Some(s) = r.speed.filter(|_| r.download) {
        p.push(("download-speed".into(), s.to_string()));
    }
    p
}

/// The factory's view of one playback session: its one ingest, never restarted.
pub(super) struct Hooks {
    pub(crate) ingest: Arc<Ingest>,
}

impl ChannelHooks for Hooks {
    fn ingest(&self, _: &str) -> Result<Arc<Ingest>, String> {
        if self.ingest.is_failed() {
            return Err("the playback has ended".into());
        }
        Ok(self.ingest.clone())
    }

    fn media_configured(&self, _: &str, _: &gst_rtsp_server::RTSPMedia, _: Arc<MediaCounters>) {}

    /// The session lives until DELETE or the end of the file, not until its last reader.
    fn maybe_stop(&self, _: &str) {}
}

/// Starts a playback session (camera session, RTSP mount, HLS); its number and path.
pub(super) fn start(sh: &Arc<Shared>, r: &PlaybackRequest) -> Result<(u64, String), PlaybackError> {
    let mut pb = lock(&sh.playbacks);
    if pb.sessions.len() >= sh.cfg.max_playbacks {
        return Err(PlaybackError::TooMany(sh.cfg.max_playbacks));
    }
    pb.next += 1;
    let n = pb.next;
    let path = format!("playback-{n}");
    let ingest = Ingest::start(&path, &src_properties(sh, r)).map_err(PlaybackError::Failed)?;
    let factory = ChannelFactory::new(
        &path,
        Arc::new(Hooks {
            ingest: ingest.clone(),
        }),
        Duration::from_secs(u64::from(sh.cfg.wait_timeout_s.max(1)) + 5),
    );
    super::mount::add_mount(sh, &path, factory);
    pb.sessions.insert(
        n,
        Session {
            path: path.clone(),
            request: r.clone(),
            ingest: ingest.clone(),
            outputs: None,
        },
    );
    drop(pb);
    let weak = Arc::downgrade(sh);
    let hls = sh.cfg.hls.then(|| sh.cfg.hls_dir.clone());
    let spawned = std::thread::Builder::new()
        .name(format!("{path}-watch"))
        .spawn(move || watch(weak, n, ingest, hls));
    if let Err(e) = spawned {
        let _ = stop(sh, n);
        return Err(PlaybackError::Failed(e.to_string()));
    }
    println!(
        "[gateway] playback {n} of {} channel {}: /{path}",
        r.device, r.channel
    );
    Ok((n, path))
}

/// The ingest of session `n` (its camera session), while it exists.
pub(super) fn ingest(sh: &Shared, n: u64) -> Option<Arc<Ingest>> {
    lock(&sh.playbacks)
        .sessions
        .get(&n)
        .map(|s| s.ingest.clone())
}

/// Starts the session's HLS once the streams are known, then waits for the camera session to
/// end (end of the file, BYE, error) and ends the playback session.
fn watch(weak: Weak<Shared>, n: u64, ingest: Arc<Ingest>, hls: Option<std::path::PathBuf>) {
    if let Some(dir) = hls {
        let s = OutputSettings {
            channel: ingest.channel.clone(),
            hls_dir: Some(dir),
            record_dir: None,
            segment_s: 60,
        };
        match ChannelOutputs::start(s, ingest.clone()) {
            Ok(o) => {
                let Some(sh) = weak.upgrade() else { return };
                let mut pb = lock(&sh.playbacks);
                match pb.sessions.get_mut(&n) {
                    Some(s) => s.outputs = Some(o),
                    None => {
                        drop(pb);
                        o.stop();
                        remove_hls(&sh, &ingest.channel);
                    }
                }
            }
            Err(e) => super::warn(&format!("playback {n}: no HLS: {e}")),
        }
    }
    let generation = ingest.generation();
    loop {
        if ingest.is_failed() {
            break;
        }
        if ingest.wait_failed_or_changed(generation, Duration::from_secs(1)) && ingest.is_failed() {
            break;
        }
        match weak.upgrade() {
            Some(sh) if lock(&sh.playbacks).sessions.contains_key(&n) => {}
            // Stopped (DELETE, gateway stop).
            _ => return,
        }
    }
    if let Some(sh) = weak.upgrade()
        && stop(&sh, n).is_ok()
    {
        println!("[gateway] playback {n} ended by the camera");
    }
}

pub(super) fn remove_hls(sh: &Shared, path: &str) {
    if !sh.cfg.hls {
        return;
    }
    if let Ok(dir) = path_inside(&sh.cfg.hls_dir, path)
        && dir.exists()
        && let Err(e) = std::fs::remove_dir_all(&dir)
    {
        super::warn(&format!("{path}: HLS directory not removed: {e}"));
    }
}

/// Pause, or play at `scale` (or the speed as it is) from `seek` seconds (npt) or where it
/// is. True once the camera accepted it (gb28181src waits for its 200).
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
        if s.ingest.is_failed() {
            return Err(PlaybackError::NotStarted);
        }
        s.ingest.source().clone()
    };
    Ok(if pause {
        src.emit_by_name::<bool>("playback-pause", &[])
    } else {
        src.emit_by_name::<bool>(
            "playback-play",
            // -1: keep the speed / play on from where it is.
            &[&scale.unwrap_or(-1.0), &seek.unwrap_or(-1.0)],
        )
    })
}

/// Ends a session: unmounted, its HLS finalized and its directory removed, the camera
/// session ended (BYE), its readers' sessions ended.
pub(super) fn stop(sh: &Shared, n: u64) -> Result<(), PlaybackError> {
    let s = lock(&sh.playbacks)
        .sessions
        .remove(&n)
        .ok_or(PlaybackError::NotFound)?;
    let mount = format!("/{}", s.path);
    if let Some(m) = sh.server.mount_points() {
        m.remove_factory(&mount);
    }
    if let Some(o) = &s.outputs {
        o.stop();
    }
    s.ingest.stop();
    remove_hls(sh, &s.path);
    super::kick_readers(sh, &mount);
    println!("[gateway] playback {n} stopped");
    Ok(())
}

/// Ends every session (gateway stop).
pub(super) fn stop_all(sh: &Shared) {
    let ns: Vec<u64> = lock(&sh.playbacks).sessions.keys().copied().collect();
    for n in ns {
        let _ = stop(sh, n);
    }
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

/// The running sessions: number and request.
pub(super) fn list(sh: &Shared) -> Vec<(u64, PlaybackRequest)> {
    lock(&sh.playbacks)
        .sessions
        .iter()
        .map(|(n, s)| (*n, s.request.clone()))
        .collect()
}

/// The mounted playback paths (metrics, console).
pub(super) fn paths(sh: &Shared) -> Vec<String> {
    lock(&sh.playbacks)
        .sessions
        .values()
        .map(|s| s.path.clone())
        .collect()
}

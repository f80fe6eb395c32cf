//! The registry of published paths: streams pushed into the gateway (an RTSP publisher's
//! ANNOUNCE/RECORD, [`rtsp`]; an RTMP publisher, [`rtmp`]) under a path name of their choosing, read like any
//! GB28181 channel (RTSP, HLS, recording, WebRTC) while they publish, gone when they leave.
//!
//! The API for any publisher: [`reserve`] a path (name checked once by
//! [`crate::paths::check_path_name`]; refused when the name is a GB28181 channel or a
//! playback, when the path already has a publisher, or when `max_publishers` paths are
//! published), then [`Reservation::publish`] an [`IngestSource`] of elementary streams; or
//! both at once with [`publish`]. The returned [`PublishGuard`] is the publication: the
//! source counts its received bytes on it, and dropping it ends the path (readers get
//! end-of-stream and are disconnected, the mount, HLS and recording stop). A reservation
//! not published within [`RESERVATION_TTL`] is forgotten.
//!
//! As in MediaMTX a path has one publisher; a second one is refused while the first
//! publishes (MediaMTX's `overridePublisher` is not offered: taking over a path is off).

pub mod rtmp;
pub mod rtsp;
pub mod sdp;

use super::{Shared, lock, warn};
use crate::factory::{ChannelFactory, ChannelHooks, MediaCounters};
use crate::ingest::{Ingest, IngestSource};
use crate::outputs::{ChannelOutputs, OutputSettings};
use crate::paths::{PathNameError, check_path_name};
use gst::glib;
use gst_rtsp_server::prelude::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

/// How long a path stays reserved for a publisher that has not started.
pub const RESERVATION_TTL: Duration = Duration::from_secs(10);

/// What publishes a path (`source` in the API, as MediaMTX's source types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    RtspPublisher,
    RtmpPublisher,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::RtspPublisher => "rtspPublisher",
            SourceKind::RtmpPublisher => "rtmpPublisher",
        }
    }
}

/// Why a path cannot be published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishError {
    BadName(PathNameError),
    /// The name is a mounted GB28181 channel or playback.
    Taken(String),
    /// Someone publishes the path already.
    Busy(String),
    /// `max_publishers` paths are published.
    TooMany(usize),
    Stopping,
    Failed(String),
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublishError::BadName(e) => write!(f, "{e}"),
            PublishError::Taken(p) => write!(f, "path {p} is a GB28181 channel or a playback"),
            PublishError::Busy(p) => write!(f, "path {p} already has a publisher"),
            PublishError::TooMany(n) => write!(f, "{n} paths published (max_publishers)"),
            PublishError::Stopping => f.write_str("gateway stopping"),
            PublishError::Failed(e) => write!(f, "not published: {e}"),
        }
    }
}

/// One published path.
struct Published {
    kind: SourceKind,
    ingest: Arc<Ingest>,
    since: SystemTime,
    bytes_received: Arc<AtomicU64>,
    outputs: Option<ChannelOutputs>,
    /// Reader medias (statistics) and the payload bytes of those gone.
    medias: Vec<(
        glib::WeakRef<gst_rtsp_server::RTSPMedia>,
        Arc<MediaCounters>,
    )>,
    sent_done: u64,
    /// Bytes received at the last change, and when (stalled publishers are ended).
    last_received: (u64, Instant),
    /// An RTSP publisher's record media (its RTP sessions tell loss and jitter).
    record: Option<glib::WeakRef<gst_rtsp_server::RTSPMedia>>,
}

enum Slot {
    Reserved(Instant),
    Published(Box<Published>),
}

#[derive(Default)]
pub(super) struct Publishers {
    next_id: u64,
    paths: BTreeMap<String, (u64, Slot)>,
}

/// A published path as listed (API, metrics).
#[derive(Debug, Clone, PartialEq)]
pub struct PublishedPath {
    pub name: String,
    pub source: SourceKind,
    /// Unix seconds since when.
    pub since: u64,
    pub ready: bool,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub hls: bool,
    pub recording: bool,
    /// RTP health of an RTSP publisher's streams (None for RTMP).
    pub rtp: Option<super::stats::RtpHealth>,
}

/// A path held for a publisher until it publishes (or [`RESERVATION_TTL`] passes).
pub struct Reservation {
    shared: Weak<Shared>,
    path: String,
    id: u64,
    kind: SourceKind,
}

/// A path being published; dropping it ends the path.
pub struct PublishGuard {
    shared: Weak<Shared>,
    path: String,
    id: u64,
    bytes_received: Arc<AtomicU64>,
}

impl PublishGuard {
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The path was ended by the gateway (its publisher sent nothing for `stream_timeout_s`,
    /// or the gateway stops): the source should stop.
    pub fn is_ended(&self) -> bool {
        self.shared.upgrade().is_none_or(|sh| {
            !matches!(lock(&sh.publishers).paths.get(&self.path), Some((id, _)) if *id == self.id)
        })
    }

    /// Where the source counts the bytes it receives.
    pub fn bytes_received(&self) -> &Arc<AtomicU64> {
        &self.bytes_received
    }

    /// The RTSP record media of this publication (its RTP health is listed).
    pub fn set_record_media(&self, media: &gst_rtsp_server::RTSPMedia) {
        let Some(sh) = self.shared.upgrade() else {
            return;
        };
        if let Some((id, Slot::Published(pb))) = lock(&sh.publishers).paths.get_mut(&self.path)
            && *id == self.id
        {
            pb.record = Some(media.downgrade());
        }
    }
}

impl Drop for PublishGuard {
    fn drop(&mut self) {
        let (shared, path, id) = (self.shared.clone(), self.path.clone(), self.id);
        // Often dropped in a thread of the publisher's own RTSP handling (its media ends):
        // the path is taken down elsewhere.
        let r = std::thread::Builder::new()
            .name("unpublish".into())
            .spawn(move || unpublish(&shared, &path, id));
        if r.is_err() {
            unpublish(&self.shared, &self.path, self.id);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(sh) = self.shared.upgrade() {
            let mut p = lock(&sh.publishers);
            if matches!(p.paths.get(&self.path), Some((id, Slot::Reserved(_))) if *id == self.id) {
                p.paths.remove(&self.path);
            }
        }
    }
}

/// Holds `path` for a publisher of `kind` (see the module doc for the refusals).
pub(super) fn reserve(
    sh: &Arc<Shared>,
    path: &str,
    kind: SourceKind,
) -> Result<Reservation, PublishError> {
    if sh.stopping.load(Ordering::SeqCst) {
        return Err(PublishError::Stopping);
    }
    check_path_name(path).map_err(PublishError::BadName)?;
    if lock(&sh.channels).contains_key(path) || super::playback::paths(sh).iter().any(|p| p == path)
    {
        return Err(PublishError::Taken(path.to_string()));
    }
    let mut p = lock(&sh.publishers);
    let now = Instant::now();
    p.paths.retain(
        |_, (_, s)| !matches!(s, Slot::Reserved(t) if now.duration_since(*t) >= RESERVATION_TTL),
    );
    if p.paths.contains_key(path) {
        return Err(PublishError::Busy(path.to_string()));
    }
    if p.paths.len() >= sh.cfg.max_publishers {
        return Err(PublishError::TooMany(sh.cfg.max_publishers));
    }
    p.next_id += 1;
    let id = p.next_id;
    p.paths.insert(path.to_string(), (id, Slot::Reserved(now)));
    Ok(Reservation {
        shared: Arc::downgrade(sh),
        path: path.to_string(),
        id,
        kind,
    })
}

/// [`reserve`] and [`Reservation::publish`] at once.
pub(super) fn publish(
    sh: &Arc<Shared>,
    path: &str,
    kind: SourceKind,
    source: IngestSource,
) -> Result<PublishGuard, PublishError> {
    reserve(sh, path, kind)?.publish(source)
}

impl Reservation {
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Starts the path from `source`: its ingest, its RTSP mount for readers, HLS and
    /// recording when the gateway's settings say so.
    pub fn publish(self, source: IngestSource) -> Result<PublishGuard, PublishError> {
        let sh = self.shared.upgrade().ok_or(PublishError::Stopping)?;
        let ingest = Ingest::start_source(&self.path, source).map_err(PublishError::Failed)?;
        let bytes_received = Arc::new(AtomicU64::new(0));
        {
            let mut p = lock(&sh.publishers);
            match p.paths.get_mut(&self.path) {
                Some((id, slot)) if *id == self.id => {
                    *slot = Slot::Published(Box::new(Published {
                        kind: self.kind,
                        ingest: ingest.clone(),
                        since: SystemTime::now(),
                        bytes_received: bytes_received.clone(),
                        outputs: None,
                        medias: Vec::new(),
                        sent_done: 0,
                        last_received: (0, Instant::now()),
                        record: None,
                    }));
                }
                _ => {
                    ingest.stop();
                    return Err(PublishError::Failed("the reservation expired".into()));
                }
            }
        }
        let guard = PublishGuard {
            shared: self.shared.clone(),
            path: self.path.clone(),
            id: self.id,
            bytes_received,
        };
        let factory = ChannelFactory::new(
            &self.path,
            Arc::new(Hooks {
                shared: self.shared.clone(),
                id: self.id,
                ingest: ingest.clone(),
            }),
            Duration::from_secs(u64::from(sh.cfg.wait_timeout_s.max(1)) + 5),
        );
        super::mount::add_mount(&sh, &self.path, factory);
        println!(
            "[gateway] path {} published ({}): rtsp://{}:{}/{}",
            self.path,
            self.kind.as_str(),
            sh.cfg.public_host,
            sh.rtsp_port,
            self.path
        );
        if sh.cfg.hls || sh.cfg.record_dir.is_some() {
            let s = OutputSettings {
                channel: self.path.clone(),
                hls_dir: sh.cfg.hls.then(|| sh.cfg.hls_dir.clone()),
                record_dir: sh.cfg.record_dir.clone(),
                segment_s: sh.cfg.record_segment_s,
            };
            let (weak, id) = (self.shared.clone(), self.id);
            let r = std::thread::Builder::new()
                .name(format!("outputs-{}", self.path))
                .spawn(move || start_outputs(weak, id, s, ingest));
            if let Err(e) = r {
                warn(&format!("path {}: outputs thread: {e}", self.path));
            }
        }
        Ok(guard)
    }
}

/// HLS/recording of a published path, once its streams are known.
fn start_outputs(weak: Weak<Shared>, id: u64, s: OutputSettings, ingest: Arc<Ingest>) {
    let path = s.channel.clone();
    let o = match ChannelOutputs::start(s, ingest) {
        Ok(o) => o,
        Err(e) => {
            warn(&format!("path {path}: no HLS/recording: {e}"));
            return;
        }
    };
    let Some(sh) = weak.upgrade() else { return };
    let mut p = lock(&sh.publishers);
    match p.paths.get_mut(&path) {
        Some((i, Slot::Published(pb))) if *i == id => pb.outputs = Some(o),
        _ => {
            drop(p);
            o.stop();
        }
    }
}

/// Ends publication `id` of `path`: unmounted, readers ended and disconnected, outputs
/// finalized (and its HLS directory removed), ingest stopped.
fn unpublish(weak: &Weak<Shared>, path: &str, id: u64) {
    let Some(sh) = weak.upgrade() else { return };
    let pb = {
        let mut p = lock(&sh.publishers);
        match p.paths.get(path) {
            Some((i, _)) if *i == id => p.paths.remove(path),
            _ => None,
        }
    };
    let Some((_, Slot::Published(pb))) = pb else {
        return;
    };
    let mount = format!("/{path}");
    if let Some(m) = sh.server.mount_points() {
        m.remove_factory(&mount);
    }
    if let Some(o) = &pb.outputs {
        o.stop();
    }
    pb.ingest.stop();
    super::playback::remove_hls(&sh, path);
    super::kick_readers(&sh, &mount);
    println!("[gateway] path {path} unpublished");
}

/// Ends the publications whose source has sent nothing for `stream_timeout_s` (a publisher
/// whose connection stays open without data: stopped, or gone behind a NAT): the path goes
/// and an RTSP publisher's connection is closed. Called periodically.
pub(super) fn end_stalled(sh: &Arc<Shared>) {
    let timeout = Duration::from_secs(u64::from(sh.cfg.stream_timeout_s.max(1)));
    let now = Instant::now();
    let stalled: Vec<(String, u64)> = {
        let mut p = lock(&sh.publishers);
        p.paths
            .iter_mut()
            .filter_map(|(name, (id, slot))| {
                let Slot::Published(pb) = slot else {
                    return None;
                };
                let received = pb.bytes_received.load(Ordering::Relaxed);
                if received != pb.last_received.0 {
                    pb.last_received = (received, now);
                    return None;
                }
                (now.duration_since(pb.last_received.1) >= timeout).then(|| (name.clone(), *id))
            })
            .collect()
    };
    for (path, id) in stalled {
        warn(&format!(
            "path {path}: nothing received for {}s (stream_timeout_s): publisher ended",
            timeout.as_secs()
        ));
        unpublish(&Arc::downgrade(sh), &path, id);
        super::kick_sessions(sh, &format!("/{path}"), true);
    }
}

/// Ends every publication (gateway stop).
pub(super) fn stop_all(sh: &Arc<Shared>) {
    let ids: Vec<(String, u64)> = lock(&sh.publishers)
        .paths
        .iter()
        .map(|(k, (id, _))| (k.clone(), *id))
        .collect();
    let weak = Arc::downgrade(sh);
    for (path, id) in ids {
        unpublish(&weak, &path, id);
    }
}

/// Whether `path` is published or held for a publisher (a GB28181 channel of that name is
/// not mounted then: with the default ID pattern names never meet, with another they could).
pub(super) fn is_published(sh: &Shared, path: &str) -> bool {
    lock(&sh.publishers).paths.contains_key(path)
}

/// The readers' view of `path` if it is published (None when it is not, or only reserved).
pub(super) fn reader_hooks(sh: &Arc<Shared>, path: &str) -> Option<Arc<dyn ChannelHooks>> {
    match lock(&sh.publishers).paths.get(path) {
        Some((id, Slot::Published(pb))) => Some(Arc::new(Hooks {
            shared: Arc::downgrade(sh),
            id: *id,
            ingest: pb.ingest.clone(),
        })),
        _ => None,
    }
}

/// The published paths now.
pub(super) fn list(sh: &Shared) -> Vec<PublishedPath> {
    let mut p = lock(&sh.publishers);
    p.paths
        .iter_mut()
        .filter_map(|(name, (_, slot))| {
            let Slot::Published(pb) = slot else {
                return None;
            };
            pb.sent_done += super::retire_gone_medias(&mut pb.medias);
            let received = pb.bytes_received.load(Ordering::Relaxed);
            let running = |f: fn(&OutputSettings) -> bool| {
                pb.outputs
                    .as_ref()
                    .is_some_and(|o| f(&o.settings) && o.is_running())
            };
            Some(PublishedPath {
                name: name.clone(),
                source: pb.kind,
                since: pb
                    .since
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                ready: !pb.ingest.is_failed() && received > 0,
                bytes_received: received,
                bytes_sent: pb.sent_done + pb.medias.iter().map(|(_, k)| k.get().0).sum::<u64>(),
                hls: running(|s| s.hls_dir.is_some()),
                recording: running(|s| s.record_dir.is_some()),
                rtp: pb.record.as_ref().and_then(|w| w.upgrade()).map(|m| {
                    super::stats::rtp_health(
                        (0..m.n_streams())
                            .filter_map(|i| m.stream(i))
                            .filter_map(|s| s.rtpsession()),
                    )
                }),
            })
        })
        .collect()
}

/// The reader medias of the published paths with their counters (statistics).
pub(super) fn medias(sh: &Shared) -> Vec<(gst_rtsp_server::RTSPMedia, String, Arc<MediaCounters>)> {
    let p = lock(&sh.publishers);
    let mut out = Vec::new();
    for (name, (_, slot)) in &p.paths {
        if let Slot::Published(pb) = slot {
            for (m, k) in &pb.medias {
                if let Some(m) = m.upgrade() {
                    out.push((m, name.clone(), k.clone()));
                }
            }
        }
    }
    out
}

/// The reader factory's view of a published path: its one ingest, never restarted.
struct Hooks {
    shared: Weak<Shared>,
    id: u64,
    ingest: Arc<Ingest>,
}

impl ChannelHooks for Hooks {
    fn ingest(&self, _: &str) -> Result<Arc<Ingest>, String> {
        if self.ingest.is_failed() {
            return Err("the publisher has left".into());
        }
        Ok(self.ingest.clone())
    }

    fn media_configured(
        &self,
        path: &str,
        media: &gst_rtsp_server::RTSPMedia,
        counters: Arc<MediaCounters>,
    ) {
        let Some(sh) = self.shared.upgrade() else {
            return;
        };
        if let Some((id, Slot::Published(pb))) = lock(&sh.publishers).paths.get_mut(path)
            && *id == self.id
        {
            pb.medias.push((media.downgrade(), counters));
        }
    }

    /// The path lives as long as its publisher, not until its last reader.
    fn maybe_stop(&self, _: &str) {}
}

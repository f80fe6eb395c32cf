//! HLS and MP4 recording of a channel, fed from the channel's [`Ingest`] (so they share the
//! single camera session with the RTSP clients, keeping the camera's timing): H.264/H.265 pass
//! through, G.711 is transcoded to AAC (HLS and MP4 need it; AAC passes through), written by
//! `hlssink2` (playlist + segments) and `splitmuxsink` (MP4 segments named by UTC date and time).
//! When the camera's streams change (codec, picture size), the outputs end (files finalized)
//! and the gateway starts new ones for the new streams ([`OutputsWatch::streams_changed`]).

use crate::ingest::{Ingest, Kind};
use gst::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Settings of one channel's outputs.
#[derive(Debug, Clone)]
pub struct OutputSettings {
    pub channel: String,
    /// HLS into `<dir>/<channel>/index.m3u8`.
    pub hls_dir: Option<PathBuf>,
    /// MP4 segments into `<dir>/<channel>/<date>-<time>.mp4`.
    pub record_dir: Option<PathBuf>,
    pub segment_s: u64,
}

/// `yyyymmdd-hhmmss` (UTC) of Unix seconds.
pub fn utc_stamp(unix_s: u64) -> String {
    let (y, m, d, h, mi, s) = gstgb28181::core::registrar::civil_from_unix(unix_s as i64);
    format!("{y:04}{m:02}{d:02}-{h:02}{mi:02}{s:02}")
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The branch after the tee, per output, for a stream's caps: video passes through (parsed
/// for the muxer), G.711 becomes AAC.
pub fn branch_for(caps: &gst::CapsRef) -> Option<(&'static str, bool)> {
    let s = caps.structure(0)?;
    Some(match s.name().as_str() {
        "video/x-h264" => ("h264parse", true),
        "video/x-h265" => ("h265parse", true),
        "audio/x-alaw" => (
            "alawdec ! audioconvert ! audioresample ! avenc_aac ! aacparse",
            false,
        ),
        "audio/x-mulaw" => (
            "mulawdec ! audioconvert ! audioresample ! avenc_aac ! aacparse",
            false,
        ),
        "audio/mpeg" => ("aacparse", false),
        _ => return None,
    })
}

/// A running output pipeline, fed from the channel's ingest.
pub struct ChannelOutputs {
    pub settings: OutputSettings,
    pipeline: gst::Pipeline,
    ingest: Arc<Ingest>,
    subscriptions: Vec<u64>,
    watch: OutputsWatch,
}

/// Tells whether a channel's outputs still write; usable without holding the outputs.
#[derive(Clone)]
pub struct OutputsWatch {
    bus: Option<gst::Bus>,
    ingest: Arc<Ingest>,
    broken: Arc<AtomicBool>,
    /// The error that broke them, if one did (a full disk...).
    error: Arc<std::sync::Mutex<Option<String>>>,
    /// The ingest's stream generation the outputs were built for.
    generation: u64,
}

impl OutputsWatch {
    /// False once their ingest has failed or stopped, or their pipeline posted an error
    /// (the error message is consumed: once broken, always broken). EOS is left on the bus
    /// for [`ChannelOutputs::stop`].
    pub fn is_running(&self) -> bool {
        if self.broken.load(Ordering::SeqCst) {
            return false;
        }
        let error = match self
            .bus
            .as_ref()
            .and_then(|b| b.pop_filtered(&[gst::MessageType::Error]))
        {
            Some(m) => {
                if let gst::MessageView::Error(e) = m.view() {
                    *self.error.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(e.error().to_string());
                }
                true
            }
            None => false,
        };
        if error || self.ingest.is_failed() || self.streams_changed() {
            self.broken.store(true, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// The error their pipeline posted, once [`OutputsWatch::is_running`] has seen it.
    pub fn error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The camera's streams changed since the outputs were built: they must start again
    /// for the new streams (at once: the camera session is fine).
    pub fn streams_changed(&self) -> bool {
        self.ingest.generation() != self.generation
    }

    /// Blocks until the outputs stop writing (true: woken at once when the ingest fails or
    /// its streams change) or `timeout` passes (false).
    pub fn wait_broken(&self, timeout: Duration) -> bool {
        if !self.is_running() {
            return true;
        }
        self.ingest.wait_failed_or_changed(self.generation, timeout);
        !self.is_running()
    }
}

fn ensure_dir(d: &Path) -> Result<(), String> {
    std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))
}

/// `dir/name` for a path name from the network (a channel ID, a published path of up to
/// [`crate::paths::MAX_SEGMENTS`] segments): the name must pass
/// [`check_reader_path`](crate::paths::check_reader_path) and every component of the joined
/// path below `dir` must be one of its plain segments (no `..`, no absolute path), so nothing
/// is written outside `dir`. The one place output paths are built from path names.
pub fn path_inside(dir: &Path, name: &str) -> Result<PathBuf, String> {
    let refuse = |why: String| {
        format!(
            "refusing {:?} under {}: {why}",
            gstgb28181::core::id::printable(name),
            dir.display()
        )
    };
    crate::paths::check_reader_path(name).map_err(|e| refuse(e.to_string()))?;
    let joined = dir.join(name);
    let comps: Vec<_> = joined
        .strip_prefix(dir)
        .map_err(|e| refuse(e.to_string()))?
        .components()
        .collect();
    let segments: Vec<&str> = name.split('/').collect();
    let plain = comps.len() == segments.len()
        && comps
            .iter()
            .zip(&segments)
            .all(|(c, s)| matches!(c, std::path::Component::Normal(n) if n == s));
    if plain {
        Ok(joined)
    } else {
        Err(refuse("not plain path segments".into()))
    }
}

/// Recordings are fragmented MP4 (a `moof` every this many ms) written unbuffered, so a file
/// cut by a crash (no final `moov`) still plays up to its last complete fragment: a crash
/// loses the fragment being muxed and the GOP splitmuxsink holds (about 2 s at 1 key frame/s).
pub const RECORD_FRAGMENT_MS: u32 = 1000;

impl ChannelOutputs {
    /// Builds HLS and/or recording for the streams the ingest has (it waits for them).
    pub fn start(s: OutputSettings, ingest: Arc<Ingest>) -> Result<ChannelOutputs, String> {
        let streams = ingest.wait_streams(Duration::from_secs(20))?;
        let (video, audio) = (streams.video, streams.audio);
        let pipeline = gst::Pipeline::with_name(&format!("outputs-{}", s.channel));
        let mut sinks: Vec<(gst::Element, bool)> = Vec::new();
        if let Some(d) = &s.hls_dir {
            let dir = path_inside(d, &s.channel)?;
            ensure_dir(&dir)?;
            let h = gst::ElementFactory::make("hlssink2")
                .property(
                    "location",
                    dir.join("segment%05d.ts").to_string_lossy().as_ref(),
                )
                .property(
                    "playlist-location",
                    dir.join("index.m3u8").to_string_lossy().as_ref(),
                )
                .property("target-duration", 2u32)
                .property("playlist-length", 6u32)
                .property("max-files", 12u32)
                .build()
                .map_err(|e| format!("hlssink2: {e}"))?;
            pipeline.add(&h).map_err(|e| e.to_string())?;
            sinks.push((h, true));
        }
        if let Some(d) = &s.record_dir {
            let dir = path_inside(d, &s.channel)?;
            ensure_dir(&dir)?;
            let muxer = gst::ElementFactory::make("mp4mux")
                .property("fragment-duration", RECORD_FRAGMENT_MS)
                .build()
                .map_err(|e| format!("mp4mux: {e}"))?;
            // Unbuffered: each fragment reaches the file when muxed, not when 64 KiB of
            // stdio buffer fill up (many seconds at a camera's bitrate).
            let file = gst::ElementFactory::make("filesink")
                .property_from_str("buffer-mode", "unbuffered")
                .build()
                .map_err(|e| format!("filesink: {e}"))?;
            let r = gst::ElementFactory::make("splitmuxsink")
                .property("max-size-time", s.segment_s.max(1) * 1_000_000_000)
                .property("muxer", &muxer)
                .property("sink", &file)
                .build()
                .map_err(|e| format!("splitmuxsink: {e}"))?;
            r.connect("format-location", false, move |_| {
                let stamp = utc_stamp(now_s());
                let mut path = dir.join(format!("{stamp}.mp4"));
                let mut n = 1;
                // Two segments within one second: keep names unique.
                while path.exists() && n < 1000 {
                    path = dir.join(format!("{stamp}-{n}.mp4"));
                    n += 1;
                }
                Some(path.to_string_lossy().to_value())
            });
            pipeline.add(&r).map_err(|e| e.to_string())?;
            sinks.push((r, false));
        }
        let mut plan = Vec::new();
        for (kind, caps) in [(Kind::Video, video), (Kind::Audio, audio)] {
            let Some(caps) = caps else { continue };
            let Some((branch, is_video)) = branch_for(&caps) else {
                continue;
            };
            let src = gst_app::AppSrc::builder()
                .caps(&caps)
                .format(gst::Format::Time)
                .is_live(true)
                .do_timestamp(false)
                .build();
            let tee = gst::ElementFactory::make("tee")
                .property("allow-not-linked", true)
                .build()
                .map_err(|e| e.to_string())?;
            pipeline
                .add_many([src.upcast_ref(), &tee])
                .map_err(|e| e.to_string())?;
            src.link(&tee).map_err(|e| e.to_string())?;
            for (sink, is_hls) in &sinks {
                let chain = gst::parse::bin_from_description(&format!("queue ! {branch}"), true)
                    .map_err(|e| e.to_string())?;
                pipeline.add(&chain).map_err(|e| e.to_string())?;
                tee.link(&chain).map_err(|e| e.to_string())?;
                let pad_name = match (is_hls, is_video) {
                    (_, true) => "video",
                    (true, false) => "audio",
                    (false, false) => "audio_%u",
                };
                let sinkpad = sink
                    .request_pad_simple(pad_name)
                    .ok_or_else(|| format!("no {pad_name} pad"))?;
                chain
                    .static_pad("src")
                    .ok_or("no src pad")?
                    .link(&sinkpad)
                    .map_err(|e| e.to_string())?;
            }
            plan.push((kind, src));
        }
        if plan.is_empty() {
            return Err("no stream to write".into());
        }
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| format!("outputs {}: {e}", s.channel))?;
        let subscriptions = plan
            .iter()
            .filter_map(|(kind, src)| ingest.subscribe_camera(*kind, src))
            .collect();
        let watch = OutputsWatch {
            bus: pipeline.bus(),
            ingest: ingest.clone(),
            broken: Arc::new(AtomicBool::new(false)),
            error: Arc::default(),
            generation: streams.generation,
        };
        Ok(ChannelOutputs {
            settings: s,
            pipeline,
            ingest,
            subscriptions,
            watch,
        })
    }

    pub fn pipeline(&self) -> &gst::Pipeline {
        &self.pipeline
    }

    /// Whether the outputs still write (see [`OutputsWatch::is_running`]).
    pub fn is_running(&self) -> bool {
        self.watch.is_running()
    }

    pub fn watch(&self) -> OutputsWatch {
        self.watch.clone()
    }

    /// The ingest the outputs are fed from.
    pub fn ingest(&self) -> &Arc<Ingest> {
        &self.ingest
    }

    /// Unsubscribes, then EOS so the files are finalized (MP4 moov, last HLS segment).
    pub fn stop(&self) {
        for id in &self.subscriptions {
            self.ingest.unsubscribe(*id);
        }
        for src in self.pipeline.iterate_sources().into_iter().flatten() {
            if let Ok(a) = src.downcast::<gst_app::AppSrc>() {
                let _ = a.end_of_stream();
            }
        }
        // Nobody else takes EOS off the bus; after an error it never comes (bounded wait).
        if let Some(bus) = self.pipeline.bus() {
            let _ = bus.timed_pop_filtered(
                gst::ClockTime::from_seconds(5),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            );
        }
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

impl Drop for ChannelOutputs {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps() {
        assert_eq!(utc_stamp(0), "19700101-000000");
        assert_eq!(utc_stamp(951_782_400), "20000229-000000");
        assert_eq!(utc_stamp(1_700_000_000), "20231114-221320");
    }

    #[test]
    fn paths_stay_inside() {
        let d = Path::new("/srv/hls");
        assert_eq!(
            path_inside(d, "34020000001320000001").unwrap(),
            d.join("34020000001320000001")
        );
        assert_eq!(path_inside(d, "live/x").unwrap(), d.join("live").join("x"));
        assert_eq!(path_inside(d, "cam.1").unwrap(), d.join("cam.1"));
        for bad in [
            "../escape",
            "live/../../etc",
            "live/./x",
            "/tmp/elsewhere",
            "live//x",
            "live/x/",
            "..",
            ".",
            "",
            "a/b/c/d/e",
            "a\\b",
            "a\0b",
            "a%2Fb",
        ] {
            assert!(path_inside(d, bad).is_err(), "{bad:?}");
        }
        assert!(path_inside(d, &"1".repeat(65)).is_err());
    }

    #[test]
    fn branches() {
        gst::init().unwrap();
        let c = |s: &str| gst::Caps::new_empty_simple(s);
        assert!(branch_for(&c("video/x-h264")).unwrap().1);
        assert!(
            branch_for(&c("audio/x-alaw"))
                .unwrap()
                .0
                .contains("avenc_aac")
        );
        assert!(branch_for(&c("video/x-jpeg")).is_none());
    }
}

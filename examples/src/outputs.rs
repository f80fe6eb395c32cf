//! HLS and MP4 recording of a channel. They read the gateway's own RTSP output over loopback
//! TCP (so they share the channel's single camera session with the RTSP clients), depayload,
//! pass H.264/H.265 through, transcode G.711 to AAC (HLS and MP4 need it; AAC passes through)
//! and write `hlssink2` playlists/segments and `splitmuxsink` MP4 segments named by date and
//! time (UTC).

use gst::prelude::*;
use std::path::{Path, PathBuf};

/// Settings of one channel's outputs.
#[derive(Debug, Clone)]
pub struct OutputSettings {
    pub url: String,
    pub channel: String,
    /// HLS into `<dir>/<channel>/index.m3u8`.
    pub hls_dir: Option<PathBuf>,
    /// MP4 segments into `<dir>/<channel>/<date>-<time>.mp4`.
    pub record_dir: Option<PathBuf>,
    pub segment_s: u64,
}

/// `yyyymmdd-hhmmss` (UTC) of Unix seconds.
pub fn utc_stamp(unix_s: u64) -> String {
    let days = (unix_s / 86_400) as i64;
    let secs = unix_s % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The element chain (as a launch fragment) turning RTP of `encoding` into what MP4/HLS take;
/// and whether it is video.
pub fn depay_chain(encoding: &str) -> Option<(&'static str, bool)> {
    Some(match encoding {
        "H264" => ("rtph264depay ! h264parse", true),
        "H265" => ("rtph265depay ! h265parse", true),
        "PCMA" => (
            "rtppcmadepay ! alawdec ! audioconvert ! audioresample ! avenc_aac ! aacparse",
            false,
        ),
        "PCMU" => (
            "rtppcmudepay ! mulawdec ! audioconvert ! audioresample ! avenc_aac ! aacparse",
            false,
        ),
        "MPEG4-GENERIC" => ("rtpmp4gdepay ! aacparse", false),
        _ => return None,
    })
}

/// A running output pipeline.
pub struct ChannelOutputs {
    pub settings: OutputSettings,
    pipeline: gst::Pipeline,
}

fn ensure_dir(d: &Path) -> Result<(), String> {
    std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))
}

impl ChannelOutputs {
    pub fn start(s: OutputSettings) -> Result<ChannelOutputs, String> {
        let pipeline = gst::Pipeline::with_name(&format!("outputs-{}", s.channel));
        let src = gst::ElementFactory::make("rtspsrc")
            .property("location", &s.url)
            .property("latency", 200u32)
            .build()
            .map_err(|e| format!("rtspsrc: {e}"))?;
        src.set_property_from_str("protocols", "tcp");
        pipeline.add(&src).map_err(|e| e.to_string())?;
        let hls = match &s.hls_dir {
            Some(d) => {
                let dir = d.join(&s.channel);
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
                Some(h)
            }
            None => None,
        };
        let rec = match &s.record_dir {
            Some(d) => {
                let dir = d.join(&s.channel);
                ensure_dir(&dir)?;
                let r = gst::ElementFactory::make("splitmuxsink")
                    .property("max-size-time", s.segment_s.max(1) * 1_000_000_000)
                    .property("async-finalize", false)
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
                Some(r)
            }
            None => None,
        };
        let pipe_weak = pipeline.downgrade();
        let channel = s.channel.clone();
        src.connect_pad_added(move |_, pad| {
            let Some(pipeline) = pipe_weak.upgrade() else {
                return;
            };
            let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
            let enc = caps
                .structure(0)
                .and_then(|st| st.get::<String>("encoding-name").ok())
                .unwrap_or_default()
                .to_uppercase();
            let Some((desc, video)) = depay_chain(&enc) else {
                eprintln!("[{channel}] outputs: ignoring RTP {enc}");
                return;
            };
            let targets = [hls.clone(), rec.clone()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>();
            let chain = match gst::parse::bin_from_description(
                &format!("{desc} ! tee name=t allow-not-linked=true"),
                true,
            ) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("[{channel}] outputs: {e}");
                    return;
                }
            };
            let _ = pipeline.add(&chain);
            let Some(tee) = chain.by_name("t") else {
                return;
            };
            for t in targets {
                let Ok(q) = gst::ElementFactory::make("queue").build() else {
                    continue;
                };
                let _ = chain.add(&q);
                let _ = tee.link(&q);
                let Some(g) = q
                    .static_pad("src")
                    .and_then(|p| gst::GhostPad::with_target(&p).ok())
                else {
                    continue;
                };
                let _ = chain.add_pad(&g);
                let is_hls = t.factory().map(|f| f.name() == "hlssink2").unwrap_or(false);
                let pad_name = match (is_hls, video) {
                    (_, true) => "video",
                    (true, false) => "audio",
                    (false, false) => "audio_%u",
                };
                if let Some(sinkpad) = t.request_pad_simple(pad_name) {
                    let _ = g.link(&sinkpad);
                }
            }
            let _ = chain.sync_state_with_parent();
            if let Some(sink) = chain.static_pad("sink") {
                let _ = pad.link(&sink);
            }
        });
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| format!("outputs {}: {e}", s.channel))?;
        Ok(ChannelOutputs {
            settings: s,
            pipeline,
        })
    }

    pub fn pipeline(&self) -> &gst::Pipeline {
        &self.pipeline
    }

    /// EOS so the files are finalized (MP4 moov, last HLS segment), then stop.
    pub fn stop(&self) {
        self.pipeline.send_event(gst::event::Eos::new());
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
    fn chains() {
        assert!(depay_chain("H264").unwrap().1);
        assert!(depay_chain("PCMA").unwrap().0.contains("avenc_aac"));
        assert!(depay_chain("JPEG").is_none());
    }
}

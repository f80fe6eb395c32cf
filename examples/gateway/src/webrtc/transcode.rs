//! H.265 channels for browsers (WHEP `?transcode=h264`): one transcoder per channel,
//! `appsrc (H.265 from the ingest) ! avdec_h265 ! x264enc ! appsink`, shared by every
//! WebRTC viewer of the channel that asked for it; started with the first, stopped when the
//! last one ends (the viewers hold it, [`Transcoders`] only keeps weak references and the
//! cap). The camera's G.711 audio still goes to each viewer from the ingest.

use crate::factory::{CAT, ChannelHooks};
use crate::ingest::{Ingest, Kind};
use gst::prelude::*;
use gst_ipcam_common::sync::lock;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

/// The encoder's bitrate (kbit/s) and key frame interval (frames, about 2 s at 25 fps): a
/// transcoded view costs the gateway a bounded share of CPU and of the viewers' bandwidth.
const BITRATE_KBPS: u32 = 2000;
const KEY_INT_FRAMES: u32 = 50;

/// The caps the transcoder's output is pushed into a viewer's appsrc with: constrained
/// baseline at level 3.1, what every browser's H.264 offer accepts (rtph264pay takes only
/// caps naming a profile and level within the answered `profile-level-id`; Chromium's are
/// 42001f/42e01f). A larger picture's stream may declare a higher level inside; browsers'
/// decoders take it.
pub fn output_caps() -> gst::Caps {
    gst::Caps::builder("video/x-h264")
        .field("stream-format", "byte-stream")
        .field("alignment", "au")
        .field("profile", "constrained-baseline")
        .field("level", "3.1")
        .build()
}

struct Viewer {
    id: u64,
    src: gst_app::AppSrc,
    /// Sent a key frame yet (viewers start at one).
    started: bool,
}

/// One channel's running transcoder.
pub struct Transcoder {
    pub channel: String,
    pipeline: gst::Pipeline,
    sink_pad: Option<gst::Pad>,
    ingest: Arc<Ingest>,
    hooks: Arc<dyn ChannelHooks>,
    subscriptions: Vec<u64>,
    viewers: Arc<Mutex<Vec<Viewer>>>,
    next_id: Mutex<u64>,
}

impl Transcoder {
    /// Starts transcoding `ingest`'s H.265 video (`caps`); the caller's hold on the ingest
    /// stays the caller's.
    fn start(
        channel: &str,
        ingest: Arc<Ingest>,
        hooks: Arc<dyn ChannelHooks>,
        caps: &gst::Caps,
    ) -> Result<Arc<Transcoder>, String> {
        let pipeline = gst::parse::launch(&format!(
            "appsrc name=src is-live=true format=time min-latency=0 ! h265parse ! avdec_h265 ! \
             videoconvert ! queue max-size-buffers=2 leaky=downstream ! \
             x264enc tune=zerolatency speed-preset=ultrafast bitrate={BITRATE_KBPS} \
             key-int-max={KEY_INT_FRAMES} ! video/x-h264,profile=constrained-baseline ! \
             h264parse config-interval=-1 ! \
             video/x-h264,stream-format=byte-stream,alignment=au ! \
             appsink name=sink sync=false max-buffers=8 drop=true"
        ))
        .map_err(|e| format!("transcoder (avdec_h265, x264enc): {e}"))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| "transcoder: not a pipeline")?;
        let src = pipeline
            .by_name("src")
            .and_then(|s| s.downcast::<gst_app::AppSrc>().ok())
            .ok_or("transcoder: no appsrc")?;
        src.set_caps(Some(caps));
        let sink = pipeline
            .by_name("sink")
            .and_then(|s| s.downcast::<gst_app::AppSink>().ok())
            .ok_or("transcoder: no appsink")?;
        let viewers: Arc<Mutex<Vec<Viewer>>> = Arc::new(Mutex::new(Vec::new()));
        let v = viewers.clone();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    if let Some(b) = sample.buffer() {
                        fan_out(&v, b);
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| format!("transcoder: {e}"))?;
        let subscriptions = ingest.subscribe_viewer(&[(Kind::Video, src)]);
        gst::info!(CAT, "{channel}: H.265 -> H.264 transcoder started");
        Ok(Arc::new(Transcoder {
            channel: channel.to_string(),
            sink_pad: sink.static_pad("sink"),
            pipeline,
            ingest,
            hooks,
            subscriptions,
            viewers,
            next_id: Mutex::new(0),
        }))
    }

    /// Feeds `src` from the next key frame on; asks the
    /// encoder for one now.
    pub fn add_viewer(&self, src: &gst_app::AppSrc) -> u64 {
        src.set_caps(Some(&output_caps()));
        let id = {
            let mut n = lock(&self.next_id);
            *n += 1;
            *n
        };
        lock(&self.viewers).push(Viewer {
            id,
            src: src.clone(),
            started: false,
        });
        if let Some(pad) = &self.sink_pad {
            pad.push_event(gst::event::CustomUpstream::new(
                gst::Structure::builder("GstForceKeyUnit")
                    .field("all-headers", true)
                    .build(),
            ));
        }
        id
    }

    pub fn remove_viewer(&self, id: u64) {
        lock(&self.viewers).retain(|v| v.id != id);
    }
}

/// Each viewer gets the encoded frame from its first key frame on, timestamped with its own
/// pipeline's running time (the pipelines have their own bases).
fn fan_out(viewers: &Mutex<Vec<Viewer>>, b: &gst::BufferRef) {
    let key = !b.flags().contains(gst::BufferFlags::DELTA_UNIT);
    gst::trace!(CAT, "transcoded frame, key {key}");
    let targets: Vec<gst_app::AppSrc> = lock(viewers)
        .iter_mut()
        .filter_map(|v| {
            v.started |= key;
            v.started.then(|| v.src.clone())
        })
        .collect();
    for src in targets {
        let now = src.current_running_time();
        let mut out = b.to_owned();
        {
            let o = out.make_mut();
            o.set_pts(now);
            o.set_dts(now);
        }
        if let Err(e) = src.push_buffer(out) {
            gst::debug!(CAT, "transcoded frame not taken by a viewer: {e:?}");
        }
    }
}

impl Drop for Transcoder {
    fn drop(&mut self) {
        for id in &self.subscriptions {
            self.ingest.unsubscribe(*id);
        }
        let _ = self.pipeline.set_state(gst::State::Null);
        self.hooks.maybe_stop(&self.channel);
        gst::info!(CAT, "{}: transcoder stopped", self.channel);
    }
}

/// The running transcoders, at most `max` channels at once.
pub struct Transcoders {
    max: usize,
    running: Mutex<HashMap<String, Weak<Transcoder>>>,
}

impl Transcoders {
    pub fn new(max: usize) -> Transcoders {
        Transcoders {
            max,
            running: Mutex::new(HashMap::new()),
        }
    }

    /// The channel's transcoder, started if there is none (Err: the cap, with its message,
    /// or the pipeline's failure).
    pub fn get(
        &self,
        channel: &str,
        ingest: &Arc<Ingest>,
        hooks: &Arc<dyn ChannelHooks>,
        caps: &gst::Caps,
    ) -> Result<Arc<Transcoder>, (u16, String)> {
        let mut running = lock(&self.running);
        running.retain(|_, t| t.strong_count() > 0);
        if let Some(t) = running.get(channel).and_then(Weak::upgrade) {
            return Ok(t);
        }
        if running.len() >= self.max {
            return Err((
                503,
                format!(
                    "{} channels are transcoded for browsers already (webrtc_max_transcodes)",
                    self.max
                ),
            ));
        }
        let t = Transcoder::start(channel, ingest.clone(), hooks.clone(), caps)
            .map_err(|e| (500, e))?;
        running.insert(channel.to_string(), Arc::downgrade(&t));
        Ok(t)
    }

    /// Channels being transcoded now.
    pub fn len(&self) -> usize {
        lock(&self.running)
            .values()
            .filter(|t| t.strong_count() > 0)
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

//! GStreamer glue of RTMP: a publisher's tags into `appsrc ! flvdemux` ([`FlvSource`], its
//! elementary streams on ghost pads as they appear), and a path's ingest into `flvmux
//! streamable=true` for a reader ([`Reader`]), whose FLV tags go out as RTMP messages.

use super::flv;
use super::server::{Outbox, Publisher, Refusal};
use super::session::MediaKind;
use crate::factory::{CAT, ChannelHooks};
use crate::ingest::{Ingest, Kind};
use gst::prelude::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// `appsrc ! flvdemux` in a bin whose `video`/`audio` ghost pads appear as the publisher's
/// streams do.
pub struct FlvSource {
    bin: gst::Bin,
    src: gst_app::AppSrc,
    started: bool,
}

impl FlvSource {
    pub fn new(name: &str) -> Result<FlvSource, String> {
        let bin = gst::Bin::with_name(name);
        let src = gst_app::AppSrc::builder()
            .name("flv")
            .caps(&gst::Caps::builder("video/x-flv").build())
            .format(gst::Format::Bytes)
            .is_live(true)
            .stream_type(gst_app::AppStreamType::Stream)
            // A stalled pipeline blocks the connection's reads (TCP pushes back on the
            // publisher) instead of queueing without end.
            .max_bytes(8 * 1024 * 1024)
            .block(true)
            .build();
        let demux = gst::ElementFactory::make("flvdemux")
            .build()
            .map_err(|e| format!("flvdemux: {e}"))?;
        bin.add_many([src.upcast_ref(), &demux])
            .map_err(|e| e.to_string())?;
        src.link(&demux).map_err(|e| e.to_string())?;
        let weak = bin.downgrade();
        demux.connect_pad_added(move |_, pad| {
            let Some(bin) = weak.upgrade() else { return };
            let Ok(ghost) =
                gst::GhostPad::builder_with_target(pad).map(|b| b.name(pad.name()).build())
            else {
                return;
            };
            let _ = ghost.set_active(true);
            let _ = bin.add_pad(&ghost);
        });
        let weak = bin.downgrade();
        demux.connect_no_more_pads(move |_| {
            if let Some(bin) = weak.upgrade() {
                bin.no_more_pads();
            }
        });
        Ok(FlvSource {
            bin,
            src,
            started: false,
        })
    }

    /// The element to put into a pipeline (or an ingest).
    pub fn element(&self) -> gst::Element {
        self.bin.clone().upcast()
    }
}

impl Publisher for FlvSource {
    fn frame(&mut self, kind: MediaKind, timestamp: u32, payload: &[u8]) -> Result<(), String> {
        let tag = flv::tag(kind, timestamp, payload).ok_or("frame too large for FLV")?;
        if !self.started {
            self.started = true;
            self.src
                .push_buffer(gst::Buffer::from_mut_slice(flv::header(true, true)))
                .map_err(|e| format!("flvdemux: {e:?}"))?;
        }
        self.src
            .push_buffer(gst::Buffer::from_mut_slice(tag))
            .map(drop)
            .map_err(|e| format!("flvdemux: {e:?}"))
    }
}

impl Drop for FlvSource {
    fn drop(&mut self) {
        let _ = self.src.end_of_stream();
    }
}

/// The `flvmux` input for an ingest stream's caps: Err(why) when FLV cannot carry it.
fn flv_input(caps: &gst::CapsRef) -> Result<&'static str, String> {
    let s = caps.structure(0).ok_or("no caps")?;
    match s.name().as_str() {
        "video/x-h264" => Ok("h264parse ! video/x-h264,stream-format=avc,alignment=au"),
        "audio/mpeg" => Ok("aacparse ! audio/mpeg,stream-format=raw"),
        "audio/x-alaw" | "audio/x-mulaw" if s.get::<i32>("rate").ok() == Some(8000) => {
            Ok("identity")
        }
        n => Err(format!("{n} cannot go into FLV here")),
    }
}

/// A reader of a path: the ingest's viewer subscription into `flvmux`, its tags to the
/// connection. Dropping it unsubscribes (and stops the ingest if it was the last user).
pub struct Reader {
    path: String,
    pipeline: gst::Pipeline,
    ingest: Arc<Ingest>,
    hooks: Arc<dyn ChannelHooks>,
    ids: Vec<u64>,
}

impl Reader {
    pub fn start(
        hooks: Arc<dyn ChannelHooks>,
        path: &str,
        timeout: Duration,
        out: Outbox,
    ) -> Result<Reader, Refusal> {
        let not_found = |d: String| Refusal {
            code: "NetStream.Play.StreamNotFound",
            description: d,
        };
        let ingest = hooks
            .ingest(path)
            .map_err(|e| not_found(format!("{path}: {e}")))?;
        ingest.hold();
        let r = Self::build(&hooks, path, &ingest, timeout, out);
        ingest.release();
        match r {
            Ok((pipeline, ids)) => Ok(Reader {
                path: path.to_string(),
                pipeline,
                ingest,
                hooks,
                ids,
            }),
            Err(e) => {
                hooks.maybe_stop(path);
                Err(Refusal {
                    code: "NetStream.Play.Failed",
                    description: format!("{path}: {e}"),
                })
            }
        }
    }

    fn build(
        _hooks: &Arc<dyn ChannelHooks>,
        path: &str,
        ingest: &Arc<Ingest>,
        timeout: Duration,
        out: Outbox,
    ) -> Result<(gst::Pipeline, Vec<u64>), String> {
        let sink = gst_app::AppSink::builder().name("out").sync(false).build();
        let tags = std::sync::Mutex::new(flv::TagReader::new(16 * 1024 * 1024));
        let end = out.clone();
        let meta_sent = AtomicBool::new(false);
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let Some(buf) = sample.buffer() else {
                        return Ok(gst::FlowSuccess::Ok);
                    };
                    let map = buf.map_readable().map_err(|_| gst::FlowError::Error)?;
                    let mut tags = gst_ipcam_common::sync::lock(&tags);
                    tags.feed(&map);
                    loop {
                        match tags.next_tag() {
                            Ok(Some(t)) => {
                                // flvmux repeats onMetaData; players take later
                                // ones for a subtitle stream: the first one only.
                                let repeat = t.kind == Some(MediaKind::Data)
                                    && meta_sent.swap(true, Ordering::Relaxed);
                                if let Some(kind) = t.kind.filter(|_| !repeat)
                                    && !out.send(kind, t.timestamp, t.payload)
                                {
                                    return Err(gst::FlowError::Eos);
                                }
                            }
                            Ok(None) => return Ok(gst::FlowSuccess::Ok),
                            Err(e) => {
                                gst::warning!(CAT, "RTMP reader: {e}");
                                return Err(gst::FlowError::Error);
                            }
                        }
                    }
                })
                // The path's source went away: so does the reader.
                .eos(move |_| end.end())
                .build(),
        );
        let (pipeline, ids) = flv_pipeline(path, ingest, timeout, sink.upcast())?;
        gst::info!(CAT, "{path}: RTMP reader started");
        Ok((pipeline, ids))
    }
}

/// A pipeline from `ingest`'s streams (those FLV carries) through `flvmux streamable=true`
/// into `sink`, playing and subscribed as a viewer (it starts at a key frame); returns it
/// with the subscription ids. Waits at most `timeout` for the streams.
pub fn flv_pipeline(
    path: &str,
    ingest: &Arc<Ingest>,
    timeout: Duration,
    sink: gst::Element,
) -> Result<(gst::Pipeline, Vec<u64>), String> {
    let streams = ingest.wait_streams(timeout)?;
    let mut launch = String::from("flvmux name=m streamable=true");
    let mut kinds = Vec::new();
    if let Some(v) = &streams.video {
        let chain = flv_input(v)?;
        launch += &format!(
            " appsrc name=vsrc is-live=true format=time min-latency=0 ! {chain} ! m.video"
        );
        kinds.push((Kind::Video, "vsrc", v.clone()));
    }
    if let Some(a) = &streams.audio {
        match flv_input(a) {
            Ok(chain) => {
                launch += &format!(
                    " appsrc name=asrc is-live=true format=time min-latency=0 ! {chain} ! m.audio"
                );
                kinds.push((Kind::Audio, "asrc", a.clone()));
            }
            Err(e) => crate::gateway::warn(&format!("{path}: FLV without audio: {e}")),
        }
    }
    if kinds.is_empty() {
        return Err("no stream FLV can carry".into());
    }
    let pipeline = gst::parse::launch(&launch)
        .map_err(|e| e.to_string())?
        .downcast::<gst::Pipeline>()
        .map_err(|_| "not a pipeline")?;
    let mux = pipeline.by_name("m").ok_or("no flvmux")?;
    pipeline.add(&sink).map_err(|e| e.to_string())?;
    mux.link(&sink).map_err(|e| e.to_string())?;
    let mut srcs = Vec::new();
    for (kind, name, caps) in kinds {
        let src = pipeline
            .by_name(name)
            .and_then(|s| s.downcast::<gst_app::AppSrc>().ok())
            .ok_or("no appsrc")?;
        src.set_caps(Some(&caps));
        srcs.push((kind, src));
    }
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| format!("FLV pipeline of {path}: {e}"))?;
    let ids = ingest.subscribe_viewer(&srcs);
    Ok((pipeline, ids))
}

impl Drop for Reader {
    fn drop(&mut self) {
        for id in &self.ids {
            self.ingest.unsubscribe(*id);
        }
        let _ = self.pipeline.set_state(gst::State::Null);
        self.hooks.maybe_stop(&self.path);
    }
}

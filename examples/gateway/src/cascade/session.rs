//! One session of an upper platform: the channel's ingest (held while it is set up,
//! started if nobody watched) feeds `appsrc ! h264parse|h265parse ! psmux ! appsink` (and
//! the camera's G.711 or AAC audio into the same `psmux`); each
//! PS frame goes to the agent, which sends it as RTP to the upper platform. The viewer
//! subscription starts with the ingest's cached GOP, so the upper decodes at once.
//!
//! A Playback or Download INVITE is forwarded: a playback session of the gateway (the camera
//! INVITEd for the same range, [`crate::gateway::PlaybackRequest`]) is the ingest, ended with
//! the call. When the camera says the recording ended (its session ends), the upper is told
//! the same (MediaStatus 121 for the channel) and hung up on if it does not within
//! [`FILE_END_GRACE`].
//!
//! It ends when the upper hangs up ([`Handle::stop`]), the media cannot be sent, or the
//! camera session ends or changes codec (channel unmounted, camera gone): then the gateway
//! sends BYE to the upper. Either way the subscription is dropped and the ingest released
//! (the camera gets BYE when nobody else watches).

use super::{Upper, WeakUpper};
use crate::ingest::{Ingest, Kind};
use gst::prelude::*;
use gst_ipcam_common::sync::lock;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a session waits for the camera's streams.
const STREAM_WAIT: Duration = Duration::from_secs(15);
/// How often a running session looks at its ingest (the stop signal wakes it at once).
const WATCH: Duration = Duration::from_millis(250);
/// How long the upper may take to hang up after the recording's end was told.
const FILE_END_GRACE: Duration = Duration::from_secs(10);

/// What a Playback / Download call asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Recording {
    /// Unix seconds.
    pub(super) start: u64,
    pub(super) end: u64,
    pub(super) download: bool,
    pub(super) speed: Option<u32>,
}

pub(super) struct Handle {
    pub(super) channel: String,
    pub(super) started: Instant,
    /// The gateway's playback session serving a recording call.
    pub(super) playback: Mutex<Option<u64>>,
    stop: Mutex<Sender<()>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Handle {
    /// Asks the session to end (it does at once, from its own thread).
    pub(super) fn stop(&self) {
        let _ = lock(&self.stop).send(());
    }

    /// Ends the session and waits for it.
    pub(super) fn stop_and_join(self) {
        self.stop();
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}

/// Starts serving call `call_id` (acknowledged) with `channel`, live or a recording.
pub(super) fn start(
    upper: &Arc<Upper>,
    call_id: String,
    channel: String,
    recording: Option<Recording>,
) {
    let (tx, rx) = mpsc::channel();
    let weak = Arc::downgrade(upper);
    let (id, ch) = (call_id.clone(), channel.clone());
    let handle = Handle {
        channel,
        started: Instant::now(),
        playback: Mutex::new(None),
        stop: Mutex::new(tx.clone()),
        thread: Mutex::new(None),
    };
    // Registered before the thread runs, so that a BYE coming at once finds it.
    lock(&upper.sessions).insert(call_id.clone(), handle);
    let t = std::thread::Builder::new()
        .name(format!("cascade-{ch}"))
        .spawn(move || run(weak, id, ch, recording, tx, rx));
    match t {
        Ok(t) => {
            if let Some(h) = lock(&upper.sessions).get(&call_id) {
                *lock(&h.thread) = Some(t);
            }
        }
        Err(e) => {
            crate::gateway::warn(&format!("cascade: session thread: {e}"));
            lock(&upper.sessions).remove(&call_id);
            if let Some(a) = upper.agent() {
                a.hang_up(&call_id);
            }
        }
    }
}

fn run(
    weak: WeakUpper,
    call_id: String,
    channel: String,
    recording: Option<Recording>,
    tx: Sender<()>,
    rx: Receiver<()>,
) {
    let Some(upper) = weak.upgrade() else { return };
    let id = upper.cfg.server_id.clone();
    let what = if recording.is_some() {
        "recording"
    } else {
        "session"
    };
    println!("[gateway] cascade {id}: {what} of {channel} started");
    let served = match recording {
        None => serve_live(&upper, &call_id, &channel, tx, &rx),
        Some(r) => serve_recording(&upper, &call_id, &channel, r, tx, &rx),
    };
    let why = match served {
        Ok(why) => why,
        Err(e) => {
            crate::gateway::warn(&format!("cascade {id}: {channel}: {e}"));
            e
        }
    };
    // BYE to the upper unless it hung up (then the call is gone and this does nothing).
    if let Some(a) = upper.agent() {
        a.hang_up(&call_id);
    }
    lock(&upper.sessions).remove(&call_id);
    println!("[gateway] cascade {id}: {what} of {channel} ended ({why})");
}

/// The ingest of `channel`, held. One that stopped just before the hold (its last viewer
/// left at that moment) is replaced by a new one.
fn held_ingest(upper: &Upper, channel: &str) -> Result<Arc<Ingest>, String> {
    for _ in 0..2 {
        let i = upper.hooks.ingest(channel)?;
        i.hold();
        if !i.is_failed() {
            return Ok(i);
        }
        i.release();
    }
    Err("the camera session keeps ending".into())
}

/// Runs a live session until it ends; Ok(why) or Err(what failed).
fn serve_live(
    upper: &Upper,
    call_id: &str,
    channel: &str,
    tx: Sender<()>,
    rx: &Receiver<()>,
) -> Result<String, String> {
    let ingest = held_ingest(upper, channel)?;
    let why = feed(upper, call_id, channel, &ingest, tx, |generation| {
        watch(&ingest, Some(generation), "the camera session ended", rx)
    });
    upper.hooks.maybe_stop(channel);
    why
}

/// Plays a recording of the camera of `channel` to the upper until either ends.
fn serve_recording(
    upper: &Upper,
    call_id: &str,
    channel: &str,
    r: Recording,
    tx: Sender<()>,
    rx: &Receiver<()>,
) -> Result<String, String> {
    let device = upper
        .camera_of(channel)
        .ok_or("the camera is not registered")?;
    let req = crate::gateway::PlaybackRequest {
        device,
        channel: channel.to_string(),
        start: r.start,
        end: r.end,
        download: r.download,
        speed: r.speed,
    };
    let gone = |_| "gateway stopping".to_string();
    let (n, _) = upper
        .control
        .start_playback(&req)
        .map_err(gone)?
        .map_err(|e| e.to_string())?;
    if let Some(h) = lock(&upper.sessions).get(call_id) {
        *lock(&h.playback) = Some(n);
    }
    let result = match upper.control.playback_ingest(n).map_err(gone)? {
        None => Err("the playback ended at once".to_string()),
        Some(ingest) => {
            ingest.hold();
            feed(upper, call_id, channel, &ingest, tx, |_| {
                let why = watch(&ingest, None, FILE_ENDED, rx);
                if why == FILE_ENDED
                    && let Some(a) = upper.agent()
                {
                    // As a device at the end of a file: told, then the upper hangs up.
                    a.call_file_ended(call_id);
                    if rx.recv_timeout(FILE_END_GRACE).is_err() {
                        return format!("{why}; the upper did not hang up");
                    }
                }
                why
            })
        }
    };
    let _ = upper.control.stop_playback(n);
    result
}

/// Feeds the call from a held `ingest` (released here) until `until` (given the streams'
/// generation) returns why it ended.
fn feed(
    upper: &Upper,
    call_id: &str,
    channel: &str,
    ingest: &Arc<Ingest>,
    tx: Sender<()>,
    until: impl FnOnce(u64) -> String,
) -> Result<String, String> {
    let agent = upper.agent().ok_or("no SIP agent")?.clone();
    let built = ingest
        .wait_streams(STREAM_WAIT)
        .and_then(|s| Ok((build(channel, &s)?, s.generation)));
    let ((pipeline, srcs, sink), generation) = match built {
        Ok(b) => b,
        Err(e) => {
            ingest.release();
            return Err(e);
        }
    };
    let id = call_id.to_string();
    let ended = Mutex::new(tx);
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |s| {
                let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let Some(buf) = sample.buffer() else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                let rtp_ts = buf
                    .pts()
                    .or(buf.dts())
                    .map(|t| t.nseconds().wrapping_mul(9) / 100_000)
                    .unwrap_or(0) as u32;
                let map = buf.map_readable().map_err(|_| gst::FlowError::Error)?;
                if agent.send_call_frame(&id, &map, rtp_ts) {
                    Ok(gst::FlowSuccess::Ok)
                } else {
                    let _ = lock(&ended).send(());
                    Err(gst::FlowError::Eos)
                }
            })
            .build(),
    );
    let subscription = match pipeline.set_state(gst::State::Playing) {
        Ok(_) => ingest.subscribe_viewer(&srcs),
        Err(e) => {
            crate::gateway::warn(&format!("cascade: {channel}: pipeline: {e}"));
            Vec::new()
        }
    };
    ingest.release();
    let why = if subscription.is_empty() {
        Err("no subscription to the camera's stream".to_string())
    } else {
        Ok(until(generation))
    };
    for s in subscription {
        ingest.unsubscribe(s);
    }
    let _ = pipeline.set_state(gst::State::Null);
    why
}

const FILE_ENDED: &str = "the recording ended";

/// Waits until the session is told to stop, its camera session ends (`ended` says so) or,
/// given the streams' `generation`, they change.
fn watch(ingest: &Ingest, generation: Option<u64>, ended: &str, rx: &Receiver<()>) -> String {
    loop {
        match rx.recv_timeout(WATCH) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return "hung up".into(),
            Err(RecvTimeoutError::Timeout) => {}
        }
        if ingest.is_failed() {
            return ended.into();
        }
        if generation.is_some_and(|g| ingest.generation() != g) {
            return "the camera's stream changed".into();
        }
    }
}

/// A session's pipeline: its appsrcs (one per kind) and the appsink of PS frames.
type Built = (
    gst::Pipeline,
    Vec<(Kind, gst_app::AppSrc)>,
    gst_app::AppSink,
);

/// `appsrc ! parse ! psmux ! appsink` for the ingest's video, and its audio into the same
/// `psmux` when PS carries it (G.711 as is, AAC as ADTS).
fn build(channel: &str, streams: &crate::ingest::Streams) -> Result<Built, String> {
    let caps = streams.video.as_ref().ok_or("the camera sends no video")?;
    let parse = match caps.structure(0).map(|s| s.name().as_str()) {
        Some("video/x-h264") => "h264parse",
        Some("video/x-h265") => "h265parse",
        other => return Err(format!("video {other:?} cannot go into PS")),
    };
    let pipeline = gst::Pipeline::with_name(&format!("cascade-{channel}"));
    let mux = gst::ElementFactory::make("psmux")
        .build()
        .map_err(|e| format!("psmux: {e}"))?;
    let sink = gst_app::AppSink::builder().sync(false).build();
    pipeline
        .add_many([&mux, sink.upcast_ref()])
        .map_err(|e| e.to_string())?;
    mux.link(&sink).map_err(|e| e.to_string())?;
    let mut srcs = vec![(Kind::Video, branch(&pipeline, &mux, caps, Some(parse))?)];
    let audio_parse =
        streams
            .audio
            .as_ref()
            .and_then(|a| match a.structure(0).map(|s| s.name().as_str()) {
                Some("audio/x-alaw" | "audio/x-mulaw") => Some((a, None)),
                Some("audio/mpeg") => Some((a, Some("aacparse"))),
                _ => None,
            });
    if let Some((a, parse)) = audio_parse {
        match branch(&pipeline, &mux, a, parse) {
            Ok(src) => srcs.push((Kind::Audio, src)),
            Err(e) => crate::gateway::warn(&format!("cascade: {channel}: no audio: {e}")),
        }
    }
    Ok((pipeline, srcs, sink))
}

/// `appsrc caps=caps [! parse] ! mux` in `pipeline`.
fn branch(
    pipeline: &gst::Pipeline,
    mux: &gst::Element,
    caps: &gst::Caps,
    parse: Option<&str>,
) -> Result<gst_app::AppSrc, String> {
    let src = gst_app::AppSrc::builder()
        .caps(caps)
        .format(gst::Format::Time)
        .is_live(true)
        .do_timestamp(false)
        .build();
    let mut chain = vec![src.clone().upcast::<gst::Element>()];
    if let Some(p) = parse {
        chain.push(
            gst::ElementFactory::make(p)
                .build()
                .map_err(|e| e.to_string())?,
        );
    }
    pipeline.add_many(&chain).map_err(|e| e.to_string())?;
    gst::Element::link_many(&chain).map_err(|e| e.to_string())?;
    chain
        .last()
        .expect("the appsrc")
        .link(mux)
        .map_err(|e| e.to_string())?;
    Ok(src)
}

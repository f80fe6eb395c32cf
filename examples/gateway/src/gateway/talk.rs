//! Voice broadcast to a device (GB/T 28181 §9.12) from any path's audio, as wvp's broadcast
//! API does with a stream pushed to its media server: `POST /v1/talk` names a registered
//! device and a path (an RTSP or RTMP publisher, such as ffmpeg or OBS sending a microphone,
//! another camera, a pulled stream). A thread per talk runs the platform's side of the call
//! ([`gstgb28181::platform::Talk`]: Broadcast MESSAGE, the device's INVITE, the answer), then
//! reads the path's audio like any reader from its live edge (no cached GOP: a talk must not
//! start seconds late) into `appsrc ! [decodebin ! audioconvert ! audioresample !] G.711 encoder
//! ! appsink`, in the law the device asked for (G.711 of that law passes as is), and sends
//! each sample as RTP. It ends on `DELETE`, the device's BYE, the end of the path, or the
//! gateway's stop, and waits on those events only (no polling once talking).

use super::{Shared, lock, warn};
use crate::ingest::{Ingest, Kind};
use gst::prelude::*;
use gstgb28181::core::talk::G711;
use gstgb28181::platform::{Talk, TalkParams};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

/// Talks listed at most (finished ones are dropped first to make room).
pub const MAX_TALKS: usize = 16;
/// How long a talk waits for the device's INVITE after the Broadcast.
const INVITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a talk waits for its path's streams.
const STREAMS_TIMEOUT: Duration = Duration::from_secs(10);

/// `POST /v1/talk`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TalkRequest {
    /// The registered device to talk to.
    pub device_id: String,
    /// The device's audio output (Broadcast TargetID): the device ID (default) or one of its
    /// channels' IDs.
    pub target_id: Option<String>,
    /// The path whose audio is sent.
    pub source: String,
}

/// A talk as listed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct TalkView {
    pub id: u64,
    pub device_id: String,
    pub target_id: String,
    pub source: String,
    /// `calling` (Broadcast sent, waiting for the device's INVITE), `talking`, `ended` or
    /// `failed`.
    pub state: String,
    /// Unix seconds of the last state change.
    pub since: u64,
    /// `PCMA` or `PCMU` (as RTP), or `PS/PCMA` (in MPEG-PS), as the device asked.
    pub codec: Option<String>,
    /// Where the RTP goes (the address the device offered).
    pub destination: Option<String>,
    pub packets: u64,
    /// G.711 payload bytes sent.
    pub bytes: u64,
    /// Why it ended or failed.
    pub reason: Option<String>,
}

/// Why a talk cannot start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TalkError {
    Invalid(String),
    /// No such device online, or no such path.
    NotFound(String),
    /// The device is in a talk already.
    Busy,
    TooMany,
    Stopping,
}

impl std::fmt::Display for TalkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TalkError::Invalid(e) | TalkError::NotFound(e) => f.write_str(e),
            TalkError::Busy => f.write_str("the device is in a talk already"),
            TalkError::TooMany => write!(f, "{MAX_TALKS} talks already"),
            TalkError::Stopping => f.write_str("gateway stopping"),
        }
    }
}

/// The talks of a gateway.
#[derive(Default)]
pub(super) struct Talks {
    next_id: u64,
    list: BTreeMap<u64, Arc<TalkEntry>>,
}

/// What ends a talk.
enum End {
    Stop,
    Bye,
    Source(String),
}

struct Status {
    state: &'static str,
    since: SystemTime,
    codec: Option<String>,
    destination: Option<String>,
    reason: Option<String>,
}

pub(super) struct TalkEntry {
    id: u64,
    req: TalkRequest,
    target_id: String,
    status: Mutex<Status>,
    /// The established call (its counters), while talking.
    call: Mutex<Option<Arc<Mutex<Talk>>>>,
    stop: AtomicBool,
    ends: Mutex<mpsc::Sender<End>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl TalkEntry {
    fn set(&self, state: &'static str, reason: Option<String>) {
        let mut s = lock(&self.status);
        if s.state != state {
            s.since = SystemTime::now();
        }
        s.state = state;
        s.reason = reason;
    }

    fn active(&self) -> bool {
        matches!(lock(&self.status).state, "calling" | "talking")
    }

    fn view(&self) -> TalkView {
        let (packets, bytes) = lock(&self.call).as_ref().map_or((0, 0), |c| {
            let t = lock(c);
            (t.packets, t.bytes)
        });
        let s = lock(&self.status);
        TalkView {
            id: self.id,
            device_id: self.req.device_id.clone(),
            target_id: self.target_id.clone(),
            source: self.req.source.clone(),
            state: s.state.into(),
            since: s
                .since
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            codec: s.codec.clone(),
            destination: s.destination.clone(),
            packets,
            bytes,
            reason: s.reason.clone(),
        }
    }
}

/// Starts a talk.
pub(super) fn add(sh: &Arc<Shared>, req: TalkRequest) -> Result<TalkView, TalkError> {
    for id in std::iter::once(&req.device_id).chain(req.target_id.as_ref()) {
        sh.ids
            .check(id)
            .map_err(|e| TalkError::Invalid(e.to_string()))?;
    }
    crate::paths::check_reader_path(&req.source)
        .map_err(|e| TalkError::Invalid(format!("source: {e}")))?;
    if sh.stopping.load(Ordering::SeqCst) {
        return Err(TalkError::Stopping);
    }
    if !sh.endpoint.device(&req.device_id).is_some_and(|d| d.online) {
        return Err(TalkError::NotFound(format!(
            "device {} is not online",
            req.device_id
        )));
    }
    if super::reader_hooks(sh, &req.source).is_none() {
        return Err(TalkError::NotFound(format!("no path {}", req.source)));
    }
    let mut t = lock(&sh.talks);
    if t.list
        .values()
        .any(|x| x.req.device_id == req.device_id && x.active())
    {
        return Err(TalkError::Busy);
    }
    if t.list.len() >= MAX_TALKS {
        match t.list.values().find(|x| !x.active()).map(|x| x.id) {
            Some(old) => {
                if let Some(e) = t.list.remove(&old) {
                    join(&e);
                }
            }
            None => return Err(TalkError::TooMany),
        }
    }
    t.next_id += 1;
    let (tx, rx) = mpsc::channel();
    let entry = Arc::new(TalkEntry {
        id: t.next_id,
        target_id: req.target_id.clone().unwrap_or(req.device_id.clone()),
        req,
        status: Mutex::new(Status {
            state: "calling",
            since: SystemTime::now(),
            codec: None,
            destination: None,
            reason: None,
        }),
        call: Mutex::new(None),
        stop: AtomicBool::new(false),
        ends: Mutex::new(tx),
        thread: Mutex::new(None),
    });
    let (weak, me) = (Arc::downgrade(sh), entry.clone());
    let th = std::thread::Builder::new()
        .name(format!("talk-{}", entry.id))
        .spawn(move || run(weak, me, rx))
        .map_err(|e| TalkError::Invalid(format!("no thread: {e}")))?;
    *lock(&entry.thread) = Some(th);
    t.list.insert(entry.id, entry.clone());
    println!(
        "[gateway] talk {}: {} to device {}",
        entry.id, entry.req.source, entry.req.device_id
    );
    Ok(entry.view())
}

/// Ends talk `id` and forgets it; false when there is none.
pub(super) fn remove(sh: &Shared, id: u64) -> bool {
    let entry = lock(&sh.talks).list.remove(&id);
    match entry {
        Some(e) => {
            halt(sh, &e);
            true
        }
        None => false,
    }
}

/// Ends every talk (gateway stop).
pub(super) fn stop_all(sh: &Shared) {
    let all: Vec<Arc<TalkEntry>> = std::mem::take(&mut lock(&sh.talks).list)
        .into_values()
        .collect();
    for e in &all {
        halt(sh, e);
    }
}

pub(super) fn list(sh: &Shared) -> Vec<TalkView> {
    lock(&sh.talks).list.values().map(|e| e.view()).collect()
}

fn halt(sh: &Shared, e: &TalkEntry) {
    e.stop.store(true, Ordering::SeqCst);
    // Still setting up: asleep on the endpoint's changes.
    sh.endpoint.wake_waiters();
    let _ = lock(&e.ends).send(End::Stop);
    join(e);
}

fn join(e: &TalkEntry) {
    if let Some(t) = lock(&e.thread).take() {
        let _ = t.join();
    }
}

/// One talk's life.
fn run(weak: Weak<Shared>, entry: Arc<TalkEntry>, ends: mpsc::Receiver<End>) {
    let Some(sh) = weak.upgrade() else { return };
    let ep = sh.endpoint.clone();
    let params = TalkParams {
        source_id: sh.cfg.server_id.clone(),
        device_id: entry.req.device_id.clone(),
        target_id: entry.target_id.clone(),
        media_address: sh.cfg.media_address.parse::<IpAddr>().ok(),
        wait_timeout: Duration::from_secs(5),
        invite_timeout: INVITE_TIMEOUT,
    };
    drop(sh);
    let stop = || entry.stop.load(Ordering::SeqCst);
    let mut talk = match Talk::start(&ep, &params, &stop) {
        Ok(t) => t,
        Err(e) => {
            fail(&entry, e.to_string());
            return;
        }
    };
    let law = talk.format.law();
    {
        let mut s = lock(&entry.status);
        s.codec = Some(talk.format.describe());
        s.destination = Some(talk.media_dest.to_string());
    }
    // The device's BYE joins the other ends; the forwarder ends with the dialog.
    let bye = talk.take_bye();
    let to_ends = lock(&entry.ends).clone();
    let _ = std::thread::Builder::new()
        .name(format!("talk-{}-bye", entry.id))
        .spawn(move || {
            if bye.recv().is_ok() {
                let _ = to_ends.send(End::Bye);
            }
        });
    let call = Arc::new(Mutex::new(talk));
    *lock(&entry.call) = Some(call.clone());

    let source = entry.req.source.clone();
    let hooks = weak
        .upgrade()
        .and_then(|sh| super::reader_hooks(&sh, &source));
    let end = match hooks {
        None => End::Source(format!("no path {source}")),
        Some(hooks) => {
            let end = match hooks.ingest(&source) {
                Ok(ingest) => talk_from(&entry, &ingest, law, &call, &ends),
                Err(e) => End::Source(e),
            };
            hooks.maybe_stop(&source);
            end
        }
    };
    let t = lock(&call);
    let reason = match end {
        End::Bye => {
            ep.remove_dialog(&t.dialog.call_id);
            "the device hung up".to_string()
        }
        End::Stop => {
            t.hang_up(&ep);
            "stopped".to_string()
        }
        End::Source(why) => {
            t.hang_up(&ep);
            why
        }
    };
    drop(t);
    println!(
        "[gateway] talk {} to device {} ended: {reason}",
        entry.id, entry.req.device_id
    );
    entry.set("ended", Some(reason));
}

fn fail(entry: &TalkEntry, why: String) {
    warn(&format!(
        "talk {} to device {}: {why}",
        entry.id, entry.req.device_id
    ));
    entry.set("failed", Some(why));
}

/// Sends the path's audio until something ends the talk.
fn talk_from(
    entry: &TalkEntry,
    ingest: &Arc<Ingest>,
    law: G711,
    call: &Arc<Mutex<Talk>>,
    ends: &mpsc::Receiver<End>,
) -> End {
    ingest.hold();
    let built = ingest
        .wait_streams(STREAMS_TIMEOUT)
        .and_then(|s| s.audio.ok_or_else(|| "the path has no audio".to_string()))
        .and_then(|caps| pipeline(&caps, law));
    let (pipeline, src, sink) = match built {
        Ok(b) => b,
        Err(e) => {
            ingest.release();
            return End::Source(e);
        }
    };
    let c = call.clone();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |s| {
                let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                if let Some(map) = sample.buffer().and_then(|b| b.map_readable().ok()) {
                    let _ = lock(&c).send(&map);
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    let to_ends = lock(&entry.ends).clone();
    if let Some(bus) = pipeline.bus() {
        bus.set_sync_handler(move |_, m| {
            match m.view() {
                gst::MessageView::Eos(_) => {
                    let _ = to_ends.send(End::Source("the path ended".into()));
                }
                gst::MessageView::Error(e) => {
                    let _ = to_ends.send(End::Source(format!("audio: {}", e.error())));
                }
                _ => {}
            }
            gst::BusSyncReply::Drop
        });
    }
    let id = match pipeline.set_state(gst::State::Playing) {
        Ok(_) => ingest.subscribe_camera(Kind::Audio, &src),
        Err(e) => {
            ingest.release();
            let _ = pipeline.set_state(gst::State::Null);
            return End::Source(format!("audio pipeline: {e}"));
        }
    };
    ingest.release();
    let end = match id {
        Some(_) => {
            entry.set("talking", None);
            ends.recv().unwrap_or(End::Stop)
        }
        None => End::Source("the path takes no more readers".into()),
    };
    if let Some(id) = id {
        ingest.unsubscribe(id);
    }
    let _ = pipeline.set_state(gst::State::Null);
    end
}

/// `appsrc` (the path's audio, `caps`) to an `appsink` of G.711 in `law`, 8 kHz mono.
fn pipeline(
    caps: &gst::Caps,
    law: G711,
) -> Result<(gst::Pipeline, gst_app::AppSrc, gst_app::AppSink), String> {
    let (name, encoder) = match law {
        G711::Alaw => ("audio/x-alaw", "alawenc"),
        G711::Ulaw => ("audio/x-mulaw", "mulawenc"),
    };
    let wanted = gst::Caps::builder(name)
        .field("rate", 8000i32)
        .field("channels", 1i32)
        .build();
    let convert = if caps.can_intersect(&wanted) {
        String::new()
    } else {
        format!(
            "decodebin ! audioconvert ! audioresample ! audio/x-raw,rate=8000,channels=1 ! \
             {encoder} ! "
        )
    };
    let launch = format!(
        "appsrc name=src is-live=true format=time min-latency=0 ! {convert}\
         appsink name=sink sync=false max-buffers=50"
    );
    let pipeline = gst::parse::launch(&launch)
        .map_err(|e| e.to_string())?
        .downcast::<gst::Pipeline>()
        .map_err(|_| "not a pipeline")?;
    let src = pipeline
        .by_name("src")
        .and_then(|s| s.downcast::<gst_app::AppSrc>().ok())
        .ok_or("no appsrc")?;
    src.set_caps(Some(caps));
    let sink = pipeline
        .by_name("sink")
        .and_then(|s| s.downcast::<gst_app::AppSink>().ok())
        .ok_or("no appsink")?;
    Ok((pipeline, src, sink))
}

//! Pushing paths to external RTMP servers ([`crate::push`]): one thread per push reads the
//! path like any reader ([`super::reader_hooks`]: a push keeps a camera's session open) into
//! `flvmux streamable=true ! rtmp2sink`, waits while the path does not exist, and starts
//! again after a failure with [`crate::pull::Backoff`]. The URL goes to `rtmp2sink` as a
//! property, never into a pipeline description.

use super::{Shared, lock, warn};
use crate::ingest::Ingest;
use crate::push::{MAX_PUSHES, PushConfig, shown};
use gst::prelude::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// How often a push waiting for its path looks again.
const PATH_WAIT: Duration = Duration::from_secs(1);

/// The pushes of a gateway.
#[derive(Default)]
pub(super) struct Pushes {
    next_id: u64,
    list: BTreeMap<u64, Arc<Push>>,
}

/// A push as listed (API).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct PushView {
    pub id: u64,
    pub path: String,
    /// The URL without its stream key or password.
    pub url: String,
    /// `config` or `api`.
    pub origin: String,
    /// `waiting` (no such path yet), `pushing`, or `retrying` (after a failure).
    pub state: String,
    /// Unix seconds of the last state change.
    pub since: u64,
    /// Bytes the RTMP connection sent in the current attempt.
    pub bytes_sent: u64,
    /// Connections made so far.
    pub attempts: u64,
    /// Why the last attempt ended, if it failed.
    pub error: Option<String>,
}

/// Why a push cannot be added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushError {
    Invalid(String),
    /// The same path is pushed to the same URL already.
    Duplicate,
    TooMany,
    Stopping,
}

impl std::fmt::Display for PushError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PushError::Invalid(e) => f.write_str(e),
            PushError::Duplicate => f.write_str("this path is pushed to this URL already"),
            PushError::TooMany => write!(f, "{MAX_PUSHES} pushes already"),
            PushError::Stopping => f.write_str("gateway stopping"),
        }
    }
}

struct Status {
    state: &'static str,
    since: SystemTime,
    attempts: u64,
    error: Option<String>,
    /// The attempt's rtmp2sink (its byte count).
    sink: Option<gst::Element>,
}

pub(super) struct Push {
    id: u64,
    cfg: PushConfig,
    origin: &'static str,
    status: Mutex<Status>,
    stop: AtomicBool,
    wake: Condvar,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Push {
    fn set(&self, state: &'static str, error: Option<String>, sink: Option<gst::Element>) {
        let mut s = lock(&self.status);
        if s.state != state {
            s.since = SystemTime::now();
        }
        s.state = state;
        s.error = error;
        s.sink = sink;
    }

    /// Sleeps `d` unless stopped meanwhile; false once stopped.
    fn pause(&self, d: Duration) -> bool {
        let s = lock(&self.status);
        if self.stop.load(Ordering::SeqCst) {
            return false;
        }
        drop(
            self.wake
                .wait_timeout(s, d)
                .unwrap_or_else(|e| e.into_inner()),
        );
        !self.stop.load(Ordering::SeqCst)
    }

    fn view(&self) -> PushView {
        let s = lock(&self.status);
        let bytes_sent = s.sink.as_ref().map_or(0, bytes_sent);
        PushView {
            id: self.id,
            path: self.cfg.path.clone(),
            url: shown(&self.cfg.url),
            origin: self.origin.into(),
            state: s.state.into(),
            since: s
                .since
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            bytes_sent,
            attempts: s.attempts,
            error: s.error.clone(),
        }
    }
}

/// Starts pushing `cfg` (`origin`: `config` or `api`).
pub(super) fn add(
    sh: &Arc<Shared>,
    cfg: PushConfig,
    origin: &'static str,
) -> Result<PushView, PushError> {
    cfg.check().map_err(PushError::Invalid)?;
    if sh.stopping.load(Ordering::SeqCst) {
        return Err(PushError::Stopping);
    }
    let mut p = lock(&sh.pushes);
    if p.list.values().any(|x| x.cfg == cfg) {
        return Err(PushError::Duplicate);
    }
    if p.list.len() >= MAX_PUSHES {
        return Err(PushError::TooMany);
    }
    p.next_id += 1;
    let push = Arc::new(Push {
        id: p.next_id,
        cfg,
        origin,
        status: Mutex::new(Status {
            state: "waiting",
            since: SystemTime::now(),
            attempts: 0,
            error: None,
            sink: None,
        }),
        stop: AtomicBool::new(false),
        wake: Condvar::new(),
        thread: Mutex::new(None),
    });
    let (weak, me) = (Arc::downgrade(sh), push.clone());
    let t = std::thread::Builder::new()
        .name(format!("push-{}", push.id))
        .spawn(move || run(weak, me))
        .map_err(|e| PushError::Invalid(format!("no thread: {e}")))?;
    *lock(&push.thread) = Some(t);
    p.list.insert(push.id, push.clone());
    println!(
        "[gateway] pushing {} to {}",
        push.cfg.path,
        shown(&push.cfg.url)
    );
    Ok(push.view())
}

/// Stops push `id`; false when there is none.
pub(super) fn remove(sh: &Shared, id: u64) -> bool {
    let push = lock(&sh.pushes).list.remove(&id);
    match push {
        Some(p) => {
            halt(&p);
            true
        }
        None => false,
    }
}

/// Stops every push (gateway stop).
pub(super) fn stop_all(sh: &Shared) {
    let all: Vec<Arc<Push>> = std::mem::take(&mut lock(&sh.pushes).list)
        .into_values()
        .collect();
    for p in &all {
        halt(p);
    }
}

fn halt(p: &Push) {
    {
        let _s = lock(&p.status);
        p.stop.store(true, Ordering::SeqCst);
        p.wake.notify_all();
    }
    if let Some(t) = lock(&p.thread).take() {
        let _ = t.join();
    }
}

pub(super) fn list(sh: &Shared) -> Vec<PushView> {
    lock(&sh.pushes).list.values().map(|p| p.view()).collect()
}

/// One push's life: wait for the path, push, retry.
fn run(weak: Weak<Shared>, push: Arc<Push>) {
    let path = push.cfg.path.clone();
    let mut backoff = crate::pull::Backoff::default();
    loop {
        if push.stop.load(Ordering::SeqCst) {
            return;
        }
        let hooks = match weak.upgrade() {
            Some(sh) if !sh.stopping.load(Ordering::SeqCst) => super::reader_hooks(&sh, &path),
            _ => return,
        };
        let Some(hooks) = hooks else {
            push.set("waiting", None, None);
            if !push.pause(PATH_WAIT) {
                return;
            }
            continue;
        };
        let ingest = match hooks.ingest(&path) {
            Ok(i) => i,
            Err(e) => {
                backoff.ended(Instant::now(), false);
                push.set("retrying", Some(e), None);
                if !push.pause(backoff.wait(Instant::now())) {
                    return;
                }
                continue;
            }
        };
        lock(&push.status).attempts += 1;
        let (result, had_media) = attempt(&push, &ingest);
        hooks.maybe_stop(&path);
        backoff.ended(Instant::now(), had_media);
        if push.stop.load(Ordering::SeqCst) {
            return;
        }
        warn(&format!(
            "push of {path} to {}: {result}; again in {:?}",
            shown(&push.cfg.url),
            backoff.delay()
        ));
        push.set("retrying", Some(result), None);
        if !push.pause(backoff.wait(Instant::now())) {
            return;
        }
    }
}

/// One connection: until the pipeline fails or ends, or the push stops. Returns why it ended
/// and whether it sent media.
fn attempt(push: &Push, ingest: &Arc<Ingest>) -> (String, bool) {
    let path = &push.cfg.path;
    let sink = match gst::ElementFactory::make("rtmp2sink")
        .property("location", &push.cfg.url)
        .property("sync", false)
        .property("async", false)
        .build()
    {
        Ok(s) => s,
        Err(e) => return (format!("rtmp2sink: {e}"), false),
    };
    ingest.hold();
    let built =
        crate::rtmp::media::flv_pipeline(path, ingest, Duration::from_secs(20), sink.clone());
    ingest.release();
    let (pipeline, ids) = match built {
        Ok(b) => b,
        Err(e) => return (e, false),
    };
    push.set("pushing", None, Some(sink.clone()));
    let bus = pipeline.bus();
    let why = loop {
        if push.stop.load(Ordering::SeqCst) {
            break "stopped".to_string();
        }
        let msg = bus.as_ref().and_then(|b| {
            b.timed_pop_filtered(
                gst::ClockTime::from_mseconds(500),
                &[gst::MessageType::Error, gst::MessageType::Eos],
            )
        });
        match msg.as_ref().map(|m| m.view()) {
            Some(gst::MessageView::Error(e)) => {
                // rtmp2 may quote the location: only the shown form goes out.
                break e
                    .error()
                    .to_string()
                    .replace(&push.cfg.url, &shown(&push.cfg.url));
            }
            Some(gst::MessageView::Eos(_)) => break "the path ended".to_string(),
            _ => {}
        }
    };
    let had_media = bytes_sent(&sink) > 0;
    for id in ids {
        ingest.unsubscribe(id);
    }
    let _ = pipeline.set_state(gst::State::Null);
    (why, had_media)
}

/// Bytes an `rtmp2sink`'s connection has sent (its `stats`).
fn bytes_sent(sink: &gst::Element) -> u64 {
    sink.property::<Option<gst::Structure>>("stats")
        .and_then(|st| st.get::<u64>("out-bytes-total").ok())
        .unwrap_or(0)
}

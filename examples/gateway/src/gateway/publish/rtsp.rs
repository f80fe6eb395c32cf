//! RTSP publishing (ANNOUNCE/RECORD, as `ffmpeg -f rtsp rtsp://host:8554/<path>` does), on
//! gst-rtsp-server's record support.
//!
//! 1. The ANNOUNCE passes the auth's URL check (user with `publish` on the path), which asks
//!    [`announce_gate`]: the path is [reserved](super::reserve) and the SDP checked
//!    ([`super::sdp`]); a refusal is answered there with its reason (400/403/413/415/455/503).
//!    A [`RecordFactory`] for the announced streams is mounted on the path.
//! 2. gst-rtsp-server builds the record media from it: per announced section a depayloader
//!    into an appsink (sections we don't take: a fakesink). Its streams are handed to appsrcs
//!    that are the path's [`IngestSource`], with their timestamps moved from the record
//!    pipeline's running time to the ingest's: the path is published, and the mount now
//!    serves readers (the publisher's own SETUP/RECORD use the media it announced).
//! 3. The publication ends with the record media: TEARDOWN, connection closed (TCP), session
//!    timeout (UDP publishers that vanish).

use super::sdp::{self, Codec, SdpRefusal};
use super::{PublishError, PublishGuard, Reservation, Shared, SourceKind};
use crate::factory::CAT;
use crate::ingest::IngestSource;
use crate::paths::PathNameError;
use crate::rtsp_auth::AnnounceGate;
use crate::rtsp_auth::{raw_context as raw, request_path};
use gst::glib;
use gst::prelude::*;
use gst_ipcam_common::sync::lock;
use gst_rtsp_server::gst_rtsp::{self, RTSPStatusCode};
use gst_rtsp_server::prelude::*;
use gst_rtsp_server::subclass::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// Bytes a stream's hand-over to the ingest queues at most (oldest dropped beyond).
const HANDOVER_MAX_BYTES: u64 = 4 * 1024 * 1024;

/// The gate of the gateway's RTSP server (see the module doc).
pub(in crate::gateway) fn announce_gate(weak: Weak<Shared>) -> AnnounceGate {
    Box::new(move |ctx| {
        let sh = weak.upgrade().ok_or((
            RTSPStatusCode::ServiceUnavailable,
            "gateway stopping".into(),
        ))?;
        let path = request_path(ctx);
        let reservation = super::reserve(&sh, &path, SourceKind::RtspPublisher)
            .map_err(|e| (publish_status(&e), e.to_string()))?;
        let streams = sdp::announced_streams(&request_body(ctx))
            .map_err(|e| (sdp_status(&e), e.to_string()))?;
        let factory = RecordFactory::new(reservation, streams);
        let Some(mounts) = sh.server.mount_points() else {
            return Err((RTSPStatusCode::ServiceUnavailable, "no mount points".into()));
        };
        mounts.add_factory(&format!("/{path}"), factory);
        Ok(())
    })
}

fn publish_status(e: &PublishError) -> RTSPStatusCode {
    match e {
        // GB28181 IDs, playbacks and the gateway's own names are not for publishers.
        PublishError::BadName(PathNameError::Reserved(_)) | PublishError::Taken(_) => {
            RTSPStatusCode::Forbidden
        }
        PublishError::BadName(_) => RTSPStatusCode::BadRequest,
        PublishError::Busy(_) => RTSPStatusCode::MethodNotValidInThisState,
        PublishError::TooMany(_) | PublishError::Stopping | PublishError::Failed(_) => {
            RTSPStatusCode::ServiceUnavailable
        }
    }
}

fn sdp_status(e: &SdpRefusal) -> RTSPStatusCode {
    match e {
        SdpRefusal::TooLarge(_) => RTSPStatusCode::RequestEntityTooLarge,
        SdpRefusal::NothingUsable => RTSPStatusCode::UnsupportedMediaType,
        SdpRefusal::TooManyMedia(_) | SdpRefusal::Malformed(_) => RTSPStatusCode::BadRequest,
    }
}

/// The request's body (bounded by the server's content length limit), without the NUL
/// GstRTSPConnection ends it with.
fn request_body(ctx: &gst_rtsp_server::RTSPContext) -> Vec<u8> {
    // SAFETY: the request is the current one; its body is owned by it and copied at once.
    unsafe {
        let req = (*raw(ctx)).request;
        if req.is_null() {
            return Vec::new();
        }
        let mut data: *mut u8 = std::ptr::null_mut();
        let mut size: u32 = 0;
        let r = gst_rtsp::ffi::gst_rtsp_message_get_body(req, &mut data, &mut size);
        if r != gst_rtsp::ffi::GST_RTSP_OK || data.is_null() {
            return Vec::new();
        }
        let body = std::slice::from_raw_parts(data, size as usize);
        body.strip_suffix(&[0]).unwrap_or(body).to_vec()
    }
}

/// Whether the current request is an ANNOUNCE.
fn is_announce() -> bool {
    gst_rtsp_server::RTSPContext::with_current_context(|ctx| {
        // SAFETY: the current context, read in its own thread.
        unsafe { (*raw(ctx)).method == gst_rtsp::ffi::GST_RTSP_ANNOUNCE }
    })
    .unwrap_or(false)
}

/// The record media's bin (`depay<n>` per announced section) and the ingest's source (an
/// appsrc per stream taken), with the hand-over between them.
struct Bridge {
    record: gst::Bin,
    source: gst::Bin,
    /// (depayloader, appsink, appsrc) of each stream taken.
    streams: Vec<(gst::Element, gst_app::AppSink, gst_app::AppSrc)>,
    /// Every depayloader (bytes received are counted on all of them).
    depays: Vec<gst::Element>,
}

fn build_bridge(streams: &[Option<Codec>]) -> Result<Bridge, String> {
    let record = gst::Bin::new();
    let source = gst::Bin::new();
    let mut out = Vec::new();
    let mut depays = Vec::new();
    for (n, codec) in streams.iter().enumerate() {
        let name = format!("depay{n}");
        let Some(codec) = codec else {
            let sink = gst::ElementFactory::make("fakesink")
                .name(&name)
                .property("sync", false)
                .property("async", false)
                .build()
                .map_err(|e| e.to_string())?;
            record.add(&sink).map_err(|e| e.to_string())?;
            depays.push(sink);
            continue;
        };
        let depay = gst::ElementFactory::make(codec.depayloader())
            .name(&name)
            .build()
            .map_err(|e| format!("{}: {e}", codec.depayloader()))?;
        let sink = gst_app::AppSink::builder()
            .sync(false)
            .async_(false)
            .build();
        record
            .add_many([&depay, sink.upcast_ref()])
            .map_err(|e| e.to_string())?;
        depay.link(&sink).map_err(|e| e.to_string())?;
        let src = gst_app::AppSrc::builder()
            .name(format!("src{n}"))
            .is_live(true)
            .format(gst::Format::Time)
            .max_bytes(HANDOVER_MAX_BYTES)
            .leaky_type(gst_app::AppLeakyType::Downstream)
            .build();
        source.add(&src).map_err(|e| e.to_string())?;
        let pad = src.static_pad("src").ok_or("appsrc without a pad")?;
        let ghost = gst::GhostPad::builder_with_target(&pad)
            .map_err(|e| e.to_string())?
            .name(format!("src{n}"))
            .build();
        source.add_pad(&ghost).map_err(|e| e.to_string())?;
        depays.push(depay.clone());
        out.push((depay, sink, src));
    }
    Ok(Bridge {
        record,
        source,
        streams: out,
        depays,
    })
}

/// Hands `sink`'s samples to `src`, timestamps moved from the record pipeline's running
/// time to `src`'s (both pipelines run on the system clock).
fn hand_over(sink: &gst_app::AppSink, src: gst_app::AppSrc) {
    let caps: Mutex<Option<gst::Caps>> = Mutex::new(None);
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let (Some(buffer), Some(segment)) = (sample.buffer_owned(), sample.segment())
                else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                let Some(segment) = segment.downcast_ref::<gst::ClockTime>() else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                let (Some(from), Some(to)) = (sink.base_time(), src.base_time()) else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                let shift = |t: Option<gst::ClockTime>| {
                    let running = segment.to_running_time(t?)?;
                    (running + from).checked_sub(to)
                };
                let Some(pts) = shift(buffer.pts()).or_else(|| shift(buffer.dts())) else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                if let Some(c) = sample.caps_owned() {
                    let mut last = lock(&caps);
                    if last.as_ref() != Some(&c) {
                        src.set_caps(Some(&c));
                        *last = Some(c);
                    }
                }
                let mut buffer = buffer;
                {
                    let b = buffer.make_mut();
                    b.set_pts(pts);
                    b.set_dts(shift(b.dts()));
                }
                // Flushing once the path is gone: the record media ends with it.
                let _ = src.push_buffer(buffer);
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
}

/// Counts the RTP bytes that reach `depay`.
fn count_received(depay: &gst::Element, counter: Arc<AtomicU64>) {
    let Some(pad) = depay.static_pad("sink") else {
        return;
    };
    pad.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
        move |_, info| {
            let n = match &info.data {
                Some(gst::PadProbeData::Buffer(b)) => b.size(),
                Some(gst::PadProbeData::BufferList(l)) => l.calculate_size(),
                _ => 0,
            };
            counter.fetch_add(n as u64, Ordering::Relaxed);
            gst::PadProbeReturn::Ok
        },
    );
}

mod imp {
    use super::*;

    #[derive(Default)]
    pub struct RecordFactory {
        /// The path held for the ANNOUNCE and its streams, until the media is built.
        pub(super) announced: Mutex<Option<(Reservation, Vec<Option<Codec>>)>>,
        /// The publication of the media being constructed (create_element → configure).
        pub(super) pending: Mutex<Option<PublishGuard>>,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for RecordFactory {
        const NAME: &'static str = "GstIpcamGatewayRecordFactory";
        type Type = super::RecordFactory;
        type ParentType = gst_rtsp_server::RTSPMediaFactory;
    }

    impl ObjectImpl for RecordFactory {}

    impl RTSPMediaFactoryImpl for RecordFactory {
        fn create_element(&self, _url: &gst_rtsp::RTSPUrl) -> Option<gst::Element> {
            // Only the ANNOUNCE it was mounted for builds the media (once).
            if !is_announce() {
                return None;
            }
            let (reservation, streams) = lock(&self.announced).take()?;
            let path = reservation.path().to_string();
            let bridge = match build_bridge(&streams) {
                Ok(b) => b,
                Err(e) => {
                    super::super::warn(&format!("path {path}: publisher refused: {e}"));
                    return None;
                }
            };
            let source = bridge.source.clone().upcast::<gst::Element>();
            let guard = match reservation.publish(IngestSource {
                elements: vec![source.clone()],
                streams_from: source.clone(),
                control: source,
            }) {
                Ok(g) => g,
                Err(e) => {
                    super::super::warn(&format!("path {path}: publisher refused: {e}"));
                    return None;
                }
            };
            for (_, sink, src) in &bridge.streams {
                hand_over(sink, src.clone());
            }
            for d in &bridge.depays {
                count_received(d, guard.bytes_received().clone());
            }
            gst::info!(CAT, "record media for path {path}: {streams:?}");
            *lock(&self.pending) = Some(guard);
            Some(bridge.record.upcast())
        }

        fn configure(&self, media: &gst_rtsp_server::RTSPMedia) {
            self.parent_configure(media);
            let Some(guard) = lock(&self.pending).take() else {
                return;
            };
            guard.set_record_media(media);
            // The path lives as long as the record media: it ends when the media is
            // unprepared (TEARDOWN, connection or session gone) or dropped unprepared.
            let held = Arc::new(Mutex::new(Some(guard)));
            let h = held.clone();
            media.connect_unprepared(move |_| drop(lock(&h).take()));
            let _ = media.add_weak_ref_notify(move || drop(lock(&held).take()));
        }
    }
}

glib::wrapper! {
    /// The mount of a path being announced: builds the publisher's record media.
    pub struct RecordFactory(ObjectSubclass<imp::RecordFactory>)
        @extends gst_rtsp_server::RTSPMediaFactory;
}

impl RecordFactory {
    fn new(reservation: Reservation, streams: Vec<Option<Codec>>) -> Self {
        let f: Self = glib::Object::new();
        *lock(&f.imp().announced) = Some((reservation, streams));
        f.set_transport_mode(gst_rtsp_server::RTSPTransportMode::RECORD);
        f.set_shared(false);
        f
    }
}

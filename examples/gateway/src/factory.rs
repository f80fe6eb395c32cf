//! The RTSP media factory of one GB28181 channel. A media is
//! `appsrc name=vsrc ! rtph264pay name=pay0` (or H.265) and `appsrc name=asrc ! rtppcmapay
//! name=pay1` (or PCMU, AAC), fed from the channel's [`Ingest`]: video and audio pass through
//! without transcoding. One media per viewer, all fed from one ingest (one INVITE) per
//! channel: each viewer starts with the channel's cached GOP (a clean first picture); the
//! ingest stops (BYE) when nobody else (viewers, HLS, recording) uses it.

use crate::ingest::{Ingest, Kind, payloader_for};
use gst::glib;
use gst::prelude::*;
use gst_rtsp_server::prelude::*;
use gst_rtsp_server::subclass::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

pub static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "gateway",
        gst::DebugColorFlags::empty(),
        Some("GB28181 to RTSP gateway"),
    )
});

/// What the factory asks of the gateway.
pub trait ChannelHooks: Send + Sync {
    /// The channel's running ingest, started if needed.
    fn ingest(&self, channel: &str) -> Result<Arc<Ingest>, String>;
    /// A media of the channel exists (for statistics), with its payloaders' counters.
    fn media_configured(
        &self,
        channel: &str,
        media: &gst_rtsp_server::RTSPMedia,
        counters: Arc<MediaCounters>,
    );
    /// A user left: stop the ingest if nobody uses it.
    fn maybe_stop(&self, channel: &str);
}

/// RTP payload bytes and packets the media's payloaders produced (each client gets a copy).
#[derive(Debug, Default)]
pub struct MediaCounters {
    pub payload_bytes: AtomicU64,
    pub packets: AtomicU64,
}

impl MediaCounters {
    fn count(&self, b: &gst::BufferRef) {
        // Fixed RTP header of our payloaders (no CSRC, no extension).
        self.payload_bytes
            .fetch_add(b.size().saturating_sub(12) as u64, Ordering::Relaxed);
        self.packets.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts what leaves `pad`.
    pub fn watch(self: &Arc<Self>, pad: &gst::Pad) {
        let c = self.clone();
        pad.add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
            move |_, info| {
                match &info.data {
                    Some(gst::PadProbeData::Buffer(b)) => c.count(b),
                    Some(gst::PadProbeData::BufferList(l)) => {
                        for b in l.iter() {
                            c.count(b);
                        }
                    }
                    _ => {}
                }
                gst::PadProbeReturn::Ok
            },
        );
    }

    pub fn get(&self) -> (u64, u64) {
        (
            self.payload_bytes.load(Ordering::Relaxed),
            self.packets.load(Ordering::Relaxed),
        )
    }
}

/// The channel's running ingest, held (never unused, so never stopped by another user
/// leaving) until the caller subscribes or releases it. One that stopped just before the
/// hold (its last user left at that moment) is replaced by a new one.
pub fn acquire_ingest(hooks: &dyn ChannelHooks, channel: &str) -> Result<Arc<Ingest>, String> {
    for _ in 0..2 {
        let i = hooks.ingest(channel)?;
        i.hold();
        if !i.is_failed() {
            return Ok(i);
        }
        i.release();
    }
    Err("the camera session keeps ending".into())
}

/// The media's bin for the given stream caps.
pub fn build_media_bin(
    video: Option<&gst::Caps>,
    audio: Option<&gst::Caps>,
) -> Result<gst::Bin, String> {
    let mut parts = Vec::new();
    let mut n = 0;
    for (name, caps) in [("vsrc", video), ("asrc", audio)] {
        let Some(caps) = caps else { continue };
        let Some(pay) = payloader_for(caps, 96 + n) else {
            continue;
        };
        parts.push(format!(
            "appsrc name={name} is-live=true format=time min-latency=0 ! {pay} name=pay{n}"
        ));
        n += 1;
    }
    if parts.is_empty() {
        return Err("no stream that can be payloaded".into());
    }
    let bin =
        gst::parse::bin_from_description(&parts.join(" "), false).map_err(|e| e.to_string())?;
    for (name, caps) in [("vsrc", video), ("asrc", audio)] {
        if let (Some(caps), Some(src)) = (caps, bin.by_name(name)) {
            src.set_property("caps", caps);
        }
    }
    Ok(bin)
}

/// gst-rtsp-server sends RTP over TCP (interleaved) through an `appsink` per stream that
/// syncs on the clock. Our frames are live already: waiting for each of them made the
/// viewer's streaming thread sleep and wake once more per packet list, and played the cached
/// GOP out at the camera's pace (the viewer a GOP behind live). Without the sync the cached
/// GOP leaves at once and live frames as they come, as ZLMediaKit's GOP cache does; the client
/// plays them by their timestamps. UDP senders (`multiudpsink`) keep the pacing: a burst of a
/// GOP over UDP would overflow the client's socket buffer.
fn unsync_tcp_senders(media_element: &gst::Element) {
    let Some(pipeline) = media_element.parent().and_downcast::<gst::Bin>() else {
        return;
    };
    pipeline.connect_deep_element_added(|_, _, element| {
        if element
            .factory()
            .is_none_or(|f| f.name().as_str() != "appsink")
        {
            return;
        }
        element.set_property("sync", false);
        // The stream sets it again from the media's rate control after adding the sink.
        element.connect_notify(Some("sync"), |e, _| {
            if e.property::<bool>("sync") {
                e.set_property("sync", false);
            }
        });
    });
}

mod imp {
    use super::*;

    #[derive(Default)]
    pub struct ChannelFactory {
        pub(super) channel: Mutex<String>,
        pub(super) hooks: Mutex<Option<Arc<dyn ChannelHooks>>>,
        pub(super) timeout: Mutex<Duration>,
        /// The ingest of the media being constructed (create_element → configure).
        pub(super) pending: Mutex<Option<Arc<Ingest>>>,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for ChannelFactory {
        const NAME: &'static str = "GstIpcamGatewayChannelFactory";
        type Type = super::ChannelFactory;
        type ParentType = gst_rtsp_server::RTSPMediaFactory;
    }

    impl ObjectImpl for ChannelFactory {}

    impl ChannelFactory {
        pub(super) fn parts(&self) -> (String, Option<Arc<dyn ChannelHooks>>, Duration) {
            (
                self.channel
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone(),
                self.hooks.lock().unwrap_or_else(|e| e.into_inner()).clone(),
                *self.timeout.lock().unwrap_or_else(|e| e.into_inner()),
            )
        }
    }

    impl RTSPMediaFactoryImpl for ChannelFactory {
        fn create_element(
            &self,
            _url: &gst_rtsp_server::gst_rtsp::RTSPUrl,
        ) -> Option<gst::Element> {
            let (channel, hooks, timeout) = self.parts();
            let hooks = hooks?;
            // Held (never unused, so never stopped by another media leaving) until
            // configure() subscribes the appsrcs.
            let ingest = match acquire_ingest(hooks.as_ref(), &channel) {
                Ok(i) => i,
                Err(e) => {
                    crate::gateway::warn(&format!("channel {channel}: no RTSP media: {e}"));
                    return None;
                }
            };
            let streams = ingest.wait_streams(timeout);
            let bin = streams.and_then(|s| build_media_bin(s.video.as_ref(), s.audio.as_ref()));
            match bin {
                Ok(bin) => {
                    gst::info!(CAT, "new media for channel {channel}");
                    *self.pending.lock().unwrap_or_else(|e| e.into_inner()) = Some(ingest);
                    Some(bin.upcast())
                }
                Err(e) => {
                    crate::gateway::warn(&format!("channel {channel}: no RTSP media: {e}"));
                    ingest.release();
                    hooks.maybe_stop(&channel);
                    // No element: gst-rtsp-server answers 503 (an empty bin made a media without
                    // streams, answered 200 with an empty SDP).
                    None
                }
            }
        }

        fn configure(&self, media: &gst_rtsp_server::RTSPMedia) {
            self.parent_configure(media);
            let (channel, hooks, _) = self.parts();
            let Some(hooks) = hooks else { return };
            let element = media.element();
            let ingest = self
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            let Some(ingest) = ingest else { return };
            let bin = element.downcast_ref::<gst::Bin>();
            let srcs: Vec<(Kind, gst_app::AppSrc)> = [("vsrc", Kind::Video), ("asrc", Kind::Audio)]
                .into_iter()
                .filter_map(|(name, kind)| {
                    let src = bin?.by_name(name)?.downcast::<gst_app::AppSrc>().ok()?;
                    Some((kind, src))
                })
                .collect();
            unsync_tcp_senders(&element);
            let ids = ingest.subscribe_viewer(&srcs);
            ingest.release();
            let counters = Arc::new(MediaCounters::default());
            for n in 0..2 {
                if let Some(pad) = bin
                    .and_then(|b| b.by_name(&format!("pay{n}")))
                    .and_then(|p| p.static_pad("src"))
                {
                    counters.watch(&pad);
                }
            }
            hooks.media_configured(&channel, media, counters);
            let ids = Mutex::new(Some((ingest, ids)));
            media.connect_unprepared(move |_| {
                if let Some((ingest, ids)) = ids.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    for id in ids {
                        ingest.unsubscribe(id);
                    }
                    hooks.maybe_stop(&channel);
                }
            });
        }
    }
}

glib::wrapper! {
    pub struct ChannelFactory(ObjectSubclass<imp::ChannelFactory>)
        @extends gst_rtsp_server::RTSPMediaFactory;
}

impl ChannelFactory {
    /// The channel, the gateway's hooks and the stream wait of this factory.
    pub fn parts(&self) -> (String, Option<Arc<dyn ChannelHooks>>, Duration) {
        self.imp().parts()
    }

    pub fn new(channel: &str, hooks: Arc<dyn ChannelHooks>, timeout: Duration) -> Self {
        let f: Self = glib::Object::new();
        *f.imp().channel.lock().unwrap_or_else(|e| e.into_inner()) = channel.to_string();
        *f.imp().hooks.lock().unwrap_or_else(|e| e.into_inner()) = Some(hooks);
        *f.imp().timeout.lock().unwrap_or_else(|e| e.into_inner()) = timeout;
        // One media per viewer (one ingest, one INVITE, for all of them): each viewer starts
        // with the channel's cached GOP instead of joining a shared media mid-GOP.
        f.set_shared(false);
        f
    }
}

//! The RTSP media factory of one GB28181 channel: `gb28181src ! psdemux` and, for every
//! elementary stream psdemux finds, `queue ! <parse> ! <payloader>` exposed as a pad of a bin
//! named `dynpay0` (gst-rtsp-server's "dynamic payloader" convention), so H.264/H.265 video
//! and G.711/AAC audio pass through without transcoding whatever the camera sends.
//!
//! The factory is shared: one pipeline (one INVITE) per channel however many clients watch;
//! gst-rtsp-server unprepares the media when the last client leaves, which stops gb28181src
//! and sends BYE.

use gst::glib;
use gst::prelude::*;
use gst_rtsp_server::prelude::*;
use gst_rtsp_server::subclass::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

pub static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "gateway",
        gst::DebugColorFlags::empty(),
        Some("GB28181 to RTSP gateway"),
    )
});

/// How long a stream with audio only waits for video before it is announced.
pub const AUDIO_ONLY_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// What a channel's pipelines are built from, and where they report.
#[derive(Debug, Clone, Default)]
pub struct ChannelParams {
    pub device_id: String,
    pub channel_id: String,
    /// gb28181src properties as strings (enums by nick).
    pub src_properties: Vec<(String, String)>,
}

/// Called with every gb28181src the factory creates (for metrics) and with its media.
pub type OnMedia = Arc<dyn Fn(&str, &gst_rtsp_server::RTSPMedia, &gst::Element) + Send + Sync>;

/// The payloading chain of one elementary stream, by caps; None = not passed on.
fn chain_for(caps: &gst::CapsRef, index: usize) -> Option<String> {
    let s = caps.structure(0)?;
    let pt_video = 96 + index;
    Some(match s.name().as_str() {
        "video/x-h264" => {
            format!("h264parse ! rtph264pay config-interval=-1 pt={pt_video}")
        }
        "video/x-h265" => {
            format!("h265parse ! rtph265pay config-interval=-1 pt={pt_video}")
        }
        "audio/x-alaw" => "rtppcmapay pt=8".into(),
        "audio/x-mulaw" => "rtppcmupay pt=0".into(),
        "audio/mpeg" if s.get::<i32>("mpegversion").ok() != Some(1) => {
            format!("aacparse ! rtpmp4gpay pt={pt_video}")
        }
        _ => return None,
    })
}

/// Builds `gb28181src ! dynpay0(psdemux ! ...)`.
pub fn build_channel_bin(p: &ChannelParams) -> Result<(gst::Bin, gst::Element), String> {
    let bin = gst::Bin::new();
    let src = gst::ElementFactory::make("gb28181src")
        .name("src")
        .build()
        .map_err(|e| format!("gb28181src: {e}"))?;
    for (k, v) in &p.src_properties {
        if src.find_property(k).is_some() {
            src.set_property_from_str(k, v);
        }
    }
    let dynpay = gst::Bin::with_name("dynpay0");
    let demux = gst::ElementFactory::make("psdemux")
        .build()
        .map_err(|e| format!("psdemux: {e}"))?;
    dynpay.add(&demux).map_err(|e| e.to_string())?;
    let sink = demux.static_pad("sink").ok_or("psdemux has no sink pad")?;
    let ghost = gst::GhostPad::with_target(&sink).map_err(|e| e.to_string())?;
    dynpay.add_pad(&ghost).map_err(|e| e.to_string())?;
    bin.add_many([&src, dynpay.upcast_ref()])
        .map_err(|e| e.to_string())?;
    src.link(&dynpay).map_err(|e| e.to_string())?;

    let dyn_weak = dynpay.downgrade();
    let announced = Arc::new(AtomicBool::new(false));
    let count = Arc::new(Mutex::new(0usize));
    let channel = p.channel_id.clone();
    demux.connect_pad_added(move |_demux, pad| {
        let Some(dynpay) = dyn_weak.upgrade() else {
            return;
        };
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let index = {
            let mut c = count.lock().unwrap_or_else(|e| e.into_inner());
            *c += 1;
            *c - 1
        };
        let desc = chain_for(&caps, index);
        gst::info!(
            CAT,
            "channel {channel}: stream {} ({caps}) -> {}",
            pad.name(),
            desc.as_deref().unwrap_or("dropped")
        );
        let desc = desc.unwrap_or_else(|| "fakesink async=false".into());
        let exposed = !desc.starts_with("fakesink");
        let chain = match gst::parse::bin_from_description(
            &format!("queue max-size-buffers=0 max-size-bytes=0 max-size-time=2000000000 ! {desc}"),
            true,
        ) {
            Ok(b) => b,
            Err(e) => {
                gst::warning!(CAT, "channel {channel}: {e}");
                return;
            }
        };
        if dynpay.add(&chain).is_err() {
            return;
        }
        let _ = chain.sync_state_with_parent();
        if let Some(sinkpad) = chain.static_pad("sink") {
            let _ = pad.link(&sinkpad);
        }
        if exposed && let Some(srcpad) = chain.static_pad("src") {
            match gst::GhostPad::builder_with_target(&srcpad)
                .map(|b| b.name(format!("src_{index}")).build())
            {
                Ok(g) => {
                    let _ = g.set_active(true);
                    let _ = dynpay.add_pad(&g);
                }
                Err(e) => gst::warning!(CAT, "channel {channel}: {e}"),
            }
        }
        // psdemux announces every stream of a PSM (sent before key frames) before the
        // frame: at the first video buffer the set of streams is known. Audio can come first
        // (a camera's audio frames carry no PSM); an audio-only camera is announced after
        // AUDIO_ONLY_WAIT.
        let is_video = pad.name().starts_with("video");
        let announced = announced.clone();
        let dyn_weak = dynpay.downgrade();
        let first_seen: Mutex<Option<std::time::Instant>> = Mutex::new(None);
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            if announced.load(Ordering::SeqCst) {
                return gst::PadProbeReturn::Remove;
            }
            let first = *first_seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert_with(std::time::Instant::now);
            if (is_video || first.elapsed() >= AUDIO_ONLY_WAIT)
                && !announced.swap(true, Ordering::SeqCst)
                && let Some(d) = dyn_weak.upgrade()
            {
                d.no_more_pads();
                return gst::PadProbeReturn::Remove;
            }
            gst::PadProbeReturn::Ok
        });
    });
    Ok((bin, src))
}

mod imp {
    use super::*;

    #[derive(Default)]
    pub struct ChannelFactory {
        pub(super) params: Mutex<ChannelParams>,
        pub(super) on_media: Mutex<Option<OnMedia>>,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for ChannelFactory {
        const NAME: &'static str = "GstIpcamGatewayChannelFactory";
        type Type = super::ChannelFactory;
        type ParentType = gst_rtsp_server::RTSPMediaFactory;
    }

    impl ObjectImpl for ChannelFactory {}

    impl RTSPMediaFactoryImpl for ChannelFactory {
        fn create_element(
            &self,
            _url: &gst_rtsp_server::gst_rtsp::RTSPUrl,
        ) -> Option<gst::Element> {
            let p = self
                .params
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            match build_channel_bin(&p) {
                Ok((bin, _src)) => {
                    gst::info!(CAT, "new pipeline for channel {}", p.channel_id);
                    Some(bin.upcast())
                }
                Err(e) => {
                    gst::error!(CAT, "channel {}: {e}", p.channel_id);
                    None
                }
            }
        }

        fn configure(&self, media: &gst_rtsp_server::RTSPMedia) {
            self.parent_configure(media);
            let channel = self
                .params
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .channel_id
                .clone();
            let cb = self
                .on_media
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let src = media
                .element()
                .downcast::<gst::Bin>()
                .ok()
                .and_then(|b| b.by_name("src"));
            if let (Some(cb), Some(src)) = (cb, src) {
                cb(&channel, media, &src);
            }
        }
    }
}

glib::wrapper! {
    pub struct ChannelFactory(ObjectSubclass<imp::ChannelFactory>)
        @extends gst_rtsp_server::RTSPMediaFactory;
}

impl ChannelFactory {
    pub fn new(params: ChannelParams, on_media: Option<OnMedia>) -> Self {
        let f: Self = glib::Object::new();
        *f.imp().params.lock().unwrap_or_else(|e| e.into_inner()) = params;
        *f.imp().on_media.lock().unwrap_or_else(|e| e.into_inner()) = on_media;
        f.set_shared(true);
        f.set_latency(0);
        f
    }
}

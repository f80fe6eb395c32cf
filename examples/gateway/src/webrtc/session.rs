//! One WHEP viewer: `appsrc ! rtph264pay ! webrtcbin` (and `appsrc ! rtppcmapay/rtppcmupay`),
//! fed from the channel's ingest like an RTSP media. The browser's offer is answered once
//! ICE gathering is complete (no trickle); the viewer is subscribed to the ingest when the
//! peer connection is up, so that its first frame is the cached key frame (frames sent
//! before DTLS is up would be lost, and the browser would wait for the next key frame).

use super::offer::{Codec, Plan};
use super::transcode::Transcoder;
use crate::factory::{CAT, ChannelHooks, MediaCounters};
use crate::ingest::{Ingest, Kind, Streams};
use gst::prelude::*;
use gst_ipcam_common::sync::lock;
use gst_webrtc::WebRTCPeerConnectionState as Pc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long ICE gathering may take before the answer goes out with what there is.
const GATHER_TIMEOUT: Duration = Duration::from_secs(5);

/// The codec of a stream's caps.
pub fn codec_of(caps: &gst::CapsRef) -> Codec {
    match caps.structure(0).map(|s| s.name().as_str()) {
        Some("video/x-h264") => Codec::H264,
        Some("video/x-h265") => Codec::H265,
        Some("audio/x-alaw") => Codec::Pcma,
        Some("audio/x-mulaw") => Codec::Pcmu,
        _ => Codec::Other,
    }
}

/// The peer's PLI/FIR (webrtcbin's rtpsession turns them into an upstream
/// `GstForceKeyUnit` event towards the payloader) becomes a key frame request to the camera,
/// rate-limited per channel by the ingest. The event goes no further: the appsrc has no
/// encoder to ask.
///
/// The probe takes the event and answers `Handled`: `Drop` on an upstream event sent to a
/// source pad made GStreamer 1.22 unref it twice (a `gst_mini_object_unref` CRITICAL for
/// every PLI while a browser waited for a key frame).
fn forward_key_unit_requests(pad: &gst::Pad, ingest: std::sync::Weak<Ingest>) {
    pad.add_probe(gst::PadProbeType::EVENT_UPSTREAM, move |_, info| {
        let Some(gst::PadProbeData::Event(e)) = &info.data else {
            return gst::PadProbeReturn::Ok;
        };
        if e.structure().is_none_or(|s| s.name() != "GstForceKeyUnit") {
            return gst::PadProbeReturn::Ok;
        }
        drop(info.take_event());
        if let Some(i) = ingest.upgrade() {
            gst::debug!(CAT, "{}: a WebRTC peer asks for a key frame", i.channel);
            i.viewer_wants_key_frame();
        }
        gst::PadProbeReturn::Handled
    });
}

/// Turns libnice's UPnP IGD port mapping off on webrtcbin's ICE agent (GstWebRTCNice's
/// `agent`, a NiceAgent with an `upnp` property).
pub fn disable_upnp(ice: &gst_webrtc::WebRTCICE) {
    if !ice.has_property("agent") {
        return;
    }
    let agent = ice.property::<gst::glib::Object>("agent");
    if agent.has_property("upnp") {
        agent.set_property("upnp", false);
    }
}

/// A running WHEP viewer.
pub struct Session {
    pub channel: String,
    pipeline: gst::Pipeline,
    webrtcbin: gst::Element,
    ingest: Arc<Ingest>,
    hooks: Arc<dyn ChannelHooks>,
    srcs: Vec<(Kind, gst_app::AppSrc)>,
    /// (from the transcoder, id): the ingest's subscriptions or the transcoder's viewers.
    subscriptions: Mutex<Option<Vec<(bool, u64)>>>,
    /// The channel's shared H.265 -> H.264 transcoder feeding the video (the audio still
    /// comes from the ingest), held until the session ends.
    transcoder: Mutex<Option<Arc<Transcoder>>>,
    pub counters: Arc<MediaCounters>,
    /// A stream got end-of-stream from the ingest.
    stream_ended: Arc<AtomicBool>,
    /// When the peer's RTCP last came.
    last_rtcp: Arc<Mutex<Option<Instant>>>,
    ended: AtomicBool,
    pub started: Instant,
}

impl Session {
    /// Builds the viewer for `plan` and answers `offer`. `ingest` is held by the caller
    /// (released here once subscribed or on failure paths by [`end`](Self::end)).
    // The viewer's parts, each from elsewhere: bundling them would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        local_addresses: &[std::net::IpAddr],
        channel: &str,
        ingest: Arc<Ingest>,
        hooks: Arc<dyn ChannelHooks>,
        streams: &Streams,
        plan: &Plan,
        offer: &[u8],
        transcoder: Option<Arc<Transcoder>>,
    ) -> Result<(Arc<Session>, String), String> {
        let pipeline = gst::Pipeline::with_name(&format!("whep-{channel}"));
        let webrtcbin = gst::ElementFactory::make("webrtcbin")
            .property_from_str("bundle-policy", "max-bundle")
            .build()
            .map_err(|e| format!("webrtcbin: {e} (is gstreamer1.0-nice installed?)"))?;
        pipeline.add(&webrtcbin).map_err(|e| e.to_string())?;
        let (video, audio) = (streams.video.as_ref(), streams.audio.as_ref());
        // Host candidates on the configured addresses only (libnice would take every
        // interface but loopback), over UDP.
        let ice = webrtcbin.property::<gst_webrtc::WebRTCICE>("ice-agent");
        for a in local_addresses {
            if !ice.emit_by_name::<bool>("add-local-ip-address", &[&a.to_string()]) {
                return Err(format!("ICE: cannot use local address {a}"));
            }
        }
        if ice.has_property("ice-tcp") {
            ice.set_property("ice-tcp", false);
        }
        // libnice's UPnP is on by default: every session would search the LAN for an
        // Internet gateway device (SSDP multicast to 239.255.255.250) and ask it to open a
        // port to the server. A server never does that behind its operator's back.
        disable_upnp(&ice);
        // The peer's RTCP (receiver reports, every 0.5-1.5 s from Chromium) says it is still
        // there: a browser tab closed without DELETE sends none, and libnice as the
        // controlled agent never notices.
        let last_rtcp = Arc::new(Mutex::new(None::<Instant>));
        let counters = Arc::new(MediaCounters::default());
        let stream_ended = Arc::new(AtomicBool::new(false));
        let mut srcs = Vec::new();
        let mut parts: Vec<(Kind, &gst::Caps, String, gst::Caps)> = Vec::new();
        if let (Some((pt, plid)), Some(caps)) = (plan.video, video) {
            let plid = String::from_utf8_lossy(&plid).to_string();
            parts.push((
                Kind::Video,
                caps,
                format!("rtph264pay pt={pt} config-interval=-1 aggregate-mode=zero-latency"),
                gst::Caps::builder("application/x-rtp")
                    .field("media", "video")
                    .field("encoding-name", "H264")
                    .field("payload", pt as i32)
                    .field("clock-rate", 90000i32)
                    .field("packetization-mode", "1")
                    .field("profile-level-id", plid)
                    .field("level-asymmetry-allowed", "1")
                    .build(),
            ));
        }
        if let (Some((pt, codec)), Some(caps)) = (plan.audio, audio) {
            let (pay, name) = match codec {
                Codec::Pcma => ("rtppcmapay", "PCMA"),
                _ => ("rtppcmupay", "PCMU"),
            };
            parts.push((
                Kind::Audio,
                caps,
                format!("{pay} pt={pt}"),
                gst::Caps::builder("application/x-rtp")
                    .field("media", "audio")
                    .field("encoding-name", name)
                    .field("payload", pt as i32)
                    .field("clock-rate", 8000i32)
                    .build(),
            ));
        }
        for (kind, caps, pay, rtp_caps) in parts {
            let bin = gst::parse::bin_from_description(
                &format!("appsrc name=src is-live=true format=time min-latency=0 ! {pay} name=pay"),
                true,
            )
            .map_err(|e| e.to_string())?;
            let src = bin
                .by_name("src")
                .and_then(|s| s.downcast::<gst_app::AppSrc>().ok())
                .ok_or("no appsrc")?;
            src.set_caps(Some(caps));
            // The ingest ends its subscribers with end-of-stream (the channel went away);
            // webrtcbin does not turn that into a bus message.
            if let Some(pad) = src.static_pad("src") {
                let flag = stream_ended.clone();
                pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
                    if let Some(gst::PadProbeData::Event(e)) = &info.data
                        && e.type_() == gst::EventType::Eos
                    {
                        flag.store(true, Ordering::SeqCst);
                    }
                    gst::PadProbeReturn::Ok
                });
            }
            if let Some(pad) = bin.by_name("pay").and_then(|p| p.static_pad("src")) {
                counters.watch(&pad);
                if kind == Kind::Video {
                    forward_key_unit_requests(&pad, Arc::downgrade(&ingest));
                }
            }
            pipeline.add(&bin).map_err(|e| e.to_string())?;
            let sink = webrtcbin
                .request_pad_simple("sink_%u")
                .ok_or("webrtcbin: no sink pad")?;
            let srcpad = bin.static_pad("src").ok_or("no src pad")?;
            srcpad.link(&sink).map_err(|e| e.to_string())?;
            let tr = sink.property::<gst_webrtc::WebRTCRTPTransceiver>("transceiver");
            tr.set_direction(gst_webrtc::WebRTCRTPTransceiverDirection::Sendonly);
            tr.set_property("codec-preferences", &rtp_caps);
            srcs.push((kind, src));
        }
        if srcs.is_empty() {
            return Err("nothing to send".into());
        }
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| format!("WHEP pipeline: {e}"))?;
        let session = Arc::new(Session {
            channel: channel.to_string(),
            pipeline,
            webrtcbin: webrtcbin.clone(),
            ingest,
            hooks,
            srcs,
            subscriptions: Mutex::new(None),
            transcoder: Mutex::new(transcoder),
            counters,
            stream_ended,
            last_rtcp,
            ended: AtomicBool::new(false),
            started: Instant::now(),
        });
        match session.negotiate(offer) {
            Ok(answer) => Ok((session, answer)),
            Err(e) => {
                session.end();
                Err(e)
            }
        }
    }

    fn negotiate(self: &Arc<Self>, offer: &[u8]) -> Result<String, String> {
        let wb = &self.webrtcbin;
        let sdp = gst_sdp::SDPMessage::parse_buffer(offer).map_err(|_| "unparsable SDP")?;
        let offer =
            gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Offer, sdp);
        let p = gst::Promise::new();
        wb.emit_by_name::<()>("set-remote-description", &[&offer, &p]);
        p.wait();
        let p = gst::Promise::new();
        wb.emit_by_name::<()>("create-answer", &[&None::<gst::Structure>, &p]);
        if p.wait() != gst::PromiseResult::Replied {
            return Err("webrtcbin made no answer".into());
        }
        let answer = p
            .get_reply()
            .and_then(|r| r.get::<gst_webrtc::WebRTCSessionDescription>("answer").ok())
            .ok_or_else(|| "webrtcbin made no answer (no codec in common?)".to_string())?;
        // Gathering is complete when the local description is set and the state says so.
        let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let id = wb.connect_notify(Some("ice-gathering-state"), move |wb, _| {
            if wb.property::<gst_webrtc::WebRTCICEGatheringState>("ice-gathering-state")
                == gst_webrtc::WebRTCICEGatheringState::Complete
            {
                let _ = tx.try_send(());
            }
        });
        let p = gst::Promise::new();
        wb.emit_by_name::<()>("set-local-description", &[&answer, &p]);
        p.wait();
        if wb.property::<gst_webrtc::WebRTCICEGatheringState>("ice-gathering-state")
            != gst_webrtc::WebRTCICEGatheringState::Complete
        {
            let _ = rx.recv_timeout(GATHER_TIMEOUT);
        }
        wb.disconnect(id);
        let local = wb
            .property::<Option<gst_webrtc::WebRTCSessionDescription>>("local-description")
            .ok_or("no local description")?;
        let text = local.sdp().as_text().map_err(|e| e.to_string())?;
        // Every RTCP packet from the peer (bundled: all in session 0).
        let session = wb
            .downcast_ref::<gst::Bin>()
            .and_then(|b| b.by_name("rtpbin"))
            .and_then(|r| {
                r.emit_by_name::<Option<gst::glib::Object>>("get-internal-session", &[&0u32])
            });
        if let Some(session) = session {
            let last = self.last_rtcp.clone();
            session.connect("on-receiving-rtcp", false, move |_| {
                *lock(&last) = Some(Instant::now());
                None
            });
        }
        // Subscribe once the peer connection is up.
        let weak = Arc::downgrade(self);
        wb.connect_notify(Some("connection-state"), move |wb, _| {
            if wb.property::<Pc>("connection-state") == Pc::Connected
                && let Some(s) = weak.upgrade()
            {
                s.subscribe();
            }
        });
        if wb.property::<Pc>("connection-state") == Pc::Connected {
            self.subscribe();
        }
        Ok(text)
    }

    fn subscribe(&self) {
        let mut subs = lock(&self.subscriptions);
        if subs.is_some() || self.ended.load(Ordering::SeqCst) {
            return;
        }
        let transcoder = lock(&self.transcoder).clone();
        let (transcoded, direct): (Vec<_>, Vec<_>) = self
            .srcs
            .iter()
            .cloned()
            .partition(|(k, _)| transcoder.is_some() && *k == Kind::Video);
        let mut ids: Vec<(bool, u64)> = self
            .ingest
            .subscribe_viewer(&direct)
            .into_iter()
            .map(|id| (false, id))
            .collect();
        if let Some(t) = &transcoder {
            ids.extend(transcoded.iter().map(|(_, src)| (true, t.add_viewer(src))));
        }
        *subs = Some(ids);
        self.ingest.release();
        gst::info!(CAT, "{}: WHEP viewer connected", self.channel);
    }

    /// The peer connection's state.
    pub fn connection_state(&self) -> Pc {
        self.webrtcbin.property::<Pc>("connection-state")
    }

    /// End-of-stream from the ingest (the channel went away) or an error on the pipeline;
    /// waits at most `wait` for one.
    pub fn pipeline_over(&self, wait: Duration) -> bool {
        let Some(bus) = self.pipeline.bus() else {
            return true;
        };
        let msg = bus.timed_pop_filtered(
            gst::ClockTime::from_nseconds(wait.as_nanos() as u64),
            &[gst::MessageType::Error, gst::MessageType::Eos],
        );
        msg.is_some() || self.stream_ended.load(Ordering::SeqCst)
    }

    /// When the peer last sent RTCP (None: never).
    pub fn last_rtcp(&self) -> Option<Instant> {
        *lock(&self.last_rtcp)
    }

    pub fn is_ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }

    /// Stops the viewer (idempotent): unsubscribed, pipeline stopped, the ingest stopped if
    /// nobody else uses it.
    pub fn end(&self) {
        if self.ended.swap(true, Ordering::SeqCst) {
            return;
        }
        let transcoder = lock(&self.transcoder).take();
        match lock(&self.subscriptions).take() {
            Some(ids) => {
                for (from_transcoder, id) in ids {
                    match &transcoder {
                        Some(t) if from_transcoder => t.remove_viewer(id),
                        _ => {
                            self.ingest.unsubscribe(id);
                        }
                    }
                }
            }
            None => self.ingest.release(),
        }
        // The last viewer's end stops the transcoder (and its use of the ingest).
        drop(transcoder);
        let _ = self.pipeline.set_state(gst::State::Null);
        self.hooks.maybe_stop(&self.channel);
        gst::info!(CAT, "{}: WHEP viewer ended", self.channel);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.end();
    }
}

//! Pulled cameras in the running gateway: each `[[paths]]` table is a path mounted at start
//! like a GB28181 channel (RTSP, HLS/recording, metrics), whose ingest is an [`RtspPull`]
//! bin (`rtspsrc` and a depayloader per stream, ghost pads carrying the elementary streams).
//! On demand: opened by the first reader, closed `source_on_demand_close_after_s` after the
//! last; always-on paths are kept open by a thread of their own. A source that failed is
//! opened again after a back-off ([`crate::pull::Backoff`], 1 s doubling to 30 s). The
//! source's credentials go to rtspsrc's `user-id`/`user-pw` only: never in a log line, an
//! error, the metrics or the API (errors of the RTSP client are scrubbed of the password).

use super::*;
use crate::ingest::IngestSource;
use crate::pull::{Backoff, PathConfig, SourceUrl, depayloader_for};

/// A reader arriving while the source's next attempt is further away than this gets an
/// error at once (503) instead of waiting for it.
const READER_MAX_BACKOFF_WAIT: Duration = Duration::from_secs(5);
/// RTP sessions of one source read for statistics at most.
const MAX_STREAMS: u32 = 8;

/// A pulled path of the running gateway.
pub(super) struct Pulled {
    pub(super) cfg: PathConfig,
    source: SourceUrl,
    backoff: Mutex<Backoff>,
    /// When the on-demand source closes, while a close is pending.
    close_at: Mutex<Option<Instant>>,
}

impl Pulled {
    /// Starts a session with the camera.
    pub(super) fn start_ingest(&self, path: &str) -> Result<Arc<Ingest>, String> {
        let wait = lock(&self.backoff).wait(Instant::now());
        if wait > READER_MAX_BACKOFF_WAIT {
            return Err(format!(
                "path {path}: the camera failed; next attempt in {} s",
                wait.as_secs()
            ));
        }
        std::thread::sleep(wait);
        let bin = RtspPull::new(&self.source, &self.cfg.source_protocol)?.upcast::<gst::Element>();
        gst::info!(CAT, "path {path}: opening {}", self.source.location);
        Ingest::start_source(
            path,
            IngestSource {
                elements: vec![bin.clone()],
                streams_from: bin.clone(),
                control: bin,
            },
        )
    }

    /// A session ended (its figures are being retired): the next one waits the back-off.
    pub(super) fn ended(&self, ingest: &Ingest) {
        let had_media = ingest
            .src_stats()
            .is_some_and(|s| u64_field(&s, "frames") > 0);
        lock(&self.backoff).ended(Instant::now(), had_media);
    }

    /// Seconds the source stays open after its last reader (0 for an always-on path, which
    /// its keeper holds anyway).
    pub(super) fn close_after(&self) -> Duration {
        if self.cfg.source_on_demand {
            Duration::from_secs(self.cfg.source_on_demand_close_after_s)
        } else {
            Duration::ZERO
        }
    }
}

/// Mounts every configured pulled path (at start).
pub(super) fn mount_pulled(sh: &Arc<Shared>) -> Result<(), String> {
    for p in &sh.cfg.paths {
        let source = SourceUrl::parse(&p.source).map_err(|e| format!("path {}: {e}", p.name))?;
        let location = source.location.clone();
        let pulled = Arc::new(Pulled {
            cfg: p.clone(),
            source,
            backoff: Mutex::new(Backoff::default()),
            close_at: Mutex::new(None),
        });
        let generation = sh.generations.fetch_add(1, Ordering::Relaxed);
        lock(&sh.channels).insert(
            p.name.clone(),
            Channel {
                generation,
                pull: Some(pulled),
                ..Default::default()
            },
        );
        println!(
            "[gateway] path {} ({location}, {}): rtsp://{}:{}/{}",
            p.name,
            if p.source_on_demand {
                "on demand"
            } else {
                "always on"
            },
            sh.cfg.public_host,
            sh.rtsp_port,
            p.name
        );
        serve_path(sh, &p.name, generation, p.hls, p.record);
        if !p.source_on_demand {
            let (weak, name) = (Arc::downgrade(sh), p.name.clone());
            std::thread::Builder::new()
                .name(format!("pull-{name}"))
                .spawn(move || keep_open(weak, name))
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Keeps an always-on path's source open: holds its ingest while it runs, opens it again
/// after the back-off when it fails, until the gateway stops.
fn keep_open(weak: Weak<Shared>, path: String) {
    loop {
        let Some(sh) = weak.upgrade() else { return };
        if sh.stopping.load(Ordering::SeqCst) {
            return;
        }
        let hooks = Hooks {
            shared: Arc::downgrade(&sh),
        };
        let wait = lock(&sh.channels)
            .get(&path)
            .and_then(|c| {
                c.pull
                    .as_ref()
                    .map(|p| lock(&p.backoff).wait(Instant::now()))
            })
            .unwrap_or_default();
        drop(sh);
        if !sleep_unless_stopping(&weak, wait) {
            return;
        }
        match hooks.ingest(&path) {
            Ok(ingest) => {
                ingest.hold();
                while !ingest.wait_failed_or_changed(ingest.generation(), Duration::from_secs(1))
                    || !ingest.is_failed()
                {
                    if weak
                        .upgrade()
                        .is_none_or(|sh| sh.stopping.load(Ordering::SeqCst))
                    {
                        ingest.release();
                        return;
                    }
                }
                ingest.release();
                hooks.maybe_stop(&path);
            }
            Err(e) => {
                warn(&format!("path {path}: {e}"));
                if !sleep_unless_stopping(&weak, BACKOFF_MIN_WAIT) {
                    return;
                }
            }
        }
    }
}

const BACKOFF_MIN_WAIT: Duration = crate::pull::BACKOFF_MIN;

/// Sleeps `d` in short steps; false when the gateway stops meanwhile.
fn sleep_unless_stopping(weak: &Weak<Shared>, d: Duration) -> bool {
    let end = Instant::now() + d;
    loop {
        if weak
            .upgrade()
            .is_none_or(|sh| sh.stopping.load(Ordering::SeqCst))
        {
            return false;
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(Duration::from_millis(200)));
    }
}

/// The last reader of an on-demand path left: its source closes after the path's delay
/// unless a reader comes back (one timer thread per path at most).
pub(super) fn close_later(sh: &Arc<Shared>, path: &str, pulled: &Arc<Pulled>) {
    let deadline = Instant::now() + pulled.close_after();
    let start = {
        let mut at = lock(&pulled.close_at);
        let start = at.is_none();
        *at = Some(deadline);
        start
    };
    if !start {
        return;
    }
    let (weak, name, p) = (Arc::downgrade(sh), path.to_string(), pulled.clone());
    let r = std::thread::Builder::new()
        .name(format!("close-{path}"))
        .spawn(move || {
            let (path, pulled) = (name, p);
            loop {
                let due = {
                    let mut at = lock(&pulled.close_at);
                    match *at {
                        Some(t) if Instant::now() >= t => {
                            *at = None;
                            true
                        }
                        Some(_) => false,
                        None => return,
                    }
                };
                if due {
                    if let Some(sh) = weak.upgrade() {
                        stop_if_unused(&sh, &path);
                    }
                    return;
                }
                if !sleep_unless_stopping(&weak, Duration::from_millis(200)) {
                    return;
                }
            }
        });
    if let Err(e) = r {
        *lock(&pulled.close_at) = None;
        warn(&format!("path {path}: close timer: {e}"));
    }
}

/// The bin of a pulled camera: `rtspsrc`, a depayloader per stream it offers, a ghost pad per
/// elementary stream. Its `stats` property reads rtspsrc's RTP sessions (loss, jitter) in the
/// field names gb28181src uses; the RTSP client's errors leave it scrubbed of the password.
mod imp {
    use super::*;
    use gst::subclass::prelude::*;

    #[derive(Default)]
    pub struct RtspPull {
        pub(super) source: Mutex<Option<SourceUrl>>,
        pub(super) rtpbin: Mutex<Option<glib::WeakRef<gst::Element>>>,
        pub(super) frames: AtomicU64,
        pub(super) streams: AtomicU64,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for RtspPull {
        const NAME: &'static str = "GstIpcamGatewayRtspPull";
        type Type = super::RtspPull;
        type ParentType = gst::Bin;
    }

    impl ObjectImpl for RtspPull {
        fn properties() -> &'static [glib::ParamSpec] {
            static PROPERTIES: std::sync::LazyLock<Vec<glib::ParamSpec>> =
                std::sync::LazyLock::new(|| {
                    vec![
                        glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                            .nick("Statistics")
                            .blurb("RTP packets received and lost, bytes, frames, jitter")
                            .read_only()
                            .build(),
                    ]
                });
            PROPERTIES.as_ref()
        }

        fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
            match pspec.name() {
                "stats" => self.stats().to_value(),
                _ => unimplemented!(),
            }
        }
    }

    impl GstObjectImpl for RtspPull {}
    impl ElementImpl for RtspPull {}

    impl BinImpl for RtspPull {
        fn handle_message(&self, msg: gst::Message) {
            if let gst::MessageView::Error(e) = msg.view() {
                let text = {
                    let source = lock(&self.source);
                    let s = source.as_ref();
                    let said =
                        s.map_or_else(|| "?".to_string(), |s| s.scrub(&e.error().to_string()));
                    format!("camera {}: {said}", s.map_or("?", |s| s.location.as_str()))
                };
                // Our own error, without the client's debug text (it may quote the URL).
                let scrubbed = gst::message::Error::builder(gst::ResourceError::Read, &text)
                    .src(&*self.obj())
                    .build();
                self.parent_handle_message(scrubbed);
                return;
            }
            self.parent_handle_message(msg);
        }
    }

    impl RtspPull {
        fn stats(&self) -> gst::Structure {
            let rtpbin = lock(&self.rtpbin).as_ref().and_then(|w| w.upgrade());
            let h = super::super::stats::rtp_health((0..MAX_STREAMS).filter_map(|id| {
                rtpbin.as_ref().and_then(|b| {
                    b.emit_by_name::<Option<glib::Object>>("get-internal-session", &[&id])
                })
            }));
            let frames = self.frames.load(Ordering::Relaxed);
            gst::Structure::builder("rtsp-pull-stats")
                .field("bytes", h.bytes)
                .field("packets-received", h.packets)
                .field("packets-lost", h.lost)
                .field("frames", frames)
                .field("jitter-ms", h.jitter_ms)
                .field("streaming", frames > 0)
                .build()
        }
    }
}

glib::wrapper! {
    pub struct RtspPull(ObjectSubclass<imp::RtspPull>) @extends gst::Bin, gst::Element, gst::Object;
}

impl RtspPull {
    /// The bin for `source` over `protocol` (`automatic`, `tcp`, `udp`).
    pub fn new(source: &SourceUrl, protocol: &str) -> Result<RtspPull, String> {
        use gst::subclass::prelude::ObjectSubclassIsExt;
        let bin: RtspPull = glib::Object::new();
        let src = gst::ElementFactory::make("rtspsrc")
            .name("rtspsrc")
            .property("location", &source.location)
            .property("latency", 200u32)
            // No data over UDP within 5 s: TCP (automatic); a TCP connection silent for 10 s
            // fails.
            .property("timeout", 5_000_000u64)
            .property("tcp-timeout", 10_000_000u64)
            .build()
            .map_err(|e| format!("rtspsrc: {e}"))?;
        if !source.user.is_empty() {
            src.set_property("user-id", &source.user);
            src.set_property("user-pw", &source.pass);
        }
        src.set_property_from_str(
            "protocols",
            match protocol {
                "tcp" => "tcp",
                "udp" => "udp",
                "multicast" => "udp-mcast",
                _ => "udp+tcp",
            },
        );
        *lock(&bin.imp().source) = Some(source.clone());
        let weak = bin.downgrade();
        src.connect("new-manager", false, move |args| {
            let manager = args.get(1).and_then(|v| v.get::<gst::Element>().ok());
            if let (Some(bin), Some(m)) = (weak.upgrade(), manager) {
                *lock(&bin.imp().rtpbin) = Some(m.downgrade());
            }
            None
        });
        let weak = bin.downgrade();
        src.connect_pad_added(move |_, pad| {
            if let Some(bin) = weak.upgrade() {
                bin.on_rtp_pad(pad);
            }
        });
        bin.add(&src).map_err(|e| e.to_string())?;
        Ok(bin)
    }

    /// A stream of the camera: its depayloader, and a ghost pad with the elementary stream;
    /// streams of an encoding we don't take end in a fakesink.
    fn on_rtp_pad(&self, pad: &gst::Pad) {
        use gst::subclass::prelude::ObjectSubclassIsExt;
        let caps = pad.current_caps().or_else(|| Some(pad.query_caps(None)));
        let encoding = caps
            .as_ref()
            .and_then(|c| c.structure(0))
            .and_then(|s| s.get::<String>("encoding-name").ok())
            .unwrap_or_default();
        let n = self.imp().streams.fetch_add(1, Ordering::Relaxed);
        let depay = match depayloader_for(&encoding) {
            Some(d) if n < u64::from(MAX_STREAMS) => gst::ElementFactory::make(d).build(),
            _ => {
                gst::info!(CAT, "pulled stream {encoding:?} not used");
                gst::ElementFactory::make("fakesink")
                    .property("async", false)
                    .build()
            }
        };
        let Ok(depay) = depay else { return };
        if self.add(&depay).is_err() {
            return;
        }
        let _ = depay.sync_state_with_parent();
        if let Some(sink) = depay.static_pad("sink")
            && pad.link(&sink).is_err()
        {
            gst::warning!(CAT, "pulled stream {encoding:?}: link failed");
            return;
        }
        let Some(out) = depay.static_pad("src") else {
            return;
        };
        let frames = self.downgrade();
        out.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            if let Some(b) = frames.upgrade() {
                b.imp().frames.fetch_add(1, Ordering::Relaxed);
            }
            gst::PadProbeReturn::Ok
        });
        let Ok(ghost) =
            gst::GhostPad::builder_with_target(&out).map(|g| g.name(format!("stream_{n}")).build())
        else {
            return;
        };
        let _ = ghost.set_active(true);
        let _ = self.add_pad(&ghost);
    }
}

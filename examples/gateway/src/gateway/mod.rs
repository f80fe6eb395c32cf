//! The GB28181 → RTSP/HLS gateway: the shared GB28181 SIP endpoint (cameras register), an RTSP
//! server mounting every registered device's channels (`rtsp://host:8554/<channel-id>`, one
//! shared pipeline and one INVITE per channel, BYE after the last client), optional HLS and
//! MP4 recording per channel, Prometheus metrics and a console summary, and built-in simulated
//! cameras.

use crate::auth::{Attempt, Protocol, Users};
use crate::config::Config;
use crate::factory::{CAT, ChannelFactory, ChannelHooks, MediaCounters};
use crate::http::{self, Authorize, Denied, HttpRuntime, HttpServer, Limits};
use crate::ingest::Ingest;
use crate::metrics::{self, DeviceStat, PathStat, SessionStat, SipCounters, Snapshot};
use crate::outputs::{ChannelOutputs, OutputSettings};
use crate::rtsp_auth::{self, RtspGuard, RtspLimits, client_ip};
use crate::sim::{Clip, SimCamera, SimSettings, SipOptions};
use crate::store::worker::{StoreSender, StoreStats, StoreWorker};
use crate::store::{ChannelInfo, Limits as StoreLimits, Store, Write};
use gst::glib;
use gst::glib::translate::ToGlibPtr;
use gst::prelude::*;
use gst_ipcam_common::sync::lock;
use gst_rtsp_server::prelude::*;
use gstgb28181::core::id::{IdPolicy, printable};
use gstgb28181::core::registrar::{Event as RegEvent, RegistrarConfig, RestoredBinding};
use gstgb28181::endpoint::{Endpoint, EndpointEvent, EndpointKey, SipTransport};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

mod control;
mod mount;
mod persist;
mod playback;
mod publish;
mod pull;
mod push;
mod recording;
mod stats;
mod talk;
pub use control::{Control, Gone, Loader, ReloadError, ReloadReport};
use mount::*;
use persist::*;
pub use playback::{PlaybackError, PlaybackRequest};
pub use publish::{PublishError, PublishGuard, PublishedPath, Reservation, SourceKind};
pub use push::{PushError, PushView};
use recording::*;
pub use stats::RtpHealth;
use stats::*;
pub use talk::{TalkError, TalkRequest, TalkView};

/// Registers every plugin the gateway uses (statically linked ones).
pub fn init() -> Result<(), glib::Error> {
    gst::init()?;
    // Once per process: registering a plugin again replaces its features under the element
    // classes that already point at them (their factory then reads as another element's).
    static REGISTER: std::sync::Once = std::sync::Once::new();
    REGISTER.call_once(|| {
        let _ = gstgb28181::plugin_register_static();
        let _ = gstmpegps::plugin_register_static();
        let _ = gstrtcpstats::plugin_register_static();
    });
    Ok(())
}

/// A mounted channel (or pulled path).
#[derive(Default)]
struct Channel {
    device_id: String,
    /// Which mount of the channel this is (an unmounted then remounted channel gets a new one).
    generation: u64,
    /// The camera session, while someone watches.
    ingest: Option<Arc<Ingest>>,
    /// RTSP medias of the channel (statistics).
    medias: Vec<(
        glib::WeakRef<gst_rtsp_server::RTSPMedia>,
        Arc<MediaCounters>,
    )>,
    /// Payload bytes of medias that are gone.
    sent_done: u64,
    /// Figures of pipelines that are gone.
    invites_done: u64,
    bytes_done: u64,
    packets_done: u64,
    lost_done: u64,
    frames_done: u64,
    /// Stream changes and key frame requests of ingests that are gone.
    changes_done: u64,
    key_requests_done: u64,
    outputs: Option<ChannelOutputs>,
    /// A pulled camera's path (`[[paths]]`), not a GB28181 channel.
    pull: Option<Arc<pull::Pulled>>,
}

struct Shared {
    cfg: Config,
    endpoint: Arc<Endpoint>,
    server: gst_rtsp_server::RTSPServer,
    rtsp_port: u16,
    /// Users, session owners and connection limits of the RTSP server.
    rtsp_guard: Arc<RtspGuard>,
    /// The direct RTSP path's connections and sessions (empty when it is off).
    direct: Arc<crate::direct::Registry>,
    channels: Mutex<BTreeMap<String, Channel>>,
    /// Channels mounted per device (locked only inside `channels`' lock).
    device_channels: Mutex<HashMap<String, usize>>,
    /// Next [`Channel::generation`].
    generations: AtomicU64,
    /// Which device and channel IDs may be mounted (defence in depth: the endpoint checks too).
    ids: IdPolicy,
    mounts_refused: AtomicU64,
    rates: Mutex<Rates>,
    stopping: AtomicBool,
    /// Latest ingest latency per channel (refreshed every second by the collector).
    latency: Mutex<HashMap<String, (f64, f64)>>,
    latency_at: Mutex<Option<Instant>>,
    /// Persistence (with `--data-dir`): the store worker's queue, and the DeviceInfo
    /// queries sent (SN → device) whose answers are stored.
    store: Option<StoreSender>,
    device_info_queries: Mutex<HashMap<u32, String>>,
    /// WebRTC (WHEP) readers.
    webrtc: Arc<crate::webrtc::Sessions>,
    /// Where a reload reads the configuration, and the settings as last applied.
    reload: Mutex<control::Reload>,
    playbacks: Mutex<playback::Playbacks>,
    /// Multicast groups for RTSP readers (`multicast_ip_range`/`multicast_ipv6_range`).
    multicast_pool: Option<gst_rtsp_server::RTSPAddressPool>,
    /// The upper platforms the gateway registers with (set once at start).
    cascade: std::sync::OnceLock<crate::cascade::Cascade>,
    /// Published paths (RTSP publishers, RTMP).
    publishers: Mutex<publish::Publishers>,
    /// The RTMP server's counters (zero without one).
    rtmp_stats: Arc<crate::rtmp::Stats>,
    /// Paths pushed to external RTMP servers.
    pushes: Mutex<push::Pushes>,
    /// Voice broadcasts to devices from paths' audio.
    talks: Mutex<talk::Talks>,
}

/// The running gateway.
pub struct Gateway {
    shared: Arc<Shared>,
    main_loop: glib::MainLoop,
    loop_thread: Option<JoinHandle<()>>,
    subscription: u64,
    mount_thread: Option<JoinHandle<()>>,
    metrics_server: Option<HttpServer>,
    hls_server: Option<HttpServer>,
    rtmp_server: Option<crate::rtmp::Server>,
    /// The direct RTSP path's listener (a handle to shut it down) and accept thread.
    direct_server: Option<(socket2::Socket, JoinHandle<()>)>,
    http_runtime: Option<HttpRuntime>,
    /// The HLS directory made for this run (removed at stop).
    hls_temp_dir: Option<std::path::PathBuf>,
    summary_thread: Option<JoinHandle<()>>,
    cameras: Vec<SimCamera>,
    store_worker: Option<StoreWorker>,
    stopped: bool,
}

impl Gateway {
    pub fn start(mut cfg: Config) -> Result<Gateway, String> {
        init().map_err(|e| e.to_string())?;
        let as_given = cfg.clone();
        // IPv6: sockets take bare literals (`::` also written `[::]`), URLs bracketed ones.
        for a in [
            &mut cfg.sip_address,
            &mut cfg.listen_address,
            &mut cfg.metrics_address,
        ] {
            if let Some(ip) = gstgb28181::core::addr::parse_ip(a) {
                *a = ip.to_string();
            }
        }
        cfg.public_host = gstgb28181::core::addr::bracketed(&cfg.public_host);
        let users = Arc::new(Users::from_config(&cfg.users, crate::auth::REALM)?);
        let webrtc_addresses = crate::webrtc::parse_local_addresses(&cfg.webrtc_local_addresses)?;
        if users.is_empty() {
            eprintln!(
                "[gateway] no [[users]] in the configuration: every RTSP and HTTP request will be refused"
            );
        }
        let no_digest = users.without_digest();
        if !no_digest.is_empty() {
            eprintln!(
                "[gateway] users without digest_ha1 ({}): RTSP clients that prefer Digest \
                 (ffmpeg, VLC) cannot log in as them; add one (gateway --hash-password --user NAME)",
                no_digest.join(", ")
            );
        }
        let mut hls_temp_dir = None;
        if cfg.hls {
            let (dir, fresh) = http::files::private_dir(&cfg.hls_dir)?;
            hls_temp_dir = fresh.then(|| dir.clone());
            cfg.hls_dir = dir;
        }
        let transport = if cfg.sip_transport == "tcp" {
            SipTransport::Tcp
        } else {
            SipTransport::Udp
        };
        let key = EndpointKey {
            address: cfg.sip_address.clone(),
            port: cfg.sip_port,
            transport,
        };
        let reg = RegistrarConfig {
            server_id: cfg.server_id.clone(),
            realm: cfg.server_id[..10].to_string(),
            default_password: (!cfg.password.is_empty()).then(|| cfg.password.clone()),
            passwords: cfg.device_password_map(),
            id_policy: cfg.id_policy()?,
            max_channels_per_device: cfg.max_channels_per_device,
            max_devices: cfg.max_devices,
            ..RegistrarConfig::default()
        };
        let ids = IdPolicy::with_pattern(&cfg.id_pattern)?;
        // A data dir that cannot be used stops the start (exit 1), before any camera is
        // answered: running on without the state the operator asked to keep would lose it.
        let store = if cfg.data_dir.as_os_str().is_empty() {
            None
        } else {
            let limits = StoreLimits {
                max_devices: cfg.max_devices,
                max_channels_per_device: cfg.max_channels_per_device,
            };
            Some(Store::open(&cfg.data_dir, limits).map_err(|e| format!("--data-dir: {e}"))?)
        };
        let endpoint = Endpoint::obtain(&key, reg)
            .map_err(|e| format!("SIP endpoint {}:{}: {e}", cfg.sip_address, cfg.sip_port))?;
        // Port 0: the port the endpoint got (elements join it there, cameras are told it).
        cfg.sip_port = endpoint.local_addr().port();
        endpoint.set_keepalive(
            u64::from(cfg.keepalive_interval_s) * 1000,
            cfg.max_missed_keepalives,
        );
        // At once, so that the first keepalives after a restart find their binding.
        let restored = match &store {
            Some(st) => restore_from_store(st, &endpoint)?,
            None => Vec::new(),
        };
        let store_worker = match store {
            Some(st) => Some(start_store_worker(st, &endpoint).map_err(|e| e.to_string())?),
            None => None,
        };

        let ctx = glib::MainContext::new();
        let main_loop = glib::MainLoop::new(Some(&ctx), false);
        let server = gst_rtsp_server::RTSPServer::new();
        server.set_address(&cfg.listen_address);
        server.set_service(&cfg.rtsp_port.to_string());
        let rtsp_guard = rtsp_auth::install(
            &server,
            users,
            RtspLimits::new(
                cfg.max_rtsp_clients,
                Duration::from_secs(cfg.rtsp_idle_timeout_s),
            ),
        );
        // Clients are served by a pool of threads: building a media waits for the camera's
        // streams, which must not hold up other clients.
        if let Some(pool) = server.thread_pool() {
            pool.set_max_threads(64);
        }
        // The direct path listens itself and hands what it does not serve to the server;
        // otherwise the server listens.
        let direct_listener = if cfg.rtsp_direct_tcp {
            Some(bind_rtsp(&cfg.listen_address, cfg.rtsp_port)?)
        } else {
            let _source = server
                .attach(Some(&ctx))
                .map_err(|e| format!("RTSP server on port {}: {e}", cfg.rtsp_port))?;
            None
        };
        let rtsp_port = match &direct_listener {
            Some(l) => l.local_addr().map_err(|e| e.to_string())?.port(),
            None => u16::try_from(server.bound_port()).unwrap_or(cfg.rtsp_port),
        };
        cfg.rtsp_port = rtsp_port;
        if let Some(pool) = server.session_pool() {
            // Expired sessions (clients that vanished) are removed, so their media ends. A
            // vanished client whose connection stays open (half-open TCP, a hung machine)
            // would keep its session's media, and so the camera, for good: its connection is
            // closed too.
            // Checked every second (the pool's own watch was seen to wake only at shutdown).
            let server_ref = server.downgrade();
            let watch = glib::timeout_source_new(
                Duration::from_secs(1),
                Some("session-timeouts"),
                glib::Priority::DEFAULT,
                move || {
                    close_expired_clients(&pool, server_ref.upgrade().as_ref());
                    pool.cleanup();
                    glib::ControlFlow::Continue
                },
            );
            watch.attach(Some(&ctx));
        }
        let ml = main_loop.clone();
        let loop_thread = std::thread::Builder::new()
            .name("rtsp-server".into())
            .spawn(move || {
                let _ = ctx.with_thread_default(|| ml.run());
            })
            .map_err(|e| e.to_string())?;

        // The HTTP ports are bound before anything prints or serves a URL with them (port 0:
        // the ports got are in the configuration from here on).
        let http_runtime = HttpRuntime::new(2).map_err(|e| format!("HTTP runtime: {e}"))?;
        let backlog = http_limits(&cfg).backlog;
        let metrics_listener = HttpServer::bind(
            &http_runtime,
            &cfg.metrics_address,
            cfg.metrics_port,
            backlog,
        )
        .map_err(|e| format!("metrics server on port {}: {e}", cfg.metrics_port))?;
        cfg.metrics_port = metrics_listener.local_addr().port();
        let hls_listener = if cfg.hls {
            let dir = http::files::ServedDir::new(&cfg.hls_dir)
                .map_err(|e| format!("{}: {e}", cfg.hls_dir.display()))?;
            let l = HttpServer::bind(&http_runtime, &cfg.listen_address, cfg.hls_port, backlog)
                .map_err(|e| format!("HLS server on port {}: {e}", cfg.hls_port))?;
            cfg.hls_port = l.local_addr().port();
            Some((l, dir))
        } else {
            None
        };

        let multicast_pool = crate::multicast::address_pool(
            &cfg.multicast_ip_range,
            &cfg.multicast_ipv6_range,
            cfg.multicast_rtp_port,
            cfg.multicast_ttl,
        )?;
        let shared = Arc::new(Shared {
            multicast_pool,
            cfg: cfg.clone(),
            endpoint: endpoint.clone(),
            server,
            rtsp_port,
            rtsp_guard,
            direct: Arc::new(crate::direct::Registry::default()),
            channels: Mutex::new(BTreeMap::new()),
            device_channels: Mutex::new(HashMap::new()),
            generations: AtomicU64::new(0),
            ids,
            mounts_refused: AtomicU64::new(0),
            rates: Mutex::new(Rates::default()),
            stopping: AtomicBool::new(false),
            latency: Mutex::new(HashMap::new()),
            latency_at: Mutex::new(None),
            store: store_worker.as_ref().map(StoreWorker::sender),
            device_info_queries: Mutex::new(HashMap::new()),
            webrtc: crate::webrtc::Sessions::new(crate::webrtc::Settings {
                max_sessions: cfg.webrtc_max_sessions as usize,
                max_transcodes: cfg.webrtc_max_transcodes as usize,
                max_per_ip: cfg.http_max_connections_per_ip as usize,
                connect_timeout: Duration::from_secs(cfg.webrtc_connect_timeout_s),
                stream_timeout: Duration::from_secs(u64::from(cfg.wait_timeout_s.max(1)) + 5),
                local_addresses: webrtc_addresses,
            }),
            reload: Mutex::new(control::Reload::new(as_given)),
            playbacks: Mutex::new(Default::default()),
            cascade: std::sync::OnceLock::new(),
            publishers: Mutex::new(Default::default()),
            pushes: Mutex::new(Default::default()),
            talks: Mutex::new(Default::default()),
            rtmp_stats: Default::default(),
        });
        shared
            .rtsp_guard
            .set_announce_gate(publish::rtsp::announce_gate(Arc::downgrade(&shared)));

        // Per-client byte counts start when the client's PLAY is answered.
        let weak = Arc::downgrade(&shared);
        let session_timeout = cfg.rtsp_session_timeout_s;
        let unacked_limit_ms =
            u32::try_from(u64::from(cfg.rtsp_session_timeout_s) * 1000).unwrap_or(u32::MAX);
        shared.server.connect_client_connected(move |_, client| {
            // A reader whose connection went half-open (peer gone, or no longer reading) never
            // times out by RTSP: gst-rtsp-server keeps a TCP client's session while its
            // connection is open. The kernel closes the connection when what we send stays
            // unacknowledged (or the peer's window stays shut) this long; the session ends.
            set_tcp_user_timeout(client, unacked_limit_ms);
            client.connect_new_session(move |_, session| {
                session.set_timeout(session_timeout);
            });
            let weak = weak.clone();
            client.connect_play_request(move |_, ctx| {
                if let (Some(sh), Some(session)) = (weak.upgrade(), ctx.session()) {
                    record_baselines(&sh, session);
                }
            });
        });
        // Devices come and go: mount and unmount as the endpoint tells, on a worker fed by a
        // bounded queue (the endpoint's thread only queues).
        let (tx, rx) = std::sync::mpsc::sync_channel(MOUNT_QUEUE);
        let weak = Arc::downgrade(&shared);
        let mount_thread = std::thread::Builder::new()
            .name("gateway-mounts".into())
            .spawn(move || mount_worker(weak, rx))
            .map_err(|e| e.to_string())?;
        for d in endpoint.devices().into_iter().filter(|d| !d.restored) {
            let _ = tx.try_send(MountJob::Registered(d.id));
        }
        // Waits for room (the worker is draining): every restored device is mounted.
        for (device, channels) in restored {
            let _ = tx.send(MountJob::Restored { device, channels });
        }
        let weak = Arc::downgrade(&shared);
        let subscription = endpoint.subscribe(move |ev| {
            if let Some(sh) = weak.upgrade() {
                on_endpoint_event(&sh, &tx, ev);
            }
        });

        pull::mount_pulled(&shared)?;
        let limits = http_limits(&cfg);
        // One user table (and one failed-attempt limiter) for RTSP and HTTP.
        let auth = http_authorize(shared.rtsp_guard.users().clone());
        let weak = Arc::downgrade(&shared);
        let control = Control::new(&shared);
        if !cfg.cascade.is_empty() {
            let hooks = Arc::new(Hooks {
                shared: Arc::downgrade(&shared),
            });
            let cascade = crate::cascade::Cascade::start(
                &cfg.cascade,
                &cfg.sip_address,
                control.clone(),
                hooks,
            );
            let _ = shared.cascade.set(cascade);
        }
        let api_control = control.clone();
        let render: http::routes::Render = Arc::new(move || {
            weak.upgrade().map(|sh| {
                metrics::render(&snapshot(&sh))
                    + &api_control.api_requests().render()
                    + &playback::render(&sh)
                    + &sh.cascade.get().map(|c| c.render()).unwrap_or_default()
            })
        });
        let metrics_server = metrics_listener.serve(
            http::routes::metrics_router(render, auth.clone())
                .merge(crate::api::router(control, auth.clone()))
                .merge(whep_router(&shared, auth.clone()))
                .merge(crate::web::router()),
            limits.clone(),
        );
        let hls_server = hls_listener
            .map(|(listener, dir)| listener.serve(http::routes::hls_router(dir, auth), limits));

        let weak = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("ingest-stats".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_millis(250));
                    let Some(sh) = weak.upgrade() else { return };
                    if sh.stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    refresh_ingest_stats(&sh);
                    publish::end_stalled(&sh);
                    sh.rtsp_guard.close_idle();
                }
            })
            .map_err(|e| e.to_string())?;
        // Collects often (per-session byte counts start at the first collection after PLAY),
        // prints the summary every `summary_interval_s`.
        let summary_thread = {
            let weak = Arc::downgrade(&shared);
            let every = Duration::from_secs(cfg.summary_interval_s.max(1));
            let print = cfg.summary_interval_s > 0;
            Some(std::thread::spawn(move || {
                let mut next = Instant::now() + every;
                loop {
                    std::thread::sleep(Duration::from_millis(200));
                    let Some(sh) = weak.upgrade() else { return };
                    if sh.stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    let snap = snapshot(&sh);
                    if print && Instant::now() >= next {
                        next += every;
                        println!("[gateway] {}", snap.summary());
                    }
                }
            }))
        };

        let rtmp_server = if cfg.rtmp_port == 0 {
            None
        } else {
            Some(start_rtmp(&shared)?)
        };
        let direct_server = match direct_listener {
            Some(l) => {
                let handle = socket2::Socket::from(l.try_clone().map_err(|e| e.to_string())?);
                let srv = Arc::new(crate::direct::Server {
                    rtsp: shared.server.clone(),
                    guard: shared.rtsp_guard.clone(),
                    registry: shared.direct.clone(),
                    idle_timeout: Duration::from_secs(cfg.rtsp_idle_timeout_s),
                    session_timeout: Duration::from_secs(u64::from(cfg.rtsp_session_timeout_s)),
                    max_clients: cfg.max_rtsp_clients as usize,
                    queue_limit: cfg.rtsp_write_queue_kib as usize * 1024,
                });
                let t = crate::direct::start(l, srv).map_err(|e| e.to_string())?;
                Some((handle, t))
            }
            None => None,
        };
        for p in &cfg.push {
            push::add(&shared, p.clone(), "config").map_err(|e| format!("push: {e}"))?;
        }
        let mut gw = Gateway {
            direct_server,
            shared,
            main_loop,
            loop_thread: Some(loop_thread),
            subscription,
            mount_thread: Some(mount_thread),
            metrics_server: Some(metrics_server),
            hls_server,
            rtmp_server,
            http_runtime: Some(http_runtime),
            hls_temp_dir,
            summary_thread,
            cameras: Vec::new(),
            store_worker,
            stopped: false,
        };
        if cfg.simulate > 0 {
            let clip = Clip::encode(
                &cfg.sim_codec,
                cfg.sim_width,
                cfg.sim_height,
                cfg.sim_bitrate_kbps,
                4,
            )?;
            gst::info!(CAT, "simulated clip: {} bit/s", clip.bitrate_bps());
            let server_ip = match cfg.sip_address.as_str() {
                "0.0.0.0" | "" => "127.0.0.1".to_string(),
                "::" => "::1".to_string(),
                a => a.to_string(),
            };
            for i in 0..cfg.simulate {
                let id = cfg.sim_device_id(i);
                // Keepalives at least as often as the gateway expects them.
                let sip = SipOptions {
                    keepalive_ms: SipOptions::default()
                        .keepalive_ms
                        .min(cfg.keepalive_interval_s.saturating_mul(1000)),
                    ..SipOptions::default()
                };
                let cam = SimCamera::start_with_sip(
                    &clip,
                    &SimSettings {
                        server_ip: server_ip.clone(),
                        server_port: endpoint.local_addr().port(),
                        server_id: cfg.server_id.clone(),
                        password: cfg
                            .device_password_map()
                            .get(&id)
                            .cloned()
                            .unwrap_or_else(|| cfg.password.clone()),
                        device_id: id,
                        audio: true,
                    },
                    &sip,
                )?;
                gw.cameras.push(cam);
            }
        }
        Ok(gw)
    }

    /// The configuration it runs with, with the ports as bound (a port configured 0: the one
    /// got).
    pub fn config(&self) -> &Config {
        &self.shared.cfg
    }

    /// The SIP port cameras register to (the one bound when the configuration said 0).
    pub fn sip_port(&self) -> u16 {
        self.shared.cfg.sip_port
    }

    pub fn rtsp_port(&self) -> u16 {
        self.shared.rtsp_port
    }

    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_server.as_ref().map(|s| s.local_addr())
    }

    /// The RTMP server's address (with the port got when the configuration said 0).
    pub fn rtmp_addr(&self) -> Option<std::net::SocketAddr> {
        self.rtmp_server.as_ref().map(|s| s.local_addr())
    }

    pub fn metrics_server(&self) -> Option<&HttpServer> {
        self.metrics_server.as_ref()
    }

    pub fn hls_server(&self) -> Option<&HttpServer> {
        self.hls_server.as_ref()
    }

    /// The directory HLS is written to and served from (when HLS is on).
    pub fn hls_dir(&self) -> Option<&std::path::Path> {
        self.shared
            .cfg
            .hls
            .then_some(self.shared.cfg.hls_dir.as_path())
    }

    pub fn hls_addr(&self) -> Option<std::net::SocketAddr> {
        self.hls_server.as_ref().map(|s| s.local_addr())
    }

    /// The user table (shared by the RTSP and HTTP servers).
    pub fn users(&self) -> &Arc<Users> {
        self.shared.rtsp_guard.users()
    }

    /// Where `POST /v1/config/reload` and SIGHUP read the configuration (main: the file
    /// and flags it started with). Without one a reload is refused.
    pub fn set_config_loader(&self, loader: Loader) {
        lock(&self.shared.reload).loader = Some(loader);
    }

    /// Re-reads the configuration and applies users and device passwords (see
    /// [`Control::reload`]).
    pub fn reload(&self) -> Result<ReloadReport, ReloadError> {
        control::reload(&self.shared)
    }

    /// Publishes `source`'s streams under path `path` (see [`publish`]): readers get it
    /// until the guard is dropped.
    pub fn publish(
        &self,
        path: &str,
        kind: SourceKind,
        source: crate::ingest::IngestSource,
    ) -> Result<PublishGuard, PublishError> {
        publish::publish(&self.shared, path, kind, source)
    }

    /// The published paths now.
    pub fn published(&self) -> Vec<PublishedPath> {
        publish::list(&self.shared)
    }

    /// The RTSP server's access-control state (refusal counts, tracked sessions).
    pub fn rtsp_guard(&self) -> &Arc<RtspGuard> {
        &self.shared.rtsp_guard
    }

    /// The URL of a channel with `user:pass@` in it (percent-encoded), as clients take it.
    pub fn url_with_credentials(&self, channel: &str, user: &str, pass: &str) -> String {
        fn enc(s: &str) -> String {
            s.bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect()
        }
        format!(
            "rtsp://{}:{}@{}:{}/{channel}",
            enc(user),
            enc(pass),
            self.shared.cfg.public_host,
            self.shared.rtsp_port
        )
    }

    /// The URL of a channel (without credentials).
    pub fn url(&self, channel: &str) -> String {
        format!(
            "rtsp://{}:{}/{channel}",
            self.shared.cfg.public_host, self.shared.rtsp_port
        )
    }

    /// Channels mounted so far.
    pub fn channels(&self) -> Vec<String> {
        lock(&self.shared.channels).keys().cloned().collect()
    }

    pub fn cameras(&self) -> &[SimCamera] {
        &self.cameras
    }

    pub fn snapshot(&self) -> Snapshot {
        snapshot(&self.shared)
    }

    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.shared.endpoint
    }

    /// The persistence worker's counters (with `--data-dir`).
    pub fn store_stats(&self) -> Option<&Arc<StoreStats>> {
        self.store_worker.as_ref().map(StoreWorker::stats)
    }

    /// Queues writes to the database (with `--data-dir`), e.g. user-given names and settings.
    /// Reads open their own [`Store`] on `cfg.data_dir` (WAL: readers never wait for it).
    pub fn store(&self) -> Option<StoreSender> {
        self.shared.store.clone()
    }

    /// Clean stop: finalizes HLS/recordings, disconnects RTSP clients, BYE to every camera
    /// session, unregisters the simulated cameras.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        self.shared.stopping.store(true, Ordering::SeqCst);
        if let Some((l, t)) = self.direct_server.take() {
            crate::direct::stop(&l, &self.shared.direct);
            let _ = t.join();
        }
        push::stop_all(&self.shared);
        talk::stop_all(&self.shared);
        if let Some(mut r) = self.rtmp_server.take() {
            r.stop();
        }
        self.shared.endpoint.unsubscribe(self.subscription);
        // The queue's sender went with the subscription: the worker ends after its current job.
        if let Some(t) = self.mount_thread.take() {
            let _ = t.join();
        }
        // What is queued is written.
        if let Some(mut w) = self.store_worker.take() {
            w.stop();
        }
        let outputs: Vec<ChannelOutputs> = lock(&self.shared.channels)
            .values_mut()
            .filter_map(|c| c.outputs.take())
            .collect();
        for o in &outputs {
            o.stop();
        }
        drop(outputs);
        // BYE to the upper platforms' sessions, unregister from them.
        if let Some(c) = self.shared.cascade.get() {
            c.stop();
        }
        playback::stop_all(&self.shared);
        publish::stop_all(&self.shared);
        // Disconnect every client: shared medias get unprepared (gb28181src stops: BYE).
        let _ = self
            .shared
            .server
            .client_filter(Some(&mut |_, _| gst_rtsp_server::RTSPFilterResult::Remove));
        self.shared.webrtc.end_all();
        // Every camera session ends (BYE), whoever still used it.
        let ingests: Vec<Arc<Ingest>> = lock(&self.shared.channels)
            .values_mut()
            .filter_map(|c| {
                let i = c.ingest.take()?;
                retire_stats(c, &i);
                Some(i)
            })
            .collect();
        for i in ingests {
            i.stop();
        }
        crate::sim::stop_all(&self.cameras);
        // Let BYEs and un-REGISTERs leave before the sockets close.
        std::thread::sleep(Duration::from_millis(200));
        self.cameras.clear();
        self.main_loop.quit();
        if let Some(t) = self.loop_thread.take() {
            let _ = t.join();
        }
        if let Some(mut s) = self.metrics_server.take() {
            s.stop();
        }
        if let Some(mut s) = self.hls_server.take() {
            s.stop();
        }
        drop(self.http_runtime.take());
        if let Some(d) = self.hls_temp_dir.take() {
            let _ = std::fs::remove_dir_all(d);
        }
        if let Some(t) = self.summary_thread.take() {
            let _ = t.join();
        }
        self.shared.endpoint.shutdown();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The direct RTSP path's listener on `address:port` (port 0: any free one).
fn bind_rtsp(address: &str, port: u16) -> Result<std::net::TcpListener, String> {
    let ip: std::net::IpAddr = gstgb28181::core::addr::parse_ip(address)
        .ok_or_else(|| format!("RTSP address {address:?} is not an IP address"))?;
    let addr = std::net::SocketAddr::new(ip, port);
    let err = |e: std::io::Error| format!("RTSP server on port {port}: {e}");
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .map_err(err)?;
    s.set_reuse_address(true).map_err(err)?;
    s.bind(&addr.into()).map_err(err)?;
    s.listen(1024).map_err(err)?;
    Ok(s.into())
}

/// The RTMP listener on `rtmp_address:rtmp_port`, serving every path with a source; its
/// publishers go into the registry of published paths ([`publish::rtmp`]).
fn start_rtmp(sh: &Arc<Shared>) -> Result<crate::rtmp::Server, String> {
    let paths = Arc::new(publish::rtmp::RtmpPaths {
        shared: Arc::downgrade(sh),
        stream_timeout: Duration::from_secs(u64::from(sh.cfg.wait_timeout_s.max(1)) + 5),
    });
    crate::rtmp::Server::start(
        &sh.cfg.rtmp_address,
        sh.cfg.rtmp_port,
        sh.rtsp_guard.users().clone(),
        paths,
        crate::rtmp::Settings::default(),
        sh.rtmp_stats.clone(),
    )
}

/// How a reader of `path` gets its ingest, whatever the path's source: a publisher (RTSP or
/// RTMP), a GB28181 channel or a pulled camera; None when no such path exists.
fn reader_hooks(sh: &Arc<Shared>, path: &str) -> Option<Arc<dyn ChannelHooks>> {
    if let Some(h) = publish::reader_hooks(sh, path) {
        return Some(h);
    }
    lock(&sh.channels).contains_key(path).then(|| {
        Arc::new(Hooks {
            shared: Arc::downgrade(sh),
        }) as Arc<dyn ChannelHooks>
    })
}

/// `POST /<path>/whep` and the session resources (see [`crate::webrtc`]), for every path.
fn whep_router(sh: &Arc<Shared>, auth: Authorize) -> axum::Router {
    let weak = Arc::downgrade(sh);
    let resolve: crate::webrtc::routes::Resolve =
        Arc::new(move |path| weak.upgrade().and_then(|sh| reader_hooks(&sh, path)));
    let check_path: crate::webrtc::routes::CheckPath = Arc::new(|path| {
        crate::paths::check_reader_path(path).map_err(|e| format!("{}: {e}", printable(path)))
    });
    crate::webrtc::routes::router(sh.webrtc.clone(), resolve, check_path, auth)
}

/// Drops the medias that are gone from `medias`; returns the payload bytes they sent.
fn retire_gone_medias(
    medias: &mut Vec<(
        glib::WeakRef<gst_rtsp_server::RTSPMedia>,
        Arc<MediaCounters>,
    )>,
) -> u64 {
    let mut done = 0;
    medias.retain(|(m, k)| {
        let alive = m.upgrade().is_some();
        if !alive {
            done += k.get().0;
        }
        alive
    });
    done
}

/// Ends the reader sessions on `mount` (each one leaves the pool, its media stops) and
/// closes their connections; a publisher's session (record media) is left alone.
fn kick_readers(sh: &Shared, mount: &str) {
    kick_sessions(sh, mount, false);
}

/// Ends the sessions on `mount` of its readers, or (`publishers`) of its publishers (record
/// medias), and closes their connections.
fn kick_sessions(sh: &Shared, mount: &str, publishers: bool) {
    let mut readers = Vec::new();
    for client in sh.server.client_filter(None) {
        for session in client.session_filter(None) {
            let on_mount = session.filter(None).iter().any(|sm| {
                sm.matches(mount).is_some()
                    && sm.media().is_some_and(|m| {
                        m.transport_mode()
                            .contains(gst_rtsp_server::RTSPTransportMode::RECORD)
                            == publishers
                    })
            });
            if on_mount {
                if let Some(pool) = sh.server.session_pool() {
                    let _ = pool.remove(&session);
                }
                readers.push(client.clone());
            }
        }
    }
    if !readers.is_empty() {
        let _ = sh.server.client_filter(Some(&mut |_, c| {
            if readers.contains(c) {
                gst_rtsp_server::RTSPFilterResult::Remove
            } else {
                gst_rtsp_server::RTSPFilterResult::Keep
            }
        }));
    }
}

/// TCP_USER_TIMEOUT on an RTSP client's socket (Linux): what we send staying unacknowledged,
/// or zero-window probes unanswered, for `ms` milliseconds closes the connection.
fn set_tcp_user_timeout(client: &gst_rtsp_server::RTSPClient, ms: u32) {
    let client_ptr: *mut gst_rtsp_server::ffi::GstRTSPClient = client.to_glib_none().0;
    // SAFETY: the client is alive for the call; the connection and its socket are owned by
    // it (transfer none) and only read here; the option has the size setsockopt is told.
    let r = unsafe {
        let conn = gst_rtsp_server::ffi::gst_rtsp_client_get_connection(client_ptr);
        if conn.is_null() {
            return;
        }
        let sock = gst_rtsp_server::gst_rtsp::ffi::gst_rtsp_connection_get_read_socket(conn);
        if sock.is_null() {
            return;
        }
        let fd = gst_rtsp_server::gio::ffi::g_socket_get_fd(sock);
        let v: libc::c_uint = ms;
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_USER_TIMEOUT,
            (&v as *const libc::c_uint).cast(),
            std::mem::size_of::<libc::c_uint>() as libc::socklen_t,
        )
    };
    if r != 0 {
        gst::debug!(CAT, "TCP_USER_TIMEOUT: {}", std::io::Error::last_os_error());
    }
}

fn http_limits(cfg: &Config) -> Limits {
    Limits {
        header_timeout: Duration::from_secs(cfg.http_header_timeout_s),
        request_timeout: Duration::from_secs(cfg.http_request_timeout_s),
        max_per_ip: cfg.http_max_connections_per_ip as usize,
        max_connections: cfg.http_max_connections as usize,
        ..Limits::default()
    }
}

/// Who may read HLS (action read on the channel) and metrics: HTTP Basic or Bearer
/// credentials of a configured user (or the explicit anonymous user `any`).
fn http_authorize(users: Arc<Users>) -> Authorize {
    Arc::new(move |headers, ip, action, path| {
        let challenge = || Denied::unauthorized(users.basic_challenge());
        let authorization = match headers.get(axum::http::header::AUTHORIZATION) {
            None => None,
            Some(v) => Some(v.to_str().map_err(|_| challenge())?),
        };
        let attempt = Attempt {
            protocol: Protocol::Http,
            method: "GET",
            ip,
        };
        match users.authenticate(authorization, &attempt) {
            Ok(id) if id.allows(action, path) => Ok(()),
            Ok(_) => Err(Denied::forbidden()),
            Err(_) => Err(challenge()),
        }
    })
}

/// Closes the connections of clients whose sessions in `pool` have expired (before the pool
/// drops those sessions, while the clients still list them).
fn close_expired_clients(
    pool: &gst_rtsp_server::RTSPSessionPool,
    server: Option<&gst_rtsp_server::RTSPServer>,
) {
    use gst_rtsp_server::RTSPFilterResult;
    let now = glib::monotonic_time();
    let expired = pool.filter(Some(&mut |_, s| {
        if s.is_expired_usec(now) {
            RTSPFilterResult::Ref
        } else {
            RTSPFilterResult::Keep
        }
    }));
    let Some(server) = server.filter(|_| !expired.is_empty()) else {
        return;
    };
    server.client_filter(Some(&mut |_, c| {
        let owns = !c
            .session_filter(Some(&mut |_, s| {
                if expired.contains(s) {
                    RTSPFilterResult::Ref
                } else {
                    RTSPFilterResult::Keep
                }
            }))
            .is_empty();
        if owns {
            warn("RTSP session expired (client silent): its connection is closed");
            RTSPFilterResult::Remove
        } else {
            RTSPFilterResult::Keep
        }
    }));
}

pub(crate) fn warn(msg: &str) {
    gst::warning!(CAT, "{msg}");
    eprintln!("[gateway] warning: {msg}");
}

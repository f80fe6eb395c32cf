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
use crate::sim::{Clip, SimCamera, SimSettings};
use crate::store::worker::{StoreSender, StoreStats, StoreWorker};
use crate::store::{ChannelInfo, Limits as StoreLimits, Store, Write};
use gst::glib;
use gst::glib::translate::ToGlibPtr;
use gst::prelude::*;
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
pub use control::{Control, Gone};

/// Registers every plugin the gateway uses (statically linked ones).
pub fn init() -> Result<(), glib::Error> {
    gst::init()?;
    let _ = gstgb28181::plugin_register_static();
    let _ = gstmpegps::plugin_register_static();
    let _ = gstrtcpstats::plugin_register_static();
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A mounted channel.
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
}

#[derive(Default)]
struct Rates {
    /// Previous (bytes, time) per key, for bitrates.
    prev: HashMap<String, (u64, Instant)>,
    /// Sender octets/packets at the time a session was first seen, per (session, stream).
    baselines: HashMap<(String, u32), (u64, u64)>,
    /// Keys asked for since the last [`Rates::forget_unseen`].
    seen: HashSet<String>,
}

impl Rates {
    fn rate(&mut self, key: &str, bytes: u64, now: Instant) -> u64 {
        let r = match self.prev.get(key) {
            Some((b, t)) if now > *t && bytes >= *b => {
                ((bytes - b) as f64 * 8.0 / (now - *t).as_secs_f64()) as u64
            }
            _ => 0,
        };
        // Keep the window at least 1 s so rates don't jump with frame boundaries.
        match self.prev.get(key) {
            Some((_, t)) if now.duration_since(*t) < Duration::from_secs(1) => {}
            _ => {
                self.prev.insert(key.to_string(), (bytes, now));
            }
        }
        self.seen.insert(key.to_string());
        r
    }

    /// Forgets the keys (ended sessions, unmounted paths) not asked for since the last call.
    fn forget_unseen(&mut self) {
        let seen = std::mem::take(&mut self.seen);
        self.prev.retain(|k, _| seen.contains(k));
    }
}

struct Shared {
    cfg: Config,
    endpoint: Arc<Endpoint>,
    server: gst_rtsp_server::RTSPServer,
    rtsp_port: u16,
    /// Users, session owners and connection limits of the RTSP server.
    rtsp_guard: Arc<RtspGuard>,
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
        let _source = server
            .attach(Some(&ctx))
            .map_err(|e| format!("RTSP server on port {}: {e}", cfg.rtsp_port))?;
        let rtsp_port = u16::try_from(server.bound_port()).unwrap_or(cfg.rtsp_port);
        if let Some(pool) = server.session_pool() {
            // Expired sessions (UDP clients that vanished) are removed, so their media ends.
            let watch = pool.create_watch(Some("session-timeouts"), glib::Priority::DEFAULT, |p| {
                p.cleanup();
                glib::ControlFlow::Continue
            });
            watch.attach(Some(&ctx));
        }
        let ml = main_loop.clone();
        let loop_thread = std::thread::Builder::new()
            .name("rtsp-server".into())
            .spawn(move || {
                let _ = ctx.with_thread_default(|| ml.run());
            })
            .map_err(|e| e.to_string())?;

        let shared = Arc::new(Shared {
            cfg: cfg.clone(),
            endpoint: endpoint.clone(),
            server,
            rtsp_port,
            rtsp_guard,
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
        });

        // Per-client byte counts start when the client's PLAY is answered.
        let weak = Arc::downgrade(&shared);
        shared.server.connect_client_connected(move |_, client| {
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

        let http_runtime = HttpRuntime::new(2).map_err(|e| format!("HTTP runtime: {e}"))?;
        let limits = http_limits(&cfg);
        // One user table (and one failed-attempt limiter) for RTSP and HTTP.
        let auth = http_authorize(shared.rtsp_guard.users().clone());
        let weak = Arc::downgrade(&shared);
        let render: http::routes::Render =
            Arc::new(move || weak.upgrade().map(|sh| metrics::render(&snapshot(&sh))));
        let metrics_server = HttpServer::start(
            &http_runtime,
            &cfg.metrics_address,
            cfg.metrics_port,
            http::routes::metrics_router(render, auth.clone())
                .merge(crate::api::router(Control::new(&shared), auth.clone())),
            limits.clone(),
        )
        .map_err(|e| format!("metrics server on port {}: {e}", cfg.metrics_port))?;
        let hls_server = if cfg.hls {
            let dir = http::files::ServedDir::new(&cfg.hls_dir)
                .map_err(|e| format!("{}: {e}", cfg.hls_dir.display()))?;
            Some(
                HttpServer::start(
                    &http_runtime,
                    &cfg.listen_address,
                    cfg.hls_port,
                    http::routes::hls_router(dir, auth),
                    limits,
                )
                .map_err(|e| format!("HLS server on port {}: {e}", cfg.hls_port))?,
            )
        } else {
            None
        };

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

        let mut gw = Gateway {
            shared,
            main_loop,
            loop_thread: Some(loop_thread),
            subscription,
            mount_thread: Some(mount_thread),
            metrics_server: Some(metrics_server),
            hls_server,
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
                let cam = SimCamera::start(
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
                )?;
                gw.cameras.push(cam);
            }
        }
        Ok(gw)
    }

    pub fn rtsp_port(&self) -> u16 {
        self.shared.rtsp_port
    }

    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_server.as_ref().map(|s| s.local_addr())
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
        // Disconnect every client: shared medias get unprepared (gb28181src stops: BYE).
        let _ = self
            .shared
            .server
            .client_filter(Some(&mut |_, _| gst_rtsp_server::RTSPFilterResult::Remove));
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

/// What the endpoint reported, applied by the mount worker (never on the endpoint's thread).
enum MountJob {
    Registered(String),
    /// A registration restored from the data dir, with its stored channels.
    Restored {
        device: String,
        channels: Vec<String>,
    },
    Online(String),
    Unregistered(String),
    Catalog {
        device: String,
        channels: Vec<String>,
        /// Items beyond the per-device cap, not queued.
        cut: usize,
    },
}

/// Jobs waiting for the mount worker at most; beyond, events are dropped with a warning.
const MOUNT_QUEUE: usize = 1024;

/// The endpoint's subscriber: hands the event to the mount worker and returns at once.
fn on_endpoint_event(sh: &Shared, tx: &SyncSender<MountJob>, ev: &EndpointEvent) {
    if let Some(store) = &sh.store
        && let Some(w) = store_write(sh, ev)
        && !store.send(w)
    {
        // The first, then every 100th (all counted in gateway_store_dropped_total).
        let dropped = store.stats().dropped.load(Ordering::Relaxed);
        if dropped % 100 == 1 {
            warn(&format!(
                "store queue full ({}): an event of device {} not stored ({dropped} so far)",
                crate::store::worker::QUEUE,
                printable(ev.device_id())
            ));
        }
    }
    let job = match ev {
        EndpointEvent::Registrar(RegEvent::Registered {
            device_id,
            refresh: false,
            ..
        }) => MountJob::Registered(device_id.clone()),
        EndpointEvent::Registrar(RegEvent::Unregistered { device_id, .. }) => {
            MountJob::Unregistered(device_id.clone())
        }
        EndpointEvent::Registrar(RegEvent::Online { device_id }) => {
            MountJob::Online(device_id.clone())
        }
        EndpointEvent::Catalog {
            device_id, items, ..
        } => {
            // More than the cap can never mount: don't queue it.
            let cap = sh.cfg.max_channels_per_device;
            let named = items.iter().filter(|i| !i.device_id.is_empty());
            MountJob::Catalog {
                device: device_id.clone(),
                channels: named
                    .clone()
                    .take(cap)
                    .map(|i| i.device_id.clone())
                    .collect(),
                cut: named.count().saturating_sub(cap),
            }
        }
        // Refused or suspicious requests: IDs and sources (printable, never trusted text).
        e if gstgb28181::messages::is_security_event(e) => {
            warn(&gstgb28181::messages::describe(e));
            return;
        }
        _ => return,
    };
    if let Err(TrySendError::Full(_)) = tx.try_send(job) {
        warn(&format!(
            "mount queue full ({MOUNT_QUEUE}): dropped an event of device {}",
            printable(ev.device_id())
        ));
    }
}

pub(crate) fn warn(msg: &str) {
    gst::warning!(CAT, "{msg}");
    eprintln!("[gateway] warning: {msg}");
}

/// The mount worker: mounts, catalog queries and unmounts, in the order the endpoint told.
fn mount_worker(weak: Weak<Shared>, rx: Receiver<MountJob>) {
    while let Ok(job) = rx.recv() {
        let Some(sh) = weak.upgrade() else { return };
        if sh.stopping.load(Ordering::SeqCst) {
            return;
        }
        match job {
            MountJob::Registered(device) => {
                println!("[gateway] device {} registered", printable(&device));
                if let Err(e) = mount(&sh, &device, &device) {
                    sh.mounts_refused.fetch_add(1, Ordering::Relaxed);
                    warn(&e);
                    continue;
                }
                let _ = sh.endpoint.query(&device, "Catalog");
                if sh.store.is_some()
                    && let Ok(sn) = sh.endpoint.query(&device, "DeviceInfo")
                {
                    let mut q = lock(&sh.device_info_queries);
                    // Unanswered queries are forgotten in bulk.
                    if q.len() >= DEVICE_INFO_QUERIES {
                        q.clear();
                    }
                    q.insert(sn, device.clone());
                }
            }
            MountJob::Restored { device, channels } => {
                println!(
                    "[gateway] device {} restored from the data dir ({} channels), waiting for its keepalive",
                    printable(&device),
                    channels.len()
                );
                if let Err(e) = mount(&sh, &device, &device) {
                    sh.mounts_refused.fetch_add(1, Ordering::Relaxed);
                    warn(&e);
                    continue;
                }
                mount_catalog(&sh, &device, &channels, 0);
            }
            MountJob::Online(device) => {
                println!("[gateway] device {} online", printable(&device));
            }
            MountJob::Unregistered(device) => {
                println!("[gateway] device {} unregistered", printable(&device));
                unmount_device(&sh, &device);
            }
            MountJob::Catalog {
                device,
                channels,
                cut,
            } => mount_catalog(&sh, &device, &channels, cut),
        }
    }
}

/// Mounts the channels of a device's catalog (`cut`: items beyond the cap, not queued).
fn mount_catalog(sh: &Arc<Shared>, device: &str, channels: &[String], cut: usize) {
    let mut refused = cut;
    let mut first =
        (cut > 0).then(|| format!("{cut} items beyond max-channels-per-device not even queued"));
    sh.mounts_refused.fetch_add(cut as u64, Ordering::Relaxed);
    for ch in channels {
        if let Err(e) = mount(sh, device, ch) {
            sh.mounts_refused.fetch_add(1, Ordering::Relaxed);
            refused += 1;
            first.get_or_insert(e);
        }
    }
    if let Some(e) = first {
        warn(&format!(
            "catalog of device {}: {refused} of {} channels refused, first: {e}",
            printable(device),
            channels.len() + cut
        ));
    }
}

/// Stored devices printed one by one at start.
const TREE_LINES: usize = 100;
/// DeviceInfo queries remembered at most (their answers are stored).
const DEVICE_INFO_QUERIES: usize = 1024;
/// How often the last keepalive times are written.
const STORE_SEEN_EVERY: Duration = Duration::from_secs(5);

/// The store's view of an endpoint event.
fn store_write(sh: &Shared, ev: &EndpointEvent) -> Option<Write> {
    let now = gstgb28181::endpoint::now_ms();
    Some(match ev {
        EndpointEvent::Registrar(RegEvent::Registered {
            device_id,
            contact,
            source,
            expires_s,
            refresh,
        }) => Write::Registered {
            device_id: device_id.clone(),
            address: source.clone(),
            transport: sh.endpoint.transport().as_str().into(),
            contact: contact.clone(),
            now_ms: now,
            expires_at_ms: now + u64::from(*expires_s) * 1000,
            refresh: *refresh,
        },
        EndpointEvent::Registrar(RegEvent::Unregistered { device_id, .. }) => Write::Unregistered {
            device_id: device_id.clone(),
        },
        EndpointEvent::Registrar(RegEvent::Online { device_id }) => Write::Seen {
            device_id: device_id.clone(),
            at_ms: now,
        },
        EndpointEvent::Catalog {
            device_id, items, ..
        } => Write::Catalog {
            device_id: device_id.clone(),
            channels: items
                .iter()
                .filter(|i| !i.device_id.is_empty())
                .take(sh.cfg.max_channels_per_device)
                .map(|i| ChannelInfo {
                    id: i.device_id.clone(),
                    name: i.name.clone(),
                    parent_id: i.parent_id.clone(),
                    status: i.status.clone(),
                    ptz_type: i.ptz_type,
                    manufacturer: i.manufacturer.clone(),
                    model: i.model.clone(),
                })
                .collect(),
        },
        // Only the answer to our query, about the device we asked.
        EndpointEvent::DeviceInfo { sn, info } => {
            let asked = lock(&sh.device_info_queries).remove(sn)?;
            if asked != info.device_id {
                return None;
            }
            Write::DeviceInfo {
                device_id: asked,
                manufacturer: info.manufacturer.clone(),
                model: info.model.clone(),
                firmware: info.firmware.clone(),
            }
        }
        _ => return None,
    })
}

/// Puts back, in the endpoint, the registrations stored in the data dir that are still
/// valid; returns the devices restored with their stored channels (to mount). Prints the
/// stored device tree, one line a device (the first [`TREE_LINES`], then a count).
fn restore_from_store(
    store: &Store,
    endpoint: &Endpoint,
) -> Result<Vec<(String, Vec<String>)>, String> {
    let err = |e: rusqlite::Error| format!("{}: {e}", store.path().display());
    let devices = store.devices().map_err(err)?;
    let now = gstgb28181::endpoint::now_ms();
    let transport = endpoint.transport().as_str();
    let mut restored = Vec::new();
    let total = devices.len();
    for (n, d) in devices.into_iter().enumerate() {
        let channels: Vec<String> = store
            .channels(&d.id)
            .map_err(err)?
            .into_iter()
            .map(|c| c.id)
            .collect();
        let outcome = if d.expires_at_ms <= now {
            Err("registration expired")
        } else if d.transport != transport {
            Err("registered over another SIP transport")
        } else {
            endpoint.restore(
                &RestoredBinding {
                    device_id: d.id.clone(),
                    contact: d.contact.clone(),
                    source: d.address.clone(),
                    registered_at_ms: d.registered_at_ms,
                    expires_at_ms: d.expires_at_ms,
                    last_seen_ms: d.last_keepalive_ms,
                },
                &channels,
            )
        };
        let state = match outcome {
            Ok(()) => format!(
                "registration from {} restored, valid for {} s",
                printable(&d.address),
                (d.expires_at_ms - now) / 1000
            ),
            Err(why) => format!("not restored: {why}"),
        };
        if n < TREE_LINES {
            println!(
                "[gateway] stored device {} ({} channels): {state}",
                printable(&d.id),
                channels.len()
            );
        }
        if outcome.is_ok() {
            restored.push((d.id, channels));
        }
    }
    println!(
        "[gateway] data dir {}: {total} devices stored, {} registrations restored",
        store.path().display(),
        restored.len()
    );
    Ok(restored)
}

/// The store's writer, which also writes the devices' last keepalive times every
/// [`STORE_SEEN_EVERY`] (those that changed).
fn start_store_worker(store: Store, endpoint: &Arc<Endpoint>) -> std::io::Result<StoreWorker> {
    let ep = Arc::downgrade(endpoint);
    let mut written: HashMap<String, u64> = HashMap::new();
    StoreWorker::start(store, STORE_SEEN_EVERY, move || {
        let Some(ep) = ep.upgrade() else {
            return Vec::new();
        };
        let devices = ep.devices();
        // Only devices still registered are remembered (bounded by max-devices).
        let mut now_written = HashMap::with_capacity(devices.len());
        let mut writes = Vec::new();
        for d in devices {
            if written.get(&d.id) != Some(&d.last_seen_ms) && !d.restored {
                writes.push(Write::Seen {
                    device_id: d.id.clone(),
                    at_ms: d.last_seen_ms,
                });
            }
            now_written.insert(d.id, d.last_seen_ms);
        }
        written = now_written;
        writes
    })
}

fn src_properties(cfg: &Config, device: &str, channel: &str) -> Vec<(String, String)> {
    [
        ("sip-address", cfg.sip_address.clone()),
        ("sip-port", cfg.sip_port.to_string()),
        ("sip-transport", cfg.sip_transport.clone()),
        ("server-id", cfg.server_id.clone()),
        ("password", cfg.password.clone()),
        ("device-passwords", cfg.device_passwords.clone()),
        ("device-id", device.to_string()),
        ("channel-id", channel.to_string()),
        ("transport", cfg.media_transport.clone()),
        ("wait-timeout", cfg.wait_timeout_s.to_string()),
        ("stream-timeout", cfg.stream_timeout_s.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Mounts `channel` of `device` (RTSP, and HLS/recording if configured). Refused, with the
/// reason: an ID the gateway's policy refuses, a channel already mounted for another device
/// (it keeps its session), a device at its channel cap, a new device beyond the device cap.
/// Ok(false): already mounted for this device.
fn mount(sh: &Arc<Shared>, device: &str, channel: &str) -> Result<bool, String> {
    if sh.stopping.load(Ordering::SeqCst) {
        return Ok(false);
    }
    sh.ids
        .check(device)
        .map_err(|e| format!("device {}: {e}", printable(device)))?;
    sh.ids
        .check(channel)
        .map_err(|e| format!("channel {}: {e}", printable(channel)))?;
    let generation = {
        let mut chans = lock(&sh.channels);
        if let Some(c) = chans.get(channel) {
            if c.device_id != device {
                return Err(format!(
                    "channel {channel} of device {} is already mounted for device {}",
                    device, c.device_id
                ));
            }
            return Ok(false);
        }
        let mut per_device = lock(&sh.device_channels);
        let n = per_device.get(device).copied().unwrap_or(0);
        if n >= sh.cfg.max_channels_per_device {
            return Err(format!(
                "device {device} has {n} channels mounted (max-channels-per-device)"
            ));
        }
        if n == 0 && per_device.len() >= sh.cfg.max_devices {
            return Err(format!(
                "{} devices mounted (max-devices): device {device} not mounted",
                per_device.len()
            ));
        }
        *per_device.entry(device.to_string()).or_insert(0) += 1;
        let generation = sh.generations.fetch_add(1, Ordering::Relaxed);
        chans.insert(
            channel.to_string(),
            Channel {
                device_id: device.to_string(),
                generation,
                ingest: None,
                medias: Vec::new(),
                sent_done: 0,
                invites_done: 0,
                bytes_done: 0,
                packets_done: 0,
                lost_done: 0,
                frames_done: 0,
                changes_done: 0,
                key_requests_done: 0,
                outputs: None,
            },
        );
        generation
    };
    let hooks: Arc<dyn ChannelHooks> = Arc::new(Hooks {
        shared: Arc::downgrade(sh),
    });
    let factory = ChannelFactory::new(
        channel,
        hooks,
        Duration::from_secs(u64::from(sh.cfg.wait_timeout_s.max(1)) + 5),
    );
    if let Some(m) = sh.server.mount_points() {
        m.add_factory(&format!("/{channel}"), factory);
    }
    let url = format!("rtsp://{}:{}/{channel}", sh.cfg.public_host, sh.rtsp_port);
    println!("[gateway] channel {channel} of device {device}: {url}");
    if sh.cfg.hls || sh.cfg.record_dir.is_some() {
        let s = OutputSettings {
            channel: channel.to_string(),
            hls_dir: sh.cfg.hls.then(|| sh.cfg.hls_dir.clone()),
            record_dir: sh.cfg.record_dir.clone(),
            segment_s: sh.cfg.record_segment_s,
        };
        if sh.cfg.hls {
            println!(
                "[gateway]   HLS: http://{}:{}/{channel}/index.m3u8",
                sh.cfg.public_host, sh.cfg.hls_port
            );
        }
        // HLS and recording keep the camera session up, restarted with it.
        let weak = Arc::downgrade(sh);
        let r = std::thread::Builder::new()
            .name(format!("outputs-{channel}"))
            .spawn(move || run_outputs(weak, s, generation));
        if let Err(e) = r {
            warn(&format!("channel {channel}: outputs thread: {e}"));
        }
    }
    Ok(true)
}

/// First and longest wait before HLS/recording start again after their session failed.
const OUTPUTS_BACKOFF_MIN: Duration = Duration::from_secs(1);
const OUTPUTS_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Keeps a channel's HLS/recording running for as long as the channel (this mount of it,
/// `generation`) exists: starts them on the channel's ingest, and when that ingest fails
/// (camera gone, stream timeout) or the outputs fail, finalizes them and starts again after
/// a growing back-off. The channel's `outputs` is set only while they run.
fn run_outputs(weak: Weak<Shared>, s: OutputSettings, generation: u64) {
    let channel = s.channel.clone();
    let mounted = |sh: &Shared| {
        !sh.stopping.load(Ordering::SeqCst)
            && lock(&sh.channels)
                .get(&channel)
                .is_some_and(|c| c.generation == generation)
    };
    let mut backoff = OUTPUTS_BACKOFF_MIN;
    // Held across a restart for new streams, so the session is not stopped in between.
    let mut held: Option<Arc<Ingest>> = None;
    let mut changed_at: Option<Instant> = None;
    'outputs: loop {
        let Some(sh) = weak.upgrade() else { return };
        if !mounted(&sh) {
            if let Some(i) = held.take() {
                i.release();
            }
            return;
        }
        let hooks = Hooks {
            shared: Arc::downgrade(&sh),
        };
        let started = hooks.ingest(&channel).and_then(|ingest| {
            ingest.hold();
            let r = ChannelOutputs::start(s.clone(), ingest.clone());
            ingest.release();
            r
        });
        if let Some(i) = held.take() {
            i.release();
        }
        match started {
            Ok(o) => {
                let watch = o.watch();
                let stored = {
                    let mut chans = lock(&sh.channels);
                    match chans.get_mut(&channel) {
                        Some(c)
                            if c.generation == generation
                                && !sh.stopping.load(Ordering::SeqCst) =>
                        {
                            c.outputs = Some(o);
                            None
                        }
                        _ => Some(o),
                    }
                };
                if let Some(o) = stored {
                    o.stop();
                    hooks.maybe_stop(&channel);
                    return;
                }
                backoff = OUTPUTS_BACKOFF_MIN;
                drop(sh);
                // Until they stop writing (woken when the ingest fails) or the channel goes
                // (seen within a second).
                loop {
                    watch.wait_broken(Duration::from_secs(1));
                    let Some(sh) = weak.upgrade() else { return };
                    let failed = {
                        let mut chans = lock(&sh.channels);
                        match chans.get_mut(&channel) {
                            Some(c) if c.generation == generation => match &c.outputs {
                                Some(o) if o.is_running() => None,
                                Some(_) => c.outputs.take(),
                                // Taken by stop() or unmount.
                                None => return,
                            },
                            _ => return,
                        }
                    };
                    if let Some(o) = failed {
                        // New codec or size: new files at once (at most once a second).
                        if o.watch().streams_changed()
                            && changed_at.is_none_or(|t| t.elapsed() >= OUTPUTS_BACKOFF_MIN)
                        {
                            eprintln!(
                                "[gateway] channel {channel}: the camera's streams changed; HLS/recording start new files"
                            );
                            changed_at = Some(Instant::now());
                            o.ingest().hold();
                            held = Some(o.ingest().clone());
                            o.stop();
                            continue 'outputs;
                        }
                        eprintln!(
                            "[gateway] channel {channel}: HLS/recording stopped with the camera session; restarting"
                        );
                        o.stop();
                        break;
                    }
                }
            }
            Err(e) => eprintln!("[gateway] channel {channel}: outputs: {e}"),
        }
        if let Some(sh) = weak.upgrade() {
            Hooks {
                shared: Arc::downgrade(&sh),
            }
            .maybe_stop(&channel);
        }
        // Back off, waking early if the channel goes.
        let until = Instant::now() + backoff;
        while Instant::now() < until {
            std::thread::sleep(Duration::from_millis(100));
            match weak.upgrade() {
                Some(sh) if mounted(&sh) => {}
                _ => return,
            }
        }
        backoff = (backoff * 2).min(OUTPUTS_BACKOFF_MAX);
    }
}

/// Moves a finished ingest's figures into the channel's totals.
fn retire_stats(c: &mut Channel, ingest: &Ingest) {
    if let Some(st) = ingest.src_stats() {
        c.invites_done += u64_field(&st, "invites");
        c.bytes_done += u64_field(&st, "bytes");
        c.packets_done += u64_field(&st, "packets-received");
        c.lost_done += u64_field(&st, "packets-lost");
        c.frames_done += u64_field(&st, "frames");
    }
    c.changes_done += ingest.generation();
    c.key_requests_done += ingest.key_frame_requests();
}

/// The factories' view of the gateway.
struct Hooks {
    shared: Weak<Shared>,
}

impl ChannelHooks for Hooks {
    fn ingest(&self, channel: &str) -> Result<Arc<Ingest>, String> {
        let sh = self.shared.upgrade().ok_or("gateway stopped")?;
        if sh.stopping.load(Ordering::SeqCst) {
            return Err("gateway stopping".into());
        }
        let mut chans = lock(&sh.channels);
        let c = chans.get_mut(channel).ok_or("channel not mounted")?;
        if let Some(i) = &c.ingest {
            if !i.is_failed() {
                return Ok(i.clone());
            }
            let old = c.ingest.take();
            if let Some(old) = old {
                retire_stats(c, &old);
                old.stop();
            }
        }
        let i = Ingest::start(channel, &src_properties(&sh.cfg, &c.device_id, channel))?;
        let (endpoint, device, chan) = (
            Arc::downgrade(&sh.endpoint),
            c.device_id.clone(),
            channel.to_string(),
        );
        i.set_key_frame_requests(crate::ingest::KeyFrameRequests {
            after: Duration::from_secs(u64::from(sh.cfg.key_frame_request_after_s)),
            send: Box::new(move || {
                let ep = endpoint.upgrade().ok_or("gateway stopped")?;
                ep.force_key_frame(&device, &chan)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }),
        });
        c.ingest = Some(i.clone());
        Ok(i)
    }

    fn media_configured(
        &self,
        channel: &str,
        media: &gst_rtsp_server::RTSPMedia,
        counters: Arc<MediaCounters>,
    ) {
        let Some(sh) = self.shared.upgrade() else {
            return;
        };
        if let Some(c) = lock(&sh.channels).get_mut(channel) {
            let mut done = 0;
            c.medias.retain(|(m, k)| {
                let alive = m.upgrade().is_some();
                if !alive {
                    done += k.get().0;
                }
                alive
            });
            c.sent_done += done;
            c.medias.push((media.downgrade(), counters));
        }
    }

    fn maybe_stop(&self, channel: &str) {
        let Some(sh) = self.shared.upgrade() else {
            return;
        };
        let stop = {
            let mut chans = lock(&sh.channels);
            let Some(c) = chans.get_mut(channel) else {
                return;
            };
            match &c.ingest {
                Some(i) if i.is_unused() || i.is_failed() => {
                    let i = c.ingest.take();
                    if let Some(i) = &i {
                        retire_stats(c, i);
                    }
                    i
                }
                _ => None,
            }
        };
        if let Some(i) = stop {
            i.stop();
        }
    }
}

fn unmount_device(sh: &Shared, device: &str) {
    type Gone = (String, Option<ChannelOutputs>, Option<Arc<Ingest>>);
    let gone: Vec<Gone> = {
        let mut chans = lock(&sh.channels);
        let ids: Vec<String> = chans
            .iter()
            .filter(|(_, c)| c.device_id == device)
            .map(|(k, _)| k.clone())
            .collect();
        lock(&sh.device_channels).remove(device);
        ids.into_iter()
            .filter_map(|id| chans.remove(&id).map(|c| (id, c.outputs, c.ingest)))
            .collect()
    };
    for (id, outputs, ingest) in gone {
        if let Some(o) = outputs {
            o.stop();
        }
        if let Some(i) = ingest {
            i.stop();
        }
        if let Some(m) = sh.server.mount_points() {
            m.remove_factory(&format!("/{id}"));
        }
    }
}

fn u64_field(s: &gst::StructureRef, name: &str) -> u64 {
    s.get::<u64>(name)
        .or_else(|_| s.get::<u32>(name).map(u64::from))
        .unwrap_or(0)
}

/// Per-source statistics structures of an RTPSession object.
fn source_stats(rtpsession: &glib::Object) -> Vec<gst::Structure> {
    let Some(stats) = rtpsession
        .find_property("stats")
        .and_then(|_| rtpsession.property::<Option<gst::Structure>>("stats"))
    else {
        return Vec::new();
    };
    #[allow(deprecated)]
    let arr = stats.get::<glib::ValueArray>("source-stats");
    #[allow(deprecated)]
    match arr {
        Ok(a) => a
            .iter()
            .filter_map(|v| v.get::<gst::Structure>().ok())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Client address, transport and RTCP port of a stream transport (not in the bindings).
fn transport_info(
    client_ip: &str,
    t: &gst_rtsp_server::RTSPStreamTransport,
) -> (String, &'static str, Option<i32>) {
    // SAFETY: the transport outlives the call; the returned struct is owned by it and only
    // read here.
    unsafe {
        let tr = gst_rtsp_server::ffi::gst_rtsp_stream_transport_get_transport(t.to_glib_none().0);
        if tr.is_null() {
            return (client_ip.to_string(), "?", None);
        }
        let lower = (*tr).lower_transport;
        if lower & gst_rtsp_server::gst_rtsp::ffi::GST_RTSP_LOWER_TRANS_TCP != 0 {
            (client_ip.to_string(), "tcp", None)
        } else if lower & gst_rtsp_server::gst_rtsp::ffi::GST_RTSP_LOWER_TRANS_UDP_MCAST != 0 {
            (client_ip.to_string(), "udp-mcast", None)
        } else {
            let p = (*tr).client_port;
            (format!("{client_ip}:{}", p.min), "udp", Some(p.max))
        }
    }
}

/// Collects every figure.
/// Remembers what the session's medias had sent when it started playing.
fn record_baselines(sh: &Shared, session: &gst_rtsp_server::RTSPSession) {
    let Some(sid) = session.sessionid().map(|s| s.to_string()) else {
        return;
    };
    let medias: Vec<gst_rtsp_server::RTSPMedia> = session
        .filter(None)
        .iter()
        .filter_map(|sm| sm.media())
        .collect();
    let counters: Vec<Arc<MediaCounters>> = {
        let chans = lock(&sh.channels);
        chans
            .values()
            .flat_map(|c| c.medias.iter())
            .filter(|(m, _)| m.upgrade().is_some_and(|m| medias.contains(&m)))
            .map(|(_, k)| k.clone())
            .collect()
    };
    if let Some(k) = counters.first() {
        lock(&sh.rates)
            .baselines
            .entry((sid, 0))
            .or_insert_with(|| k.get());
    }
}

/// Refreshes the ingests' element statistics, with no gateway lock held (reading them can
/// block while gb28181src is busy, so this runs on a thread of its own).
fn refresh_ingest_stats(sh: &Shared) {
    let ingests: Vec<Arc<Ingest>> = lock(&sh.channels)
        .values()
        .filter_map(|c| c.ingest.clone())
        .collect();
    for i in &ingests {
        i.refresh_stats();
    }
}

fn snapshot(sh: &Shared) -> Snapshot {
    let now = Instant::now();
    let ep_stats = sh.endpoint.stats();
    let sip = SipCounters {
        auth_failures: ep_stats.registrar.auth_failures,
        auth_rate_limited: ep_stats.registrar.rate_limited,
        forged_requests: ep_stats.registrar.forged_requests,
        invalid_ids: ep_stats.registrar.invalid_ids,
        catalog_items_dropped: ep_stats.catalog_items_dropped,
        events_dropped: ep_stats.events_dropped,
    };
    let devices: Vec<DeviceStat> = sh
        .endpoint
        .devices()
        .into_iter()
        .map(|d| DeviceStat {
            id: d.id,
            online: d.online,
        })
        .collect();
    // Which media serves which channel.
    let mut media_channel: Vec<(gst_rtsp_server::RTSPMedia, String, Arc<MediaCounters>)> =
        Vec::new();
    let mut paths: Vec<PathStat> = Vec::new();
    let mut rates = lock(&sh.rates);
    let refresh_latency = {
        let mut at = lock(&sh.latency_at);
        let due = at.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1));
        if due {
            *at = Some(now);
        }
        due
    };
    {
        let chans = lock(&sh.channels);
        if refresh_latency {
            let mut lat = lock(&sh.latency);
            lat.clear();
            for (id, c) in chans.iter() {
                if let Some(l) = c.ingest.as_ref().and_then(|i| i.take_latency()) {
                    lat.insert(id.clone(), l);
                }
            }
        }
        let lat = lock(&sh.latency).clone();
        for (id, c) in chans.iter() {
            let mut p = PathStat {
                name: id.clone(),
                device_id: c.device_id.clone(),
                invites: c.invites_done,
                bytes_received: c.bytes_done,
                packets_received: c.packets_done,
                packets_lost: c.lost_done,
                frames: c.frames_done,
                stream_changes: c.changes_done + c.ingest.as_ref().map_or(0, |i| i.generation()),
                key_frame_requests: c.key_requests_done
                    + c.ingest.as_ref().map_or(0, |i| i.key_frame_requests()),
                hls: c
                    .outputs
                    .as_ref()
                    .is_some_and(|o| o.settings.hls_dir.is_some() && o.is_running()),
                recording: c
                    .outputs
                    .as_ref()
                    .is_some_and(|o| o.settings.record_dir.is_some() && o.is_running()),
                ..Default::default()
            };
            if let Some(st) = c.ingest.as_ref().and_then(|i| i.src_stats()) {
                p.invites += u64_field(&st, "invites");
                p.bytes_received += u64_field(&st, "bytes");
                p.packets_received += u64_field(&st, "packets-received");
                p.packets_lost += u64_field(&st, "packets-lost");
                p.frames += u64_field(&st, "frames");
                p.ready = st.get::<bool>("streaming").unwrap_or(false);
            }
            if let Some((avg, max)) = lat.get(id) {
                p.latency_avg_ms = *avg;
                p.latency_max_ms = *max;
            }
            p.bytes_sent = c.sent_done;
            for (m, k) in &c.medias {
                p.bytes_sent += k.get().0;
                if let Some(m) = m.upgrade() {
                    media_channel.push((m, id.clone(), k.clone()));
                }
            }
            p.bitrate_in_bps = rates.rate(&format!("in:{id}"), p.bytes_received, now);
            p.bitrate_out_bps = rates.rate(&format!("out:{id}"), p.bytes_sent, now);
            paths.push(p);
        }
    }

    let mut sessions = Vec::new();
    let mut live: std::collections::HashSet<String> = std::collections::HashSet::new();
    let clients = sh.server.client_filter(None);
    for client in &clients {
        let ip = client_ip(client);
        for session in client.session_filter(None) {
            let sid = session
                .sessionid()
                .map(|s| s.to_string())
                .unwrap_or_default();
            for sm in session.filter(None) {
                let Some(media) = sm.media() else { continue };
                let Some((path, counters)) = media_channel
                    .iter()
                    .find(|(m, _, _)| *m == media)
                    .map(|(_, c, k)| (c.clone(), k.clone()))
                else {
                    continue;
                };
                // What the media sent since this session was first seen.
                let (octets, packets) = counters.get();
                let base = *rates
                    .baselines
                    .entry((sid.clone(), 0))
                    .or_insert((octets, packets));
                let mut x = SessionStat {
                    bytes_sent: octets.saturating_sub(base.0),
                    packets_sent: packets.saturating_sub(base.1),
                    // Never the session ID itself: whoever reads metrics could take it over.
                    id: sh
                        .rtsp_guard
                        .session_number(&sid)
                        .map(|n| n.to_string())
                        .unwrap_or_else(|| "-".into()),
                    path: path.clone(),
                    ..Default::default()
                };
                for i in 0..media.n_streams() {
                    let Some(t) = sm.transport(i) else { continue };
                    let (remote, kind, rtcp_port) = transport_info(&ip, &t);
                    x.remote = remote;
                    x.transport = kind.into();
                    let Some(rs) = media.stream(i).and_then(|s| s.rtpsession()) else {
                        continue;
                    };
                    for s in source_stats(&rs) {
                        let internal = s.get::<bool>("internal").unwrap_or(false);
                        if !internal
                            && let Some(port) = rtcp_port
                            && s.get::<String>("rtcp-from").ok().as_deref()
                                == Some(format!("{ip}:{port}").as_str())
                            && s.get::<bool>("have-rb").unwrap_or(false)
                        {
                            let clock = f64::from(
                                media
                                    .stream(i)
                                    .and_then(|st| st.rtpinfo())
                                    .map(|(_, _, clock, _)| clock)
                                    .unwrap_or(90_000)
                                    .max(1),
                            );
                            let lost = s.get::<i32>("rb-packetslost").unwrap_or(0);
                            *x.packets_lost.get_or_insert(0) += i64::from(lost);
                            let j = u64_field(&s, "rb-jitter") as f64 * 1000.0 / clock;
                            x.jitter_ms = Some(x.jitter_ms.unwrap_or(0.0).max(j));
                            let rtt = u64_field(&s, "rb-round-trip") as f64 * 1000.0 / 65536.0;
                            x.round_trip_ms = Some(rtt);
                        }
                    }
                }
                x.bitrate_bps = rates.rate(&format!("sess:{sid}:{path}"), x.bytes_sent, now);
                if let Some(p) = paths.iter_mut().find(|p| p.name == path) {
                    p.readers += 1;
                }
                sessions.push(x);
                live.insert(sid.clone());
            }
        }
    }
    // Forget baselines of sessions that are gone.
    rates
        .baselines
        .retain(|(sid, _), _| live.contains(sid.as_str()));
    rates.forget_unseen();
    drop(rates);
    Snapshot {
        devices,
        paths,
        sessions,
        rtsp_conns: clients.len() as u32,
        sip,
        auth_failures: [Protocol::Rtsp, Protocol::Http]
            .iter()
            .map(|p| (p.as_str().to_string(), sh.rtsp_guard.users().failures(*p)))
            .collect(),
        mounts_refused: sh.mounts_refused.load(Ordering::Relaxed),
        store_errors: sh
            .store
            .as_ref()
            .map_or(0, |s| s.stats().errors.load(Ordering::Relaxed)),
        store_dropped: sh
            .store
            .as_ref()
            .map_or(0, |s| s.stats().dropped.load(Ordering::Relaxed)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One snapshot per second with 20 new sessions each: the bitrate memory holds only the
    /// keys of the last snapshot, not one per session ever seen.
    #[test]
    fn rates_forget_ended_sessions() {
        let mut r = Rates::default();
        let t0 = Instant::now();
        for round in 0..100u64 {
            let now = t0 + Duration::from_secs(round);
            r.rate("in:34020000001320000001", round * 1000, now);
            for c in 0..20 {
                r.rate(&format!("sess:{round}-{c}:34020000001320000001"), 0, now);
            }
            r.forget_unseen();
            assert_eq!(r.prev.len(), 21, "round {round}");
        }
        // The path's rate survives the sweeps: 1000 bytes a second = 8000 bit/s.
        let now = t0 + Duration::from_secs(100);
        assert_eq!(r.rate("in:34020000001320000001", 100_000, now), 8000);
    }
}

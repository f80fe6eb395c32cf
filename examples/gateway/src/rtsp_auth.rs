//! Access control of the gateway's RTSP server: an `RTSPAuth` subclass that authenticates every
//! request against the [`Users`] table (Basic, and Digest for users with a `digest_ha1`) and
//! checks the path permission (401 without or with wrong credentials, 403 for a known user
//! without the path), session ownership (a session is driven only by the connection that
//! created it: anything else naming it gets 454), and the connection limits (clients at
//! once, request body size, listen backlog).
//!
//! Ownership is checked in the URL check, which gst-rtsp-server runs for every request after
//! it has looked the session up and before any method handler or `pre-*-request` signal: so
//! OPTIONS, DESCRIBE, GET_PARAMETER, PLAY, PAUSE and TEARDOWN with a stolen session ID are all
//! refused. gst-rtsp-server has by then added the stolen session to the requesting
//! connection's list (and would stop its TCP media when that connection closes), so it is
//! taken out of that list again.

use crate::auth::{Action, Attempt, AuthError, Protocol, Users};
use gst::glib;
use gst::glib::translate::{IntoGlib, ToGlibPtr};
use gst_ipcam_common::sync::lock;
use gst_rtsp_server::gst_rtsp::{self, RTSPHeaderField, RTSPStatusCode};
use gst_rtsp_server::prelude::*;
use gst_rtsp_server::subclass::prelude::*;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Limits on RTSP connections.
#[derive(Debug, Clone, Copy)]
pub struct RtspLimits {
    /// Connections at once; a connection beyond is closed when accepted.
    pub max_clients: u32,
    /// Largest request body (`Content-Length`) a connection may send.
    pub content_length_limit: u32,
    /// Listen backlog (the kernel caps it at `net.core.somaxconn`).
    pub backlog: i32,
    /// RTSP sessions at once (SETUP beyond gets 503).
    pub max_sessions: u32,
    /// A connection without any session and without a request in progress is closed after
    /// this long without a request or response (so idle connections cannot hold the
    /// `max_clients` slots).
    pub idle_timeout: Duration,
}

impl RtspLimits {
    pub fn new(max_clients: u32, idle_timeout: Duration) -> RtspLimits {
        RtspLimits {
            max_clients,
            content_length_limit: 64 * 1024,
            backlog: 1024,
            max_sessions: max_clients.saturating_mul(4),
            idle_timeout,
        }
    }
}

/// What the URL check asks of an ANNOUNCE whose user may publish on its path (the
/// gateway's registry of published paths): Ok, or the status and reason to refuse it with.
pub type AnnounceGate = Box<
    dyn Fn(&gst_rtsp_server::RTSPContext) -> Result<(), (RTSPStatusCode, String)> + Send + Sync,
>;

/// Which connection created each live RTSP session, and the gateway-side opaque number shown
/// for it in metrics instead of its ID. GStreamer-free; bounded by `max` entries.
#[derive(Debug)]
pub struct SessionTable {
    owners: HashMap<String, (u64, u64)>,
    next_number: u64,
    max: usize,
}

impl SessionTable {
    pub fn new(max: usize) -> SessionTable {
        SessionTable {
            owners: HashMap::new(),
            next_number: 1,
            max,
        }
    }

    /// Records that connection `client` created session `sid`; returns its opaque number
    /// (None when the table is full: the session then belongs to nobody and is refused).
    pub fn insert(&mut self, sid: &str, client: u64) -> Option<u64> {
        if self.owners.len() >= self.max && !self.owners.contains_key(sid) {
            return None;
        }
        let n = self.next_number;
        self.next_number += 1;
        self.owners.insert(sid.to_string(), (client, n));
        Some(n)
    }

    /// Whether connection `client` may use session `sid`.
    pub fn owned_by(&self, sid: &str, client: u64) -> bool {
        self.owners.get(sid).is_some_and(|(c, _)| *c == client)
    }

    pub fn number(&self, sid: &str) -> Option<u64> {
        self.owners.get(sid).map(|(_, n)| *n)
    }

    /// The connection that created the session shown as `number`.
    pub fn client_of(&self, number: u64) -> Option<u64> {
        self.owners
            .values()
            .find(|(_, n)| *n == number)
            .map(|(c, _)| *c)
    }

    pub fn remove(&mut self, sid: &str) {
        self.owners.remove(sid);
    }

    pub fn len(&self) -> usize {
        self.owners.len()
    }

    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }
}

#[derive(Debug, Clone)]
struct ClientState {
    /// Opaque connection number (session ownership).
    number: u64,
    /// Last request or response.
    active_at: Instant,
    /// A request is being handled (between its URL check and a response).
    busy: bool,
    /// The user its last request authenticated as.
    user: Option<Arc<str>>,
}

/// The server-side state shared by the auth object and the signal handlers.
#[derive(Debug)]
pub struct RtspGuard {
    users: Arc<Users>,
    limits: RtspLimits,
    sessions: Mutex<SessionTable>,
    /// Each live connection by client object address (removed on close).
    clients: Mutex<HashMap<usize, ClientState>>,
    next_client: AtomicU64,
    refused_connections: AtomicU64,
    refused_takeovers: AtomicU64,
    closed_idle: AtomicU64,
    server: glib::WeakRef<gst_rtsp_server::RTSPServer>,
    announce_gate: GateCell,
}

#[derive(Default)]
struct GateCell(OnceLock<AnnounceGate>);

impl std::fmt::Debug for GateCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "set"
        } else {
            "unset"
        })
    }
}

impl RtspGuard {
    /// Sets what decides on ANNOUNCEs (once; without one every ANNOUNCE gets 404).
    pub fn set_announce_gate(&self, gate: AnnounceGate) {
        let _ = self.announce_gate.0.set(gate);
    }

    pub fn users(&self) -> &Arc<Users> {
        &self.users
    }

    /// The opaque number shown in metrics for session `sid`.
    pub fn session_number(&self, sid: &str) -> Option<u64> {
        lock(&self.sessions).number(sid)
    }

    /// Sessions whose owner is tracked now.
    pub fn tracked_sessions(&self) -> usize {
        lock(&self.sessions).len()
    }

    /// Connections closed because `max_clients` were connected.
    pub fn refused_connections(&self) -> u64 {
        self.refused_connections.load(Ordering::Relaxed)
    }

    /// Requests refused with 454 because they named another connection's session.
    pub fn refused_takeovers(&self) -> u64 {
        self.refused_takeovers.load(Ordering::Relaxed)
    }

    /// Connections closed because they stayed without a session for `idle_timeout`.
    pub fn closed_idle(&self) -> u64 {
        self.closed_idle.load(Ordering::Relaxed)
    }

    fn client_number(&self, client: &gst_rtsp_server::RTSPClient) -> Option<u64> {
        lock(&self.clients)
            .get(&(client.as_ptr() as usize))
            .map(|c| c.number)
    }

    /// The user that the connection which created session number `number` authenticated
    /// as (while that connection is open).
    pub fn session_user(&self, number: u64) -> Option<String> {
        let client = lock(&self.sessions).client_of(number)?;
        lock(&self.clients)
            .values()
            .find(|c| c.number == client)
            .and_then(|c| c.user.as_deref().map(String::from))
    }

    fn set_user(&self, client: &gst_rtsp_server::RTSPClient, user: &str) {
        self.set_user_of(client.as_ptr() as usize, user);
    }

    /// Records the user the connection under `key` in the clients table authenticated as.
    fn set_user_of(&self, key: usize, user: &str) {
        if let Some(c) = lock(&self.clients).get_mut(&key)
            && c.user.as_deref() != Some(user)
        {
            c.user = Some(user.into());
        }
    }

    fn touch(&self, client: &gst_rtsp_server::RTSPClient, busy: bool) {
        if let Some(c) = lock(&self.clients).get_mut(&(client.as_ptr() as usize)) {
            c.active_at = Instant::now();
            c.busy = busy;
        }
    }

    /// Key of a direct-path connection in the clients table (never a client object's
    /// address: those are below 2^63).
    fn direct_key(number: u64) -> usize {
        (number as usize) | (1usize << (usize::BITS - 1))
    }

    /// A connection of the direct path (`crate::direct`) opened: its number.
    pub fn direct_client_connected(&self) -> u64 {
        let n = self.next_client.fetch_add(1, Ordering::Relaxed);
        lock(&self.clients).insert(
            Self::direct_key(n),
            ClientState {
                number: n,
                active_at: Instant::now(),
                busy: false,
                user: None,
            },
        );
        n
    }

    /// The user a direct-path connection's latest request authenticated as.
    pub fn direct_client_user(&self, number: u64, user: &str) {
        self.set_user_of(Self::direct_key(number), user);
    }

    pub fn direct_client_closed(&self, number: u64) {
        lock(&self.clients).remove(&Self::direct_key(number));
    }

    /// A session of direct-path connection `client`: its opaque number (None: the session
    /// limit is reached).
    pub fn direct_session(&self, sid: &str, client: u64) -> Option<u64> {
        let mut t = lock(&self.sessions);
        let pool_sessions = self
            .server
            .upgrade()
            .and_then(|s| s.session_pool())
            .map_or(0, |p| p.n_sessions() as usize);
        if t.len().max(pool_sessions) >= self.limits.max_sessions as usize {
            return None;
        }
        t.insert(sid, client)
    }

    /// Whether a live session (of any connection) has this ID.
    pub fn session_exists(&self, sid: &str) -> bool {
        lock(&self.sessions).number(sid).is_some()
    }

    pub fn end_direct_session(&self, sid: &str) {
        lock(&self.sessions).remove(sid);
    }

    /// A `method` request from `ip` named another connection's session (454).
    pub fn count_refused_takeover(&self, method: &str, ip: &str) {
        self.refused_takeovers.fetch_add(1, Ordering::Relaxed);
        eprintln!("[rtsp] {method} from {ip}: names a session of another connection: 454");
    }

    /// A connection without a session stayed quiet for `idle_timeout` and is closed.
    pub fn count_idle_close(&self) {
        self.closed_idle.fetch_add(1, Ordering::Relaxed);
    }

    /// A new connection is refused: `n` connections are served already.
    pub fn count_refused_connection(&self, n: usize) {
        let c = self.refused_connections.fetch_add(1, Ordering::Relaxed);
        // One line per 100 refusals is enough to tell a flood.
        if c.is_multiple_of(100) {
            eprintln!(
                "[rtsp] {n} connections (max-rtsp-clients {}): closing new ones ({} so far)",
                self.limits.max_clients,
                c + 1
            );
        }
    }

    /// Closes the connections without a session that have been quiet (no request, no
    /// response) for `idle_timeout`. Called periodically by the gateway.
    pub fn close_idle(&self) {
        let Some(server) = self.server.upgrade() else {
            return;
        };
        let now = Instant::now();
        for c in server.client_filter(None) {
            let old = lock(&self.clients)
                .get(&(c.as_ptr() as usize))
                .is_some_and(|s| {
                    !s.busy && now.duration_since(s.active_at) >= self.limits.idle_timeout
                });
            if old && c.session_filter(None).is_empty() {
                self.closed_idle.fetch_add(1, Ordering::Relaxed);
                c.close();
            }
        }
    }
}

/// Sets auth, limits and session ownership on `server` (before it is attached).
pub fn install(
    server: &gst_rtsp_server::RTSPServer,
    users: Arc<Users>,
    limits: RtspLimits,
) -> Arc<RtspGuard> {
    let guard = Arc::new(RtspGuard {
        users,
        limits,
        sessions: Mutex::new(SessionTable::new(limits.max_sessions.max(1) as usize)),
        clients: Mutex::new(HashMap::new()),
        next_client: AtomicU64::new(1),
        refused_connections: AtomicU64::new(0),
        refused_takeovers: AtomicU64::new(0),
        closed_idle: AtomicU64::new(0),
        server: server.downgrade(),
        announce_gate: GateCell::default(),
    });
    server.set_backlog(limits.backlog);
    server.set_content_length_limit(limits.content_length_limit);
    if let Some(pool) = server.session_pool() {
        pool.set_max_sessions(limits.max_sessions);
        let weak = Arc::downgrade(&guard);
        pool.connect_session_removed(move |_, s| {
            if let (Some(g), Some(sid)) = (weak.upgrade(), s.sessionid()) {
                lock(&g.sessions).remove(&sid);
            }
        });
    }
    let auth = GatewayAuth::new(guard.clone());
    server.set_auth(Some(&auth));

    let weak = Arc::downgrade(&guard);
    server.connect_client_connected(move |_, client| {
        let Some(g) = weak.upgrade() else { return };
        client.set_content_length_limit(g.limits.content_length_limit);
        let n = g.next_client.fetch_add(1, Ordering::Relaxed);
        let key = client.as_ptr() as usize;
        lock(&g.clients).insert(
            key,
            ClientState {
                number: n,
                active_at: Instant::now(),
                busy: false,
                user: None,
            },
        );
        let w = Arc::downgrade(&g);
        client.connect("send-message", false, move |args| {
            if let (Some(g), Some(Ok(c))) = (
                w.upgrade(),
                args.first().map(|v| v.get::<gst_rtsp_server::RTSPClient>()),
            ) {
                g.touch(&c, false);
            }
            None
        });
        let w = Arc::downgrade(&g);
        client.connect_closed(move |_| {
            if let Some(g) = w.upgrade() {
                lock(&g.clients).remove(&key);
            }
        });
        let w = Arc::downgrade(&g);
        client.connect_new_session(move |_, s| {
            let (Some(g), Some(sid)) = (w.upgrade(), s.sessionid()) else {
                return;
            };
            if lock(&g.sessions).insert(&sid, n).is_none() {
                eprintln!("[rtsp] session table full: a new session belongs to nobody");
            }
        });
    });
    guard
}

/// The peer address of an RTSP connection (empty when unknown).
///
/// # Safety
/// `conn` is null or a live connection (of the current request or of a client we hold).
unsafe fn connection_ip(conn: *mut gst_rtsp::ffi::GstRTSPConnection) -> String {
    if conn.is_null() {
        return String::new();
    }
    // SAFETY: see above; the IP string is owned by the connection and copied at once.
    unsafe {
        let ip = gst_rtsp::ffi::gst_rtsp_connection_get_ip(conn);
        if ip.is_null() {
            return String::new();
        }
        std::ffi::CStr::from_ptr(ip).to_string_lossy().into_owned()
    }
}

/// The peer address of a client's connection (empty when unknown).
pub fn client_ip(c: &gst_rtsp_server::RTSPClient) -> String {
    // SAFETY: the connection belongs to the client, which we hold a reference to.
    unsafe {
        let conn = gst_rtsp_server::ffi::gst_rtsp_client_get_connection(c.to_glib_none().0);
        connection_ip(conn)
    }
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    // A link-local IPv6 peer may carry a `%scope`.
    s.split('%').next()?.parse().ok()
}

/// The raw context of a request (to read its fields the bindings do not expose).
pub(crate) fn raw_context(
    ctx: &gst_rtsp_server::RTSPContext,
) -> *mut gst_rtsp_server::ffi::GstRTSPContext {
    ctx.to_glib_none().0
}

/// The path a request names, without its leading `/` ("" when there is none), as
/// gst-rtsp-server matches mounts (undecoded): the mounted path the URL starts with (a SETUP
/// adds its stream's control, `live/x/stream=0`), else (an ANNOUNCE of a new path, or a path
/// nothing serves) the URL's whole path. Permissions and publishers see the whole path.
pub(crate) fn request_path(ctx: &gst_rtsp_server::RTSPContext) -> String {
    // SAFETY: the context is the current request's: its URL and server live as long as the
    // request; the mount points and the factory are references we take and give back; the
    // path is copied at once.
    unsafe {
        let c = raw_context(ctx);
        let uri = (*c).uri;
        if uri.is_null() || (*uri).abspath.is_null() {
            return String::new();
        }
        let full = std::ffi::CStr::from_ptr((*uri).abspath).to_bytes();
        let mut len = full.len();
        let server = (*c).server;
        if (*c).method != gst_rtsp::ffi::GST_RTSP_ANNOUNCE && !server.is_null() {
            let mounts = gst_rtsp_server::ffi::gst_rtsp_server_get_mount_points(server);
            if !mounts.is_null() {
                let mut matched: std::ffi::c_int = 0;
                let factory = gst_rtsp_server::ffi::gst_rtsp_mount_points_match(
                    mounts,
                    (*uri).abspath,
                    &mut matched,
                );
                if !factory.is_null() {
                    gst::glib::gobject_ffi::g_object_unref(factory.cast());
                    if let Ok(m) = usize::try_from(matched)
                        && m > 0
                    {
                        len = m.min(full.len());
                    }
                }
                gst::glib::gobject_ffi::g_object_unref(mounts.cast());
            }
        }
        let path = String::from_utf8_lossy(&full[..len]);
        path.strip_prefix('/').unwrap_or(&path).to_string()
    }
}

fn authorization(msg: &gst_rtsp::rtsp_message::RTSPMessage) -> Option<String> {
    header(msg, gst_rtsp::ffi::GST_RTSP_HDR_AUTHORIZATION)
}

/// The first value of a header of `msg`.
fn header(
    msg: &gst_rtsp::rtsp_message::RTSPMessage,
    field: gst_rtsp::ffi::GstRTSPHeaderField,
) -> Option<String> {
    let mut value: *mut std::ffi::c_char = std::ptr::null_mut();
    // SAFETY: the message is the request being handled; the value is owned by it and copied
    // at once.
    unsafe {
        let r =
            gst_rtsp::ffi::gst_rtsp_message_get_header(msg.to_glib_none().0, field, &mut value, 0);
        if r != gst_rtsp::ffi::GST_RTSP_OK || value.is_null() {
            return None;
        }
        Some(
            std::ffi::CStr::from_ptr(value)
                .to_string_lossy()
                .into_owned(),
        )
    }
}

/// Whether a request sends media to the gateway (needs `publish`, not `read`): ANNOUNCE,
/// RECORD, a SETUP in record mode, or any request of a session that records.
fn publishing(ctx: &gst_rtsp_server::RTSPContext, method: gst_rtsp::ffi::GstRTSPMethod) -> bool {
    if method & (gst_rtsp::ffi::GST_RTSP_ANNOUNCE | gst_rtsp::ffi::GST_RTSP_RECORD) != 0 {
        return true;
    }
    if method == gst_rtsp::ffi::GST_RTSP_SETUP
        && ctx
            .request()
            .and_then(|r| header(r, gst_rtsp::ffi::GST_RTSP_HDR_TRANSPORT))
            .is_some_and(|t| {
                t.to_ascii_lowercase().contains("mode=record")
                    || t.to_ascii_lowercase().contains("mode=\"record\"")
            })
    {
        return true;
    }
    ctx.session().is_some_and(|s| {
        s.filter(None).iter().any(|sm| {
            sm.media().is_some_and(|m| {
                m.transport_mode()
                    .contains(gst_rtsp_server::RTSPTransportMode::RECORD)
            })
        })
    })
}

fn method_name(method: gst_rtsp::ffi::GstRTSPMethod) -> String {
    // SAFETY: returns a static string (or NULL).
    unsafe {
        let p = gst_rtsp::ffi::gst_rtsp_method_as_text(method);
        if p.is_null() {
            return String::new();
        }
        std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

glib::wrapper! {
    pub struct GatewayAuth(ObjectSubclass<imp::GatewayAuth>)
        @extends gst_rtsp_server::RTSPAuth;
}

impl GatewayAuth {
    fn new(guard: Arc<RtspGuard>) -> GatewayAuth {
        let a: GatewayAuth = glib::Object::new();
        let _ = a.imp().guard.set(guard);
        a
    }
}

mod imp {
    use super::*;

    #[derive(Default)]
    pub struct GatewayAuth {
        pub(super) guard: OnceLock<Arc<RtspGuard>>,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for GatewayAuth {
        const NAME: &'static str = "GstIpcamGatewayAuth";
        type Type = super::GatewayAuth;
        type ParentType = gst_rtsp_server::RTSPAuth;
    }

    impl ObjectImpl for GatewayAuth {}

    impl RTSPAuthImpl for GatewayAuth {
        fn authenticate(&self, ctx: &gst_rtsp_server::RTSPContext) -> bool {
            self.identify(ctx).is_ok()
        }

        fn check(&self, ctx: &gst_rtsp_server::RTSPContext, check: &glib::GString) -> bool {
            let Some(g) = self.guard.get() else {
                return false;
            };
            match check.as_str() {
                "auth.check.connect" => self.check_connect(g),
                "auth.check.url" => {
                    if let Some(c) = ctx.client() {
                        g.touch(c, true);
                    }
                    self.check_ownership(g, ctx)
                        && self.check_request(g, ctx)
                        && self.check_announce(g, ctx)
                }
                c if c.starts_with("auth.check.media.factory.") => self.check_request(g, ctx),
                // Client-chosen multicast destinations and the like: never.
                "auth.check.transport.client-settings" => false,
                _ => false,
            }
        }

        fn generate_authenticate_header(&self, ctx: &gst_rtsp_server::RTSPContext) {
            if let (Some(g), Some(resp)) = (self.guard.get(), ctx.response()) {
                add_challenges(&g.users, resp, false);
            }
        }
    }

    fn add_challenges(users: &Users, resp: &gst_rtsp::rtsp_message::RTSPMessage, stale: bool) {
        resp.add_header(RTSPHeaderField::WwwAuthenticate, &users.basic_challenge());
        if users.has_digest() {
            resp.add_header(
                RTSPHeaderField::WwwAuthenticate,
                &users.digest_challenge(stale),
            );
        }
    }

    use super::raw_context as raw;

    impl GatewayAuth {
        /// A new connection: refused (closed at once) when `max_clients` are connected.
        fn check_connect(&self, g: &RtspGuard) -> bool {
            let Some(server) = g.server.upgrade() else {
                return false;
            };
            let n = server.client_filter(None).len();
            if n >= g.limits.max_clients as usize {
                g.count_refused_connection(n);
                return false;
            }
            true
        }

        /// A request naming a session: only from the connection that created it.
        fn check_ownership(&self, g: &RtspGuard, ctx: &gst_rtsp_server::RTSPContext) -> bool {
            let (Some(session), Some(client)) = (ctx.session(), ctx.client()) else {
                return true;
            };
            let Some(sid) = session.sessionid() else {
                return true;
            };
            let me = g.client_number(client);
            if me.is_some_and(|n| lock(&g.sessions).owned_by(&sid, n)) {
                return true;
            }
            // SAFETY: the context is the current request's.
            g.count_refused_takeover(
                &method_name(unsafe { (*raw(ctx)).method }),
                &client_ip(client),
            );
            // gst-rtsp-server already added it to this connection's sessions; take it out
            // so that closing this connection cannot end the owner's media.
            let _ = client.session_filter(Some(&mut |_, s| {
                if s == session {
                    gst_rtsp_server::RTSPFilterResult::Remove
                } else {
                    gst_rtsp_server::RTSPFilterResult::Keep
                }
            }));
            self.respond(g, ctx, RTSPStatusCode::SessionNotFound, false, false);
            false
        }

        fn ip(&self, ctx: &gst_rtsp_server::RTSPContext) -> Option<IpAddr> {
            // SAFETY: the context is the current request's; its connection outlives it.
            let conn = unsafe { (*raw(ctx)).conn };
            let s = if conn.is_null() {
                ctx.client().map(client_ip).unwrap_or_default()
            } else {
                // SAFETY: as above.
                unsafe { connection_ip(conn) }
            };
            parse_ip(&s)
        }

        fn identify(
            &self,
            ctx: &gst_rtsp_server::RTSPContext,
        ) -> Result<crate::auth::Identity, AuthError> {
            let g = self.guard.get().ok_or(AuthError::NoCredentials)?;
            let ip = self.ip(ctx).ok_or(AuthError::NoCredentials)?;
            // SAFETY: the context is the current request's.
            let method = method_name(unsafe { (*raw(ctx)).method });
            let header = ctx.request().and_then(authorization);
            g.users.authenticate(
                header.as_deref(),
                &Attempt {
                    protocol: Protocol::Rtsp,
                    method: &method,
                    ip,
                },
            )
        }

        /// Authentication and the path permission.
        fn check_request(&self, g: &RtspGuard, ctx: &gst_rtsp_server::RTSPContext) -> bool {
            // SAFETY: the context is the current request's.
            let method = unsafe { (*raw(ctx)).method };
            // OPTIONS tells nothing about any path: clients may ask before they authenticate.
            if method == gst_rtsp::ffi::GST_RTSP_OPTIONS {
                return true;
            }
            let id = match self.identify(ctx) {
                Ok(id) => id,
                Err(e) => {
                    self.respond(
                        g,
                        ctx,
                        RTSPStatusCode::Unauthorized,
                        true,
                        e == AuthError::StaleNonce,
                    );
                    return false;
                }
            };
            let action = if publishing(ctx, method) {
                Action::Publish
            } else {
                Action::Read
            };
            let path = request_path(ctx);
            if path.is_empty() || id.allows(action, &path) {
                if let Some(c) = ctx.client() {
                    g.set_user(c, id.user());
                }
                return true;
            }
            if id.is_anonymous() {
                // Anonymous may not: a user might.
                self.respond(g, ctx, RTSPStatusCode::Unauthorized, true, false);
            } else {
                eprintln!(
                    "[rtsp] user {} may not {action:?} {}: 403",
                    id.user(),
                    gstgb28181::core::id::printable(&path)
                );
                self.respond(g, ctx, RTSPStatusCode::Forbidden, false, false);
            }
            false
        }

        /// An ANNOUNCE its user may publish: the gateway's registry decides (a refusal is
        /// answered here, with its reason).
        fn check_announce(&self, g: &RtspGuard, ctx: &gst_rtsp_server::RTSPContext) -> bool {
            // SAFETY: the context is the current request's.
            if unsafe { (*raw(ctx)).method } != gst_rtsp::ffi::GST_RTSP_ANNOUNCE {
                return true;
            }
            let Some(gate) = g.announce_gate.0.get() else {
                return true;
            };
            let Err((code, reason)) = gate(ctx) else {
                return true;
            };
            let ip = ctx.client().map(client_ip).unwrap_or_default();
            eprintln!(
                "[rtsp] ANNOUNCE from {ip} refused ({}): {reason}",
                code.into_glib()
            );
            let (Some(resp), Some(client)) = (ctx.response(), ctx.client()) else {
                return false;
            };
            let reason =
                std::ffi::CString::new(reason.replace(['\r', '\n'], " ")).unwrap_or_default();
            // SAFETY: the response and request are the current request's; the reason is
            // copied by the call.
            unsafe {
                gst_rtsp::ffi::gst_rtsp_message_init_response(
                    resp.to_glib_none().0,
                    code.into_glib(),
                    reason.as_ptr(),
                    ctx.request()
                        .map_or(std::ptr::null(), |r| r.to_glib_none().0),
                );
            }
            let _ = client.send_message(resp, ctx.session());
            false
        }

        fn respond(
            &self,
            g: &RtspGuard,
            ctx: &gst_rtsp_server::RTSPContext,
            code: RTSPStatusCode,
            challenge: bool,
            stale: bool,
        ) {
            let (Some(resp), Some(client)) = (ctx.response(), ctx.client()) else {
                return;
            };
            resp.init_response(code, ctx.request());
            if challenge {
                add_challenges(&g.users, resp, stale);
            }
            let _ = client.send_message(resp, ctx.session());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_table() {
        let mut t = SessionTable::new(2);
        let a = t.insert("s1", 1).unwrap();
        let b = t.insert("s2", 2).unwrap();
        assert_ne!(a, b);
        assert!(t.owned_by("s1", 1));
        assert!(!t.owned_by("s1", 2));
        assert!(!t.owned_by("nope", 1));
        assert_eq!(t.insert("s3", 1), None, "bounded");
        assert_eq!(t.client_of(b), Some(2));
        assert_eq!(t.client_of(a + b + 100), None);
        assert_eq!(t.number("s2"), Some(b));
        t.remove("s1");
        assert!(!t.owned_by("s1", 1));
        assert!(t.insert("s3", 1).is_some());
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn ip_forms() {
        assert_eq!(parse_ip("127.0.0.1"), Some(IpAddr::from([127, 0, 0, 1])));
        assert_eq!(parse_ip("fe80::1%eth0"), "fe80::1".parse().ok());
        assert_eq!(parse_ip(""), None);
    }
}

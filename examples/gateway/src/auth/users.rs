//! The user table, identities and permissions, and authentication with its cache and limiter.

use super::hash::{Secret, ct_eq};
use super::header::{Authorization, MAX_USER_LEN};
use gst_ipcam_common::sync::{lock, read, write};
use gstgb28181::core::digest::{self, NonceIssuer, NonceStatus};
use gstgb28181::core::id::printable;
use gstgb28181::core::ratelimit::{FailureLimiter, LimiterConfig, Verdict};
use ipnet::IpNet;
use regex::{Regex, RegexBuilder};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

/// Bounds on what a config may declare.
pub const MAX_USERS: usize = 1000;
const MAX_TOKENS: usize = 16;
const MAX_IPS: usize = 64;
const MAX_PERMISSIONS: usize = 64;
const MAX_PATH_LEN: usize = 256;
/// Successful verifications remembered, and for how long.
pub const CACHE_MAX: usize = 4096;
pub const CACHE_TTL_MS: u64 = 60_000;
/// Lifetime of a Digest nonce.
const NONCE_MAX_AGE_MS: u64 = 5 * 60_000;

/// What a user may do on a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Play a live path (RTSP DESCRIBE/SETUP/PLAY, HLS).
    Read,
    /// Send a stream to a path.
    Publish,
    /// Recordings.
    Playback,
    /// The HTTP API.
    Api,
    /// /metrics.
    Metrics,
}

/// One `{action, path}` of a user's `permissions`: path empty = every path, `~re` = a
/// regular expression (unanchored, as in MediaMTX), else an exact path name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermissionConfig {
    pub action: Action,
    #[serde(default)]
    pub path: String,
}

/// One `[[users]]` table of the config file.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub user: String,
    /// `argon2:$argon2id$...` or `sha256:<salt>:<hex>`; empty only for the user `any`.
    #[serde(default)]
    pub pass: String,
    /// MD5(user:realm:pass) in hex: enables RTSP Digest for this user.
    #[serde(default)]
    pub digest_ha1: String,
    /// Hashed bearer tokens (same forms as `pass`).
    #[serde(default)]
    pub tokens: Vec<String>,
    /// Source networks allowed (CIDR or single address); empty = any source.
    #[serde(default)]
    pub ips: Vec<String>,
    #[serde(default)]
    pub permissions: Vec<PermissionConfig>,
}

impl UserConfig {
    /// A user with `pass` stored as salted SHA-256 (fast to verify: tests, tools) and its
    /// Digest HA1 for [`super::REALM`], with these permissions.
    pub fn with_password(
        user: &str,
        pass: &str,
        permissions: &[(Action, &str)],
    ) -> Result<UserConfig, String> {
        Ok(UserConfig {
            user: user.to_string(),
            pass: super::hash::hash_sha256(pass)?,
            digest_ha1: super::hash::digest_ha1(user, super::REALM, pass),
            permissions: permissions
                .iter()
                .map(|(action, path)| PermissionConfig {
                    action: *action,
                    path: path.to_string(),
                })
                .collect(),
            ..Default::default()
        })
    }
}

#[derive(Debug)]
enum PathPattern {
    All,
    Exact(String),
    Regex(Regex),
}

impl PathPattern {
    fn parse(p: &str) -> Result<PathPattern, String> {
        if p.len() > MAX_PATH_LEN {
            return Err(format!("path pattern longer than {MAX_PATH_LEN}"));
        }
        if p.is_empty() {
            return Ok(PathPattern::All);
        }
        if let Some(re) = p.strip_prefix('~') {
            return RegexBuilder::new(re)
                .size_limit(1 << 20)
                .build()
                .map(PathPattern::Regex)
                .map_err(|e| format!("path pattern {p:?}: {e}"));
        }
        Ok(PathPattern::Exact(p.trim_start_matches('/').to_string()))
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            PathPattern::All => true,
            PathPattern::Exact(e) => e == path.trim_start_matches('/'),
            PathPattern::Regex(r) => r.is_match(path.trim_start_matches('/')),
        }
    }
}

#[derive(Debug)]
struct Permissions(Vec<(Action, PathPattern)>);

/// Who a request comes from, after authentication.
#[derive(Debug, Clone)]
pub struct Identity {
    user: Arc<str>,
    permissions: Arc<Permissions>,
}

impl Identity {
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The explicit anonymous user `any` (no credentials were presented).
    pub fn is_anonymous(&self) -> bool {
        &*self.user == "any"
    }

    /// Whether this identity may do `action` on `path` (a path name such as a channel ID,
    /// with or without a leading `/`; empty for actions without a path, like metrics).
    pub fn allows(&self, action: Action, path: &str) -> bool {
        self.permissions
            .0
            .iter()
            .any(|(a, p)| *a == action && p.matches(path))
    }
}

/// Which server asks (for logs and the failure counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Rtsp,
    Http,
    Rtmp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Rtsp => "rtsp",
            Protocol::Http => "http",
            Protocol::Rtmp => "rtmp",
        }
    }
}

/// One request to authenticate.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    pub protocol: Protocol,
    /// Request method (Digest hashes it): `DESCRIBE`, `GET`, ...
    pub method: &'a str,
    pub ip: IpAddr,
}

/// Why a request was not authenticated. Every variant is answered with 401.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization` and no anonymous user (not a failure: the normal first request).
    NoCredentials,
    Malformed(super::header::HeaderError),
    UnknownUser,
    WrongPassword,
    /// Right credentials from a source outside the user's `ips`.
    IpNotAllowed,
    /// A Digest nonce of ours that expired: the client retries with a new one.
    StaleNonce,
    /// Too many failures from this source: blocked for this many more ms, nothing verified.
    Blocked(u64),
}

impl AuthError {
    /// Whether this counts as a failed attempt (logged, counted, rate-limited).
    pub fn is_failure(&self) -> bool {
        !matches!(self, AuthError::NoCredentials | AuthError::StaleNonce)
    }
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthError::NoCredentials => write!(f, "no credentials"),
            AuthError::Malformed(e) => write!(f, "{e}"),
            AuthError::UnknownUser => write!(f, "unknown user"),
            AuthError::WrongPassword => write!(f, "wrong password or token"),
            AuthError::IpNotAllowed => write!(f, "source address not allowed for this user"),
            AuthError::StaleNonce => write!(f, "stale Digest nonce"),
            AuthError::Blocked(ms) => write!(f, "source blocked for {ms} ms after failures"),
        }
    }
}

#[derive(Debug)]
struct User {
    identity: Identity,
    pass: Option<Secret>,
    digest_ha1: Option<String>,
    tokens: Vec<Secret>,
    ips: Vec<IpNet>,
}

impl User {
    fn allows_ip(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.ips.is_empty() || self.ips.iter().any(|n| n.contains(&ip))
    }
}

/// `::ffff:a.b.c.d` (an IPv4 client on a dual-stack socket) as `a.b.c.d`.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fn check_user_name(u: &str) -> Result<(), String> {
    if u.is_empty() || u.len() > MAX_USER_LEN {
        return Err(format!("user name of 1 to {MAX_USER_LEN} bytes expected"));
    }
    if !u
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
    {
        return Err(format!(
            "user {}: only A-Z a-z 0-9 - _ . @ allowed",
            printable(u)
        ));
    }
    Ok(())
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map(|n| match n {
            IpNet::V6(v6) => match v6.addr().to_ipv4_mapped() {
                Some(v4) => IpNet::V4(
                    ipnet::Ipv4Net::new(v4, v6.prefix_len().saturating_sub(96))
                        .unwrap_or_else(|_| v4.into()),
                ),
                None => n,
            },
            n => n,
        })
        .map_err(|_| format!("ips: {} is not an address or CIDR range", printable(s)))
}

impl User {
    fn from_config(c: &UserConfig) -> Result<User, String> {
        check_user_name(&c.user)?;
        let ctx = |e: String| format!("user {}: {e}", c.user);
        let anonymous = c.user == "any";
        if anonymous && (!c.pass.is_empty() || !c.tokens.is_empty() || !c.digest_ha1.is_empty()) {
            return Err(ctx(
                "the anonymous user `any` takes no pass, tokens or digest_ha1".into(),
            ));
        }
        if !anonymous && c.pass.is_empty() && c.tokens.is_empty() {
            return Err(ctx("pass or tokens expected".into()));
        }
        let pass = (!c.pass.is_empty())
            .then(|| Secret::parse(&c.pass))
            .transpose()
            .map_err(ctx)?;
        let digest_ha1 = if c.digest_ha1.is_empty() {
            None
        } else if c.digest_ha1.len() == 32 && c.digest_ha1.bytes().all(|b| b.is_ascii_hexdigit()) {
            Some(c.digest_ha1.to_ascii_lowercase())
        } else {
            return Err(ctx("digest_ha1: 32 hex digits expected".into()));
        };
        if c.tokens.len() > MAX_TOKENS || c.ips.len() > MAX_IPS {
            return Err(ctx(format!(
                "at most {MAX_TOKENS} tokens and {MAX_IPS} ips"
            )));
        }
        if c.permissions.len() > MAX_PERMISSIONS {
            return Err(ctx(format!("at most {MAX_PERMISSIONS} permissions")));
        }
        let tokens = c
            .tokens
            .iter()
            .map(|t| Secret::parse(t))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ctx(format!("tokens: {e}")))?;
        let ips = c
            .ips
            .iter()
            .map(|s| parse_net(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ctx)?;
        let permissions = c
            .permissions
            .iter()
            .map(|p| PathPattern::parse(&p.path).map(|pat| (p.action, pat)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ctx)?;
        Ok(User {
            identity: Identity {
                user: c.user.as_str().into(),
                permissions: Arc::new(Permissions(permissions)),
            },
            pass,
            digest_ha1,
            tokens,
            ips,
        })
    }
}

struct State {
    /// Hash of presented credentials → (table generation, user index, expiry ms).
    cache: HashMap<[u8; 32], (u64, usize, u64)>,
    limiter: FailureLimiter,
}

/// One version of the configured users; [`Users::replace`] swaps in a new one.
struct Table {
    /// Distinguishes cache entries of an older table (never used with a newer one).
    generation: u64,
    users: Vec<User>,
    by_name: HashMap<String, usize>,
    anonymous: Option<usize>,
}

impl Table {
    fn build(users: &[UserConfig], generation: u64) -> Result<Table, String> {
        if users.len() > MAX_USERS {
            return Err(format!("users: at most {MAX_USERS}"));
        }
        let mut table = Vec::with_capacity(users.len());
        let mut by_name = HashMap::new();
        for c in users {
            let u = User::from_config(c)?;
            if by_name.insert(c.user.clone(), table.len()).is_some() {
                return Err(format!("user {}: listed twice", c.user));
            }
            table.push(u);
        }
        Ok(Table {
            generation,
            anonymous: by_name.get("any").copied(),
            users: table,
            by_name,
        })
    }
}

/// The user table. Shared (`Arc<Users>`) by every server; all methods take `&self`. The
/// users can be replaced while running ([`Users::replace`]); the failure limiter, counters
/// and Digest nonces stay.
pub struct Users {
    table: RwLock<Arc<Table>>,
    realm: String,
    nonces: NonceIssuer,
    /// Keys the cache's hashes so a memory dump does not give testable password hashes.
    cache_key: [u8; 32],
    epoch: Instant,
    state: Mutex<State>,
    failures: [AtomicU64; 3],
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Users")
            .field("users", &self.table().by_name.keys().collect::<Vec<_>>())
            .field("realm", &self.realm)
            .finish_non_exhaustive()
    }
}

impl Users {
    /// Builds the table; any invalid entry is an error naming it. `realm` is the Digest realm
    /// (`digest_ha1` values must have been made with it) and the Basic realm.
    pub fn from_config(users: &[UserConfig], realm: &str) -> Result<Users, String> {
        Users::with_limiter(users, realm, LimiterConfig::default())
    }

    /// [`Users::from_config`] with a given failure limiter configuration.
    pub fn with_limiter(
        users: &[UserConfig],
        realm: &str,
        limiter: LimiterConfig,
    ) -> Result<Users, String> {
        if realm.is_empty()
            || realm.len() > 64
            || !realm
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        {
            return Err("realm: 1 to 64 printable characters without quotes".into());
        }
        let table = Table::build(users, 0)?;
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| format!("getrandom: {e}"))?;
        let mut cache_key = [0u8; 32];
        getrandom::fill(&mut cache_key).map_err(|e| format!("getrandom: {e}"))?;
        Ok(Users {
            table: RwLock::new(Arc::new(table)),
            realm: realm.to_string(),
            nonces: NonceIssuer::new(&secret, NONCE_MAX_AGE_MS),
            cache_key,
            epoch: Instant::now(),
            state: Mutex::new(State {
                cache: HashMap::new(),
                limiter: FailureLimiter::new(limiter),
            }),
            failures: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
        })
    }

    /// Replaces the users (all checked first: on an error nothing changes). Requests
    /// authenticated from now on use the new table; remembered verifications of the old one
    /// are dropped. The failure limiter, counters and Digest nonces are kept.
    pub fn replace(&self, users: &[UserConfig]) -> Result<(), String> {
        let mut slot = write(&self.table);
        let table = Table::build(users, slot.generation.wrapping_add(1))?;
        *slot = Arc::new(table);
        drop(slot);
        self.lock().cache.clear();
        Ok(())
    }

    fn table(&self) -> Arc<Table> {
        read(&self.table).clone()
    }

    pub fn len(&self) -> usize {
        self.table().users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table().users.is_empty()
    }

    /// The configured user names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut n: Vec<String> = self.table().by_name.keys().cloned().collect();
        n.sort();
        n
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// Whether any user has a `digest_ha1` (then a 401 offers Digest too).
    pub fn has_digest(&self) -> bool {
        self.table().users.iter().any(|u| u.digest_ha1.is_some())
    }

    /// Users with a password but no `digest_ha1` while others have one: clients that prefer
    /// Digest when it is offered (ffmpeg, VLC) cannot log in as them.
    pub fn without_digest(&self) -> Vec<String> {
        if !self.has_digest() {
            return Vec::new();
        }
        self.table()
            .users
            .iter()
            .filter(|u| u.pass.is_some() && u.digest_ha1.is_none())
            .map(|u| u.identity.user().to_string())
            .collect()
    }

    /// Failed attempts so far (for `auth_failures_total{protocol}`).
    pub fn failures(&self, protocol: Protocol) -> u64 {
        self.failures[protocol as usize].load(Ordering::Relaxed)
    }

    /// Attempts refused unverified because their source was blocked after failures.
    pub fn blocked(&self) -> u64 {
        self.lock().limiter.refused
    }

    /// Successful verifications remembered now (bounded by [`CACHE_MAX`]).
    pub fn cached(&self) -> usize {
        self.lock().cache.len()
    }

    /// The `WWW-Authenticate` value offering Basic.
    pub fn basic_challenge(&self) -> String {
        format!("Basic realm=\"{}\"", self.realm)
    }

    /// The `WWW-Authenticate` value offering Digest (MD5, qop=auth) with a fresh nonce.
    pub fn digest_challenge(&self, stale: bool) -> String {
        digest::Challenge {
            realm: self.realm.clone(),
            nonce: self.nonces.issue(&self.realm, self.now_ms()),
            qop_auth: true,
            stale,
            opaque: None,
        }
        .to_header_value()
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Authenticates one request: `authorization` is its `Authorization` value (None: none
    /// sent, then the anonymous user `any` if there is one). Failures are logged (user name
    /// made printable, source IP), counted and rate-limited per source IP.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        attempt: &Attempt,
    ) -> Result<Identity, AuthError> {
        let r = self.authenticate_at(authorization, attempt, self.now_ms());
        if let Err(e) = &r
            && e.is_failure()
        {
            self.failures[attempt.protocol as usize].fetch_add(1, Ordering::Relaxed);
            // A blocked source is counted, not logged line by line (no log flooding).
            if matches!(e, AuthError::Blocked(_)) {
                return r;
            }
            let user = authorization
                .and_then(|v| Authorization::parse(v).ok())
                .and_then(|a| a.user().map(printable))
                .unwrap_or_else(|| "-".into());
            eprintln!(
                "[auth] {} {} from {}: user {user}: {e}",
                attempt.protocol.as_str(),
                printable(attempt.method),
                attempt.ip
            );
        }
        r
    }

    fn authenticate_at(
        &self,
        authorization: Option<&str>,
        attempt: &Attempt,
        now_ms: u64,
    ) -> Result<Identity, AuthError> {
        let t = self.table();
        let Some(value) = authorization else {
            // Anonymous access from outside `any`'s ranges is just a request for credentials.
            return match t.anonymous.map(|i| &t.users[i]) {
                Some(u) if u.allows_ip(attempt.ip) => Ok(u.identity.clone()),
                _ => Err(AuthError::NoCredentials),
            };
        };
        let parsed = match Authorization::parse(value) {
            Ok(a) => a,
            Err(e) => {
                self.record_failure(attempt.ip, now_ms);
                return Err(AuthError::Malformed(e));
            }
        };
        match parsed {
            Authorization::Basic { user, pass } => {
                self.basic_at(&t, &user, &pass, attempt.ip, now_ms)
            }
            Authorization::Bearer(token) => self.bearer_at(&t, &token, attempt.ip, now_ms),
            Authorization::Digest(c) => self.digest_at(&t, &c, attempt.method, attempt.ip, now_ms),
        }
    }

    /// Basic credentials (already decoded). Prefer [`Users::authenticate`], which also logs
    /// and counts failures.
    pub fn authenticate_basic(
        &self,
        user: &str,
        pass: &str,
        ip: IpAddr,
    ) -> Result<Identity, AuthError> {
        self.basic_at(&self.table(), user, pass, ip, self.now_ms())
    }

    /// A bearer token. Prefer [`Users::authenticate`], which also logs and counts failures.
    pub fn authenticate_bearer(&self, token: &str, ip: IpAddr) -> Result<Identity, AuthError> {
        self.bearer_at(&self.table(), token, ip, self.now_ms())
    }

    fn cache_hash(&self, kind: &[u8], user: &str, secret: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.cache_key);
        h.update(kind);
        h.update([0]);
        h.update(user.as_bytes());
        h.update([0]);
        h.update(secret.as_bytes());
        h.finalize().into()
    }

    fn cached_user(&self, t: &Table, key: &[u8; 32], now_ms: u64) -> Option<usize> {
        let st = self.lock();
        st.cache
            .get(key)
            .filter(|(g, _, exp)| *g == t.generation && *exp > now_ms)
            .map(|(_, i, _)| *i)
    }

    fn remember(&self, t: &Table, key: [u8; 32], user: usize, ip: IpAddr, now_ms: u64) {
        let mut st = self.lock();
        st.limiter.record_success(ip);
        if st.cache.len() >= CACHE_MAX && !st.cache.contains_key(&key) {
            st.cache.retain(|_, (_, _, exp)| *exp > now_ms);
            if st.cache.len() >= CACHE_MAX {
                // Still full of live entries: start again rather than grow.
                st.cache.clear();
            }
        }
        st.cache.insert(
            key,
            (t.generation, user, now_ms.saturating_add(CACHE_TTL_MS)),
        );
    }

    fn record_failure(&self, ip: IpAddr, now_ms: u64) {
        self.lock().limiter.record_failure(ip, now_ms);
    }

    fn check_limiter(&self, ip: IpAddr, now_ms: u64) -> Result<(), AuthError> {
        match self.lock().limiter.check(ip, now_ms) {
            Verdict::Allowed => Ok(()),
            Verdict::Blocked(ms) => Err(AuthError::Blocked(ms)),
        }
    }

    /// The user's identity if `ip` is allowed for them.
    fn admit(&self, t: &Table, i: usize, ip: IpAddr, now_ms: u64) -> Result<Identity, AuthError> {
        let u = &t.users[i];
        if u.allows_ip(ip) {
            Ok(u.identity.clone())
        } else {
            self.record_failure(ip, now_ms);
            Err(AuthError::IpNotAllowed)
        }
    }

    fn basic_at(
        &self,
        t: &Table,
        user: &str,
        pass: &str,
        ip: IpAddr,
        now_ms: u64,
    ) -> Result<Identity, AuthError> {
        let key = self.cache_hash(b"basic", user, pass);
        if let Some(i) = self.cached_user(t, &key, now_ms) {
            return self.admit(t, i, ip, now_ms);
        }
        self.check_limiter(ip, now_ms)?;
        let Some(&i) = t.by_name.get(user) else {
            self.record_failure(ip, now_ms);
            return Err(AuthError::UnknownUser);
        };
        let u = &t.users[i];
        if !u.allows_ip(ip) {
            self.record_failure(ip, now_ms);
            return Err(AuthError::IpNotAllowed);
        }
        // The slow part runs with no lock held.
        if u.pass.as_ref().is_some_and(|s| s.verify(pass.as_bytes())) {
            self.remember(t, key, i, ip, now_ms);
            Ok(u.identity.clone())
        } else {
            self.record_failure(ip, now_ms);
            Err(AuthError::WrongPassword)
        }
    }

    fn bearer_at(
        &self,
        t: &Table,
        token: &str,
        ip: IpAddr,
        now_ms: u64,
    ) -> Result<Identity, AuthError> {
        let key = self.cache_hash(b"bearer", "", token);
        if let Some(i) = self.cached_user(t, &key, now_ms) {
            return self.admit(t, i, ip, now_ms);
        }
        self.check_limiter(ip, now_ms)?;
        let found = t
            .users
            .iter()
            .position(|u| u.tokens.iter().any(|t| t.verify(token.as_bytes())));
        match found {
            Some(i) => {
                let r = self.admit(t, i, ip, now_ms)?;
                self.remember(t, key, i, ip, now_ms);
                Ok(r)
            }
            None => {
                self.record_failure(ip, now_ms);
                Err(AuthError::WrongPassword)
            }
        }
    }

    fn digest_at(
        &self,
        t: &Table,
        c: &digest::Credentials,
        method: &str,
        ip: IpAddr,
        now_ms: u64,
    ) -> Result<Identity, AuthError> {
        self.check_limiter(ip, now_ms)?;
        let Some((i, ha1)) = t
            .by_name
            .get(&c.username)
            .and_then(|&i| t.users[i].digest_ha1.as_deref().map(|h| (i, h)))
        else {
            self.record_failure(ip, now_ms);
            return Err(AuthError::UnknownUser);
        };
        if !ct_eq(c.realm.as_bytes(), self.realm.as_bytes()) {
            self.record_failure(ip, now_ms);
            return Err(AuthError::WrongPassword);
        }
        match self.nonces.check(&c.nonce, &self.realm, now_ms) {
            NonceStatus::Fresh => {}
            NonceStatus::Stale => return Err(AuthError::StaleNonce),
            NonceStatus::Foreign => {
                self.record_failure(ip, now_ms);
                return Err(AuthError::WrongPassword);
            }
        }
        if !digest::verify_response_ha1(c, method, ha1) {
            self.record_failure(ip, now_ms);
            return Err(AuthError::WrongPassword);
        }
        let r = self.admit(t, i, ip, now_ms)?;
        self.lock().limiter.record_success(ip);
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::hash::{digest_ha1, hash_password, hash_sha256};
    use crate::auth::header::basic_value;

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn user(name: &str, pass: &str, perms: &[(Action, &str)]) -> UserConfig {
        UserConfig {
            user: name.into(),
            pass: hash_sha256(pass).unwrap(),
            permissions: perms
                .iter()
                .map(|(a, p)| PermissionConfig {
                    action: *a,
                    path: p.to_string(),
                })
                .collect(),
            ..Default::default()
        }
    }

    fn attempt(ip: IpAddr) -> Attempt<'static> {
        Attempt {
            protocol: Protocol::Rtsp,
            method: "DESCRIBE",
            ip,
        }
    }

    #[test]
    fn basic_and_permissions() {
        let users = Users::from_config(
            &[
                user("alice", "pw1", &[(Action::Read, "")]),
                user(
                    "bob",
                    "pw2",
                    &[(Action::Read, "cam1"), (Action::Read, "~^34")],
                ),
                user("ops", "pw3", &[(Action::Metrics, ""), (Action::Api, "")]),
            ],
            "gst-ipcam",
        )
        .unwrap();
        let a = attempt(LOCAL);
        let alice = users
            .authenticate(Some(&basic_value("alice", "pw1")), &a)
            .unwrap();
        assert_eq!(alice.user(), "alice");
        assert!(alice.allows(Action::Read, "/anything"));
        assert!(!alice.allows(Action::Publish, "anything"));
        let bob = users
            .authenticate(Some(&basic_value("bob", "pw2")), &a)
            .unwrap();
        assert!(bob.allows(Action::Read, "cam1"));
        assert!(bob.allows(Action::Read, "/34020000001320000001"));
        assert!(!bob.allows(Action::Read, "cam2"));
        let ops = users
            .authenticate(Some(&basic_value("ops", "pw3")), &a)
            .unwrap();
        assert!(ops.allows(Action::Metrics, ""));
        assert!(!ops.allows(Action::Read, "cam1"));
        assert_eq!(
            users
                .authenticate(Some(&basic_value("alice", "pw2")), &a)
                .unwrap_err(),
            AuthError::WrongPassword
        );
        assert_eq!(
            users
                .authenticate(Some(&basic_value("carol", "pw1")), &a)
                .unwrap_err(),
            AuthError::UnknownUser
        );
        assert_eq!(
            users.authenticate(None, &a).unwrap_err(),
            AuthError::NoCredentials
        );
        assert!(matches!(
            users.authenticate(Some("Basic !"), &a).unwrap_err(),
            AuthError::Malformed(_)
        ));
        assert_eq!(users.failures(Protocol::Rtsp), 3);
        assert_eq!(users.failures(Protocol::Http), 0);
    }

    #[test]
    fn anonymous_only_when_explicit() {
        let any = UserConfig {
            user: "any".into(),
            permissions: vec![PermissionConfig {
                action: Action::Read,
                path: "public".into(),
            }],
            ..Default::default()
        };
        let users = Users::from_config(std::slice::from_ref(&any), "r").unwrap();
        let id = users.authenticate(None, &attempt(LOCAL)).unwrap();
        assert!(id.is_anonymous());
        let mut ranged = any.clone();
        ranged.ips = vec!["10.0.0.0/8".into()];
        let ranged = Users::from_config(&[ranged], "r").unwrap();
        assert_eq!(
            ranged.authenticate(None, &attempt(LOCAL)).unwrap_err(),
            AuthError::NoCredentials
        );
        assert_eq!(ranged.failures(Protocol::Rtsp), 0);
        assert!(id.allows(Action::Read, "public"));
        assert!(!id.allows(Action::Read, "private"));
        let mut bad = any;
        bad.pass = hash_sha256("x").unwrap();
        assert!(Users::from_config(&[bad], "r").is_err());
    }

    #[test]
    fn ip_ranges() {
        let mut u = user("v6only", "pw", &[(Action::Read, "")]);
        u.ips = vec!["::1/128".into(), "10.0.0.0/8".into()];
        let users = Users::from_config(&[u], "r").unwrap();
        let h = basic_value("v6only", "pw");
        assert_eq!(
            users.authenticate(Some(&h), &attempt(LOCAL)).unwrap_err(),
            AuthError::IpNotAllowed
        );
        assert!(
            users
                .authenticate(Some(&h), &attempt("::1".parse().unwrap()))
                .is_ok()
        );
        assert!(
            users
                .authenticate(Some(&h), &attempt("10.2.3.4".parse().unwrap()))
                .is_ok()
        );
        assert!(
            users
                .authenticate(Some(&h), &attempt("::ffff:10.2.3.4".parse().unwrap()))
                .is_ok()
        );
        // A cached success still checks the address.
        assert_eq!(
            users.authenticate(Some(&h), &attempt(LOCAL)).unwrap_err(),
            AuthError::IpNotAllowed
        );
        let mut bad = user("x", "pw", &[]);
        bad.ips = vec!["10.0.0.0/33".into()];
        assert!(Users::from_config(&[bad], "r").is_err());
    }

    #[test]
    fn failures_are_rate_limited_and_successes_cached() {
        let mut u = user("alice", "pw", &[(Action::Read, "")]);
        u.pass = hash_password("pw").unwrap();
        let users = Users::with_limiter(
            &[u],
            "r",
            LimiterConfig {
                free_failures: 2,
                base_block_ms: 10_000,
                ..LimiterConfig::default()
            },
        )
        .unwrap();
        let bad = attempt("192.0.2.1".parse().unwrap());
        let good = basic_value("alice", "pw");
        for _ in 0..3 {
            assert_eq!(
                users
                    .authenticate_at(Some(&basic_value("alice", "no")), &bad, 0)
                    .unwrap_err(),
                AuthError::WrongPassword
            );
        }
        // Blocked: nothing is verified, even the right password.
        assert!(matches!(
            users.authenticate_at(Some(&good), &bad, 1),
            Err(AuthError::Blocked(_))
        ));
        assert!(users.authenticate_at(Some(&good), &bad, 20_000).is_ok());
        // Another source is not affected; the second success is a cache hit (fast).
        let other = attempt(LOCAL);
        assert!(users.authenticate_at(Some(&good), &other, 20_000).is_ok());
        let t = Instant::now();
        for _ in 0..100 {
            assert!(users.authenticate_at(Some(&good), &other, 20_001).is_ok());
        }
        assert!(t.elapsed().as_millis() < 500, "{:?}", t.elapsed());
        assert_eq!(users.cached(), 1);
        // Expired: verified again, still right.
        assert!(
            users
                .authenticate_at(Some(&good), &other, 20_000 + CACHE_TTL_MS + 1)
                .is_ok()
        );
    }

    #[test]
    fn replace_swaps_users_at_once_and_keeps_the_old_on_error() {
        let users = Users::from_config(&[user("a", "pw", &[])], "r").unwrap();
        let a = basic_value("a", "pw");
        let b = basic_value("b", "pw2");
        let at = attempt(LOCAL);
        // Verified once: remembered in the cache.
        assert!(users.authenticate_at(Some(&a), &at, 1).is_ok());
        assert_eq!(users.cached(), 1);
        users.replace(&[user("b", "pw2", &[])]).unwrap();
        assert_eq!(users.names(), vec!["b".to_string()]);
        // The removed user is refused at once, even with a verification remembered.
        assert!(matches!(
            users.authenticate_at(Some(&a), &at, 2),
            Err(AuthError::UnknownUser)
        ));
        assert!(users.authenticate_at(Some(&b), &at, 3).is_ok());
        // An invalid table (a user twice) changes nothing.
        let err = users
            .replace(&[user("c", "x", &[]), user("c", "y", &[])])
            .unwrap_err();
        assert!(err.contains("twice"), "{err}");
        assert_eq!(users.names(), vec!["b".to_string()]);
        assert!(users.authenticate_at(Some(&b), &at, 4).is_ok());
    }

    #[test]
    fn cache_is_bounded() {
        let users = Users::from_config(&[user("a", "pw", &[])], "r").unwrap();
        for i in 0..(CACHE_MAX + 10) {
            users.remember(
                &users.table(),
                [
                    i as u8,
                    (i >> 8) as u8,
                    1,
                    2,
                    3,
                    4,
                    5,
                    6,
                    7,
                    8,
                    9,
                    10,
                    11,
                    12,
                    13,
                    14,
                    15,
                    16,
                    17,
                    18,
                    19,
                    20,
                    21,
                    22,
                    23,
                    24,
                    25,
                    26,
                    27,
                    28,
                    29,
                    30,
                ],
                0,
                LOCAL,
                i as u64,
            );
        }
        assert!(users.cached() <= CACHE_MAX);
    }

    #[test]
    fn bearer_tokens() {
        let mut u = user("svc", "pw", &[(Action::Metrics, "")]);
        u.tokens = vec![hash_sha256("tok-123").unwrap()];
        let users = Users::from_config(&[u], "r").unwrap();
        let a = Attempt {
            protocol: Protocol::Http,
            method: "GET",
            ip: LOCAL,
        };
        let id = users.authenticate(Some("Bearer tok-123"), &a).unwrap();
        assert_eq!(id.user(), "svc");
        assert!(users.authenticate_bearer("tok-123", LOCAL).is_ok());
        assert_eq!(
            users.authenticate(Some("Bearer tok-124"), &a).unwrap_err(),
            AuthError::WrongPassword
        );
        assert_eq!(users.failures(Protocol::Http), 1);
    }

    #[test]
    fn digest_with_ha1() {
        let realm = "gst-ipcam";
        let mut u = user("cam", "secret", &[(Action::Read, "")]);
        u.digest_ha1 = digest_ha1("cam", realm, "secret");
        let users = Users::from_config(&[u, user("nodigest", "x", &[])], realm).unwrap();
        assert!(users.has_digest());
        let ch = digest::Challenge::parse(&users.digest_challenge(false)).unwrap();
        let answer = |pw: &str, user: &str| {
            format!(
                "Digest {}",
                digest::answer_challenge(&ch, user, pw, "DESCRIBE", "rtsp://h/x", "c0ffee", 1)
                    .to_header_value()
                    .trim_start_matches("Digest ")
            )
        };
        let a = attempt(LOCAL);
        assert_eq!(
            users
                .authenticate(Some(&answer("secret", "cam")), &a)
                .unwrap()
                .user(),
            "cam"
        );
        assert_eq!(
            users
                .authenticate(Some(&answer("wrong", "cam")), &a)
                .unwrap_err(),
            AuthError::WrongPassword
        );
        assert_eq!(
            users
                .authenticate(Some(&answer("x", "nodigest")), &a)
                .unwrap_err(),
            AuthError::UnknownUser
        );
        // A nonce of ours that expired is stale (not a failure).
        let old = digest::Challenge {
            nonce: users.nonces.issue(realm, 0),
            ..ch.clone()
        };
        let c = digest::answer_challenge(&old, "cam", "secret", "DESCRIBE", "u", "c", 1);
        assert_eq!(
            users
                .digest_at(&users.table(), &c, "DESCRIBE", LOCAL, NONCE_MAX_AGE_MS + 1)
                .unwrap_err(),
            AuthError::StaleNonce
        );
    }

    #[test]
    fn config_errors() {
        let ok = user("a", "pw", &[]);
        assert!(Users::from_config(&[ok.clone(), ok.clone()], "r").is_err());
        for bad in [
            UserConfig {
                user: "".into(),
                ..ok.clone()
            },
            UserConfig {
                user: "a b".into(),
                ..ok.clone()
            },
            UserConfig {
                user: "a:b".into(),
                ..ok.clone()
            },
            UserConfig {
                pass: "plain".into(),
                ..ok.clone()
            },
            UserConfig {
                pass: String::new(),
                ..ok.clone()
            },
            UserConfig {
                digest_ha1: "abc".into(),
                ..ok.clone()
            },
            UserConfig {
                tokens: vec!["tok".into()],
                ..ok.clone()
            },
            UserConfig {
                permissions: vec![PermissionConfig {
                    action: Action::Read,
                    path: "~(".into(),
                }],
                ..ok.clone()
            },
        ] {
            assert!(
                Users::from_config(std::slice::from_ref(&bad), "r").is_err(),
                "{bad:?}"
            );
        }
        assert!(Users::from_config(&[ok], "bad\"realm").is_err());
    }
}

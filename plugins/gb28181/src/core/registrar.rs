//! The platform's device registry: REGISTER with digest authentication, refresh and
//! unregister, keepalive tracking (offline after N missed), failed-auth limiting per source IP,
//! and events for the glue to turn into bus messages.
//!
//! Time is passed in as Unix milliseconds. Nothing here does I/O: each `handle_*` call returns
//! the response to send and the events that happened; [`Registrar::poll`] advances timers.
//!
//! Trust: only an authenticated REGISTER creates a binding or moves it (its source ip:port).
//! Keepalives (and, in the endpoint, every other MESSAGE/NOTIFY) claiming to be a registered
//! device are accepted only from that address ([`Registrar::check_sender`]); otherwise they
//! are refused with 403, counted (`forged_requests`) and reported ([`Event::ForgedRequest`]),
//! and the binding stays. Device IDs (REGISTER From/To user, MESSAGE From user) are checked
//! with the configured [`IdPolicy`] before any use (400 for IDs that are not `[A-Za-z0-9_-]`,
//! 403 for IDs outside the pattern; [`Event::InvalidId`]).
//!
//! Password guessing: failed digest checks are limited per source IP (never IP:port; IPv6 per
//! /64) by a [`FailureLimiter`]: `free_failures` failures, then the IP is blocked with a
//! growing back-off and its REGISTERs are answered 403 with `Retry-After` without checking
//! anything. A legitimate device on the same IP as the attacker (same host or NAT): a device
//! whose current, unexpired binding is exactly the request's ip:port may still authenticate
//! (refresh, unregister) while the IP is blocked, with up to `free_failures` failures in a row
//! on that path; any other REGISTER from the IP (a new device, or a known one from a new port)
//! waits for the block to end. A success does not clear the IP's record (otherwise every
//! refresh of a device behind the attacker's NAT would hand the attacker fresh tries); the
//! record is forgotten after `forget_after_ms` without failures.
//!
//! Limits: at most `max_devices` registrations (then 503), and at most
//! `auth_limiter.max_tracked` source IPs tracked for failed authentication.

use super::digest::{Challenge, Credentials, NonceIssuer, NonceStatus, verify_response};
use super::id::{IdError, IdPolicy, printable};
use super::manscdp::Keepalive;
use super::ratelimit::{FailureLimiter, LimiterConfig, Verdict};
use super::sip::{Message, SipUri};
use md5::{Digest, Md5};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::LazyLock;

/// Default number of channels remembered per device (Catalog items beyond it are dropped).
pub const DEFAULT_MAX_CHANNELS_PER_DEVICE: usize = 1024;

/// The nonce secret of this process: 32 random bytes drawn once, so nonces of one run are not
/// predictable from the source and do not survive a restart (devices are challenged again).
static PROCESS_SECRET: LazyLock<[u8; 32]> = LazyLock::new(super::random::bytes::<32>);

/// The default (strict) ID policy, compiled once.
static DEFAULT_ID_POLICY: LazyLock<IdPolicy> = LazyLock::new(IdPolicy::default);

/// This process's random nonce secret (the default of [`RegistrarConfig::nonce_secret`]).
pub fn process_secret() -> Vec<u8> {
    PROCESS_SECRET.to_vec()
}

/// How repeated `nc` values are treated for one nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NcPolicy {
    /// Accept any nc: many cameras send `nc=00000001` on every REGISTER with the same nonce.
    Tolerant,
    /// Require nc to increase for the same nonce (answer 401 stale otherwise).
    Strict,
}

#[derive(Debug, Clone)]
pub struct RegistrarConfig {
    /// The platform's 20-digit ID.
    pub server_id: String,
    /// Digest realm, usually the 10-digit domain.
    pub realm: String,
    /// Password for devices without their own entry; None = such devices are refused.
    pub default_password: Option<String>,
    pub passwords: HashMap<String, String>,
    /// Secret keying the stateless nonces (default: random per process).
    pub nonce_secret: Vec<u8>,
    pub nonce_max_age_ms: u64,
    /// Accept nonces this registrar did not issue (e.g. issued by a previous instance with
    /// another secret, or by another platform in tests). The digest itself is still checked.
    pub accept_foreign_nonces: bool,
    pub nc_policy: NcPolicy,
    pub keepalive_interval_ms: u64,
    pub max_missed_keepalives: u32,
    pub default_expires: u32,
    pub min_expires: u32,
    pub max_expires: u32,
    /// Failed-authentication limiting per source IP (see the module docs).
    pub auth_limiter: LimiterConfig,
    /// Which device and channel IDs are accepted (default: 20 digits).
    pub id_policy: IdPolicy,
    /// Channels remembered per device; further Catalog items are dropped (and counted).
    pub max_channels_per_device: usize,
    /// Offset of the `Date` header's local time from UTC (GB platforms: +8 h).
    pub utc_offset_minutes: i32,
    pub max_devices: usize,
    pub user_agent: String,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            server_id: "34020000002000000001".into(),
            realm: "3402000000".into(),
            default_password: Some("12345678".into()),
            passwords: HashMap::new(),
            nonce_secret: process_secret(),
            nonce_max_age_ms: 300_000,
            accept_foreign_nonces: false,
            nc_policy: NcPolicy::Tolerant,
            keepalive_interval_ms: 60_000,
            max_missed_keepalives: 3,
            default_expires: 3600,
            min_expires: 60,
            max_expires: 86_400,
            auth_limiter: LimiterConfig::default(),
            id_policy: DEFAULT_ID_POLICY.clone(),
            max_channels_per_device: DEFAULT_MAX_CHANNELS_PER_DEVICE,
            utc_offset_minutes: 8 * 60,
            max_devices: 100_000,
            user_agent: "gst-ipcam".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub id: String,
    /// Contact URI from the REGISTER.
    pub contact: String,
    /// Source address (ip:port) the REGISTER came from.
    pub source: String,
    pub registered_at_ms: u64,
    pub expires_at_ms: u64,
    /// Last REGISTER or keepalive.
    pub last_seen_ms: u64,
    pub online: bool,
    /// Restored from storage by [`Registrar::restore`] and not yet confirmed: requests to it
    /// wait for its first keepalive from `source` (or a new REGISTER).
    pub restored: bool,
    last_nonce_nc: Option<(String, u32)>,
    /// Failed authentications in a row from this binding while its IP was blocked.
    blocked_failures: u32,
}

/// A registration remembered across a restart (by the application's storage), for
/// [`Registrar::restore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredBinding {
    pub device_id: String,
    pub contact: String,
    /// The `ip:port` the authenticated REGISTER came from.
    pub source: String,
    pub registered_at_ms: u64,
    pub expires_at_ms: u64,
    pub last_seen_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnregisterReason {
    Requested,
    Expired,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// New registration (`refresh == false`) or renewal.
    Registered {
        device_id: String,
        contact: String,
        source: String,
        expires_s: u32,
        refresh: bool,
    },
    Unregistered {
        device_id: String,
        reason: UnregisterReason,
    },
    /// Back online after having been offline.
    Online {
        device_id: String,
    },
    Offline {
        device_id: String,
    },
    /// Keepalive from a device that isn't registered (it was told to register again).
    KeepaliveRefused {
        device_id: String,
        source: String,
    },
    AuthFailed {
        device_id: String,
        source: String,
    },
    /// `ip` failed authentication too often: its REGISTERs are refused for `blocked_ms`
    /// (the back-off grows with further failures).
    SourceBlocked {
        ip: String,
        device_id: String,
        blocked_ms: u64,
    },
    /// A request claiming to be `device_id` (in [`printable`] form) that was refused with 403:
    /// not from the device's registration, or naming another device in its body.
    ForgedRequest {
        device_id: String,
        source: String,
        method: String,
        reason: &'static str,
    },
    /// An ID refused by the ID policy (in [`printable`] form); `context` says where it was.
    InvalidId {
        id: String,
        source: String,
        context: &'static str,
    },
}

/// Whether a request claiming to be a device comes from its registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenderCheck {
    /// From the registered (unexpired) binding's ip:port.
    Registered,
    NotRegistered,
    /// The device is registered from another address.
    WrongSource,
}

/// Reasons of [`Event::ForgedRequest`].
pub mod reason {
    pub const NOT_REGISTERED: &str = "device not registered";
    pub const WRONG_SOURCE: &str = "not from the device's registered address";
    pub const WRONG_CONNECTION: &str = "not on the device's registered connection";
    pub const BODY_ID_MISMATCH: &str =
        "body DeviceID is neither the sender nor one of its channels";
    pub const DIALOG_MISMATCH: &str = "in-dialog request with wrong tags or from another address";
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistrarStats {
    pub registers: u64,
    pub challenges: u64,
    /// Digest checks that failed.
    pub auth_failures: u64,
    /// REGISTERs refused without any check because their IP was blocked.
    pub rate_limited: u64,
    /// Times a source IP became blocked.
    pub sources_blocked: u64,
    pub keepalives: u64,
    pub keepalives_refused: u64,
    /// Requests refused because they claimed to be a device they did not come from.
    pub forged_requests: u64,
    /// IDs refused by the ID policy (REGISTER and MESSAGE senders; Catalog items are counted
    /// by the endpoint).
    pub invalid_ids: u64,
}

#[derive(Debug)]
pub struct Outcome {
    pub response: Message,
    pub events: Vec<Event>,
}

#[derive(Debug)]
pub struct Registrar {
    pub config: RegistrarConfig,
    issuer: NonceIssuer,
    devices: HashMap<String, Device>,
    limiter: FailureLimiter,
    next_prune_ms: u64,
    pub stats: RegistrarStats,
}

/// The IP of an `ip:port` source string (unspecified if it is not one).
fn ip_of(source: &str) -> IpAddr {
    source
        .parse::<SocketAddr>()
        .map(|a| a.ip())
        .or_else(|_| source.parse::<IpAddr>())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// Calendar date and time of day `(year, month, day, hour, minute, second)` of signed Unix
/// seconds (proleptic Gregorian, no leap seconds; Howard Hinnant's civil_from_days).
pub fn civil_from_unix(secs: i64) -> (i64, i64, i64, i64, i64, i64) {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, sod / 3600, (sod / 60) % 60, sod % 60)
}

/// `yyyy-MM-ddTHH:mm:ss.SSS` for Unix ms shifted by `offset_minutes`.
pub fn format_gb_date(unix_ms: u64, offset_minutes: i32) -> String {
    let ms = unix_ms as i64 + offset_minutes as i64 * 60_000;
    let millis = ms.rem_euclid(1000);
    let (y, m, d, h, mi, s) = civil_from_unix(ms.div_euclid(1000));
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{millis:03}")
}

/// The user part of a From/To header, i.e. the GB device ID (unchecked).
pub fn user_of(na: Option<super::sip::NameAddr>) -> Option<String> {
    na?.sip_uri()?.user.filter(|u| !u.is_empty())
}

impl Registrar {
    pub fn new(config: RegistrarConfig) -> Self {
        let issuer = NonceIssuer::new(&config.nonce_secret, config.nonce_max_age_ms);
        let limiter = FailureLimiter::new(config.auth_limiter.clone());
        Registrar {
            config,
            issuer,
            devices: HashMap::new(),
            limiter,
            next_prune_ms: 0,
            stats: RegistrarStats::default(),
        }
    }

    /// Whether a request claiming to be `device_id` comes from its registration's `source`.
    pub fn check_sender(&self, device_id: &str, source: &str, now_ms: u64) -> SenderCheck {
        match self.devices.get(device_id) {
            Some(d) if d.expires_at_ms > now_ms => {
                if d.source == source {
                    SenderCheck::Registered
                } else {
                    SenderCheck::WrongSource
                }
            }
            _ => SenderCheck::NotRegistered,
        }
    }

    /// Counts a forged request and returns its event (the ID in printable form).
    pub fn forged(
        &mut self,
        device_id: &str,
        source: &str,
        method: &str,
        reason: &'static str,
    ) -> Event {
        self.stats.forged_requests += 1;
        Event::ForgedRequest {
            device_id: printable(device_id),
            source: source.to_string(),
            method: printable(method),
            reason,
        }
    }

    /// Checks `id` with the ID policy; counts and returns the event when it is refused.
    pub fn check_id(
        &mut self,
        id: &str,
        source: &str,
        context: &'static str,
    ) -> Result<(), (IdError, Event)> {
        self.config.id_policy.check(id).map_err(|e| {
            self.stats.invalid_ids += 1;
            (
                e,
                Event::InvalidId {
                    id: printable(id),
                    source: source.to_string(),
                    context,
                },
            )
        })
    }

    pub fn device(&self, id: &str) -> Option<&Device> {
        self.devices.get(id)
    }

    pub fn devices(&self) -> impl Iterator<Item = &Device> {
        self.devices.values()
    }

    /// Forgets device `id` (an operator's delete): its later keepalives are refused until it
    /// registers again. The event to publish, if it was registered.
    pub fn remove(&mut self, id: &str) -> Option<Event> {
        self.devices.remove(id).map(|d| Event::Unregistered {
            device_id: d.id,
            reason: UnregisterReason::Requested,
        })
    }

    pub fn password_for(&self, device_id: &str) -> Option<&str> {
        self.config
            .passwords
            .get(device_id)
            .or(self.config.default_password.as_ref())
            .map(String::as_str)
    }

    /// A To tag stable across retransmissions of the same request.
    fn to_tag(&self, req: &Message) -> String {
        let mut h = Md5::new();
        h.update(&self.config.nonce_secret);
        h.update(req.call_id().unwrap_or_default().as_bytes());
        h.update(
            req.from()
                .and_then(|f| f.tag().map(str::to_string))
                .unwrap_or_default()
                .as_bytes(),
        );
        let d = h.finalize();
        u32::from_be_bytes([d[0], d[1], d[2], d[3]]).to_string()
    }

    fn respond(&self, req: &Message, status: u16, reason: &str) -> Message {
        let mut r = Message::response_to(req, status, reason, Some(&self.to_tag(req)));
        r.add_header("User-Agent", self.config.user_agent.clone());
        r
    }

    fn challenge(&mut self, req: &Message, now_ms: u64, stale: bool) -> Message {
        self.stats.challenges += 1;
        let ch = Challenge {
            realm: self.config.realm.clone(),
            nonce: self.issuer.issue(&self.config.realm, now_ms),
            qop_auth: true,
            stale,
            opaque: None,
        };
        let mut r = self.respond(req, 401, "Unauthorized");
        r.add_header("WWW-Authenticate", ch.to_header_value());
        r
    }

    /// Checks a REGISTER's credentials against `password`, taking the nonce as given
    /// (freshness is a separate matter, see [`NonceIssuer::check`]).
    pub fn verify_register(req: &Message, password: &str) -> bool {
        req.header("authorization")
            .and_then(Credentials::parse)
            .is_some_and(|c| verify_response(&c, req.method().unwrap_or("REGISTER"), password))
    }

    /// Handles a REGISTER from `source` (ip:port).
    pub fn handle_register(&mut self, req: &Message, source: &str, now_ms: u64) -> Outcome {
        self.stats.registers += 1;
        let mut events = Vec::new();
        let from_user = user_of(req.from());
        let to_user = user_of(req.to());
        let Some(device_id) = from_user.clone().or_else(|| to_user.clone()) else {
            return Outcome {
                response: self.respond(req, 400, "Bad Request"),
                events,
            };
        };
        // Every ID of the request is checked before it is used for anything.
        for id in [from_user, to_user].into_iter().flatten() {
            if let Err((e, ev)) = self.check_id(&id, source, "REGISTER") {
                events.push(ev);
                let response = match e {
                    IdError::PatternMismatch => self.respond(req, 403, "Forbidden"),
                    _ => self.respond(req, 400, "Bad Request"),
                };
                return Outcome { response, events };
            }
        }
        let ip = ip_of(source);
        // Blocked IP: only the device bound to exactly this ip:port is still checked.
        let blocked = match self.limiter.peek(ip, now_ms) {
            Verdict::Allowed => false,
            Verdict::Blocked(ms) => {
                let free = self.config.auth_limiter.free_failures.max(1);
                let bound_here = self.devices.get(&device_id).is_some_and(|d| {
                    d.source == source && d.expires_at_ms > now_ms && d.blocked_failures < free
                });
                if !bound_here {
                    self.limiter.check(ip, now_ms);
                    self.stats.rate_limited += 1;
                    let mut r = self.respond(req, 403, "Forbidden");
                    r.add_header("Retry-After", ms.div_ceil(1000).max(1).to_string());
                    return Outcome {
                        response: r,
                        events,
                    };
                }
                true
            }
        };
        let Some(creds) = req.header("authorization").and_then(Credentials::parse) else {
            return Outcome {
                response: self.challenge(req, now_ms, false),
                events,
            };
        };
        if creds.realm != self.config.realm {
            return Outcome {
                response: self.challenge(req, now_ms, false),
                events,
            };
        }
        match self.issuer.check(&creds.nonce, &self.config.realm, now_ms) {
            NonceStatus::Fresh => {}
            NonceStatus::Stale => {
                return Outcome {
                    response: self.challenge(req, now_ms, true),
                    events,
                };
            }
            NonceStatus::Foreign if self.config.accept_foreign_nonces => {}
            NonceStatus::Foreign => {
                return Outcome {
                    response: self.challenge(req, now_ms, false),
                    events,
                };
            }
        }
        let ok = self
            .password_for(&device_id)
            .is_some_and(|pw| verify_response(&creds, "REGISTER", pw));
        if !ok {
            self.stats.auth_failures += 1;
            let verdict = self.limiter.record_failure(ip, now_ms);
            if blocked && let Some(d) = self.devices.get_mut(&device_id) {
                d.blocked_failures = d.blocked_failures.saturating_add(1);
            }
            events.push(Event::AuthFailed {
                device_id: device_id.clone(),
                source: source.to_string(),
            });
            if let Verdict::Blocked(ms) = verdict
                && !blocked
            {
                self.stats.sources_blocked += 1;
                events.push(Event::SourceBlocked {
                    ip: ip.to_string(),
                    device_id,
                    blocked_ms: ms,
                });
            }
            return Outcome {
                response: self.respond(req, 403, "Forbidden"),
                events,
            };
        }
        // No `record_success`: see the module docs.
        if let Some(d) = self.devices.get_mut(&device_id) {
            d.blocked_failures = 0;
        }
        let nc = creds.nc_value();
        if self.config.nc_policy == NcPolicy::Strict
            && let (Some(nc), Some(dev)) = (nc, self.devices.get(&device_id))
            && let Some((nonce, last)) = &dev.last_nonce_nc
            && *nonce == creds.nonce
            && nc <= *last
        {
            return Outcome {
                response: self.challenge(req, now_ms, true),
                events,
            };
        }

        let contact = req.contact();
        let requested = contact
            .as_ref()
            .and_then(|c| c.param("expires"))
            .and_then(|e| e.parse::<u32>().ok())
            .or_else(|| req.expires())
            .unwrap_or(self.config.default_expires);
        let mut resp = self.respond(req, 200, "OK");
        if let Some(c) = req.header("contact") {
            resp.add_header("Contact", c.to_string());
        }
        if requested == 0 {
            if self.devices.remove(&device_id).is_some() {
                events.push(Event::Unregistered {
                    device_id,
                    reason: UnregisterReason::Requested,
                });
            }
            resp.add_header("Expires", "0");
            return Outcome {
                response: resp,
                events,
            };
        }
        if !self.devices.contains_key(&device_id) && self.devices.len() >= self.config.max_devices {
            return Outcome {
                response: self.respond(req, 503, "Service Unavailable"),
                events,
            };
        }
        let expires = requested.clamp(self.config.min_expires, self.config.max_expires.max(1));
        let contact_uri = contact
            .as_ref()
            .map(|c| c.uri.clone())
            .filter(|u| SipUri::parse(u).is_some())
            .unwrap_or_else(|| format!("sip:{device_id}@{source}"));
        let refresh = self.devices.contains_key(&device_id);
        let dev = self
            .devices
            .entry(device_id.clone())
            .or_insert_with(|| Device {
                id: device_id.clone(),
                contact: String::new(),
                source: String::new(),
                registered_at_ms: now_ms,
                expires_at_ms: 0,
                last_seen_ms: now_ms,
                online: true,
                restored: false,
                last_nonce_nc: None,
                blocked_failures: 0,
            });
        dev.restored = false;
        dev.contact = contact_uri.clone();
        dev.source = source.to_string();
        dev.expires_at_ms = now_ms + u64::from(expires) * 1000;
        dev.last_seen_ms = now_ms;
        dev.last_nonce_nc = nc.map(|n| (creds.nonce.clone(), n));
        let came_back = !dev.online;
        dev.online = true;
        events.push(Event::Registered {
            device_id: device_id.clone(),
            contact: contact_uri,
            source: source.to_string(),
            expires_s: expires,
            refresh,
        });
        if came_back {
            events.push(Event::Online { device_id });
        }
        resp.add_header(
            "Date",
            format_gb_date(now_ms, self.config.utc_offset_minutes),
        );
        resp.add_header("Expires", expires.to_string());
        Outcome {
            response: resp,
            events,
        }
    }

    /// Handles a MESSAGE carrying a Keepalive (already parsed from its body) from `source`.
    /// The sender is the From user; the body's DeviceID must be the same. Accepted only from
    /// the device's registered address (403 otherwise, the binding stays); a device that is
    /// not registered gets 404 so that it registers again.
    pub fn handle_keepalive(
        &mut self,
        req: &Message,
        keepalive: &Keepalive,
        source: &str,
        now_ms: u64,
    ) -> Outcome {
        self.stats.keepalives += 1;
        let device_id = user_of(req.from()).unwrap_or_else(|| keepalive.device_id.clone());
        let mut events = Vec::new();
        if let Err((_, ev)) = self.check_id(&device_id, source, "MESSAGE") {
            events.push(ev);
            return Outcome {
                response: self.respond(req, 403, "Forbidden"),
                events,
            };
        }
        if keepalive.device_id != device_id {
            events.push(self.forged(&device_id, source, "MESSAGE", reason::BODY_ID_MISMATCH));
            return Outcome {
                response: self.respond(req, 403, "Forbidden"),
                events,
            };
        }
        match self.check_sender(&device_id, source, now_ms) {
            SenderCheck::NotRegistered => {
                self.stats.keepalives_refused += 1;
                events.push(Event::KeepaliveRefused {
                    device_id,
                    source: source.to_string(),
                });
                return Outcome {
                    response: self.respond(req, 404, "Not Found"),
                    events,
                };
            }
            SenderCheck::WrongSource => {
                events.push(self.forged(&device_id, source, "MESSAGE", reason::WRONG_SOURCE));
                return Outcome {
                    response: self.respond(req, 403, "Forbidden"),
                    events,
                };
            }
            SenderCheck::Registered => {}
        }
        if let Some(dev) = self.devices.get_mut(&device_id) {
            dev.last_seen_ms = now_ms;
            dev.restored = false;
            if !dev.online {
                dev.online = true;
                events.push(Event::Online { device_id });
            }
        }
        Outcome {
            response: self.respond(req, 200, "OK"),
            events,
        }
    }

    /// Puts back a binding remembered from before a restart (see [`RestoredBinding`]). It is
    /// refused if its ID fails the ID policy, its source is not an `ip:port`, it has expired,
    /// the device is registered already (a live REGISTER wins) or `max_devices` are
    /// registered. The device starts offline and [`Device::restored`]: only a keepalive from
    /// exactly `source` (or a new REGISTER) confirms it; anything from elsewhere is refused as
    /// for any binding. The expiry is capped at `max_expires` from now.
    pub fn restore(&mut self, b: &RestoredBinding, now_ms: u64) -> Result<(), &'static str> {
        if !self.config.id_policy.is_valid(&b.device_id) {
            return Err("device ID refused by the ID policy");
        }
        if b.source.parse::<SocketAddr>().is_err() {
            return Err("source is not an ip:port");
        }
        if b.expires_at_ms <= now_ms {
            return Err("registration expired");
        }
        if self.devices.contains_key(&b.device_id) {
            return Err("device registered already");
        }
        if self.devices.len() >= self.config.max_devices {
            return Err("max-devices registered");
        }
        let contact = Some(b.contact.clone())
            .filter(|c| c.len() <= 512 && SipUri::parse(c).is_some())
            .unwrap_or_else(|| format!("sip:{}@{}", b.device_id, b.source));
        let max_expires_at = now_ms + u64::from(self.config.max_expires.max(1)) * 1000;
        self.devices.insert(
            b.device_id.clone(),
            Device {
                id: b.device_id.clone(),
                contact,
                source: b.source.clone(),
                registered_at_ms: b.registered_at_ms.min(now_ms),
                expires_at_ms: b.expires_at_ms.min(max_expires_at),
                last_seen_ms: b.last_seen_ms.min(now_ms),
                online: false,
                restored: true,
                last_nonce_nc: None,
                blocked_failures: 0,
            },
        );
        Ok(())
    }

    /// Advances timers: registrations past their expiry are removed, devices whose last
    /// keepalive is older than `max_missed_keepalives` intervals go offline.
    pub fn poll(&mut self, now_ms: u64) -> Vec<Event> {
        let mut events = Vec::new();
        let offline_after =
            self.config.keepalive_interval_ms * u64::from(self.config.max_missed_keepalives.max(1));
        self.devices.retain(|id, d| {
            if d.expires_at_ms <= now_ms {
                events.push(Event::Unregistered {
                    device_id: id.clone(),
                    reason: UnregisterReason::Expired,
                });
                return false;
            }
            if d.online && now_ms.saturating_sub(d.last_seen_ms) >= offline_after {
                d.online = false;
                events.push(Event::Offline {
                    device_id: id.clone(),
                });
            }
            true
        });
        if now_ms >= self.next_prune_ms {
            self.next_prune_ms = now_ms + 10_000;
            self.limiter.prune(now_ms);
        }
        events
    }

    /// The earliest time [`Registrar::poll`] has something to do.
    pub fn next_deadline(&self) -> Option<u64> {
        let offline_after =
            self.config.keepalive_interval_ms * u64::from(self.config.max_missed_keepalives.max(1));
        self.devices
            .values()
            .map(|d| {
                if d.online {
                    d.expires_at_ms.min(d.last_seen_ms + offline_after)
                } else {
                    d.expires_at_ms
                }
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gb_date() {
        // 2020-06-09T06:09:01.830Z is 14:09:01.830 in UTC+8 (vector 04).
        assert_eq!(
            format_gb_date(1_591_682_941_830, 480),
            "2020-06-09T14:09:01.830"
        );
        assert_eq!(format_gb_date(0, 0), "1970-01-01T00:00:00.000");
        assert_eq!(
            format_gb_date(951_782_400_000, 0),
            "2000-02-29T00:00:00.000"
        );
    }

    const DEV: &str = "34020000001320000001";

    fn binding(source: &str, expires_at_ms: u64) -> RestoredBinding {
        RestoredBinding {
            device_id: DEV.into(),
            contact: format!("sip:{DEV}@{source}"),
            source: source.into(),
            registered_at_ms: 1_000,
            expires_at_ms,
            last_seen_ms: 2_000,
        }
    }

    fn keepalive(from_user: &str) -> (Message, Keepalive) {
        let text = format!(
            "MESSAGE sip:34020000002000000001@3402000000 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK1\r\n\
             From: <sip:{from_user}@3402000000>;tag=1\r\n\
             To: <sip:34020000002000000001@3402000000>\r\n\
             Call-ID: ka1\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
        );
        let msg = Message::parse(text.as_bytes()).expect("valid keepalive");
        let k = Keepalive {
            sn: 1,
            device_id: from_user.into(),
            status_ok: true,
        };
        (msg, k)
    }

    /// A restored binding is offline and unconfirmed until a keepalive from its address; a
    /// keepalive from another address is refused (403) and does not confirm it.
    #[test]
    fn restored_binding_needs_keepalive_from_its_source() {
        let mut r = Registrar::new(RegistrarConfig::default());
        let now = 10_000;
        r.restore(&binding("127.0.0.1:5061", now + 60_000), now)
            .unwrap();
        let d = r.device(DEV).unwrap();
        assert!(d.restored && !d.online);
        assert_eq!(d.last_seen_ms, 2_000);

        let (msg, k) = keepalive(DEV);
        let out = r.handle_keepalive(&msg, &k, "127.0.0.1:6000", now + 1);
        assert_eq!(out.response.status(), Some(403));
        let d = r.device(DEV).unwrap();
        assert!(d.restored && !d.online, "a foreign keepalive confirmed it");
        assert_eq!(r.stats.forged_requests, 1);

        let out = r.handle_keepalive(&msg, &k, "127.0.0.1:5061", now + 2);
        assert_eq!(out.response.status(), Some(200));
        assert!(out.events.contains(&Event::Online {
            device_id: DEV.into()
        }));
        let d = r.device(DEV).unwrap();
        assert!(!d.restored && d.online);
        assert_eq!(d.last_seen_ms, now + 2);
    }

    #[test]
    fn restore_refuses_bad_bindings() {
        let now = 10_000;
        let mut r = Registrar::new(RegistrarConfig {
            max_devices: 1,
            ..RegistrarConfig::default()
        });
        // Expired.
        assert!(r.restore(&binding("127.0.0.1:5061", now), now).is_err());
        // Not an ip:port.
        assert!(
            r.restore(&binding("camera.example", now + 1_000), now)
                .is_err()
        );
        // An ID the policy refuses.
        let mut b = binding("127.0.0.1:5061", now + 1_000);
        b.device_id = "../../etc".into();
        assert!(r.restore(&b, now).is_err());
        assert_eq!(r.devices().count(), 0);
        // A good one; then the same device again (already there) and a second (max-devices).
        r.restore(&binding("127.0.0.1:5061", now + 1_000), now)
            .unwrap();
        assert!(
            r.restore(&binding("127.0.0.1:5062", now + 1_000), now)
                .is_err()
        );
        let mut b = binding("127.0.0.1:5061", now + 1_000);
        b.device_id = "34020000001320000002".into();
        assert!(r.restore(&b, now).is_err());
        assert_eq!(r.device(DEV).unwrap().source, "127.0.0.1:5061");
    }

    /// A stored expiry far in the future is capped at max_expires; the binding expires as any.
    #[test]
    fn restored_binding_expires() {
        let now = 10_000;
        let mut r = Registrar::new(RegistrarConfig::default());
        r.restore(&binding("127.0.0.1:5061", u64::MAX), now)
            .unwrap();
        let max = now + u64::from(r.config.max_expires) * 1000;
        assert_eq!(r.device(DEV).unwrap().expires_at_ms, max);
        let ev = r.poll(max);
        assert!(ev.contains(&Event::Unregistered {
            device_id: DEV.into(),
            reason: UnregisterReason::Expired
        }));
        assert!(r.device(DEV).is_none());
    }
}

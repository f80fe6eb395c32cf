//! The platform's device registry: REGISTER with digest authentication, refresh and
//! unregister, keepalive tracking (offline after N missed), failed-auth rate limiting per
//! source address, and events for the glue to turn into bus messages.
//!
//! Time is passed in as Unix milliseconds. Nothing here does I/O: each `handle_*` call returns
//! the response to send and the events that happened; [`Registrar::poll`] advances timers.
//!
//! Limits: at most `max_devices` registrations (then 503), and at most
//! [`MAX_TRACKED_SOURCES`] source addresses tracked for rate limiting.

use super::digest::{Challenge, Credentials, NonceIssuer, NonceStatus, verify_response};
use super::manscdp::Keepalive;
use super::sip::{Message, SipUri};
use md5::{Digest, Md5};
use std::collections::HashMap;

pub const MAX_TRACKED_SOURCES: usize = 16_384;

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
    /// Secret keying the stateless nonces.
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
    /// Failed authentications per source before it is refused for `auth_fail_window_ms`.
    pub auth_fail_limit: u32,
    pub auth_fail_window_ms: u64,
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
            nonce_secret: b"gst-ipcam".to_vec(),
            nonce_max_age_ms: 300_000,
            accept_foreign_nonces: false,
            nc_policy: NcPolicy::Tolerant,
            keepalive_interval_ms: 60_000,
            max_missed_keepalives: 3,
            default_expires: 3600,
            min_expires: 60,
            max_expires: 86_400,
            auth_fail_limit: 5,
            auth_fail_window_ms: 60_000,
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
    last_nonce_nc: Option<(String, u32)>,
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
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistrarStats {
    pub registers: u64,
    pub challenges: u64,
    pub auth_failures: u64,
    pub rate_limited: u64,
    pub keepalives: u64,
    pub keepalives_refused: u64,
}

#[derive(Debug)]
pub struct Outcome {
    pub response: Message,
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    window_start_ms: u64,
    count: u32,
}

#[derive(Debug)]
pub struct Registrar {
    pub config: RegistrarConfig,
    issuer: NonceIssuer,
    devices: HashMap<String, Device>,
    failures: HashMap<String, Failures>,
    pub stats: RegistrarStats,
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

/// The user part of a From/To header, i.e. the GB device ID.
fn user_of(na: Option<super::sip::NameAddr>) -> Option<String> {
    na?.sip_uri()?.user.filter(|u| !u.is_empty())
}

impl Registrar {
    pub fn new(config: RegistrarConfig) -> Self {
        let issuer = NonceIssuer::new(&config.nonce_secret, config.nonce_max_age_ms);
        Registrar {
            config,
            issuer,
            devices: HashMap::new(),
            failures: HashMap::new(),
            stats: RegistrarStats::default(),
        }
    }

    pub fn device(&self, id: &str) -> Option<&Device> {
        self.devices.get(id)
    }

    pub fn devices(&self) -> impl Iterator<Item = &Device> {
        self.devices.values()
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

    fn is_rate_limited(&self, source: &str, now_ms: u64) -> bool {
        self.failures.get(source).is_some_and(|f| {
            f.count >= self.config.auth_fail_limit
                && now_ms.saturating_sub(f.window_start_ms) < self.config.auth_fail_window_ms
        })
    }

    fn record_failure(&mut self, source: &str, now_ms: u64) {
        if !self.failures.contains_key(source) && self.failures.len() >= MAX_TRACKED_SOURCES {
            self.prune_failures(now_ms);
            if self.failures.len() >= MAX_TRACKED_SOURCES {
                return;
            }
        }
        let window = self.config.auth_fail_window_ms;
        let f = self.failures.entry(source.to_string()).or_insert(Failures {
            window_start_ms: now_ms,
            count: 0,
        });
        if now_ms.saturating_sub(f.window_start_ms) >= window {
            *f = Failures {
                window_start_ms: now_ms,
                count: 0,
            };
        }
        f.count = f.count.saturating_add(1);
    }

    fn prune_failures(&mut self, now_ms: u64) {
        let window = self.config.auth_fail_window_ms;
        self.failures
            .retain(|_, f| now_ms.saturating_sub(f.window_start_ms) < window);
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
        let Some(device_id) = user_of(req.from()).or_else(|| user_of(req.to())) else {
            return Outcome {
                response: self.respond(req, 400, "Bad Request"),
                events,
            };
        };
        if self.is_rate_limited(source, now_ms) {
            self.stats.rate_limited += 1;
            return Outcome {
                response: self.respond(req, 403, "Forbidden"),
                events,
            };
        }
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
            self.record_failure(source, now_ms);
            events.push(Event::AuthFailed {
                device_id,
                source: source.to_string(),
            });
            return Outcome {
                response: self.respond(req, 403, "Forbidden"),
                events,
            };
        }
        self.failures.remove(source);
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
                last_nonce_nc: None,
            });
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

    /// Handles a MESSAGE carrying a Keepalive (already parsed from its body).
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
        let known = self
            .devices
            .get(&device_id)
            .is_some_and(|d| d.expires_at_ms > now_ms);
        if !known {
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
        if let Some(dev) = self.devices.get_mut(&device_id) {
            dev.last_seen_ms = now_ms;
            dev.source = source.to_string();
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
        self.prune_failures(now_ms);
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
}

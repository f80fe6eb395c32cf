//! Device side of registration (for gb28181sink): REGISTER → 401 → REGISTER with digest →
//! 200 (with the platform's `Date`), refresh before expiry, periodic MANSCDP keepalives, and
//! re-registration when keepalives are refused or go unanswered. A state machine without I/O:
//! the glue sends what [`ClientAction::Send`] carries and feeds responses and `now` (Unix ms).
//! Call-IDs, the From tag, Via branches and cnonces are drawn from OS randomness
//! ([`super::random`]), so an off-path attacker cannot guess them.

use super::addr::host_port;
use super::digest::{Challenge, answer_challenge};
use super::manscdp;
use super::random;
use super::sip::Message;
use super::transaction::{ClientTransaction, TransactionKind, TxAction};

#[derive(Debug, Clone)]
pub struct RegisterClientConfig {
    pub device_id: String,
    /// SIP domain (10 digits), also used as host of the request URIs.
    pub domain: String,
    pub server_id: String,
    /// Our address as written into Via and Contact.
    pub local_host: String,
    pub local_port: u16,
    /// `UDP` or `TCP` (Via; over TCP also `;transport=tcp` in Contact and no retransmissions).
    pub transport: String,
    pub password: String,
    pub expires: u32,
    pub keepalive_interval_ms: u64,
    /// Unanswered or refused keepalives before registering again.
    pub max_keepalive_failures: u32,
    /// Wait before retrying after a failure; doubles per failure in a row (up to 32×).
    pub retry_ms: u64,
    pub charset: manscdp::Charset,
}

impl Default for RegisterClientConfig {
    fn default() -> Self {
        RegisterClientConfig {
            device_id: "34020000001320000001".into(),
            domain: "3402000000".into(),
            server_id: "34020000002000000001".into(),
            local_host: "127.0.0.1".into(),
            local_port: 5060,
            transport: "UDP".into(),
            password: "12345678".into(),
            expires: 3600,
            keepalive_interval_ms: 60_000,
            max_keepalive_failures: 3,
            retry_ms: 10_000,
            charset: manscdp::Charset::Gb2312,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    Idle,
    Registering,
    Registered,
    Unregistering,
    /// Waiting `retry_ms` after a refusal or timeout.
    Backoff,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAction {
    Send(Message),
    /// Registered; `server_date` is the 200's `Date` (GB time sync) if any.
    Registered {
        expires_s: u32,
        server_date: Option<String>,
    },
    Unregistered,
    /// The platform refused (status) or did not answer (None); retrying later.
    Failed {
        status: Option<u16>,
    },
}

#[derive(Debug)]
struct Pending {
    request: Message,
    tx: ClientTransaction,
    is_register: bool,
    authed: bool,
}

#[derive(Debug)]
pub struct RegisterClient {
    pub config: RegisterClientConfig,
    pub state: ClientState,
    /// When the latest keepalive was answered with 2xx.
    pub last_keepalive_ok_ms: Option<u64>,
    call_id: String,
    from_tag: String,
    cseq: u32,
    nc: u32,
    pending: Vec<Pending>,
    refresh_at: Option<u64>,
    keepalive_at: Option<u64>,
    retry_at: Option<u64>,
    keepalive_failures: u32,
    keepalive_sn: u32,
    /// Failed registrations in a row (for the exponential backoff).
    register_failures: u32,
}

/// The retry delay doubles per failure in a row up to `retry_ms << MAX_BACKOFF_SHIFT`.
pub const MAX_BACKOFF_SHIFT: u32 = 5;

const MAX_PENDING: usize = 8;

impl RegisterClient {
    pub fn new(config: RegisterClientConfig) -> Self {
        RegisterClient {
            call_id: random::call_id(),
            from_tag: random::tag(),
            config,
            state: ClientState::Idle,
            cseq: 0,
            nc: 0,
            pending: Vec::new(),
            refresh_at: None,
            keepalive_at: None,
            retry_at: None,
            keepalive_failures: 0,
            keepalive_sn: 0,
            last_keepalive_ok_ms: None,
            register_failures: 0,
        }
    }

    fn reliable(&self) -> bool {
        self.config.transport.eq_ignore_ascii_case("TCP")
    }

    fn server_uri(&self) -> String {
        format!("sip:{}@{}", self.config.server_id, self.config.domain)
    }

    fn base_request(&mut self, method: &str, call_id: &str, to: &str) -> Message {
        self.cseq += 1;
        let branch = random::branch();
        let c = &self.config;
        let mut m = Message::request(method, &self.server_uri());
        m.add_header(
            "Via",
            format!(
                "SIP/2.0/{} {};rport;branch={branch}",
                c.transport,
                host_port(&c.local_host, c.local_port)
            ),
        )
        .add_header(
            "From",
            format!("<sip:{}@{}>;tag={}", c.device_id, c.domain, self.from_tag),
        )
        .add_header("To", format!("<sip:{to}@{}>", c.domain))
        .add_header("Call-ID", call_id.to_string())
        .add_header("CSeq", format!("{} {method}", self.cseq))
        .add_header("Max-Forwards", "70");
        m
    }

    fn register_request(&mut self, expires: u32, challenge: Option<&Challenge>) -> Message {
        let call_id = self.call_id.clone();
        let device_id = self.config.device_id.clone();
        let mut m = self.base_request("REGISTER", &call_id, &device_id);
        let c = &self.config;
        let uri_params = if self.reliable() {
            ";transport=tcp"
        } else {
            ""
        };
        m.add_header(
            "Contact",
            format!(
                "<sip:{}@{}{uri_params}>",
                c.device_id,
                host_port(&c.local_host, c.local_port)
            ),
        );
        if let Some(ch) = challenge {
            self.nc += 1;
            let cnonce = random::tag();
            let creds = answer_challenge(
                ch,
                &self.config.device_id,
                &self.config.password,
                "REGISTER",
                &self.server_uri(),
                &cnonce,
                self.nc,
            );
            m.add_header("Authorization", creds.to_header_value());
        }
        m.add_header("Expires", expires.to_string());
        m
    }

    fn send(
        &mut self,
        request: Message,
        is_register: bool,
        authed: bool,
        now: u64,
    ) -> ClientAction {
        if self.pending.len() >= MAX_PENDING {
            self.pending.remove(0);
        }
        self.pending.push(Pending {
            request: request.clone(),
            tx: if self.reliable() {
                ClientTransaction::new_reliable(TransactionKind::NonInvite, now)
            } else {
                ClientTransaction::new(TransactionKind::NonInvite, now)
            },
            is_register,
            authed,
        });
        ClientAction::Send(request)
    }

    /// Starts registering.
    pub fn start(&mut self, now: u64) -> Vec<ClientAction> {
        self.state = ClientState::Registering;
        self.pending.retain(|p| !p.is_register);
        let req = self.register_request(self.config.expires, None);
        vec![self.send(req, true, false, now)]
    }

    /// Sends REGISTER with Expires: 0.
    pub fn unregister(&mut self, now: u64) -> Vec<ClientAction> {
        self.state = ClientState::Unregistering;
        self.refresh_at = None;
        self.keepalive_at = None;
        self.pending.clear();
        let req = self.register_request(0, None);
        vec![self.send(req, true, false, now)]
    }

    fn backoff(&mut self, now: u64, status: Option<u16>) -> Vec<ClientAction> {
        self.state = ClientState::Backoff;
        self.refresh_at = None;
        self.keepalive_at = None;
        let shift = self.register_failures.min(MAX_BACKOFF_SHIFT);
        self.register_failures = self.register_failures.saturating_add(1);
        self.retry_at = Some(now + (self.config.retry_ms << shift));
        self.pending.clear();
        vec![ClientAction::Failed { status }]
    }

    /// Feeds a response; unrelated responses are ignored.
    pub fn on_response(&mut self, resp: &Message, now: u64) -> Vec<ClientAction> {
        let (Some(status), Some(cseq), Some(call_id)) =
            (resp.status(), resp.cseq(), resp.call_id())
        else {
            return Vec::new();
        };
        let Some(idx) = self.pending.iter().position(|p| {
            p.request.call_id() == Some(call_id) && p.request.cseq().as_ref() == Some(&cseq)
        }) else {
            return Vec::new();
        };
        if self.pending[idx].tx.on_response(status, now) != TxAction::Deliver || status < 200 {
            return Vec::new();
        }
        let p = self.pending.remove(idx);
        if !p.is_register {
            // Keepalive answer.
            if (200..300).contains(&status) {
                self.keepalive_failures = 0;
                self.last_keepalive_ok_ms = Some(now);
                return Vec::new();
            }
            // Refused: the platform doesn't know us (any more). Register again at once.
            if self.state == ClientState::Registered {
                self.keepalive_at = None;
                return self.start(now);
            }
            return Vec::new();
        }
        let expires_requested = p.request.expires().unwrap_or(self.config.expires);
        match status {
            401 | 407 if !p.authed || self.is_stale(resp) => {
                let Some(ch) = resp
                    .header("www-authenticate")
                    .or_else(|| resp.header("proxy-authenticate"))
                    .and_then(Challenge::parse)
                else {
                    return self.backoff(now, Some(status));
                };
                let req = self.register_request(expires_requested, Some(&ch));
                vec![self.send(req, true, true, now)]
            }
            200..=299 if expires_requested == 0 => {
                self.state = ClientState::Idle;
                vec![ClientAction::Unregistered]
            }
            200..=299 => {
                let expires = resp
                    .contact()
                    .and_then(|c| c.param("expires").and_then(|e| e.parse().ok()))
                    .or_else(|| resp.expires())
                    .unwrap_or(expires_requested)
                    .max(1);
                self.state = ClientState::Registered;
                self.keepalive_failures = 0;
                self.register_failures = 0;
                // Refresh at 80 % of the lifetime (at least 1 s ahead).
                self.refresh_at = Some(now + (u64::from(expires) * 800).max(1000));
                if self.keepalive_at.is_none() {
                    self.keepalive_at = Some(now + self.config.keepalive_interval_ms);
                }
                vec![ClientAction::Registered {
                    expires_s: expires,
                    server_date: resp.header("date").map(str::to_string),
                }]
            }
            _ => self.backoff(now, Some(status)),
        }
    }

    fn is_stale(&self, resp: &Message) -> bool {
        resp.header("www-authenticate")
            .and_then(Challenge::parse)
            .is_some_and(|c| c.stale)
    }

    /// A keepalive went unanswered. After `max_keepalive_failures` in a row: over UDP,
    /// register again; over TCP the connection itself is suspect (a half-open one answers
    /// nothing and is never closed): fail ([`ClientAction::Failed`] without a status), the
    /// glue drops it and registers on a new one.
    fn keepalive_failed(&mut self, now: u64) -> Vec<ClientAction> {
        self.keepalive_failures += 1;
        if self.keepalive_failures >= self.config.max_keepalive_failures.max(1)
            && self.state == ClientState::Registered
        {
            self.keepalive_failures = 0;
            self.keepalive_at = None;
            if self.reliable() {
                return self.backoff(now, None);
            }
            return self.start(now);
        }
        Vec::new()
    }

    fn keepalive_request(&mut self) -> Message {
        self.keepalive_sn = self.keepalive_sn.wrapping_add(1);
        let call_id = random::call_id();
        let server_id = self.config.server_id.clone();
        let mut m = self.base_request("MESSAGE", &call_id, &server_id);
        let body = manscdp::encode_body(
            &manscdp::build_keepalive(self.keepalive_sn, &self.config.device_id),
            self.config.charset,
        );
        m.set_body("Application/MANSCDP+xml", body);
        m
    }

    /// Advances timers: retransmissions, transaction timeouts, refresh, keepalives, retry.
    pub fn poll(&mut self, now: u64) -> Vec<ClientAction> {
        let mut out = Vec::new();
        let mut timed_out = Vec::new();
        for (i, p) in self.pending.iter_mut().enumerate() {
            match p.tx.poll(now) {
                TxAction::Retransmit => out.push(ClientAction::Send(p.request.clone())),
                TxAction::Timeout => timed_out.push(i),
                _ => {}
            }
        }
        for i in timed_out.into_iter().rev() {
            let p = self.pending.remove(i);
            if p.is_register {
                if self.state == ClientState::Unregistering {
                    self.state = ClientState::Idle;
                    out.push(ClientAction::Unregistered);
                } else {
                    out.extend(self.backoff(now, None));
                }
            } else {
                out.extend(self.keepalive_failed(now));
            }
        }
        if self.retry_at.is_some_and(|t| now >= t) {
            self.retry_at = None;
            out.extend(self.start(now));
        }
        if self.state == ClientState::Registered {
            if self.refresh_at.is_some_and(|t| now >= t) {
                self.refresh_at = None;
                self.state = ClientState::Registering;
                self.pending.retain(|p| !p.is_register);
                let req = self.register_request(self.config.expires, None);
                out.push(self.send(req, true, false, now));
            } else if self.keepalive_at.is_some_and(|t| now >= t) {
                // Over TCP an answer is not lost: a keepalive still unanswered when the next
                // is due has failed (rather than after Timer F, 32 s).
                if self.reliable() {
                    let before = self.pending.len();
                    self.pending.retain(|p| p.is_register);
                    for _ in self.pending.len()..before {
                        out.extend(self.keepalive_failed(now));
                    }
                    if self.state != ClientState::Registered {
                        return out;
                    }
                }
                self.keepalive_at = Some(now + self.config.keepalive_interval_ms);
                let req = self.keepalive_request();
                out.push(self.send(req, false, false, now));
            }
        } else if self.state == ClientState::Registering
            && self.keepalive_at.is_some_and(|t| now >= t)
        {
            // Keep sending keepalives while a refresh is in flight.
            self.keepalive_at = Some(now + self.config.keepalive_interval_ms);
            let req = self.keepalive_request();
            out.push(self.send(req, false, false, now));
        }
        out
    }

    pub fn next_deadline(&self) -> Option<u64> {
        self.pending
            .iter()
            .filter_map(|p| p.tx.next_deadline())
            .chain(
                [self.refresh_at, self.keepalive_at, self.retry_at]
                    .into_iter()
                    .flatten(),
            )
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok_to(req: &Message) -> Message {
        let mut ok = Message::response_to(req, 200, "OK", Some("t"));
        ok.add_header("Expires", "3600");
        ok
    }

    fn sent(acts: &[ClientAction]) -> Vec<Message> {
        acts.iter()
            .filter_map(|a| match a {
                ClientAction::Send(m) => Some(m.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn ipv6_register_brackets_via_and_contact() {
        let mut c = RegisterClient::new(RegisterClientConfig {
            local_host: "::1".into(),
            local_port: 5062,
            ..Default::default()
        });
        let reg = sent(&c.start(0)).remove(0);
        let back = Message::parse(&reg.to_bytes()).unwrap();
        assert!(
            back.header("via")
                .unwrap()
                .starts_with("SIP/2.0/UDP [::1]:5062;")
        );
        let via = back.via().unwrap();
        assert_eq!((via.host.as_str(), via.port), ("::1", Some(5062)));
        let contact = back.contact().unwrap().sip_uri().unwrap();
        assert_eq!((contact.host.as_str(), contact.port), ("::1", Some(5062)));
        assert_eq!(
            back.header("contact"),
            Some("<sip:34020000001320000001@[::1]:5062>")
        );
    }

    #[test]
    fn tcp_register_has_tcp_via_and_contact_and_no_retransmissions() {
        let mut c = RegisterClient::new(RegisterClientConfig {
            transport: "TCP".into(),
            keepalive_interval_ms: 1000,
            ..Default::default()
        });
        let reg = sent(&c.start(0)).remove(0);
        assert!(reg.header("via").unwrap().starts_with("SIP/2.0/TCP "));
        assert!(reg.header("contact").unwrap().contains(";transport=tcp>"));
        // Nothing is re-sent over TCP; Timer F still fails the registration.
        for now in (0..32_000).step_by(250) {
            assert!(sent(&c.poll(now)).is_empty(), "re-sent at {now}");
        }
        let acts = c.poll(32_000);
        assert!(acts.contains(&ClientAction::Failed { status: None }));

        let mut c = RegisterClient::new(RegisterClientConfig {
            transport: "TCP".into(),
            keepalive_interval_ms: 1000,
            ..Default::default()
        });
        let reg = sent(&c.start(0)).remove(0);
        c.on_response(&ok_to(&reg), 10);
        assert_eq!(c.state, ClientState::Registered);
        let ka = sent(&c.poll(1010));
        assert_eq!(ka.len(), 1);
        assert_eq!(ka[0].method(), Some("MESSAGE"));
        assert!(sent(&c.poll(1600)).is_empty(), "keepalive re-sent over TCP");
    }

    /// Over TCP, keepalives unanswered when the next is due fail; after
    /// `max_keepalive_failures` the client fails (the glue reconnects) instead of registering
    /// again on a connection that answers nothing.
    #[test]
    fn tcp_unanswered_keepalives_fail_the_connection() {
        let mut c = RegisterClient::new(RegisterClientConfig {
            transport: "TCP".into(),
            keepalive_interval_ms: 1000,
            max_keepalive_failures: 3,
            ..Default::default()
        });
        let reg = sent(&c.start(0)).remove(0);
        c.on_response(&ok_to(&reg), 10);
        // An answered keepalive resets nothing to fail.
        let ka = sent(&c.poll(1010)).remove(0);
        c.on_response(&ok_to(&ka), 1020);
        let mut failed_at = None;
        for now in (2010..10_000).step_by(100) {
            let acts = c.poll(now);
            if acts.contains(&ClientAction::Failed { status: None }) {
                failed_at = Some(now);
                break;
            }
            assert!(
                sent(&acts).iter().all(|m| m.method() == Some("MESSAGE")),
                "no REGISTER on the silent connection"
            );
        }
        // Keepalives at 2010, 3010, 4010, 5010: the first three fail when the next is due.
        assert_eq!(failed_at, Some(5010));
        assert_eq!(c.state, ClientState::Backoff);
    }

    #[test]
    fn udp_register_retransmits() {
        let mut c = RegisterClient::new(RegisterClientConfig::default());
        let reg = sent(&c.start(0)).remove(0);
        assert!(reg.header("via").unwrap().starts_with("SIP/2.0/UDP "));
        assert!(!reg.header("contact").unwrap().contains("transport="));
        assert_eq!(sent(&c.poll(T1_FOR_TEST)).len(), 1);
    }

    const T1_FOR_TEST: u64 = super::super::transaction::T1_MS;
}

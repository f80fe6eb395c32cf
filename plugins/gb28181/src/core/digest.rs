//! HTTP Digest authentication for SIP REGISTER (RFC 2617 / RFC 7616, MD5 only, as GB/T 28181
//! devices use it): challenge generation, credential parsing and verification for `qop=auth`
//! and the RFC 2069 form without qop.
//!
//! Nonces are stateless: `<issue time, 16 hex>` followed by a keyed MD5 over the time and the
//! realm with a server secret, so freshness is checked without storing anything. Verifying a
//! response ([`verify_response`]) takes the nonce as given and is separate from checking that
//! the nonce is one of ours and fresh ([`NonceIssuer::check`]).

use md5::{Digest, Md5};
use std::fmt::Write;

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn md5_hex(parts: &[&[u8]]) -> String {
    let mut h = Md5::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h.update(b":");
        }
        h.update(p);
    }
    hex(&h.finalize())
}

/// Constant-time comparison of two hex digests (case-insensitive).
fn digest_eq(a: &str, b: &str) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| {
        acc | (x.to_ascii_lowercase() ^ y.to_ascii_lowercase())
    }) == 0
}

/// Parses `Digest k=v, k="v", ...` (as in Authorization and WWW-Authenticate values).
/// Returns None when the scheme isn't Digest.
pub fn parse_digest_params(value: &str) -> Option<Vec<(String, String)>> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("Digest") {
        return None;
    }
    let mut params = Vec::new();
    let bytes = rest.as_bytes();
    let mut i = 0;
    while i < bytes.len() && params.len() < 32 {
        while i < bytes.len() && (bytes[i] == b',' || bytes[i].is_ascii_whitespace()) {
            i += 1;
        }
        let key_start = i;
        while i < bytes.len() && bytes[i] != b'=' && bytes[i] != b',' {
            i += 1;
        }
        let key = rest.get(key_start..i)?.trim().to_ascii_lowercase();
        if i >= bytes.len() || bytes[i] == b',' {
            if !key.is_empty() {
                params.push((key, String::new()));
            }
            continue;
        }
        i += 1; // '='
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let val;
        if bytes.get(i) == Some(&b'"') {
            let start = i + 1;
            let mut j = start;
            let mut out = String::new();
            while j < bytes.len() && bytes[j] != b'"' {
                if bytes[j] == b'\\' && j + 1 < bytes.len() {
                    j += 1;
                }
                j += 1;
            }
            for c in rest.get(start..j.min(bytes.len()))?.chars() {
                if c != '\\' {
                    out.push(c);
                }
            }
            val = out;
            i = j + 1;
        } else {
            let start = i;
            while i < bytes.len() && bytes[i] != b',' {
                i += 1;
            }
            val = rest.get(start..i)?.trim().to_string();
        }
        if !key.is_empty() {
            params.push((key, val));
        }
    }
    Some(params)
}

/// Credentials from an `Authorization: Digest ...` header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Credentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Option<String>,
    pub cnonce: Option<String>,
    pub qop: Option<String>,
    pub nc: Option<String>,
    pub opaque: Option<String>,
}

impl Credentials {
    pub fn parse(value: &str) -> Option<Credentials> {
        let params = parse_digest_params(value)?;
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        Some(Credentials {
            username: get("username")?,
            realm: get("realm").unwrap_or_default(),
            nonce: get("nonce")?,
            uri: get("uri")?,
            response: get("response")?,
            algorithm: get("algorithm"),
            cnonce: get("cnonce"),
            qop: get("qop"),
            nc: get("nc"),
            opaque: get("opaque"),
        })
    }

    /// nc as a number (hex, 8 digits per RFC 2617).
    pub fn nc_value(&self) -> Option<u32> {
        u32::from_str_radix(self.nc.as_deref()?, 16).ok()
    }

    pub fn to_header_value(&self) -> String {
        let mut s = format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", response=\"{}\", algorithm={}",
            self.username,
            self.realm,
            self.nonce,
            self.uri,
            self.response,
            self.algorithm.as_deref().unwrap_or("MD5")
        );
        if let (Some(qop), Some(cnonce), Some(nc)) = (&self.qop, &self.cnonce, &self.nc) {
            let _ = write!(s, ", cnonce=\"{cnonce}\", qop={qop}, nc={nc}");
        }
        if let Some(o) = &self.opaque {
            let _ = write!(s, ", opaque=\"{o}\"");
        }
        s
    }
}

/// A `WWW-Authenticate: Digest ...` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub qop_auth: bool,
    pub stale: bool,
    pub opaque: Option<String>,
}

impl Challenge {
    pub fn parse(value: &str) -> Option<Challenge> {
        let params = parse_digest_params(value)?;
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        if let Some(alg) = get("algorithm")
            && !alg.eq_ignore_ascii_case("MD5")
        {
            return None;
        }
        Some(Challenge {
            realm: get("realm")?.to_string(),
            nonce: get("nonce")?.to_string(),
            qop_auth: get("qop").is_some_and(|q| q.split(',').any(|q| q.trim() == "auth")),
            stale: get("stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
            opaque: get("opaque").map(str::to_string),
        })
    }

    pub fn to_header_value(&self) -> String {
        let mut s = format!("Digest realm=\"{}\"", self.realm);
        if self.qop_auth {
            s.push_str(",qop=\"auth\"");
        }
        let _ = write!(s, ",nonce=\"{}\"", self.nonce);
        if let Some(o) = &self.opaque {
            let _ = write!(s, ",opaque=\"{o}\"");
        }
        if self.stale {
            s.push_str(",stale=true");
        }
        s.push_str(",algorithm=MD5");
        s
    }
}

/// `HA1 = MD5(username:realm:password)`, what htdigest files store.
pub fn ha1(username: &str, realm: &str, password: &str) -> String {
    md5_hex(&[username.as_bytes(), realm.as_bytes(), password.as_bytes()])
}

/// The expected `response` value for these credentials (client side: compute it; server side:
/// compare). RFC 2069 form when `qop` is absent.
pub fn compute_response(c: &Credentials, method: &str, password: &str) -> String {
    compute_response_ha1(c, method, &ha1(&c.username, &c.realm, password))
}

/// [`compute_response`] from a stored HA1 instead of the password.
pub fn compute_response_ha1(c: &Credentials, method: &str, ha1: &str) -> String {
    let ha2 = md5_hex(&[method.as_bytes(), c.uri.as_bytes()]);
    match (&c.qop, &c.cnonce, &c.nc) {
        (Some(qop), Some(cnonce), Some(nc)) if qop.eq_ignore_ascii_case("auth") => md5_hex(&[
            ha1.as_bytes(),
            c.nonce.as_bytes(),
            nc.as_bytes(),
            cnonce.as_bytes(),
            qop.as_bytes(),
            ha2.as_bytes(),
        ]),
        _ => md5_hex(&[ha1.as_bytes(), c.nonce.as_bytes(), ha2.as_bytes()]),
    }
}

/// Whether the response in `c` matches `password` for `method`, with the nonce taken as
/// given. Refuses non-MD5 algorithms, `auth-int`, and qop=auth without cnonce/nc.
pub fn verify_response(c: &Credentials, method: &str, password: &str) -> bool {
    verify_response_ha1(c, method, &ha1(&c.username, &c.realm, password))
}

/// [`verify_response`] against a stored HA1 (lower-case hex) instead of the password.
pub fn verify_response_ha1(c: &Credentials, method: &str, ha1: &str) -> bool {
    if let Some(alg) = &c.algorithm
        && !alg.eq_ignore_ascii_case("MD5")
    {
        return false;
    }
    if let Some(qop) = &c.qop
        && (!qop.eq_ignore_ascii_case("auth") || c.cnonce.is_none() || c.nc_value().is_none())
    {
        return false;
    }
    digest_eq(&compute_response_ha1(c, method, ha1), &c.response)
}

/// Client side: credentials answering `challenge`.
pub fn answer_challenge(
    challenge: &Challenge,
    username: &str,
    password: &str,
    method: &str,
    uri: &str,
    cnonce: &str,
    nc: u32,
) -> Credentials {
    let mut c = Credentials {
        username: username.to_string(),
        realm: challenge.realm.clone(),
        nonce: challenge.nonce.clone(),
        uri: uri.to_string(),
        algorithm: Some("MD5".into()),
        opaque: challenge.opaque.clone(),
        ..Default::default()
    };
    if challenge.qop_auth {
        c.qop = Some("auth".into());
        c.cnonce = Some(cnonce.to_string());
        c.nc = Some(format!("{nc:08x}"));
    }
    c.response = compute_response(&c, method, password);
    c
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceStatus {
    Fresh,
    /// Ours but older than the allowed age: answer 401 with `stale=true`.
    Stale,
    /// Not issued by us (or tampered with).
    Foreign,
}

/// Issues and checks stateless nonces: 16 hex digits of issue time (ms) + 32 hex digits of
/// MD5(secret : time : realm : secret).
#[derive(Debug, Clone)]
pub struct NonceIssuer {
    secret: Vec<u8>,
    /// Maximum nonce age in ms.
    pub max_age_ms: u64,
}

impl NonceIssuer {
    pub fn new(secret: &[u8], max_age_ms: u64) -> Self {
        NonceIssuer {
            secret: secret.to_vec(),
            max_age_ms,
        }
    }

    fn mac(&self, time_hex: &str, realm: &str) -> String {
        md5_hex(&[
            &self.secret,
            time_hex.as_bytes(),
            realm.as_bytes(),
            &self.secret,
        ])
    }

    pub fn issue(&self, realm: &str, now_ms: u64) -> String {
        let t = format!("{now_ms:016x}");
        let mac = self.mac(&t, realm);
        t + &mac
    }

    pub fn check(&self, nonce: &str, realm: &str, now_ms: u64) -> NonceStatus {
        if nonce.len() != 48 || !nonce.is_ascii() {
            return NonceStatus::Foreign;
        }
        let (t, mac) = nonce.split_at(16);
        let Ok(issued) = u64::from_str_radix(t, 16) else {
            return NonceStatus::Foreign;
        };
        if !digest_eq(&self.mac(t, realm), mac) {
            return NonceStatus::Foreign;
        }
        // A nonce from the future (clock step back) is treated like an old one.
        if issued > now_ms || now_ms - issued > self.max_age_ms {
            NonceStatus::Stale
        } else {
            NonceStatus::Fresh
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_quoting() {
        let p =
            parse_digest_params(r#"Digest realm="a,b", qop="auth", nonce=x , stale=TRUE"#).unwrap();
        assert_eq!(p[0], ("realm".into(), "a,b".into()));
        assert_eq!(p[2], ("nonce".into(), "x".into()));
        assert!(parse_digest_params("Basic abc").is_none());
        assert!(parse_digest_params(r#"Digest realm="unterminated"#).is_some());
    }

    #[test]
    fn client_server_round_trip() {
        let issuer = NonceIssuer::new(b"secret", 60_000);
        let nonce = issuer.issue("3402000000", 1_000);
        let ch = Challenge {
            realm: "3402000000".into(),
            nonce,
            qop_auth: true,
            stale: false,
            opaque: None,
        };
        let parsed = Challenge::parse(&ch.to_header_value()).unwrap();
        assert_eq!(parsed, ch);
        let c = answer_challenge(&ch, "dev", "pw", "REGISTER", "sip:x@y", "abc", 1);
        let c2 = Credentials::parse(&c.to_header_value()).unwrap();
        assert_eq!(c2, c);
        assert!(verify_response(&c2, "REGISTER", "pw"));
        assert!(!verify_response(&c2, "REGISTER", "pw2"));
        assert!(!verify_response(&c2, "INVITE", "pw"));
        assert_eq!(
            issuer.check(&c2.nonce, "3402000000", 2_000),
            NonceStatus::Fresh
        );
        assert_eq!(
            issuer.check(&c2.nonce, "3402000000", 70_000),
            NonceStatus::Stale
        );
        assert_eq!(
            issuer.check(&c2.nonce, "other", 2_000),
            NonceStatus::Foreign
        );
        let other = NonceIssuer::new(b"other", 60_000);
        assert_eq!(
            other.check(&c2.nonce, "3402000000", 2_000),
            NonceStatus::Foreign
        );
        assert_eq!(
            issuer.check("a1b6ba00d8cbaa8ce99d1d39b2905d12", "3402000000", 2_000),
            NonceStatus::Foreign
        );
    }

    #[test]
    fn rfc2069_and_bad_qop() {
        let ch = Challenge {
            realm: "r".into(),
            nonce: "n".into(),
            qop_auth: false,
            stale: false,
            opaque: None,
        };
        let mut c = answer_challenge(&ch, "u", "p", "REGISTER", "sip:r", "c", 1);
        assert!(c.qop.is_none());
        assert!(verify_response(&c, "REGISTER", "p"));
        c.qop = Some("auth-int".into());
        assert!(!verify_response(&c, "REGISTER", "p"));
        c.qop = None;
        c.algorithm = Some("SHA-256".into());
        assert!(!verify_response(&c, "REGISTER", "p"));
    }
}

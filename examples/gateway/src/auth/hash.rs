//! Stored secrets (passwords and bearer tokens) and how they are made: `argon2:$argon2id$...`
//! (PHC string, the `argon2` crate) or `sha256:<salt>:<hex of SHA-256(salt ‖ secret)>`. Plain
//! text is refused. Also the Digest HA1 (`MD5(user:realm:pass)`, what htdigest stores).

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Argon2, Params};
use sha2::{Digest, Sha256};
use std::fmt::Write;

/// Upper bounds on the argon2 parameters a config may ask for (verification cost per try).
const MAX_ARGON2_M_KIB: u32 = 256 * 1024;
const MAX_ARGON2_T: u32 = 16;
const MAX_ARGON2_P: u32 = 16;
/// Longest secret (password or token) ever verified: longer ones are refused unhashed.
pub const MAX_SECRET_LEN: usize = 1024;

/// A password or token hash from the config.
#[derive(Debug, Clone)]
pub enum Secret {
    Argon2(Box<PasswordHash>),
    Sha256 { salt: String, digest: [u8; 32] },
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn sha256_salted(salt: &str, secret: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(secret);
    h.finalize().into()
}

/// Constant-time equality of two equally long byte strings.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Secret {
    /// Parses a stored `argon2:...` or `sha256:salt:hex` value.
    pub fn parse(s: &str) -> Result<Secret, String> {
        if let Some(phc) = s.strip_prefix("argon2:") {
            let ph = PasswordHash::new(phc).map_err(|e| format!("argon2 hash: {e}"))?;
            if !ph.algorithm.as_str().starts_with("argon2") {
                return Err(format!("argon2 hash: algorithm {}", ph.algorithm));
            }
            let p = Params::try_from(&ph).map_err(|e| format!("argon2 hash: {e}"))?;
            if p.m_cost() > MAX_ARGON2_M_KIB
                || p.t_cost() > MAX_ARGON2_T
                || p.p_cost() > MAX_ARGON2_P
            {
                return Err(format!(
                    "argon2 hash: parameters above m={MAX_ARGON2_M_KIB},t={MAX_ARGON2_T},p={MAX_ARGON2_P}"
                ));
            }
            if ph.hash.is_none() {
                return Err("argon2 hash: no hash value".into());
            }
            return Ok(Secret::Argon2(Box::new(ph)));
        }
        if let Some(rest) = s.strip_prefix("sha256:") {
            let (salt, digest) = rest
                .rsplit_once(':')
                .ok_or("sha256 hash: sha256:<salt>:<64 hex> expected")?;
            if salt.len() < 8 || salt.len() > 128 || !salt.bytes().all(|b| b.is_ascii_graphic()) {
                return Err("sha256 hash: salt of 8 to 128 printable characters expected".into());
            }
            let digest = unhex32(digest).ok_or("sha256 hash: 64 hex digits expected")?;
            return Ok(Secret::Sha256 {
                salt: salt.to_string(),
                digest,
            });
        }
        Err(
            "a hashed value is expected: argon2:$argon2id$... or sha256:<salt>:<hex> \
             (make one with `gateway --hash-password`); plain text is refused"
                .into(),
        )
    }

    /// Whether `secret` matches. argon2 takes tens of milliseconds: callers cache successes
    /// and rate-limit failures.
    pub fn verify(&self, secret: &[u8]) -> bool {
        if secret.len() > MAX_SECRET_LEN {
            return false;
        }
        match self {
            Secret::Argon2(ph) => Argon2::default().verify_password(secret, &**ph).is_ok(),
            Secret::Sha256 { salt, digest } => ct_eq(&sha256_salted(salt, secret), digest),
        }
    }
}

/// `n` random bytes from the OS, as hex.
pub fn random_hex(n: usize) -> Result<String, String> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).map_err(|e| format!("getrandom: {e}"))?;
    Ok(hex(&b))
}

/// The `pass` (or token) value to store for `secret`: argon2id with the crate's defaults.
pub fn hash_password(secret: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| format!("getrandom: {e}"))?;
    let h = Argon2::default()
        .hash_password_with_salt(secret.as_bytes(), &salt)
        .map_err(|e| format!("argon2: {e}"))?;
    Ok(format!("argon2:{h}"))
}

/// The fast form `sha256:<random salt>:<hex>` (for tokens, or where argon2 is too slow).
pub fn hash_sha256(secret: &str) -> Result<String, String> {
    let salt = random_hex(16)?;
    Ok(format!(
        "sha256:{salt}:{}",
        hex(&sha256_salted(&salt, secret.as_bytes()))
    ))
}

/// The `digest_ha1` value for a user (enables RTSP Digest for them).
pub fn digest_ha1(user: &str, realm: &str, pass: &str) -> String {
    gstgb28181::core::digest::ha1(user, realm, pass)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_round_trip() {
        let s = hash_sha256("hunter2").unwrap();
        let secret = Secret::parse(&s).unwrap();
        assert!(secret.verify(b"hunter2"));
        assert!(!secret.verify(b"hunter3"));
        assert!(!secret.verify(b""));
    }

    #[test]
    fn argon2_round_trip() {
        let s = hash_password("correct horse").unwrap();
        assert!(s.starts_with("argon2:$argon2id$"));
        let secret = Secret::parse(&s).unwrap();
        assert!(secret.verify(b"correct horse"));
        assert!(!secret.verify(b"correct horsE"));
    }

    #[test]
    fn refused_forms() {
        for bad in [
            "",
            "hunter2",
            "plain:hunter2",
            "sha256:",
            "sha256:salt:00",
            "sha256:short:0000000000000000000000000000000000000000000000000000000000000000",
            "sha256:longenoughsalt:zz00000000000000000000000000000000000000000000000000000000000000",
            "argon2:",
            "argon2:$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$",
            "argon2:$argon2id$v=19$m=99999999,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
            "argon2:$pbkdf2$i=1$c2FsdA$aGFzaA",
        ] {
            assert!(Secret::parse(bad).is_err(), "{bad}");
        }
        let long = vec![b'a'; MAX_SECRET_LEN + 1];
        let s = Secret::parse(&hash_sha256(&String::from_utf8(long.clone()).unwrap()).unwrap())
            .unwrap();
        assert!(!s.verify(&long));
    }

    #[test]
    fn ha1_is_htdigest() {
        // htdigest: MD5("Mufasa:testrealm@host.com:Circle Of Life") (RFC 2617 example).
        assert_eq!(
            digest_ha1("Mufasa", "testrealm@host.com", "Circle Of Life"),
            "939e7578ed9e3c518a452acee763bce9"
        );
    }
}

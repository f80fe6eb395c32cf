//! `Authorization` header values (RTSP and HTTP): `Basic <base64 user:pass>`,
//! `Bearer <token>` and `Digest k=v,...` (parsed by the GB28181 plugin's digest module, the
//! one Digest parser of the project). Bounded: values over [`MAX_HEADER_LEN`] are refused.

use base64::Engine;
use gstgb28181::core::digest::Credentials;

/// Longest `Authorization` value accepted.
pub const MAX_HEADER_LEN: usize = 4096;
/// Longest user name accepted anywhere (config or header).
pub const MAX_USER_LEN: usize = 64;

/// What a client presented.
#[derive(Debug, Clone, PartialEq)]
pub enum Authorization {
    Basic { user: String, pass: String },
    Bearer(String),
    Digest(Box<Credentials>),
}

/// Why a header value was not understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    TooLong,
    UnknownScheme,
    BadBase64,
    NotUtf8,
    NoColon,
    BadToken,
    BadDigest,
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HeaderError::TooLong => "Authorization value too long",
            HeaderError::UnknownScheme => "unknown Authorization scheme",
            HeaderError::BadBase64 => "Basic credentials are not base64",
            HeaderError::NotUtf8 => "Basic credentials are not UTF-8",
            HeaderError::NoColon => "Basic credentials without ':'",
            HeaderError::BadToken => "malformed Bearer token",
            HeaderError::BadDigest => "malformed Digest credentials",
        })
    }
}

/// Splits `Scheme rest` (scheme compared case-insensitively).
fn scheme(value: &str) -> (&str, &str) {
    let v = value.trim();
    match v.find([' ', '\t']) {
        Some(i) => (&v[..i], v[i..].trim_start()),
        None => (v, ""),
    }
}

/// Whether `s` is an RFC 7235 token68 (Bearer token alphabet).
fn is_token68(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

impl Authorization {
    /// Parses one `Authorization` header value.
    pub fn parse(value: &str) -> Result<Authorization, HeaderError> {
        if value.len() > MAX_HEADER_LEN {
            return Err(HeaderError::TooLong);
        }
        let (scheme, rest) = scheme(value);
        if scheme.eq_ignore_ascii_case("Basic") {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .map_err(|_| HeaderError::BadBase64)?;
            let text = String::from_utf8(raw).map_err(|_| HeaderError::NotUtf8)?;
            let (user, pass) = text.split_once(':').ok_or(HeaderError::NoColon)?;
            Ok(Authorization::Basic {
                user: user.to_string(),
                pass: pass.to_string(),
            })
        } else if scheme.eq_ignore_ascii_case("Bearer") {
            let t = rest.trim();
            if !is_token68(t) {
                return Err(HeaderError::BadToken);
            }
            Ok(Authorization::Bearer(t.to_string()))
        } else if scheme.eq_ignore_ascii_case("Digest") {
            let c = Credentials::parse(value.trim()).ok_or(HeaderError::BadDigest)?;
            if c.username.is_empty() || c.response.is_empty() || c.nonce.is_empty() {
                return Err(HeaderError::BadDigest);
            }
            Ok(Authorization::Digest(Box::new(c)))
        } else {
            Err(HeaderError::UnknownScheme)
        }
    }

    /// The user name the client claims (Bearer: none).
    pub fn user(&self) -> Option<&str> {
        match self {
            Authorization::Basic { user, .. } => Some(user),
            Authorization::Digest(c) => Some(&c.username),
            Authorization::Bearer(_) => None,
        }
    }
}

/// `Basic <base64 user:pass>` (client side, for tests and tools).
pub fn basic_value(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic() {
        // RFC 7617's example.
        assert_eq!(
            Authorization::parse("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
            Ok(Authorization::Basic {
                user: "Aladdin".into(),
                pass: "open sesame".into()
            })
        );
        assert_eq!(
            Authorization::parse("basic   YTpiOmM="),
            Ok(Authorization::Basic {
                user: "a".into(),
                pass: "b:c".into()
            })
        );
        assert_eq!(
            Authorization::parse(&basic_value("demo", "pw")),
            Ok(Authorization::Basic {
                user: "demo".into(),
                pass: "pw".into()
            })
        );
        assert_eq!(
            Authorization::parse("Basic !!!"),
            Err(HeaderError::BadBase64)
        );
        assert_eq!(
            Authorization::parse("Basic YWJj"),
            Err(HeaderError::NoColon)
        );
        assert_eq!(
            Authorization::parse("Basic /w=="),
            Err(HeaderError::NotUtf8)
        );
    }

    #[test]
    fn bearer_and_others() {
        assert_eq!(
            Authorization::parse("Bearer abc.DEF-123_~+/=="),
            Ok(Authorization::Bearer("abc.DEF-123_~+/==".into()))
        );
        assert_eq!(Authorization::parse("Bearer"), Err(HeaderError::BadToken));
        assert_eq!(
            Authorization::parse("Bearer a b"),
            Err(HeaderError::BadToken)
        );
        assert_eq!(
            Authorization::parse("Negotiate abc"),
            Err(HeaderError::UnknownScheme)
        );
        assert_eq!(Authorization::parse(""), Err(HeaderError::UnknownScheme));
        let long = format!("Bearer {}", "a".repeat(MAX_HEADER_LEN));
        assert_eq!(Authorization::parse(&long), Err(HeaderError::TooLong));
    }

    #[test]
    fn digest() {
        let v = r#"Digest username="demo", realm="gst-ipcam", nonce="abc", uri="rtsp://h/x", response="0123456789abcdef0123456789abcdef""#;
        match Authorization::parse(v) {
            Ok(Authorization::Digest(c)) => {
                assert_eq!(c.username, "demo");
                assert_eq!(c.uri, "rtsp://h/x");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            Authorization::parse("Digest realm=\"x\""),
            Err(HeaderError::BadDigest)
        );
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let alphabet = "BasicDgerN =\",:/+é\u{0}\tYWJj";
        let chars: Vec<char> = alphabet.chars().collect();
        for _ in 0..5000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 40) as usize;
            let s: String = (0..len)
                .map(|i| chars[((x >> (i % 50)) as usize + i) % chars.len()])
                .collect();
            let _ = Authorization::parse(&s);
        }
    }
}

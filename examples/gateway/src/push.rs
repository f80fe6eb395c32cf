//! Pushing paths to external RTMP servers (a CDN, a streaming site, another media server):
//! `[[push]]` tables of the config file and `POST /v1/push`, each a path and an `rtmp://` or
//! `rtmps://` URL. This is the GStreamer-free part: the settings, their checks, and how a URL
//! is shown (never its stream key or password: on streaming sites the key is the secret). The
//! pushing itself (`flvmux ! rtmp2sink`, retried with [`crate::pull::Backoff`]) is
//! `gateway::push`.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

/// Pushes at once at most (config and API together).
pub const MAX_PUSHES: usize = 64;
/// Longest push URL, in bytes.
pub const MAX_URL_LEN: usize = 1024;

/// One push: `path`'s streams to `url`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushConfig {
    /// The path pushed (a GB28181 channel, a pulled camera, a published path).
    pub path: String,
    /// `rtmp://host[:port]/app/stream-key` or `rtmps://...`.
    pub url: String,
}

impl PushConfig {
    /// Every check; the error names what is wrong (never the URL's secret parts).
    pub fn check(&self) -> Result<(), String> {
        crate::paths::check_reader_path(&self.path).map_err(|e| format!("push: {e}"))?;
        check_url(&self.url).map_err(|e| format!("push of {}: url: {e}", self.path))
    }
}

/// An RTMP URL the gateway may push to: `rtmp` or `rtmps`, a host, an application, at most
/// [`MAX_URL_LEN`] bytes, no whitespace or control characters.
pub fn check_url(url: &str) -> Result<(), String> {
    if url.len() > MAX_URL_LEN {
        return Err(format!("longer than {MAX_URL_LEN} bytes"));
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("a control or space character".into());
    }
    let u = url::Url::parse(url).map_err(|e| e.to_string())?;
    if !matches!(u.scheme(), "rtmp" | "rtmps") {
        return Err(format!("scheme {} is not rtmp or rtmps", u.scheme()));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err("no host".into());
    }
    if u.path_segments().is_none_or(|mut s| s.all(str::is_empty)) {
        return Err("no application (rtmp://host/app/stream)".into());
    }
    Ok(())
}

/// The URL as shown (API, logs): scheme, host, port and application; the rest (stream key,
/// query, password) as `***`.
pub fn shown(url: &str) -> String {
    let Ok(u) = url::Url::parse(url) else {
        return "<invalid>".into();
    };
    let host = u.host_str().unwrap_or_default();
    let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
    let app = u
        .path_segments()
        .and_then(|mut s| s.find(|p| !p.is_empty()))
        .unwrap_or_default();
    format!("{}://{host}{port}/{app}/***", u.scheme())
}

/// `[[push]]` tables: at most [`MAX_PUSHES`], each checked, no push given twice.
pub fn pushes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PushConfig>, D::Error> {
    let v = Vec::<PushConfig>::deserialize(d)?;
    if v.len() > MAX_PUSHES {
        return Err(D::Error::custom(format!("more than {MAX_PUSHES} pushes")));
    }
    let mut seen = std::collections::HashSet::new();
    for p in &v {
        p.check().map_err(D::Error::custom)?;
        if !seen.insert((p.path.as_str(), p.url.as_str())) {
            return Err(D::Error::custom(format!(
                "push of {} to {} given twice",
                p.path,
                shown(&p.url)
            )));
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        for good in [
            "rtmp://127.0.0.1:1935/live/key",
            "rtmps://a.example.com/app/x?user=a&pass=b",
            "rtmp://[::1]/live/x",
        ] {
            assert!(check_url(good).is_ok(), "{good}");
        }
        for bad in [
            "http://example.com/live/x",
            "rtmp://",
            "rtmp://host",
            "rtmp://host/",
            "rtmp://host/live/x y",
            "rtmp://host/live/x\n",
            "file:///etc/passwd",
            "",
        ] {
            assert!(check_url(bad).is_err(), "{bad:?}");
        }
        assert!(check_url(&format!("rtmp://h/a/{}", "k".repeat(MAX_URL_LEN))).is_err());
    }

    #[test]
    fn shown_hides_keys_and_passwords() {
        let s = shown("rtmp://user:secret@cdn.example.com:1936/live/stream-key?pass=x");
        assert_eq!(s, "rtmp://cdn.example.com:1936/live/***");
        for secret in ["secret", "stream-key", "pass=x", "user"] {
            assert!(!s.contains(secret), "{s}");
        }
        assert_eq!(shown("not a url"), "<invalid>");
    }

    #[test]
    fn tables() {
        #[derive(Deserialize)]
        struct F {
            #[serde(deserialize_with = "pushes")]
            push: Vec<PushConfig>,
        }
        let ok: F = toml::from_str(
            "[[push]]\npath = \"live/x\"\nurl = \"rtmp://h/live/k\"\n\
             [[push]]\npath = \"34020000001320000001\"\nurl = \"rtmp://h/live/k2\"\n",
        )
        .unwrap();
        assert_eq!(ok.push.len(), 2);
        for bad in [
            "[[push]]\npath = \"../x\"\nurl = \"rtmp://h/live/k\"\n",
            "[[push]]\npath = \"x\"\nurl = \"http://h/live/k\"\n",
            "[[push]]\npath = \"x\"\nurl = \"rtmp://h/live/k\"\nextra = 1\n",
            "[[push]]\npath = \"x\"\nurl = \"rtmp://h/a/k\"\n[[push]]\npath = \"x\"\nurl = \"rtmp://h/a/k\"\n",
        ] {
            let r: Result<F, _> = toml::from_str(bad);
            assert!(r.is_err(), "{bad}");
        }
    }
}

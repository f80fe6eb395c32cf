//! Pulled cameras: paths whose source is an RTSP URL (`[[paths]]` tables of the config file,
//! as MediaMTX's `paths` with `source: rtsp://...`). This module is the GStreamer-free part:
//! the path settings and their checks, the source URL (credentials kept apart, never
//! printed), the reconnection back-off and the depayloader of each RTP encoding. The
//! `rtspsrc` bin and the gateway glue are in `gateway::pull`.
//!
//! Matched from MediaMTX (`internal/conf/path.go`, `internal/staticsources/rtsp`): `source`
//! (rtsp:// and rtsps://), `sourceOnDemand` (here `source_on_demand`, default on as our
//! GB28181 channels), `sourceOnDemandCloseAfter` (10 s), `rtspTransport` (here
//! `source_protocol`: automatic, tcp, udp, multicast), a static source retried after a pause while it is
//! wanted (here a back-off of 1 s doubling to 30 s instead of a fixed 5 s), and the path list
//! item `{name, source: {type: "rtspSource"}, ready, readers, bytesReceived}`.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use std::time::{Duration, Instant};

/// `[[paths]]` tables at most.
pub const MAX_PATHS: usize = 1024;
/// Longest source URL, in bytes.
pub const MAX_SOURCE_LEN: usize = 2048;
/// Shortest and longest wait before a failed source is opened again.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// One pulled path. Defaults in [`PathConfig::default`] (name and source must be given).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PathConfig {
    /// The path readers ask for (`rtsp://host:8554/<name>`), checked by
    /// [`crate::paths::check_path_name`].
    pub name: String,
    /// `rtsp://[user:pass@]host[:port]/...` or `rtsps://...`.
    pub source: String,
    /// Lower transport asked of the camera: `automatic` (UDP, TCP when UDP gets nothing),
    /// `tcp`, `udp`, or `multicast` (the camera's RTSP multicast transport: the group stream
    /// other receivers of the camera share).
    pub source_protocol: String,
    /// Opened on the first reader and closed after the last; false: always open.
    pub source_on_demand: bool,
    /// Seconds an on-demand source stays open after its last reader left.
    pub source_on_demand_close_after_s: u64,
    /// HLS and recording of this path when the gateway has them on (false: not this path).
    pub hls: bool,
    pub record: bool,
}

impl Default for PathConfig {
    fn default() -> Self {
        PathConfig {
            name: String::new(),
            source: String::new(),
            source_protocol: "automatic".into(),
            source_on_demand: true,
            source_on_demand_close_after_s: 10,
            hls: true,
            record: true,
        }
    }
}

impl PathConfig {
    /// Every check of one table; the error names the path.
    pub fn check(&self) -> Result<(), String> {
        crate::paths::check_path_name(&self.name).map_err(|e| format!("paths: {e}"))?;
        let name = &self.name;
        SourceUrl::parse(&self.source).map_err(|e| format!("path {name}: source: {e}"))?;
        if !["automatic", "tcp", "udp", "multicast"].contains(&self.source_protocol.as_str()) {
            return Err(format!(
                "path {name}: source_protocol `{}` is not one of automatic, tcp, udp, multicast",
                self.source_protocol.escape_debug()
            ));
        }
        if self.source_on_demand_close_after_s > 3600 {
            return Err(format!(
                "path {name}: source_on_demand_close_after_s {} is not within 0 to 3600",
                self.source_on_demand_close_after_s
            ));
        }
        Ok(())
    }
}

/// `[[paths]]` tables: at most [`MAX_PATHS`], each checked, names unique.
pub fn paths<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathConfig>, D::Error> {
    let v = Vec::<PathConfig>::deserialize(d)?;
    if v.len() > MAX_PATHS {
        return Err(D::Error::custom(format!("more than {MAX_PATHS} paths")));
    }
    let mut names = std::collections::HashSet::new();
    for p in &v {
        p.check().map_err(D::Error::custom)?;
        if !names.insert(p.name.as_str()) {
            return Err(D::Error::custom(format!("path {} given twice", p.name)));
        }
    }
    Ok(v)
}

/// A source URL with its credentials taken out.
#[derive(Clone, PartialEq, Eq)]
pub struct SourceUrl {
    /// The URL without `user:pass@` (what may be logged and given to rtspsrc).
    pub location: String,
    /// Percent-decoded; empty: none.
    pub user: String,
    pub pass: String,
}

/// Never the password, even in a `{:?}`.
impl std::fmt::Debug for SourceUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SourceUrl({})", self.location)
    }
}

impl SourceUrl {
    pub fn parse(s: &str) -> Result<SourceUrl, String> {
        if s.is_empty() {
            return Err("required (rtsp://host/path)".into());
        }
        if s.len() > MAX_SOURCE_LEN {
            return Err(format!("longer than {MAX_SOURCE_LEN} bytes"));
        }
        if s.chars().any(|c| c.is_control() || c == ' ') {
            return Err("control characters or spaces in the URL".into());
        }
        let mut url = url::Url::parse(s).map_err(|e| format!("not a URL ({e})"))?;
        if !["rtsp", "rtsps"].contains(&url.scheme()) {
            return Err(format!(
                "scheme `{}` is not rtsp or rtsps",
                url.scheme().escape_debug()
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("no host".into());
        }
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| "credentials are not UTF-8".to_string())
        };
        let user = decode(url.username())?;
        let pass = decode(url.password().unwrap_or(""))?;
        url.set_username("").map_err(|_| "no host")?;
        url.set_password(None).map_err(|_| "no host")?;
        Ok(SourceUrl {
            location: url.into(),
            user,
            pass,
        })
    }

    /// `text` with the password (as given and percent-encoded) replaced by `***`: for any
    /// text that might quote the URL (errors of the RTSP client).
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        if !self.pass.is_empty() {
            let encoded: String =
                url::form_urlencoded::byte_serialize(self.pass.as_bytes()).collect();
            for p in [self.pass.as_str(), encoded.as_str()] {
                out = out.replace(p, "***");
            }
        }
        out
    }
}

/// A source as shown to users (the config API, logs): the URL with `***` for the password.
pub fn masked(source: &str) -> String {
    match url::Url::parse(source) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.into()
        }
        Ok(u) => u.into(),
        Err(_) => "<invalid>".into(),
    }
}

/// When a source that failed is opened again: [`BACKOFF_MIN`] after a session that brought
/// media, doubling up to [`BACKOFF_MAX`] while attempts keep failing.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    delay: Duration,
    next: Option<Instant>,
}

impl Backoff {
    /// A session ended at `now` (`had_media`: it brought frames).
    pub fn ended(&mut self, now: Instant, had_media: bool) {
        self.delay = if had_media || self.delay.is_zero() {
            BACKOFF_MIN
        } else {
            (self.delay * 2).min(BACKOFF_MAX)
        };
        self.next = Some(now + self.delay);
    }

    /// How long to wait before the next attempt.
    pub fn wait(&self, now: Instant) -> Duration {
        self.next
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(now))
    }

    /// The current delay (zero before the first failure).
    pub fn delay(&self) -> Duration {
        self.delay
    }
}

/// The depayloader of an RTP stream (`encoding-name` of rtspsrc's caps); None: not used.
pub fn depayloader_for(encoding_name: &str) -> Option<&'static str> {
    Some(match encoding_name.to_ascii_uppercase().as_str() {
        "H264" => "rtph264depay",
        "H265" => "rtph265depay",
        "MPEG4-GENERIC" => "rtpmp4gdepay",
        "MP4A-LATM" => "rtpmp4adepay",
        "PCMA" => "rtppcmadepay",
        "PCMU" => "rtppcmudepay",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_urls() {
        let s = SourceUrl::parse("rtsp://adm%40x:p%3Aw%20d@cam.local:554/Streaming/101").unwrap();
        assert_eq!(s.location, "rtsp://cam.local:554/Streaming/101");
        assert_eq!(s.user, "adm@x");
        assert_eq!(s.pass, "p:w d");
        assert!(!format!("{s:?}").contains("p:w"));
        let s = SourceUrl::parse("rtsps://[::1]/x").unwrap();
        assert_eq!(
            (s.location.as_str(), s.user.as_str()),
            ("rtsps://[::1]/x", "")
        );
        for (bad, why) in [
            ("file:///etc/passwd", "scheme `file`"),
            ("http://cam/x", "scheme `http`"),
            ("", "required"),
            ("rtsp://", "no host"),
            ("rtsp://cam/a b", "spaces"),
            ("rtsp://cam/\n", "control"),
            ("cam/x", "not a URL"),
        ] {
            let e = SourceUrl::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        let long = format!("rtsp://cam/{}", "x".repeat(MAX_SOURCE_LEN));
        assert!(SourceUrl::parse(&long).unwrap_err().contains("longer"));
        assert!(SourceUrl::parse("rtsp://u:%ff@cam/").is_err());
    }

    #[test]
    fn passwords_are_masked_and_scrubbed() {
        assert_eq!(
            masked("rtsp://u:secret@cam:554/x"),
            "rtsp://u:***@cam:554/x"
        );
        assert_eq!(masked("rtsp://cam/x"), "rtsp://cam/x");
        assert_eq!(masked("::"), "<invalid>");
        let s = SourceUrl::parse("rtsp://u:s%2Fcret@cam/x").unwrap();
        assert_eq!(s.scrub("bad s/cret and s%2Fcret"), "bad *** and ***");
    }

    #[test]
    fn path_tables() {
        let ok = PathConfig {
            name: "garage".into(),
            source: "rtsp://cam/x".into(),
            ..Default::default()
        };
        assert_eq!(ok.check(), Ok(()));
        for (p, why) in [
            (
                PathConfig {
                    name: "../x".into(),
                    ..ok.clone()
                },
                "bad path segment",
            ),
            (
                PathConfig {
                    source: "file:///etc/passwd".into(),
                    ..ok.clone()
                },
                "path garage: source: scheme `file`",
            ),
            (
                PathConfig {
                    source_protocol: "sctp".into(),
                    ..ok.clone()
                },
                "not one of automatic, tcp, udp",
            ),
            (
                PathConfig {
                    source_on_demand_close_after_s: 4000,
                    ..ok.clone()
                },
                "not within 0 to 3600",
            ),
        ] {
            let e = p.check().unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn backoff_doubles_and_resets() {
        let t = Instant::now();
        let mut b = Backoff::default();
        assert_eq!(b.wait(t), Duration::ZERO);
        let mut delays = Vec::new();
        for _ in 0..7 {
            b.ended(t, false);
            delays.push(b.delay().as_secs());
        }
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(b.wait(t + Duration::from_secs(10)), Duration::from_secs(20));
        b.ended(t, true);
        assert_eq!(b.delay(), BACKOFF_MIN);
    }

    #[test]
    fn depayloaders() {
        assert_eq!(depayloader_for("h264"), Some("rtph264depay"));
        assert_eq!(depayloader_for("MPEG4-GENERIC"), Some("rtpmp4gdepay"));
        assert_eq!(depayloader_for("PCMA"), Some("rtppcmadepay"));
        assert_eq!(depayloader_for("VP8"), None);
    }
}

//! From an RTMP `app` and stream name to a gateway path and credentials, as MediaMTX takes
//! them: `rtmp://host/live/x?user=alice&pass=secret` → app `live`, name `x?user=...` → path
//! `live/x`, credentials from the query (in the app's or the name's). GStreamer-free.

/// Longest path accepted, and most components.
pub const MAX_PATH_LEN: usize = 255;
pub const MAX_COMPONENTS: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub path: String,
    pub user: Option<String>,
    pub pass: Option<String>,
}

/// A path the gateway can name things with: components of `A-Za-z0-9._~-`, none `.` or
/// `..`, at most [`MAX_COMPONENTS`] and [`MAX_PATH_LEN`] bytes.
pub fn valid_path(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= MAX_PATH_LEN
        && path.split('/').count() <= MAX_COMPONENTS
        && path.split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b))
        })
}

/// What a request asked for, for logs: app and name without their queries (credentials),
/// made printable.
pub fn shown(app: &str, name: &str) -> String {
    let cut = |s: &str| s.split('?').next().unwrap_or_default().to_string();
    gstgb28181::core::id::printable(&format!("{}/{}", cut(app), cut(name)))
}

/// The path and credentials of a publish/play request; Err with why (for the log, made
/// printable by the caller).
pub fn target(app: &str, name: &str) -> Result<Target, String> {
    let (app, app_query) = app.split_once('?').unwrap_or((app, ""));
    let (name, name_query) = name.split_once('?').unwrap_or((name, ""));
    let path = [app, name]
        .iter()
        .map(|p| p.trim_matches('/'))
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("/");
    if !valid_path(&path) {
        return Err("invalid path".into());
    }
    let mut t = Target {
        path,
        user: None,
        pass: None,
    };
    for q in [app_query, name_query] {
        for (k, v) in form_urlencoded::parse(q.as_bytes()).take(32) {
            match &*k {
                "user" => t.user = Some(v.into_owned()),
                "pass" => t.pass = Some(v.into_owned()),
                _ => {}
            }
        }
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_credentials() {
        let t = target("live", "x?user=alice&pass=s%26cret").unwrap();
        assert_eq!(t.path, "live/x");
        assert_eq!(t.user.as_deref(), Some("alice"));
        assert_eq!(t.pass.as_deref(), Some("s&cret"));
        let t = target("live?user=bob&pass=p", "cam/1").unwrap();
        assert_eq!(
            (t.path.as_str(), t.user.as_deref()),
            ("live/cam/1", Some("bob"))
        );
        assert_eq!(
            target("34020000001320000001", "").unwrap().path,
            "34020000001320000001"
        );
        assert_eq!(target("", "ch").unwrap().path, "ch");
        for (app, name) in [
            ("live", "../x"),
            ("", ""),
            ("live", "a b"),
            ("live", "a//b"),
            ("x", "%2e%2e"),
        ] {
            assert!(target(app, name).is_err(), "{app} {name}");
        }
        assert!(!valid_path(&"a/".repeat(20)));
        assert_eq!(shown("live?pass=x", "a\n?pass=secret"), "live/a\\n");
        assert!(!valid_path(&"a".repeat(300)));
    }
}

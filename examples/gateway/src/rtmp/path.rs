//! From an RTMP `app` and stream name to a gateway path and credentials, as MediaMTX takes
//! them: `rtmp://host/live/x?user=alice&pass=secret` → app `live`, name `x?user=...` → path
//! `live/x`, credentials from the query (in the app's or the name's); the path checked with
//! [`crate::paths`]. GStreamer-free.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub path: String,
    pub user: Option<String>,
    pub pass: Option<String>,
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
    // Publishers get the full check (reserved names included) where their path is made.
    match crate::paths::check_path_name(&path) {
        Ok(()) | Err(crate::paths::PathNameError::Reserved(_)) => {}
        Err(e) => return Err(e.to_string()),
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
        assert!(target("a", &"b/".repeat(10)).is_err());
        assert_eq!(shown("live?pass=x", "a\n?pass=secret"), "live/a\\n");
        assert!(target("a", &"b".repeat(300)).is_err());
    }
}

//! Path names: what readers and publishers name a stream by (`rtsp://host:8554/<path>`,
//! `rtmp://host/<path>`, `http://host:8888/<path>/index.m3u8`), as MediaMTX does. A GB28181
//! channel's path is its channel ID; other paths (pulled cameras, publishers) are names like
//! `live/x` or `garage`.
//!
//! Every path name from outside (a URL of a publisher or reader, the configuration) is
//! checked here, once, before it is used as a mount point, a map key or a directory name:
//! 1 to [`MAX_PATH_LEN`] bytes, at most [`MAX_SEGMENTS`] segments separated by single `/`,
//! each segment of ASCII letters, digits, `_`, `-` and `.` and not `.` or `..`; names the
//! gateway uses itself (a GB28181 ID shape, `playback-<n>`, its HTTP routes) are reserved.
//! A checked name is safe as a relative directory path (no `..`, no absolute path, no NUL,
//! no backslash) and as a URL path without escaping.

use std::fmt;

/// Longest path name, in bytes.
pub const MAX_PATH_LEN: usize = 64;
/// Most `/`-separated segments in a path name.
pub const MAX_SEGMENTS: usize = 4;

/// First segments the gateway's own URLs use.
const RESERVED_FIRST: &[&str] = &["v1", "metrics", "whep", "web", "static", "index.html"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathNameError {
    Empty,
    TooLong(usize),
    TooManySegments(usize),
    BadSegment(String),
    BadChar(char),
    /// A name the gateway gives itself (GB28181 channel IDs, playbacks, its HTTP routes).
    Reserved(String),
}

impl fmt::Display for PathNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathNameError::Empty => f.write_str("empty path name"),
            PathNameError::TooLong(n) => {
                write!(f, "path name of {n} bytes (at most {MAX_PATH_LEN})")
            }
            PathNameError::TooManySegments(n) => {
                write!(f, "path name of {n} segments (at most {MAX_SEGMENTS})")
            }
            PathNameError::BadSegment(s) => write!(f, "bad path segment {s:?}"),
            PathNameError::BadChar(c) => write!(
                f,
                "character {:?} in a path name (letters, digits, '_', '-', '.', '/')",
                c.escape_default().to_string()
            ),
            PathNameError::Reserved(s) => write!(f, "path name {s:?} is reserved"),
        }
    }
}

impl std::error::Error for PathNameError {}

/// Checks a path name (without the leading `/` of a URL path) for a pulled camera or a
/// publisher.
pub fn check_path_name(name: &str) -> Result<(), PathNameError> {
    if name.is_empty() {
        return Err(PathNameError::Empty);
    }
    if name.len() > MAX_PATH_LEN {
        return Err(PathNameError::TooLong(name.len()));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/')))
    {
        return Err(PathNameError::BadChar(c));
    }
    let segments: Vec<&str> = name.split('/').collect();
    if segments.len() > MAX_SEGMENTS {
        return Err(PathNameError::TooManySegments(segments.len()));
    }
    if let Some(s) = segments
        .iter()
        .find(|s| s.is_empty() || **s == "." || **s == "..")
    {
        return Err(PathNameError::BadSegment((*s).to_string()));
    }
    let first = segments[0];
    let gb_id = first.len() == 20 && first.bytes().all(|b| b.is_ascii_digit());
    let playback = first
        .strip_prefix("playback-")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if gb_id || playback || RESERVED_FIRST.contains(&first) {
        return Err(PathNameError::Reserved(first.to_string()));
    }
    Ok(())
}

/// Checks the name of a path to read (RTSP, HLS, WebRTC, recordings): any path name,
/// the reserved ones included (GB28181 channel IDs and playbacks are read, not published).
pub fn check_reader_path(name: &str) -> Result<(), PathNameError> {
    match check_path_name(name) {
        Ok(()) | Err(PathNameError::Reserved(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_names() {
        for n in [
            "live/x",
            "garage",
            "cam-1.main",
            "a/b/c/d",
            "Live_Stream",
            &"x".repeat(MAX_PATH_LEN),
        ] {
            assert_eq!(check_path_name(n), Ok(()), "{n}");
        }
    }

    #[test]
    fn hostile_names_are_refused() {
        use PathNameError::*;
        let cases: &[(&str, PathNameError)] = &[
            ("", Empty),
            ("../etc", BadSegment("..".into())),
            ("live/../../x", BadSegment("..".into())),
            ("./x", BadSegment(".".into())),
            ("/abs", BadSegment("".into())),
            ("live//x", BadSegment("".into())),
            ("live/", BadSegment("".into())),
            ("a/b/c/d/e", TooManySegments(5)),
            ("live\\x", BadChar('\\')),
            ("live\0x", BadChar('\0')),
            ("li ve", BadChar(' ')),
            ("live?user=a", BadChar('?')),
            ("live%2e%2e", BadChar('%')),
            ("caméra", BadChar('é')),
            (
                "34020000001320000001",
                Reserved("34020000001320000001".into()),
            ),
            ("playback-3", Reserved("playback-3".into())),
            ("v1/devices", Reserved("v1".into())),
            ("metrics", Reserved("metrics".into())),
        ];
        for (n, e) in cases {
            assert_eq!(check_path_name(n).as_ref(), Err(e), "{n:?}");
            // Every refusal says why in words.
            assert!(!e.to_string().is_empty());
        }
        assert_eq!(
            check_path_name(&"x".repeat(MAX_PATH_LEN + 1)),
            Err(TooLong(MAX_PATH_LEN + 1))
        );
        // A name of another shape is fine ("playback-x" is not the gateway's).
        assert_eq!(check_path_name("playback-x"), Ok(()));
    }
}

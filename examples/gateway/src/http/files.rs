//! The HLS directory: created private (0700) and served read-only. A request names
//! `/<path>/<file>` and nothing else: the path (a channel ID, a published path of up to 4
//! segments) passes the one path check ([`crate::paths::check_reader_path`]), the file is a
//! plain name with an HLS extension, and the file opened must resolve inside the directory
//! (no symlink out, no dotfiles, no `..`, no percent-encoding at all). GStreamer-free.

use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Longest file name served.
pub const MAX_NAME: usize = 64;
/// Largest file served (a segment of a few seconds is far below).
pub const MAX_FILE: u64 = 64 << 20;

/// The extensions served and their content types.
const TYPES: &[(&str, &str)] = &[
    ("m3u8", "application/vnd.apple.mpegurl"),
    ("ts", "video/mp2t"),
    ("m4s", "video/iso.segment"),
    ("mp4", "video/mp4"),
];

/// What a valid HLS request names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HlsTarget<'a> {
    pub channel: &'a str,
    pub file: &'a str,
    pub content_type: &'static str,
}

/// Why a request path was refused (all answered 404).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathRefusal {
    Shape,
    Channel,
    FileName,
    Extension,
}

/// Parses a raw (still percent-encoded) URL path `/<path>/<file>`.
pub fn hls_target(url_path: &str) -> Result<HlsTarget<'_>, PathRefusal> {
    let rest = url_path.strip_prefix('/').ok_or(PathRefusal::Shape)?;
    let (channel, file) = rest.rsplit_once('/').ok_or(PathRefusal::Shape)?;
    crate::paths::check_reader_path(channel).map_err(|_| PathRefusal::Channel)?;
    if file.is_empty()
        || file.len() > MAX_NAME
        || file.starts_with('.')
        || file.contains("..")
        || !file
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(PathRefusal::FileName);
    }
    let ext = file.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    let content_type = TYPES
        .iter()
        .find(|(e, _)| *e == ext)
        .map(|(_, t)| *t)
        .ok_or(PathRefusal::Extension)?;
    Ok(HlsTarget {
        channel,
        file,
        content_type,
    })
}

/// A directory served read-only, by canonical path.
#[derive(Debug, Clone)]
pub struct ServedDir {
    root: PathBuf,
}

impl ServedDir {
    pub fn new(dir: &Path) -> std::io::Result<ServedDir> {
        Ok(ServedDir {
            root: dir.canonicalize()?,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The content of `<root>/<channel>/<file>` if it is a regular file that resolves inside
    /// the root (a symlink pointing out is refused) and is not larger than [`MAX_FILE`].
    /// Blocking.
    pub fn read(&self, t: &HlsTarget) -> Option<Vec<u8>> {
        let path = self.root.join(t.channel).join(t.file).canonicalize().ok()?;
        if !path.starts_with(&self.root) {
            return None;
        }
        // O_NOFOLLOW: a name swapped for a symlink after the check is not followed either.
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .ok()?;
        let meta = f.metadata().ok()?;
        if !meta.is_file() || meta.len() > MAX_FILE {
            return None;
        }
        let mut body = Vec::with_capacity(meta.len() as usize);
        f.by_ref().take(MAX_FILE).read_to_end(&mut body).ok()?;
        Some(body)
    }
}

/// A private directory, ready for HLS output: `configured` when given, else a fresh
/// `gst-ipcam-hls-<random>` in `$XDG_RUNTIME_DIR` (when it is private) or the temp dir, so
/// two gateways never share one and no earlier run's files are served. Returns the directory
/// and whether it is such a fresh one (to remove at exit).
pub fn private_dir(configured: &Path) -> Result<(PathBuf, bool), String> {
    if !configured.as_os_str().is_empty() {
        return ensure_private(configured).map(|d| (d, false));
    }
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|run| run.is_absolute() && ensure_private(run).is_ok())
        .unwrap_or_else(std::env::temp_dir);
    let mut rnd = [0u8; 8];
    getrandom::fill(&mut rnd).map_err(|e| format!("random HLS directory name: {e}"))?;
    let name: String = rnd.iter().map(|b| format!("{b:02x}")).collect();
    let dir = base.join(format!("gst-ipcam-hls-{name}"));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    ensure_private(&dir).map(|d| (d, true))
}

/// Creates `dir` (mode 0700, parents as needed) or checks the existing one: a real directory
/// (not a symlink), owned by this user, writable by nobody else. Returns its canonical path.
pub fn ensure_private(dir: &Path) -> Result<PathBuf, String> {
    let show = dir.display();
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| format!("{show}: {e}"))?;
        }
        Err(e) => return Err(format!("{show}: {e}")),
        Ok(_) => {}
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| format!("{show}: {e}"))?;
    if meta.file_type().is_symlink() {
        return Err(format!(
            "{show} is a symlink; refusing it as the HLS directory"
        ));
    }
    if !meta.is_dir() {
        return Err(format!("{show} is not a directory"));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(format!(
            "{show} belongs to uid {}, not to us ({me})",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{show} is writable by others (mode {:o}); use a private directory",
            meta.mode() & 0o777
        ));
    }
    dir.canonicalize().map_err(|e| format!("{show}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_paths() {
        let t = hls_target("/34020000001320000001/index.m3u8").unwrap();
        assert_eq!(t.channel, "34020000001320000001");
        assert_eq!(t.content_type, "application/vnd.apple.mpegurl");
        assert_eq!(
            hls_target("/ch/segment00001.ts").unwrap().content_type,
            "video/mp2t"
        );
        for bad in [
            "",
            "/",
            "/index.m3u8",
            "/ch/",
            "/../etc/passwd",
            "/ch/../x.ts",
            "/%2e%2e/x.ts",
            "/ch/%2e%2e%2fx.ts",
            "/ch/.hidden.ts",
            "/ch/./b.ts",
            "/ch/../b.ts",
            "/a/b/c/d/e/x.ts",
            "/ch/passwd",
            "/ch/x.html",
            "/ch/x.ts\0",
            "/c h/x.ts",
            "//x.ts",
            "/ch/a..ts",
        ] {
            assert!(hls_target(bad).is_err(), "{bad:?}");
        }
        let t = hls_target("/live/x/index.m3u8").unwrap();
        assert_eq!((t.channel, t.file), ("live/x", "index.m3u8"));
        let long = format!("/ch/{}.ts", "a".repeat(MAX_NAME));
        assert_eq!(hls_target(&long), Err(PathRefusal::FileName));
        let long_ch = format!("/{}/x.ts", "1".repeat(100));
        assert_eq!(hls_target(&long_ch), Err(PathRefusal::Channel));
    }

    /// Random paths never panic, and whatever is accepted stays one plain name below plain
    /// path segments.
    #[test]
    fn garbage_paths() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let alphabet = b"/./%2e%2f\\\0abc019_-.m3u8ts~ \n";
        for _ in 0..20_000 {
            let len = (next() % 40) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let path = String::from_utf8_lossy(&bytes);
            if let Ok(t) = hls_target(&path) {
                assert!(!t.file.starts_with('.') && !t.file.contains(['/', '%', '\\']));
                assert!(!t.channel.is_empty() && !t.channel.contains(['%', '\\']));
                assert!(
                    t.channel
                        .split('/')
                        .all(|s| !s.is_empty() && s != "." && s != "..")
                );
            }
        }
    }

    fn scratch(name: &str) -> PathBuf {
        let mut r = [0u8; 6];
        getrandom::fill(&mut r).unwrap();
        std::env::temp_dir()
            .join(format!("gw-files-{name}-{:x?}", r).replace([' ', ',', '[', ']'], ""))
    }

    #[test]
    fn private_dirs_and_symlinks() {
        let (d, fresh) = private_dir(Path::new("")).unwrap();
        assert!(fresh);
        assert_eq!(std::fs::metadata(&d).unwrap().mode() & 0o777, 0o700);
        let (d2, _) = private_dir(Path::new("")).unwrap();
        assert_ne!(d, d2);
        std::fs::remove_dir_all(&d).unwrap();
        std::fs::remove_dir_all(&d2).unwrap();

        let base = scratch("priv");
        let made = ensure_private(&base.join("a/hls")).unwrap();
        assert_eq!(std::fs::metadata(&made).unwrap().mode() & 0o777, 0o700);
        let link = base.join("link");
        std::os::unix::fs::symlink(&made, &link).unwrap();
        assert!(ensure_private(&link).unwrap_err().contains("symlink"));
        let open = base.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        assert!(ensure_private(&open).is_err());

        // Served: a file inside; refused: a symlink inside pointing out, a directory.
        let served = ServedDir::new(&made).unwrap();
        std::fs::create_dir(made.join("ch")).unwrap();
        std::fs::write(made.join("ch/index.m3u8"), b"#EXTM3U\n").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", made.join("ch/p.ts")).unwrap();
        std::fs::create_dir(made.join("ch/d.ts")).unwrap();
        let get = |p: &str| served.read(&hls_target(p).unwrap());
        assert_eq!(get("/ch/index.m3u8").as_deref(), Some(&b"#EXTM3U\n"[..]));
        assert_eq!(get("/ch/p.ts"), None);
        assert_eq!(get("/ch/d.ts"), None);
        assert_eq!(get("/ch/none.ts"), None);
        std::fs::remove_dir_all(&base).unwrap();
    }
}

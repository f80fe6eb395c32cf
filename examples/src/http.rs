//! A small HTTP/1.0 server for /metrics and HLS files: std sockets, one thread accepting,
//! one short-lived thread per request (bounded: requests over 8 KiB or slower than 5 s are
//! dropped; at most [`MAX_CONNECTIONS`] at once). GET and HEAD only.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

pub const MAX_CONNECTIONS: usize = 256;
const MAX_REQUEST: usize = 8192;

/// A response: status, content type, body.
pub type Response = (u16, &'static str, Vec<u8>);
pub type Handler = Arc<dyn Fn(&str) -> Response + Send + Sync>;

pub struct HttpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    pub fn start(bind: &str, port: u16, handler: Handler) -> std::io::Result<HttpServer> {
        let listener = TcpListener::bind((bind, port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let active = Arc::new(AtomicUsize::new(0));
        let thread = std::thread::Builder::new()
            .name(format!("http-{port}"))
            .spawn(move || {
                while !stop2.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((s, _)) => {
                            if active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
                                continue;
                            }
                            active.fetch_add(1, Ordering::SeqCst);
                            let h = handler.clone();
                            let a = active.clone();
                            let _ = std::thread::Builder::new().name("http-req".into()).spawn(
                                move || {
                                    let _ = serve(s, &h);
                                    a.fetch_sub(1, Ordering::SeqCst);
                                },
                            );
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            })?;
        Ok(HttpServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(mut s: TcpStream, handler: &Handler) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
        let n = s.read(&mut chunk)?;
        if n == 0 || buf.len() + n > MAX_REQUEST {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    let mut parts = text.lines().next().unwrap_or("").split_whitespace();
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("/");
    let path = target.split('?').next().unwrap_or("/");
    let (status, ctype, body) = match method {
        "GET" | "HEAD" => handler(path),
        _ => (405, "text/plain", b"method not allowed\n".to_vec()),
    };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Error",
    };
    let head = format!(
        "HTTP/1.0 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-cache\r\nAccess-Control-Allow-Origin: *\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    if method != "HEAD" {
        s.write_all(&body)?;
    }
    s.flush()
}

/// The file under `root` that a URL path names, refusing anything that leaves `root`.
pub fn safe_join(root: &Path, url_path: &str) -> Option<PathBuf> {
    let rel = Path::new(url_path.trim_start_matches('/'));
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(root.join(rel))
}

pub fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("m3u8") => "application/vnd.apple.mpegurl",
        Some("ts") => "video/mp2t",
        Some("mp4") | Some("m4s") => "video/mp4",
        Some("html") => "text/html",
        _ => "application/octet-stream",
    }
}

/// Serves files below `root`.
pub fn file_handler(root: PathBuf) -> Handler {
    Arc::new(move |path| {
        match safe_join(&root, path).and_then(|p| std::fs::read(&p).ok().map(|b| (p, b))) {
            Some((p, body)) => (200, content_type(&p), body),
            None => (404, "text/plain", b"not found\n".to_vec()),
        }
    })
}

/// A blocking GET (tests and tools): status and body.
pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, buf[split + 4..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_and_refuses_escapes() {
        let dir = std::env::temp_dir().join(format!("gw-http-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("ch")).unwrap();
        std::fs::write(dir.join("ch/index.m3u8"), b"#EXTM3U\n").unwrap();
        let mut srv = HttpServer::start("127.0.0.1", 0, file_handler(dir.clone())).unwrap();
        let a = srv.local_addr();
        assert_eq!(
            get(a, "/ch/index.m3u8").unwrap(),
            (200, b"#EXTM3U\n".to_vec())
        );
        assert_eq!(get(a, "/ch/none.ts").unwrap().0, 404);
        assert_eq!(get(a, "/../etc/passwd").unwrap().0, 404);
        assert!(safe_join(&dir, "/a/../../b").is_none());
        srv.stop();
        std::fs::remove_dir_all(&dir).ok();
    }
}

//! The direct RTSP path: the gateway answers RTSP itself on its RTSP port and plays live
//! paths over TCP (interleaved) straight from the channel's ingest: RTP packets are made in
//! the ingest's thread and written to each reader's socket without blocking ([`reader`]),
//! with no per-reader pipeline and no thread hand-off per frame (what gst-rtsp-server's
//! per-reader medias cost: two threads woken per frame and reader). Every other connection
//! (UDP and multicast readers, publishers, playback, HTTP tunnels) is handed to
//! gst-rtsp-server with what was read of it ([`conn`]), so those work as before.
//!
//! Off by default (`rtsp_direct_tcp`): with it off, gst-rtsp-server listens itself.

pub mod conn;
pub mod outbox;
pub mod reader;
pub mod rtp;
pub mod sdp;

use crate::factory::{ChannelFactory, ChannelHooks};
use crate::rtsp_auth::RtspGuard;
use gst::glib::translate::ToGlibPtr;
use gst_ipcam_common::sync::lock;
use gst_rtsp_server::prelude::*;
use reader::Output;
use rtp::Codec;
use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// A reader session of the direct path (metrics, API).
pub struct SessionInfo {
    pub number: u64,
    pub path: String,
    pub remote: String,
    pub output: Arc<Output>,
}

/// The direct path's connections and sessions.
#[derive(Default)]
pub struct Registry {
    conns: AtomicUsize,
    sessions: Mutex<Vec<Weak<SessionInfo>>>,
    /// Bytes sent per path by every reader ever (a path's `bytes_sent`).
    path_bytes: Mutex<HashMap<String, Arc<AtomicU64>>>,
    /// Open connections' outputs (closed at shutdown).
    outputs: Mutex<Vec<Weak<Output>>>,
    stopping: AtomicBool,
}

impl Registry {
    /// Connections served on the direct path now.
    pub fn connections(&self) -> usize {
        self.conns.load(Ordering::Relaxed)
    }

    /// Live sessions.
    pub fn sessions(&self) -> Vec<Arc<SessionInfo>> {
        lock(&self.sessions)
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }

    /// Payload bytes sent to readers of `path` on the direct path.
    pub fn path_bytes(&self, path: &str) -> u64 {
        lock(&self.path_bytes)
            .get(path)
            .map_or(0, |b| b.load(Ordering::Relaxed))
    }

    fn add_session(&self, info: &Arc<SessionInfo>, path: &str, out: &Output) {
        let bytes = lock(&self.path_bytes)
            .entry(path.to_string())
            .or_default()
            .clone();
        let _ = out.path_bytes.set(bytes);
        let mut s = lock(&self.sessions);
        s.retain(|w| w.strong_count() > 0);
        s.push(Arc::downgrade(info));
    }

    fn remove_session(&self, number: u64) {
        lock(&self.sessions).retain(|w| w.upgrade().is_some_and(|s| s.number != number));
    }

    /// Ends the session shown as `number` (its connection closes); whether it existed.
    pub fn kick(&self, number: u64) -> bool {
        match self.sessions().into_iter().find(|s| s.number == number) {
            Some(s) => {
                s.output.end();
                true
            }
            None => false,
        }
    }
}

/// What the connections share.
pub struct Server {
    pub rtsp: gst_rtsp_server::RTSPServer,
    pub guard: Arc<RtspGuard>,
    pub registry: Arc<Registry>,
    pub idle_timeout: Duration,
    pub session_timeout: Duration,
    pub max_clients: usize,
    /// Bytes of frames a reader's connection may have waiting (a slow reader loses frames
    /// to the next key frame beyond it).
    pub queue_limit: usize,
}

impl Server {
    /// The mounted path a URL path names (undecoded, as gst-rtsp-server matches mounts) and
    /// what follows it (`/stream=0`); None when nothing is mounted there.
    fn split_path(&self, url_path: &str) -> Option<(String, String)> {
        let (_, matched) = self.mount(url_path)?;
        let path = &url_path[..matched];
        Some((
            path.strip_prefix('/').unwrap_or(path).to_string(),
            url_path[matched..].to_string(),
        ))
    }

    /// The channel, hooks and stream timeout of a live path (a channel factory's mount).
    fn live_path(&self, path: &str) -> Option<(String, Arc<dyn ChannelHooks>, Duration)> {
        let full = format!("/{path}");
        let (factory, matched) = self.mount(&full)?;
        if matched != full.len() {
            return None;
        }
        let f = factory.downcast::<ChannelFactory>().ok()?;
        let (channel, hooks, timeout) = f.parts();
        Some((channel, hooks?, timeout))
    }

    fn mount(&self, url_path: &str) -> Option<(gst_rtsp_server::RTSPMediaFactory, usize)> {
        let mounts = self.rtsp.mount_points()?;
        let c = std::ffi::CString::new(url_path).ok()?;
        let mut matched: std::ffi::c_int = 0;
        // SAFETY: the mount points are a reference we hold, the path a C string that lives
        // for the call; the factory comes back with a reference we take over (or NULL).
        let factory = unsafe {
            let f = gst_rtsp_server::ffi::gst_rtsp_mount_points_match(
                mounts.to_glib_none().0,
                c.as_ptr(),
                &mut matched,
            );
            if f.is_null() {
                return None;
            }
            gst::glib::translate::from_glib_full::<_, gst_rtsp_server::RTSPMediaFactory>(f)
        };
        let m = usize::try_from(matched).ok()?.min(url_path.len());
        url_path.is_char_boundary(m).then_some((factory, m))
    }
}

/// The direct path's codec of an ingest's caps (None: gst-rtsp-server's payloaders only).
pub fn codec_of(caps: &gst::CapsRef) -> Option<Codec> {
    let s = caps.structure(0)?;
    let rate = s
        .get::<i32>("rate")
        .ok()
        .and_then(|r| u32::try_from(r).ok());
    let channels = s
        .get::<i32>("channels")
        .ok()
        .and_then(|c| u32::try_from(c).ok())
        .unwrap_or(1);
    Some(match s.name().as_str() {
        "video/x-h264" => Codec::H264,
        "video/x-h265" => Codec::H265,
        "audio/x-alaw" => Codec::Pcma {
            rate: rate.unwrap_or(8000),
            channels,
        },
        "audio/x-mulaw" => Codec::Pcmu {
            rate: rate.unwrap_or(8000),
            channels,
        },
        "audio/mpeg" if s.get::<i32>("mpegversion").ok() != Some(1) => {
            let config = s.get::<gst::Buffer>("codec_data").ok()?;
            let config = config.map_readable().ok()?.to_vec();
            Codec::Aac {
                rate: rate?,
                channels,
                config,
            }
        }
        _ => return None,
    })
}

/// Serves `listener` on the direct path until [`stop`] (a thread per connection).
pub fn start(
    listener: TcpListener,
    srv: Arc<Server>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("rtsp-accept".into())
        .spawn(move || {
            for conn in listener.incoming() {
                if srv.registry.stopping.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(sock) = conn else {
                    // Out of descriptors and the like: do not spin.
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let Ok(peer) = sock.peer_addr() else { continue };
                let total = srv.registry.connections() + srv.rtsp.client_filter(None).len();
                if total >= srv.max_clients {
                    srv.guard.count_refused_connection(total);
                    continue;
                }
                let Ok(c) = conn::Conn::new(srv.clone(), sock, peer) else {
                    continue;
                };
                {
                    let mut outputs = lock(&srv.registry.outputs);
                    outputs.retain(|w| w.strong_count() > 0);
                    outputs.push(Arc::downgrade(c.output()));
                }
                // The connection holds its slot (counted) until it ends; one that cannot get
                // a thread is dropped here, and its slot with it.
                let _ = std::thread::Builder::new()
                    .name("rtsp-conn".into())
                    .spawn(move || c.run());
            }
        })
}

/// Stops accepting (the listener's socket is shut down) and closes every connection.
pub fn stop(listener: &socket2::Socket, registry: &Registry) {
    registry.stopping.store(true, Ordering::Relaxed);
    let _ = listener.shutdown(std::net::Shutdown::Both);
    for o in lock(&registry.outputs).iter().filter_map(Weak::upgrade) {
        o.end();
        let _ = o.sock.shutdown(std::net::Shutdown::Both);
    }
}

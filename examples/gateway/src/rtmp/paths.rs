//! The gateway's paths as the RTMP listener sees them: readers of any path that has an
//! ingest (GB28181 channels, RTMP publishers), and publishers, each of a new path (checked
//! with [`crate::paths::check_path_name`]) that gets an ingest (`appsrc ! flvdemux`) and an
//! RTSP mount for as long as it publishes.

use super::media::{FlvSource, Reader};
use super::server::{Outbox, Paths, Publisher, Refusal};
use super::session::MediaKind;
use crate::factory::{ChannelFactory, ChannelHooks};
use crate::gateway::OneIngest;
use crate::ingest::{Ingest, IngestSource};
use gst_ipcam_common::sync::lock;
use gst_rtsp_server::prelude::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// Paths published over RTMP at once.
pub const MAX_PUBLISHERS: usize = 64;

pub struct GatewayPaths {
    in_use: Box<dyn Fn(&str) -> bool + Send + Sync>,
    hooks: Arc<dyn ChannelHooks>,
    server: gst_rtsp_server::RTSPServer,
    /// How long a reader waits for the path's streams.
    stream_timeout: Duration,
    published: Mutex<HashMap<String, Arc<Ingest>>>,
    me: Weak<GatewayPaths>,
}

impl GatewayPaths {
    /// `in_use(path)`: the path is served already by something else (a camera channel, a
    /// pulled camera, an RTSP publisher): an RTMP publisher may not take it over.
    pub fn new(
        hooks: Arc<dyn ChannelHooks>,
        server: gst_rtsp_server::RTSPServer,
        stream_timeout: Duration,
        in_use: Box<dyn Fn(&str) -> bool + Send + Sync>,
    ) -> Arc<GatewayPaths> {
        Arc::new_cyclic(|me| GatewayPaths {
            in_use,
            hooks,
            server,
            stream_timeout,
            published: Mutex::new(HashMap::new()),
            me: me.clone(),
        })
    }

    /// The ingest of a path published here.
    pub fn published(&self, path: &str) -> Option<Arc<Ingest>> {
        lock(&self.published).get(path).cloned()
    }

    fn unpublish(&self, path: &str) {
        if let Some(m) = self.server.mount_points() {
            m.remove_factory(&format!("/{path}"));
        }
        if let Some(i) = lock(&self.published).remove(path) {
            i.stop();
        }
        println!("[gateway] RTMP publisher of {path} left");
    }
}

/// A publisher's tags into its path's ingest; the path goes away with it.
struct PublishedPath {
    source: FlvSource,
    path: String,
    paths: Weak<GatewayPaths>,
}

impl Publisher for PublishedPath {
    fn frame(&mut self, kind: MediaKind, timestamp: u32, payload: &[u8]) -> Result<(), String> {
        self.source.frame(kind, timestamp, payload)
    }
}

impl Drop for PublishedPath {
    fn drop(&mut self) {
        if let Some(p) = self.paths.upgrade() {
            p.unpublish(&self.path);
        }
    }
}

fn bad_name(description: String) -> Refusal {
    Refusal {
        code: "NetStream.Publish.BadName",
        description,
    }
}

impl Paths for GatewayPaths {
    fn publish(&self, path: &str) -> Result<Box<dyn Publisher>, Refusal> {
        crate::paths::check_path_name(path).map_err(|e| bad_name(format!("{path}: {e}")))?;
        let mut published = lock(&self.published);
        if published.contains_key(path) || (self.in_use)(path) {
            return Err(bad_name(format!("{path} is already being published")));
        }
        if published.len() >= MAX_PUBLISHERS {
            return Err(bad_name(format!(
                "{MAX_PUBLISHERS} paths are published already"
            )));
        }
        let source = FlvSource::new(&format!("rtmp-{path}")).map_err(bad_name)?;
        let bin = source.element();
        let ingest = Ingest::start_source(
            path,
            IngestSource {
                elements: vec![bin.clone()],
                streams_from: bin.clone(),
                control: bin,
            },
        )
        .map_err(|e| bad_name(format!("{path}: {e}")))?;
        published.insert(path.to_string(), ingest.clone());
        drop(published);
        let factory =
            ChannelFactory::new(path, Arc::new(OneIngest { ingest }), self.stream_timeout);
        if let Some(m) = self.server.mount_points() {
            m.add_factory(&format!("/{path}"), factory);
        }
        println!("[gateway] RTMP publisher of {path}");
        Ok(Box::new(PublishedPath {
            source,
            path: path.to_string(),
            paths: self.me.clone(),
        }))
    }

    fn play(&self, path: &str, out: Outbox) -> Result<Box<dyn Send>, Refusal> {
        let hooks: Arc<dyn ChannelHooks> = match self.published(path) {
            Some(ingest) => Arc::new(OneIngest { ingest }),
            None => self.hooks.clone(),
        };
        let r = Reader::start(hooks, path, self.stream_timeout, out)?;
        Ok(Box::new(r))
    }
}

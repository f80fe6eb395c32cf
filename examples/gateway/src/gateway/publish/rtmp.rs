//! The gateway's paths as the RTMP listener sees them. A publisher's path goes through the
//! one registry of published paths ([`super::publish`]): the same name check, refusals and
//! `max_publishers` as an RTSP publisher, and the same readers (RTSP, HLS, recording, WebRTC,
//! RTMP), API listing and metrics. A reader gets any path that has a source
//! ([`crate::gateway::reader_hooks`]): a GB28181 channel, a pulled camera, or a publisher of
//! either protocol.

use super::{PublishError, PublishGuard, SourceKind};
use crate::gateway::Shared;
use crate::ingest::IngestSource;
use crate::rtmp::media::{FlvSource, Reader};
use crate::rtmp::session::MediaKind;
use crate::rtmp::{Outbox, Paths, Publisher, Refusal};
use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::Duration;

pub(in crate::gateway) struct RtmpPaths {
    pub(in crate::gateway) shared: Weak<Shared>,
    /// How long a reader waits for the path's streams.
    pub(in crate::gateway) stream_timeout: Duration,
}

/// A publisher's tags into its path's ingest; the path ends with it (or the gateway ends the
/// path: then its next tag ends the connection).
struct RtmpPublisher {
    source: FlvSource,
    guard: PublishGuard,
}

impl Publisher for RtmpPublisher {
    fn frame(&mut self, kind: MediaKind, timestamp: u32, payload: &[u8]) -> Result<(), String> {
        if self.guard.is_ended() {
            return Err(format!("path {} was ended", self.guard.path()));
        }
        self.guard
            .bytes_received()
            .fetch_add(payload.len() as u64, Ordering::Relaxed);
        self.source.frame(kind, timestamp, payload)
    }
}

fn refusal(e: &PublishError) -> Refusal {
    Refusal {
        code: match e {
            PublishError::BadName(_) | PublishError::Taken(_) | PublishError::Busy(_) => {
                "NetStream.Publish.BadName"
            }
            _ => "NetStream.Publish.Failed",
        },
        description: e.to_string(),
    }
}

impl Paths for RtmpPaths {
    fn publish(&self, path: &str) -> Result<Box<dyn Publisher>, Refusal> {
        let sh = self
            .shared
            .upgrade()
            .ok_or_else(|| refusal(&PublishError::Stopping))?;
        // Refused before an element is made when the name or the path says no.
        let reservation =
            super::reserve(&sh, path, SourceKind::RtmpPublisher).map_err(|e| refusal(&e))?;
        let source = FlvSource::new(&format!("rtmp-{path}"))
            .map_err(|e| refusal(&PublishError::Failed(e)))?;
        let bin = source.element();
        let guard = reservation
            .publish(IngestSource {
                elements: vec![bin.clone()],
                streams_from: bin.clone(),
                control: bin,
            })
            .map_err(|e| refusal(&e))?;
        Ok(Box::new(RtmpPublisher { source, guard }))
    }

    fn play(&self, path: &str, out: Outbox) -> Result<Box<dyn Send>, Refusal> {
        let not_found = |description: String| Refusal {
            code: "NetStream.Play.StreamNotFound",
            description,
        };
        let sh = self
            .shared
            .upgrade()
            .ok_or_else(|| not_found("gateway stopping".into()))?;
        let hooks = crate::gateway::reader_hooks(&sh, path)
            .ok_or_else(|| not_found(format!("{path}: no such path")))?;
        let r = Reader::start(hooks, path, self.stream_timeout, out)?;
        Ok(Box::new(r))
    }
}

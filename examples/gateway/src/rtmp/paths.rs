//! The gateway's paths as the RTMP listener sees them: readers of any path that has an
//! ingest (GB28181 channels, publishers), publishers of new paths.

use super::media::Reader;
use super::server::{Outbox, Paths, Publisher, Refusal};
use crate::factory::ChannelHooks;
use std::sync::Arc;
use std::time::Duration;

pub struct GatewayPaths {
    hooks: Arc<dyn ChannelHooks>,
    /// How long a reader waits for the path's streams.
    stream_timeout: Duration,
}

impl GatewayPaths {
    pub fn new(hooks: Arc<dyn ChannelHooks>, stream_timeout: Duration) -> GatewayPaths {
        GatewayPaths {
            hooks,
            stream_timeout,
        }
    }
}

impl Paths for GatewayPaths {
    fn publish(&self, path: &str) -> Result<Box<dyn Publisher>, Refusal> {
        Err(Refusal {
            code: "NetStream.Publish.BadName",
            description: format!("{path}: publishing is not available"),
        })
    }

    fn play(&self, path: &str, out: Outbox) -> Result<Box<dyn Send>, Refusal> {
        let r = Reader::start(self.hooks.clone(), path, self.stream_timeout, out)?;
        Ok(Box::new(r))
    }
}

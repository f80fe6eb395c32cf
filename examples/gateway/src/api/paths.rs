//! `/v1/paths`: every path the gateway serves (GB28181 channels, published paths), with
//! what feeds it, its readers and byte counts, as MediaMTX's `/v3/paths/list`.

use super::{Api, ApiResult, blocking};
use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PathView {
    /// The path name (`rtsp://host:8554/<name>`).
    pub name: String,
    /// What feeds it: `gb28181Channel`, `rtspPublisher`, ...
    pub source: String,
    /// Media flows (a camera session is up, or the publisher sends).
    pub ready: bool,
    /// RTSP sessions reading it.
    pub readers: u32,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub bitrate_in_bps: u64,
    pub bitrate_out_bps: u64,
    pub hls: bool,
    pub recording: bool,
}

/// The paths now.
#[utoipa::path(get, path = "/v1/paths", tag = "paths",
    responses((status = 200, body = [PathView]), (status = 401, body = super::ErrorBody),
        (status = 403, body = super::ErrorBody)))]
pub async fn list_paths(State(api): State<Api>) -> ApiResult<Vec<PathView>> {
    let control = api.control.clone();
    let paths = blocking(move || Ok(control.paths()?)).await?;
    Ok(Json(
        paths
            .into_iter()
            .map(|p| PathView {
                name: p.name,
                source: p.source.into(),
                ready: p.ready,
                readers: p.readers,
                bytes_received: p.bytes_received,
                bytes_sent: p.bytes_sent,
                bitrate_in_bps: p.bitrate_in_bps,
                bitrate_out_bps: p.bitrate_out_bps,
                hls: p.hls,
                recording: p.recording,
            })
            .collect(),
    ))
}

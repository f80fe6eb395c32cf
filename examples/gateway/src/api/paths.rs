//! `GET /v1/paths`: every path readers can ask for, whatever feeds it (a GB28181 channel, a
//! publisher, a pulled camera), in the shape of MediaMTX's `/v3/paths/list` items, with its
//! readers, byte counts and the RTP health of its source.

use super::{Api, ApiResult, ErrorBody, blocking};
use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

/// What feeds a path.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PathSourceView {
    /// `gb28181Channel`, `rtspPublisher`, `rtmpPublisher` or `rtspSource` (a pulled camera).
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PathView {
    /// The path name (`rtsp://host:8554/<name>`).
    pub name: String,
    pub source: PathSourceView,
    /// Media flows from the source now.
    pub ready: bool,
    /// RTSP sessions playing the path.
    pub readers: u32,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub bitrate_in_bps: u64,
    pub bitrate_out_bps: u64,
    pub rtp_packets_received: u64,
    /// RTP packets lost between the source and the gateway.
    pub rtp_packets_lost: u64,
    /// Interarrival jitter of the source's RTP (pulled cameras), when known.
    pub rtp_jitter_ms: Option<f64>,
    pub hls: bool,
    pub recording: bool,
}

/// Paths now.
#[utoipa::path(get, path = "/v1/paths", tag = "paths",
    responses((status = 200, body = [PathView]), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub async fn list_paths(State(api): State<Api>) -> ApiResult<Vec<PathView>> {
    let control = api.control.clone();
    let paths = blocking(move || Ok(control.paths()?)).await?;
    Ok(Json(
        paths
            .into_iter()
            .map(|p| PathView {
                name: p.name,
                source: PathSourceView {
                    kind: p.source.to_string(),
                },
                ready: p.ready,
                readers: p.readers,
                bytes_received: p.bytes_received,
                bytes_sent: p.bytes_sent,
                bitrate_in_bps: p.bitrate_in_bps,
                bitrate_out_bps: p.bitrate_out_bps,
                rtp_packets_received: p.packets_received,
                rtp_packets_lost: p.packets_lost,
                rtp_jitter_ms: p.jitter_ms,
                hls: p.hls,
                recording: p.recording,
            })
            .collect(),
    ))
}

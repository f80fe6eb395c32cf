//! `GET /v1/paths`: every path readers can ask for, whatever feeds it (a GB28181 channel, a
//! pulled camera), in the shape of MediaMTX's `/v3/paths/list` items, with the RTP health of
//! its source.

use super::{Api, ApiResult, ErrorBody, blocking};
use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

/// What feeds a path.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PathSourceView {
    /// `gb28181Channel` or `rtspSource` (a pulled camera).
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PathView {
    pub name: String,
    pub source: PathSourceView,
    /// Media flows from the source now.
    pub ready: bool,
    /// RTSP sessions playing the path.
    pub readers: u32,
    pub bytes_received: u64,
    pub rtp_packets_received: u64,
    /// RTP packets lost between the source and the gateway.
    pub rtp_packets_lost: u64,
    /// Interarrival jitter of the source's RTP (pulled cameras), when known.
    pub rtp_jitter_ms: Option<f64>,
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
                source: PathSourceView { kind: p.source },
                ready: p.ready,
                readers: p.readers,
                bytes_received: p.bytes_received,
                rtp_packets_received: p.packets_received,
                rtp_packets_lost: p.packets_lost,
                rtp_jitter_ms: p.jitter_ms,
            })
            .collect(),
    ))
}

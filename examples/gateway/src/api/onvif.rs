//! `POST /v1/onvif/discover`: finds ONVIF cameras (WS-Discovery) and their RTSP stream URIs
//! (GetProfiles/GetStreamUri with the given device credentials), see [`crate::onvif`]. The
//! device password is used for the requests only: never in the answer or the logs.

use super::{Api, ApiError, ApiResult, ErrorBody, blocking};
use crate::onvif::client::{self, Device, Options};
use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use serde::Deserialize;
use std::time::Duration;
use utoipa::ToSchema;

/// Longest wait for answers (ms).
pub const MAX_WAIT_MS: u64 = 10_000;

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DiscoverRequest {
    /// Where the probe goes: `ip:port` of one device (unicast); default the WS-Discovery
    /// multicast group 239.255.255.250:3702.
    pub target: Option<String>,
    /// How long answers are waited for, 100 to 10000 ms (default 2000).
    pub wait_ms: Option<u64>,
    /// Device credentials for GetProfiles/GetStreamUri (WS-UsernameToken).
    pub user: Option<String>,
    pub password: Option<String>,
}

/// Finds ONVIF devices and their stream URIs.
#[utoipa::path(post, path = "/v1/onvif/discover", tag = "onvif",
    request_body = DiscoverRequest,
    responses((status = 200, body = [Device]), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn discover(
    State(_api): State<Api>,
    body: Result<Json<DiscoverRequest>, JsonRejection>,
) -> ApiResult<Vec<Device>> {
    let Json(r) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let target = r
        .target
        .as_deref()
        .unwrap_or(crate::onvif::DISCOVERY_ADDR)
        .parse()
        .map_err(|_| ApiError::bad_request("target: ip:port"))?;
    let wait_ms = r.wait_ms.unwrap_or(2000);
    if !(100..=MAX_WAIT_MS).contains(&wait_ms) {
        return Err(ApiError::bad_request(format!(
            "wait_ms: 100 to {MAX_WAIT_MS}"
        )));
    }
    let (user, password) = (r.user.unwrap_or_default(), r.password.unwrap_or_default());
    if user.len() > 256 || password.len() > 256 {
        return Err(ApiError::bad_request(
            "user or password longer than 256 bytes",
        ));
    }
    let opts = Options {
        target,
        wait: Duration::from_millis(wait_ms),
        user,
        password,
    };
    let found = blocking(move || {
        client::discover(&opts).map_err(|e| ApiError::bad_request(format!("probe: {e}")))
    })
    .await?;
    Ok(Json(found))
}

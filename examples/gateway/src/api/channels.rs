//! `/v1/channels`: mounted channels with their catalog names and URLs, PTZ, presets and key
//! frames.

use super::ptz::{PresetOp, PtzRequest, preset_command};
use super::{Api, ApiError, ApiResult, ErrorBody, blocking, checked_id};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use gstgb28181::core::manscdp::PtzCmd;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChannelView {
    pub id: String,
    pub device_id: String,
    /// Name and status (`ON`/`OFF`) from the device's Catalog, when it listed the channel.
    pub name: Option<String>,
    pub status: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    /// Whether the gateway serves it (RTSP mount).
    pub mounted: bool,
    pub rtsp_url: String,
    pub hls_url: Option<String>,
}

pub(super) fn channel_view(
    api: &Api,
    channel: &str,
    device: &str,
) -> Result<ChannelView, ApiError> {
    let item = api.control.directory().channel(device, channel);
    let text = |f: fn(&gstgb28181::core::manscdp::CatalogItem) -> &String| {
        item.as_ref().map(f).filter(|s| !s.is_empty()).cloned()
    };
    Ok(ChannelView {
        name: text(|i| &i.name),
        status: text(|i| &i.status),
        manufacturer: text(|i| &i.manufacturer),
        model: text(|i| &i.model),
        mounted: api.control.channel_device(channel)?.is_some(),
        rtsp_url: api.control.rtsp_url(channel)?,
        hls_url: api.control.hls_url(channel)?,
        id: channel.to_string(),
        device_id: device.to_string(),
    })
}

/// The device of a mounted channel named in a request (400: bad ID, 404: not mounted).
fn device_of(api: &Api, channel: &str) -> Result<String, ApiError> {
    checked_id(api, channel)?;
    api.control
        .channel_device(channel)?
        .ok_or_else(|| ApiError::not_found(format!("channel {channel} is not mounted")))
}

/// Mounted channels.
#[utoipa::path(get, path = "/v1/channels", tag = "channels",
    responses((status = 200, body = [ChannelView]), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub async fn list_channels(State(api): State<Api>) -> ApiResult<Vec<ChannelView>> {
    let mut out = Vec::new();
    for (ch, dev) in api.control.channels()? {
        out.push(channel_view(&api, &ch, &dev)?);
    }
    Ok(Json(out))
}

/// One mounted channel.
#[utoipa::path(get, path = "/v1/channels/{id}", tag = "channels",
    params(("id" = String, Path, description = "channel ID")),
    responses((status = 200, body = ChannelView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn get_channel(State(api): State<Api>, Path(id): Path<String>) -> ApiResult<ChannelView> {
    let dev = device_of(&api, &id)?;
    Ok(Json(channel_view(&api, &id, &dev)?))
}

/// The SN of a DeviceControl sent.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Sent {
    /// The MANSCDP serial number of the command.
    pub sn: u32,
}

async fn send_ptz(api: &Api, channel: &str, cmd: PtzCmd) -> ApiResult<Sent> {
    let dev = device_of(api, channel)?;
    let control = api.control.clone();
    let channel = channel.to_string();
    let sn = blocking(move || {
        control
            .ptz(&dev, &channel, cmd)
            .map_err(|e| ApiError::conflict(format!("PTZ command not sent: {e}")))
    })
    .await?;
    Ok(Json(Sent { sn }))
}

/// Moves (pan, tilt, zoom) or, without any direction, stops the camera (GB/T 28181 A.3
/// PTZCmd). The command is sent; cameras do not confirm it.
#[utoipa::path(post, path = "/v1/channels/{id}/ptz", tag = "channels",
    params(("id" = String, Path, description = "channel ID")),
    request_body = PtzRequest,
    responses((status = 200, body = Sent), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn ptz(
    State(api): State<Api>,
    Path(id): Path<String>,
    body: Result<Json<PtzRequest>, JsonRejection>,
) -> ApiResult<Sent> {
    let Json(req) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let cmd = req.command().map_err(ApiError::bad_request)?;
    send_ptz(&api, &id, cmd).await
}

async fn preset(api: &Api, channel: &str, number: &str, op: PresetOp) -> ApiResult<Sent> {
    let n = number
        .parse::<u32>()
        .map_err(|_| ApiError::bad_request(format!("preset {number}: 1 to 255")))?;
    let cmd = preset_command(op, n).map_err(ApiError::bad_request)?;
    send_ptz(api, channel, cmd).await
}

/// Stores the camera's current position as preset `n` (1..=255).
#[utoipa::path(put, path = "/v1/channels/{id}/presets/{n}", tag = "channels",
    params(("id" = String, Path, description = "channel ID"),
        ("n" = u8, Path, description = "preset number, 1 to 255")),
    responses((status = 200, body = Sent), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn set_preset(
    State(api): State<Api>,
    Path((id, n)): Path<(String, String)>,
) -> ApiResult<Sent> {
    preset(&api, &id, &n, PresetOp::Set).await
}

/// Deletes preset `n`.
#[utoipa::path(delete, path = "/v1/channels/{id}/presets/{n}", tag = "channels",
    params(("id" = String, Path, description = "channel ID"),
        ("n" = u8, Path, description = "preset number, 1 to 255")),
    responses((status = 200, body = Sent), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete_preset(
    State(api): State<Api>,
    Path((id, n)): Path<(String, String)>,
) -> ApiResult<Sent> {
    preset(&api, &id, &n, PresetOp::Delete).await
}

/// Moves the camera to preset `n`.
#[utoipa::path(post, path = "/v1/channels/{id}/presets/{n}/call", tag = "channels",
    params(("id" = String, Path, description = "channel ID"),
        ("n" = u8, Path, description = "preset number, 1 to 255")),
    responses((status = 200, body = Sent), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn call_preset(
    State(api): State<Api>,
    Path((id, n)): Path<(String, String)>,
) -> ApiResult<Sent> {
    preset(&api, &id, &n, PresetOp::Call).await
}

/// Asks the camera for a key frame now (DeviceControl IFameCmd).
#[utoipa::path(post, path = "/v1/channels/{id}/keyframe", tag = "channels",
    params(("id" = String, Path, description = "channel ID")),
    responses((status = 200, body = Sent), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn key_frame(State(api): State<Api>, Path(id): Path<String>) -> ApiResult<Sent> {
    let dev = device_of(&api, &id)?;
    let control = api.control.clone();
    let sn = blocking(move || {
        control
            .force_key_frame(&dev, &id)
            .map_err(|e| ApiError::conflict(format!("key frame request not sent: {e}")))
    })
    .await?;
    Ok(Json(Sent { sn }))
}

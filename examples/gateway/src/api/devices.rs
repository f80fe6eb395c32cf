//! `/v1/devices`: registered devices, their channels, delete, catalog refresh, DeviceInfo
//! and DeviceStatus queries.

use super::channels::{ChannelView, channel_view};
use super::{Api, ApiError, ApiResult, ErrorBody, blocking, checked_id};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use gstgb28181::core::manscdp::{DeviceInfo, DeviceStatus};
use gstgb28181::core::registrar::Device;
use serde::Serialize;
use std::time::Duration;
use utoipa::ToSchema;

/// How long a query waits for the device's answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeviceView {
    pub id: String,
    pub online: bool,
    /// Where its requests come from (`ip:port`).
    pub address: String,
    /// SIP transport: `udp` or `tcp`.
    pub transport: String,
    /// Unix milliseconds of its last REGISTER or keepalive.
    pub last_keepalive_ms: u64,
    pub registered_at_ms: u64,
    pub expires_at_ms: u64,
    /// From its DeviceInfo answer, when it gave one.
    pub name: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub firmware: Option<String>,
    /// Channels mounted for it.
    pub channels: usize,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeviceDetail {
    #[serde(flatten)]
    pub device: DeviceView,
    pub channel_list: Vec<ChannelView>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeviceInfoView {
    pub device_id: String,
    pub result: String,
    pub device_name: String,
    pub manufacturer: String,
    pub model: String,
    pub firmware: String,
    pub channel: Option<u32>,
}

impl From<DeviceInfo> for DeviceInfoView {
    fn from(i: DeviceInfo) -> Self {
        DeviceInfoView {
            device_id: i.device_id,
            result: i.result,
            device_name: i.device_name,
            manufacturer: i.manufacturer,
            model: i.model,
            firmware: i.firmware,
            channel: i.channel,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeviceStatusView {
    pub device_id: String,
    pub result: String,
    pub online: String,
    pub status: String,
    pub encode: String,
    pub record: String,
    pub device_time: String,
}

impl From<DeviceStatus> for DeviceStatusView {
    fn from(s: DeviceStatus) -> Self {
        DeviceStatusView {
            device_id: s.device_id,
            result: s.result,
            online: s.online,
            status: s.status,
            encode: s.encode,
            record: s.record,
            device_time: s.device_time,
        }
    }
}

fn device_view(api: &Api, d: Device, channels: usize) -> DeviceView {
    let info = api
        .control
        .directory()
        .get(&d.id)
        .and_then(|e| e.info)
        .map(|(_, i)| i);
    let text =
        |f: fn(&DeviceInfo) -> &String| info.as_ref().map(f).filter(|s| !s.is_empty()).cloned();
    DeviceView {
        name: text(|i| &i.device_name),
        manufacturer: text(|i| &i.manufacturer),
        model: text(|i| &i.model),
        firmware: text(|i| &i.firmware),
        id: d.id,
        online: d.online,
        address: d.source,
        transport: api.control.transport().into(),
        last_keepalive_ms: d.last_seen_ms,
        registered_at_ms: d.registered_at_ms,
        expires_at_ms: d.expires_at_ms,
        channels,
    }
}

/// A registered device named in a request (400: bad ID, 404: not registered).
pub(super) fn registered(api: &Api, id: &str) -> Result<Device, ApiError> {
    checked_id(api, id)?;
    api.control
        .device(id)
        .ok_or_else(|| ApiError::not_found(format!("device {id} is not registered")))
}

/// Registered devices.
#[utoipa::path(get, path = "/v1/devices", tag = "devices",
    responses((status = 200, body = [DeviceView]), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub async fn list_devices(State(api): State<Api>) -> ApiResult<Vec<DeviceView>> {
    let chans = api.control.channels()?;
    let out = api
        .control
        .devices()
        .into_iter()
        .map(|d| {
            let n = chans.iter().filter(|(_, dev)| *dev == d.id).count();
            device_view(&api, d, n)
        })
        .collect();
    Ok(Json(out))
}

/// One device with its channels.
#[utoipa::path(get, path = "/v1/devices/{id}", tag = "devices",
    params(("id" = String, Path, description = "device ID")),
    responses((status = 200, body = DeviceDetail), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn get_device(State(api): State<Api>, Path(id): Path<String>) -> ApiResult<DeviceDetail> {
    let d = registered(&api, &id)?;
    let chans = api.control.channels()?;
    let mut channel_list = Vec::new();
    for (ch, dev) in chans.iter().filter(|(_, dev)| *dev == id) {
        channel_list.push(channel_view(&api, ch, dev)?);
    }
    Ok(Json(DeviceDetail {
        device: device_view(&api, d, channel_list.len()),
        channel_list,
    }))
}

/// Forgets a device: its registration (it must register again), its channels' mounts and
/// their readers.
#[utoipa::path(delete, path = "/v1/devices/{id}", tag = "devices",
    params(("id" = String, Path, description = "device ID")),
    responses((status = 204, description = "deleted"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn delete_device(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    checked_id(&api, &id)?;
    let control = api.control.clone();
    let known = blocking(move || Ok(control.delete_device(&id)?.then_some(id))).await?;
    match known {
        Some(_) => Ok(StatusCode::NO_CONTENT),
        None => Err(ApiError::not_found("no such device")),
    }
}

/// Sends `kind` to a registered device; the SN of its answer.
async fn send_query(api: &Api, id: &str, kind: &'static str) -> Result<u32, ApiError> {
    registered(api, id)?;
    let control = api.control.clone();
    let id = id.to_string();
    blocking(move || {
        control
            .query(&id, kind)
            .map_err(|e| ApiError::conflict(format!("{kind} query not sent: {e}")))
    })
    .await
}

pub(super) fn no_answer(kind: &str) -> ApiError {
    ApiError::new(
        StatusCode::GATEWAY_TIMEOUT,
        format!("the device did not answer the {kind} query in time"),
    )
}

/// Asks the device for its catalog again and returns the channels it lists.
#[utoipa::path(post, path = "/v1/devices/{id}/catalog", tag = "devices",
    params(("id" = String, Path, description = "device ID")),
    responses((status = 200, body = [ChannelView]), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 504, body = ErrorBody)))]
pub async fn refresh_catalog(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> ApiResult<Vec<ChannelView>> {
    let sn = send_query(&api, &id, "Catalog").await?;
    let items = api
        .control
        .directory()
        .wait_for(&id, ANSWER_TIMEOUT, |e| {
            e.catalog
                .as_ref()
                .filter(|(s, _)| *s == sn)
                .map(|(_, i)| i.clone())
        })
        .await
        .ok_or_else(|| no_answer("Catalog"))?;
    let mut out = Vec::new();
    for i in items {
        out.push(channel_view(&api, &i.device_id, &id)?);
    }
    Ok(Json(out))
}

/// Queries DeviceInfo (name, manufacturer, model, firmware) and returns the answer.
#[utoipa::path(post, path = "/v1/devices/{id}/info", tag = "devices",
    params(("id" = String, Path, description = "device ID")),
    responses((status = 200, body = DeviceInfoView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 504, body = ErrorBody)))]
pub async fn query_info(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> ApiResult<DeviceInfoView> {
    let sn = send_query(&api, &id, "DeviceInfo").await?;
    api.control
        .directory()
        .wait_for(&id, ANSWER_TIMEOUT, |e| {
            e.info
                .as_ref()
                .filter(|(s, _)| *s == sn)
                .map(|(_, i)| i.clone())
        })
        .await
        .map(|i| Json(i.into()))
        .ok_or_else(|| no_answer("DeviceInfo"))
}

/// Queries DeviceStatus (online, encode, record, device time) and returns the answer.
#[utoipa::path(post, path = "/v1/devices/{id}/status", tag = "devices",
    params(("id" = String, Path, description = "device ID")),
    responses((status = 200, body = DeviceStatusView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 504, body = ErrorBody)))]
pub async fn query_status(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> ApiResult<DeviceStatusView> {
    let sn = send_query(&api, &id, "DeviceStatus").await?;
    api.control
        .directory()
        .wait_for(&id, ANSWER_TIMEOUT, |e| {
            e.status
                .as_ref()
                .filter(|(s, _)| *s == sn)
                .map(|(_, i)| i.clone())
        })
        .await
        .map(|s| Json(s.into()))
        .ok_or_else(|| no_answer("DeviceStatus"))
}

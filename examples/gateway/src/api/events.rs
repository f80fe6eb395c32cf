//! A device's events (GB28181 subscriptions): the subscriptions the gateway holds with it,
//! its latest alarms and catalog changes (at most [`super::directory::MAX_ALARMS`] each), and
//! its latest position.

use super::devices::registered;
use super::{Api, ApiResult, ErrorBody};
use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SubscriptionView {
    /// Catalog, Alarm or MobilePosition.
    pub event: String,
    /// Accepted by the device (and not expired).
    pub active: bool,
    /// Unix milliseconds (timer clock) until which it was accepted.
    pub expires_at_ms: Option<u64>,
    /// SUBSCRIBEs sent (first and refreshes), NOTIFYs received.
    pub requests: u64,
    pub notifies: u64,
    /// Refusals or timeouts in a row (retried with back-off).
    pub failures: u32,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AlarmView {
    /// The alarming device or channel.
    pub device_id: String,
    /// 1 (highest) to 4.
    pub priority: Option<u32>,
    /// 1 telephone, 2 device, 3 SMS, 4 GPS, 5 video, 6 device fault, 7 other.
    pub method: Option<u32>,
    pub alarm_type: Option<u32>,
    /// As the device wrote it (`yyyy-MM-ddTHH:mm:ss`).
    pub time: String,
    pub description: String,
    pub longitude: Option<f64>,
    pub latitude: Option<f64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PositionView {
    pub time: String,
    pub longitude: Option<f64>,
    pub latitude: Option<f64>,
    pub speed: Option<f64>,
    pub direction: Option<f64>,
    pub altitude: Option<f64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CatalogChangeView {
    pub channel_id: String,
    /// ADD, DEL, UPDATE, ON, OFF, VLOST, DEFECT.
    pub event: String,
    pub name: String,
    pub status: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeviceEvents {
    pub subscriptions: Vec<SubscriptionView>,
    /// Oldest first.
    pub alarms: Vec<AlarmView>,
    pub catalog_changes: Vec<CatalogChangeView>,
    pub position: Option<PositionView>,
}

/// A device's subscriptions, alarms, catalog changes and position.
#[utoipa::path(get, path = "/v1/devices/{id}/events", tag = "devices",
    params(("id" = String, Path, description = "device ID")),
    responses((status = 200, body = DeviceEvents), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn device_events(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> ApiResult<DeviceEvents> {
    registered(&api, &id)?;
    let entry = api.control.directory().get(&id).unwrap_or_default();
    Ok(Json(DeviceEvents {
        subscriptions: api
            .control
            .subscriptions(&id)
            .into_iter()
            .map(|s| SubscriptionView {
                event: s.event,
                active: s.active,
                expires_at_ms: s.expires_at_ms,
                requests: s.requests,
                notifies: s.notifies,
                failures: s.failures,
            })
            .collect(),
        alarms: entry
            .alarms
            .into_iter()
            .map(|a| AlarmView {
                device_id: a.device_id,
                priority: a.priority,
                method: a.method,
                alarm_type: a.alarm_type,
                time: a.time,
                description: a.description,
                longitude: a.longitude,
                latitude: a.latitude,
            })
            .collect(),
        catalog_changes: entry
            .catalog_changes
            .into_iter()
            .map(|c| CatalogChangeView {
                channel_id: c.device_id,
                event: c.event,
                name: c.name,
                status: c.status,
            })
            .collect(),
        position: entry.position.map(|p| PositionView {
            time: p.time,
            longitude: p.longitude,
            latitude: p.latitude,
            speed: p.speed,
            direction: p.direction,
            altitude: p.altitude,
        }),
    }))
}

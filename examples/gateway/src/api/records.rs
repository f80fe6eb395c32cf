//! `GET /v1/devices/{id}/channels/{channel}/records?start=&end=`: the recordings a camera
//! holds for a time range (a GB/T 28181 RecordInfo query). Times are the device's local time
//! as GB/T 28181 and wvp write them, `yyyy-MM-ddTHH:mm:ss`, passed to the device as they
//! are. The answer is waited for at most [`ANSWER_TIMEOUT`] and holds at most
//! [`MAX_RECORD_ITEMS`] items.

use super::devices::{ANSWER_TIMEOUT, no_answer, registered};
use super::directory::MAX_RECORD_ITEMS;
use super::{Api, ApiError, ApiResult, ErrorBody, blocking, checked_id};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use gstgb28181::core::manscdp::RecordItem;
use gstgb28181::device::is_gb_time;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Clone, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RecordRange {
    /// Start, device local time `yyyy-MM-ddTHH:mm:ss`.
    pub start: String,
    /// End (after start), same format.
    pub end: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RecordView {
    pub channel_id: String,
    pub name: String,
    pub file_path: String,
    pub start: String,
    pub end: String,
    /// `time`, `alarm`, `manual` or `all` as the device says.
    pub record_type: String,
    pub file_size: Option<u64>,
}

impl From<RecordItem> for RecordView {
    fn from(i: RecordItem) -> Self {
        RecordView {
            channel_id: i.device_id,
            name: i.name,
            file_path: i.file_path,
            start: i.start_time,
            end: i.end_time,
            record_type: i.record_type,
            file_size: i.file_size,
        }
    }
}

/// Checks a `start`/`end` pair (400 with a message).
pub(super) fn check_range(start: &str, end: &str) -> Result<(), ApiError> {
    for (name, t) in [("start", start), ("end", end)] {
        if !is_gb_time(t) {
            return Err(ApiError::bad_request(format!(
                "{name}: a time yyyy-MM-ddTHH:mm:ss, not {}",
                gstgb28181::core::id::printable(t)
            )));
        }
    }
    if start >= end {
        return Err(ApiError::bad_request("end must be after start"));
    }
    Ok(())
}

/// The camera's recordings of a channel in a time range (RecordInfo).
#[utoipa::path(get, path = "/v1/devices/{id}/channels/{channel}/records", tag = "devices",
    params(("id" = String, Path, description = "device ID"),
        ("channel" = String, Path, description = "channel ID"), RecordRange),
    responses((status = 200, body = [RecordView]), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 504, body = ErrorBody)))]
pub async fn list_records(
    State(api): State<Api>,
    Path((id, channel)): Path<(String, String)>,
    query: Result<Query<RecordRange>, QueryRejection>,
) -> ApiResult<Vec<RecordView>> {
    registered(&api, &id)?;
    checked_id(&api, &channel)?;
    let Query(range) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    check_range(&range.start, &range.end)?;
    let control = api.control.clone();
    let device = id.clone();
    let sn = blocking(move || {
        control
            .query_records(&device, &channel, &range.start, &range.end)
            .map_err(|e| ApiError::conflict(format!("RecordInfo query not sent: {e}")))
    })
    .await?;
    let items = api
        .control
        .directory()
        .wait_for(&id, ANSWER_TIMEOUT, |e| {
            e.records
                .as_ref()
                .filter(|(s, _)| *s == sn)
                .map(|(_, i)| i.clone())
        })
        .await
        .ok_or_else(|| no_answer("RecordInfo"))?;
    Ok(Json(
        items
            .into_iter()
            .take(MAX_RECORD_ITEMS)
            .map(RecordView::from)
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert!(check_range("2024-01-01T00:00:00", "2024-01-02T00:00:00").is_ok());
        for (s, e) in [
            ("2024-01-02T00:00:00", "2024-01-01T00:00:00"),
            ("2024-01-01T00:00:00", "2024-01-01T00:00:00"),
            ("1700000000", "1700003600"),
            ("2024-01-01 00:00:00", "2024-01-02T00:00:00"),
            ("", "2024-01-02T00:00:00"),
        ] {
            assert_eq!(check_range(s, e).unwrap_err().status, 400, "{s} {e}");
        }
    }
}

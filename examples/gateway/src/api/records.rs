//! `GET /v1/devices/{id}/channels/{channel}/records?start=&end=`: the recordings a camera
//! holds for a time range (a GB/T 28181 RecordInfo query). Times are Unix seconds or
//! `yyyy-MM-ddTHH:mm:ss` as GB/T 28181 and wvp write them, taken as UTC
//! ([`super::playback_time`]); the device is asked in the second form, and each item is
//! answered in both. The answer is waited for at most [`ANSWER_TIMEOUT`] and holds at most
//! [`MAX_RECORD_ITEMS`] items.

use super::devices::{ANSWER_TIMEOUT, no_answer, registered};
use super::directory::MAX_RECORD_ITEMS;
use super::playback_time::{gb_time, parse_time};
use super::{Api, ApiError, ApiResult, ErrorBody, blocking, checked_id};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use gstgb28181::core::manscdp::RecordItem;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Clone, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RecordRange {
    /// Start: Unix seconds or `yyyy-MM-ddTHH:mm:ss` (UTC).
    pub start: String,
    /// End (after start), either form.
    pub end: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RecordView {
    pub channel_id: String,
    pub name: String,
    pub file_path: String,
    /// As the device wrote it (`yyyy-MM-ddTHH:mm:ss`).
    pub start: String,
    pub end: String,
    /// The same as Unix seconds (taken as UTC; null when the device wrote no valid time).
    pub start_unix: Option<u64>,
    pub end_unix: Option<u64>,
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
            start_unix: parse_time(&i.start_time),
            end_unix: parse_time(&i.end_time),
            start: i.start_time,
            end: i.end_time,
            record_type: i.record_type,
            file_size: i.file_size,
        }
    }
}

/// Checks a `start`/`end` pair (400 with a message); both as `yyyy-MM-ddTHH:mm:ss`.
pub(super) fn check_range(start: &str, end: &str) -> Result<(String, String), ApiError> {
    let parse = |name: &str, t: &str| {
        parse_time(t).ok_or_else(|| {
            ApiError::bad_request(format!(
                "{name}: Unix seconds or yyyy-MM-ddTHH:mm:ss, not {}",
                gstgb28181::core::id::printable(t)
            ))
        })
    };
    let (s, e) = (parse("start", start)?, parse("end", end)?);
    if s >= e {
        return Err(ApiError::bad_request("end must be after start"));
    }
    Ok((gb_time(s), gb_time(e)))
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
    let (start, end) = check_range(&range.start, &range.end)?;
    let control = api.control.clone();
    let device = id.clone();
    let sn = blocking(move || {
        control
            .query_records(&device, &channel, &start, &end)
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
        let day = (
            "2024-01-01T00:00:00".to_string(),
            "2024-01-02T00:00:00".to_string(),
        );
        assert_eq!(
            check_range("2024-01-01T00:00:00", "2024-01-02T00:00:00").unwrap(),
            day
        );
        assert_eq!(
            check_range("1704067200", "2024-01-02T00:00:00").unwrap(),
            day
        );
        for (s, e) in [
            ("2024-01-02T00:00:00", "2024-01-01T00:00:00"),
            ("2024-01-01T00:00:00", "2024-01-01T00:00:00"),
            ("1700003600", "1700000000"),
            ("2024-01-01 00:00:00", "2024-01-02T00:00:00"),
            ("", "2024-01-02T00:00:00"),
        ] {
            assert_eq!(check_range(s, e).unwrap_err().status, 400, "{s} {e}");
        }
    }
}

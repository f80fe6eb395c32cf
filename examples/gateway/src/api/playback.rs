//! Playback and download of a camera's recordings: `POST /v1/devices/{id}/channels/{ch}/playback`
//! mounts a temporary RTSP path (and HLS when on) served from the camera's recording (times
//! as Unix seconds or `yyyy-MM-ddTHH:mm:ss` UTC, [`super::playback_time`]; answered in both),
//! `GET /v1/playback` lists the running sessions, `POST /v1/playback/{n}/control` pauses,
//! seeks or changes the speed, `DELETE /v1/playback/{n}` stops it (BYE). At most `max_playbacks` (setting) at once (409 beyond).

use super::devices::registered;
use super::playback_time::{TimeValue, gb_time};
use super::{Api, ApiError, ApiResult, ErrorBody, blocking, checked_id};
use crate::gateway::{PlaybackError, PlaybackRequest};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use gstgb28181::core::mansrtsp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Longest time range of one session.
pub const MAX_SPAN_S: u64 = 7 * 86_400;

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaybackBody {
    /// Start and end of the recording to play: Unix seconds (a number or a string) or
    /// `yyyy-MM-ddTHH:mm:ss` (UTC).
    pub start: TimeValue,
    pub end: TimeValue,
    /// A download (as fast as `speed` allows) rather than a playback.
    #[serde(default)]
    pub download: bool,
    /// Download speed factor, 1 to 16 (download only).
    pub speed: Option<u32>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PlaybackView {
    pub id: u64,
    pub device_id: String,
    pub channel_id: String,
    pub download: bool,
    pub rtsp_url: String,
    /// The session's HLS playlist (null when the gateway serves no HLS); it appears once the
    /// first segment is written.
    pub hls_url: Option<String>,
    /// The range played, `yyyy-MM-ddTHH:mm:ss` (UTC) and Unix seconds.
    pub start: String,
    pub end: String,
    pub start_unix: u64,
    pub end_unix: u64,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ControlBody {
    /// Speed: 0.25, 0.5, 1, 2, 4 or 8 (what cameras play; the RTSP/HLS readers' timestamps
    /// follow it).
    pub scale: Option<f64>,
    /// Seconds from the start to jump to (0 to 7 days).
    pub seek: Option<f64>,
    #[serde(default)]
    pub pause: bool,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ControlView {
    /// Whether the camera accepted the request (200 to the MANSRTSP INFO).
    pub sent: bool,
}

fn to_api(e: PlaybackError) -> ApiError {
    match e {
        PlaybackError::TooMany(_) | PlaybackError::NotStarted | PlaybackError::Failed(_) => {
            ApiError::conflict(e.to_string())
        }
        PlaybackError::NotFound => ApiError::not_found(e.to_string()),
    }
}

fn session_number(id: &str) -> Result<u64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::bad_request("a playback session number"))
}

/// Checks a playback request body (400 with a message); start and end in Unix seconds.
pub(super) fn check_body(b: &PlaybackBody) -> Result<(u64, u64), ApiError> {
    let parse = |name: &str, t: &TimeValue| {
        t.unix().ok_or_else(|| {
            ApiError::bad_request(format!("{name}: Unix seconds or yyyy-MM-ddTHH:mm:ss (UTC)"))
        })
    };
    let (start, end) = (parse("start", &b.start)?, parse("end", &b.end)?);
    if start == 0 || end <= start {
        return Err(ApiError::bad_request("end must be after start"));
    }
    if end - start > MAX_SPAN_S {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_SPAN_S} seconds per session"
        )));
    }
    if b.speed.is_some_and(|s| !(1..=16).contains(&s)) || (b.speed.is_some() && !b.download) {
        return Err(ApiError::bad_request("speed: 1 to 16, for a download"));
    }
    Ok((start, end))
}

/// Starts a playback (or download) session of a channel's recording.
#[utoipa::path(post, path = "/v1/devices/{id}/channels/{channel}/playback", tag = "playback",
    params(("id" = String, Path, description = "device ID"),
        ("channel" = String, Path, description = "channel ID")),
    request_body = PlaybackBody,
    responses((status = 200, body = PlaybackView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn start_playback(
    State(api): State<Api>,
    Path((id, channel)): Path<(String, String)>,
    body: Result<Json<PlaybackBody>, JsonRejection>,
) -> ApiResult<PlaybackView> {
    registered(&api, &id)?;
    checked_id(&api, &channel)?;
    let Json(b) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let (start, end) = check_body(&b)?;
    let control = api.control.clone();
    let r = PlaybackRequest {
        device: id,
        channel,
        start,
        end,
        download: b.download,
        speed: b.speed,
    };
    let (n, _) = blocking({
        let r = r.clone();
        move || control.start_playback(&r)?.map_err(to_api)
    })
    .await?;
    Ok(Json(view(&api, n, r)?))
}

fn view(api: &Api, n: u64, r: PlaybackRequest) -> Result<PlaybackView, ApiError> {
    let path = format!("playback-{n}");
    Ok(PlaybackView {
        id: n,
        rtsp_url: api.control.rtsp_url(&path)?,
        hls_url: api.control.hls_url(&path)?,
        start: gb_time(r.start),
        end: gb_time(r.end),
        start_unix: r.start,
        end_unix: r.end,
        device_id: r.device,
        channel_id: r.channel,
        download: r.download,
    })
}

/// The running playback sessions (one that ended, by DELETE or at the end of the file, is
/// no longer listed).
#[utoipa::path(get, path = "/v1/playback", tag = "playback",
    responses((status = 200, body = [PlaybackView]), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub async fn list_playbacks(State(api): State<Api>) -> ApiResult<Vec<PlaybackView>> {
    let list = api.control.list_playbacks()?;
    Ok(Json(
        list.into_iter()
            .map(|(n, r)| view(&api, n, r))
            .collect::<Result<_, _>>()?,
    ))
}

/// Pauses, resumes, seeks or changes the speed of a playback session (MANSRTSP to the
/// camera). 409 once the camera session has ended.
#[utoipa::path(post, path = "/v1/playback/{n}/control", tag = "playback",
    params(("n" = u64, Path, description = "playback session number")),
    request_body = ControlBody,
    responses((status = 200, body = ControlView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn control_playback(
    State(api): State<Api>,
    Path(n): Path<String>,
    body: Result<Json<ControlBody>, JsonRejection>,
) -> ApiResult<ControlView> {
    let n = session_number(&n)?;
    let Json(b) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if b.scale.is_some_and(|s| !mansrtsp::valid_scale(s)) {
        return Err(ApiError::bad_request("scale: 0.25, 0.5, 1, 2, 4 or 8"));
    }
    if b.seek.is_some_and(|s| !mansrtsp::valid_npt(s)) {
        return Err(ApiError::bad_request(
            "seek: seconds from the start (up to 7 days)",
        ));
    }
    let control = api.control.clone();
    let sent = blocking(move || {
        control
            .control_playback(n, b.pause, b.scale, b.seek)?
            .map_err(to_api)
    })
    .await?;
    Ok(Json(ControlView { sent }))
}

/// Stops a playback session (its readers are cut, BYE to the camera).
#[utoipa::path(delete, path = "/v1/playback/{n}", tag = "playback",
    params(("n" = u64, Path, description = "playback session number")),
    responses((status = 204, description = "stopped"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn stop_playback(
    State(api): State<Api>,
    Path(n): Path<String>,
) -> Result<StatusCode, ApiError> {
    let n = session_number(&n)?;
    let control = api.control.clone();
    blocking(move || control.stop_playback(n)?.map_err(to_api)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies() {
        let b = |start, end, download, speed| PlaybackBody {
            start: TimeValue::Unix(start),
            end: TimeValue::Unix(end),
            download,
            speed,
        };
        assert_eq!(
            check_body(&b(1_700_000_000, 1_700_003_600, false, None)).unwrap(),
            (1_700_000_000, 1_700_003_600)
        );
        let text = PlaybackBody {
            start: TimeValue::Text("2024-03-01T08:00:00".into()),
            end: TimeValue::Text("1709283600".into()),
            download: false,
            speed: None,
        };
        assert_eq!(check_body(&text).unwrap(), (1_709_280_000, 1_709_283_600));
        let bad_text = PlaybackBody {
            start: TimeValue::Text("2024-03-01 08:00".into()),
            ..text
        };
        assert!(check_body(&bad_text).is_err());
        assert!(check_body(&b(1_700_000_000, 1_700_003_600, true, Some(4))).is_ok());
        for bad in [
            b(1_700_003_600, 1_700_000_000, false, None),
            b(0, 10, false, None),
            b(1, 1 + MAX_SPAN_S + 1, false, None),
            b(1_700_000_000, 1_700_003_600, false, Some(2)),
            b(1_700_000_000, 1_700_003_600, true, Some(17)),
        ] {
            assert!(check_body(&bad).is_err(), "{bad:?}");
        }
    }
}

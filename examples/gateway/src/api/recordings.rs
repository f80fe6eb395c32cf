//! `/v1/recordings`: the gateway's own MP4 segments (`<record-dir>/<channel>/<yyyymmdd-hhmmss>[-n].mp4`,
//! UTC start time in the name), listed per channel and time range, and fetched one at a time.
//! Only files inside the record directory are ever read: the request path goes through the
//! one HLS/file path check ([`crate::http::files`]) and the opened file must resolve inside
//! the directory. Listings and time ranges are bounded. A fetch honours one byte range
//! (`Range: bytes=a-b`, `a-`, `-n`: 206; beyond the end: 416; several or malformed: the
//! whole file, as RFC 9110 allows).

use super::{Api, ApiError, ApiResult, ErrorBody, blocking, checked_id};
use crate::http::files::{ServedDir, hls_target};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::path::Path as FsPath;
use utoipa::{IntoParams, ToSchema};

/// Segments listed at most (the latest ones).
pub const MAX_LISTED: usize = 1000;
/// Directory entries looked at at most per listing.
const MAX_SCANNED: usize = 100_000;
/// Longest time range of one listing.
pub const MAX_RANGE_S: u64 = 366 * 86_400;

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct SegmentView {
    pub channel: String,
    pub file: String,
    /// Unix seconds: start (from the name) and last write.
    pub start: u64,
    pub end: u64,
    pub size: u64,
    /// Where to fetch it (same credentials).
    pub url: String,
}

#[derive(Debug, Clone, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RecordingQuery {
    /// Channel ID.
    pub channel: String,
    /// Unix seconds; segments ending before it are left out (default: 0).
    pub from: Option<u64>,
    /// Unix seconds; segments starting after it are left out (default: now).
    pub to: Option<u64>,
}

/// Unix seconds of a segment name `yyyymmdd-hhmmss[-n].mp4` (UTC), or None.
pub fn segment_start(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".mp4")?;
    let (date, rest) = stem.split_once('-')?;
    let time = rest.split('-').next()?;
    if date.len() != 8 || time.len() != 6 {
        return None;
    }
    let num = |s: &str| -> Option<i64> {
        s.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (y, m, d) = (num(&date[..4])?, num(&date[4..6])?, num(&date[6..])?);
    let (h, mi, s) = (num(&time[..2])?, num(&time[2..4])?, num(&time[4..])?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + h * 3600 + mi * 60 + s).ok()
}

/// The segments of `dir` (a channel's directory) overlapping `[from, to]`, oldest first, at
/// most [`MAX_LISTED`] (the latest). Blocking.
pub fn list_segments(dir: &FsPath, channel: &str, from: u64, to: u64) -> Vec<SegmentView> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten().take(MAX_SCANNED) {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(start) = segment_start(&name) else {
            continue;
        };
        // Regular files only (no symlinks).
        let Ok(meta) = e.metadata() else { continue };
        if !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let end = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .unwrap_or(start)
            .max(start);
        if end < from || start > to {
            continue;
        }
        out.push(SegmentView {
            url: format!("/v1/recordings/{channel}/{name}"),
            channel: channel.to_string(),
            file: name,
            start,
            end,
            size: meta.len(),
        });
    }
    out.sort_by(|a, b| (a.start, &a.file).cmp(&(b.start, &b.file)));
    let cut = out.len().saturating_sub(MAX_LISTED);
    out.drain(..cut);
    out
}

fn record_dir(api: &Api) -> Result<std::path::PathBuf, ApiError> {
    api.control
        .config()?
        .record_dir
        .ok_or_else(|| ApiError::not_found("recording is off (no record-dir)"))
}

/// The gateway's recorded segments of a channel in a time range.
#[utoipa::path(get, path = "/v1/recordings", tag = "recordings",
    params(RecordingQuery),
    responses((status = 200, body = [SegmentView]), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn list_recordings(
    State(api): State<Api>,
    query: Result<Query<RecordingQuery>, QueryRejection>,
) -> ApiResult<Vec<SegmentView>> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    checked_id(&api, &q.channel)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let to = q.to.unwrap_or(now);
    let from = q.from.unwrap_or(to.saturating_sub(MAX_RANGE_S));
    if from > to {
        return Err(ApiError::bad_request("from is after to"));
    }
    if to - from > MAX_RANGE_S {
        return Err(ApiError::bad_request(format!(
            "a range of at most {MAX_RANGE_S} s"
        )));
    }
    let root = record_dir(&api)?;
    let dir = crate::outputs::path_inside(&root, &q.channel).map_err(ApiError::bad_request)?;
    let channel = q.channel.clone();
    let list = blocking(move || Ok(list_segments(&dir, &channel, from, to))).await?;
    Ok(Json(list))
}

/// What a `Range` header asks of a file of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// No (usable) range: the whole file.
    Whole,
    /// Bytes `start..=end`.
    Part(u64, u64),
    /// A range that starts beyond the end (416).
    Unsatisfiable,
}

/// Parses a `Range` value for a file of `len` bytes: one range of `bytes`; anything else
/// (other units, several ranges, malformed numbers) is ignored.
pub fn byte_range(value: Option<&str>, len: u64) -> ByteRange {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return ByteRange::Whole;
    };
    if spec.contains(',') {
        return ByteRange::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return ByteRange::Whole;
    };
    let num = |s: &str| {
        (!s.is_empty() && s.len() <= 19 && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    match (a.is_empty(), num(a), num(b)) {
        // The last `n` bytes.
        (true, _, Some(n)) => {
            if n == 0 || len == 0 {
                ByteRange::Unsatisfiable
            } else {
                ByteRange::Part(len.saturating_sub(n), len - 1)
            }
        }
        (false, Some(start), end) if b.is_empty() || end.is_some() => {
            if end.is_some_and(|e| e < start) {
                ByteRange::Whole
            } else if start >= len {
                ByteRange::Unsatisfiable
            } else {
                ByteRange::Part(start, end.map_or(len - 1, |e| e.min(len - 1)))
            }
        }
        _ => ByteRange::Whole,
    }
}

/// One recorded segment (`video/mp4`).
#[utoipa::path(get, path = "/v1/recordings/{channel}/{file}", tag = "recordings",
    params(("channel" = String, Path, description = "channel ID"),
        ("file" = String, Path, description = "segment file name from the list")),
    responses((status = 200, description = "the MP4 file", content_type = "video/mp4"),
        (status = 206, description = "the bytes of a `Range: bytes=...` request", content_type = "video/mp4"),
        (status = 416, body = ErrorBody, description = "the range starts beyond the end"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn fetch_recording(
    State(api): State<Api>,
    Path((channel, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    checked_id(&api, &channel)?;
    let not_found = || ApiError::not_found("no such segment");
    if segment_start(&file).is_none() {
        return Err(not_found());
    }
    let root = record_dir(&api)?;
    let body = blocking(move || {
        let served = ServedDir::new(&root).map_err(|_| not_found())?;
        let url = format!("/{channel}/{file}");
        let target = hls_target(&url).map_err(|_| not_found())?;
        served.read(&target).ok_or_else(not_found)
    })
    .await?;
    let len = body.len() as u64;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (status, body, content_range) = match byte_range(range.as_deref(), len) {
        ByteRange::Whole => (StatusCode::OK, body, None),
        ByteRange::Part(a, b) => (
            StatusCode::PARTIAL_CONTENT,
            body[a as usize..=b as usize].to_vec(),
            Some(format!("bytes {a}-{b}/{len}")),
        ),
        ByteRange::Unsatisfiable => {
            let mut r = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                format!("the range is beyond the {len} bytes of the file"),
            )
            .into_response();
            if let Ok(v) = format!("bytes */{len}").parse() {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(r);
        }
    };
    let mut r = (
        status,
        [
            (header::CONTENT_TYPE, "video/mp4"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::ACCEPT_RANGES, "bytes"),
        ],
        body,
    )
        .into_response();
    if let Some(v) = content_range.and_then(|c| c.parse().ok()) {
        r.headers_mut().insert(header::CONTENT_RANGE, v);
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_ranges() {
        use ByteRange::*;
        let r = |v: &str| byte_range(Some(v), 100);
        assert_eq!(byte_range(None, 100), Whole);
        assert_eq!(r("bytes=0-9"), Part(0, 9));
        assert_eq!(r("bytes=90-"), Part(90, 99));
        assert_eq!(r("bytes=90-500"), Part(90, 99));
        assert_eq!(r("bytes=-10"), Part(90, 99));
        assert_eq!(r("bytes=-500"), Part(0, 99));
        assert_eq!(r("bytes=100-"), Unsatisfiable);
        assert_eq!(r("bytes=-0"), Unsatisfiable);
        assert_eq!(byte_range(Some("bytes=0-"), 0), Unsatisfiable);
        for ignored in [
            "bytes=0-1,5-6",
            "bytes=9-1",
            "bytes=a-b",
            "bytes=-",
            "bytes=+1-2",
            "items=0-1",
            "bytes=99999999999999999999-",
            "bytes=1",
        ] {
            assert_eq!(r(ignored), Whole, "{ignored}");
        }
    }

    #[test]
    fn segment_names() {
        assert_eq!(
            segment_start(&format!("{}.mp4", crate::outputs::utc_stamp(1_700_000_000))),
            Some(1_700_000_000)
        );
        assert_eq!(segment_start("20000229-000000-3.mp4"), Some(951_782_400));
        for bad in [
            "x.mp4",
            "20231301-000000.mp4",
            "2023111-0000000.mp4",
            "20231115-061320.ts",
            "../20231115-061320.mp4",
            "2023+115-061320.mp4",
            "",
        ] {
            assert_eq!(segment_start(bad), None, "{bad}");
        }
    }

    #[test]
    fn listing_is_bounded_and_in_range() {
        let dir = std::env::temp_dir().join(format!("gw-api-rec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..(MAX_LISTED as u64 + 5) {
            let name = format!("{}.mp4", crate::outputs::utc_stamp(1_000_000 + i * 60));
            std::fs::write(dir.join(name), b"x").unwrap();
        }
        std::fs::write(dir.join("notes.txt"), b"x").unwrap();
        let all = list_segments(&dir, "c", 0, u64::MAX);
        assert_eq!(all.len(), MAX_LISTED);
        assert_eq!(all[0].start, 1_000_000 + 5 * 60, "the latest are kept");
        // The files were written now: their end (mtime) is now, so `from` below now and a
        // `to` before the 3rd start keeps the first 3.
        let some = list_segments(&dir, "c", 0, 1_000_000 + 2 * 60);
        assert_eq!(some.len(), 3);
        std::fs::remove_dir_all(&dir).ok();
    }
}

//! `/v1/sessions`: RTSP and WebRTC readers per path, and kicking one. Sessions are named by the opaque
//! number the metrics show, never by their RTSP session ID (whoever reads it could take the
//! session over).

use super::{Api, ApiError, ApiResult, ErrorBody, blocking};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SessionView {
    /// Opaque number of the session (what `DELETE /v1/sessions/{id}` takes).
    pub id: u64,
    pub path: String,
    /// `rtsp` or `webrtc`.
    pub protocol: String,
    /// `tcp`, `udp` or `udp-mcast` (RTSP), `webrtc`.
    pub transport: String,
    /// Client address (`ip` or `ip:port`).
    pub remote: String,
    /// The user the reader authenticated as (`any`: anonymous), when known.
    pub user: Option<String>,
    pub bytes_sent: u64,
    pub bitrate_bps: u64,
    /// From the client's RTCP receiver reports, when it sent any.
    pub packets_lost: Option<i64>,
    pub jitter_ms: Option<f64>,
    pub round_trip_ms: Option<f64>,
}

#[derive(Debug, Clone, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SessionFilter {
    /// Only the readers of this path (channel ID).
    pub path: Option<String>,
}

/// Reader sessions now.
#[utoipa::path(get, path = "/v1/sessions", tag = "sessions",
    params(SessionFilter),
    responses((status = 200, body = [SessionView]), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_sessions(
    State(api): State<Api>,
    query: Result<Query<SessionFilter>, QueryRejection>,
) -> ApiResult<Vec<SessionView>> {
    let Query(filter) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if let Some(p) = &filter.path {
        super::checked_id(&api, p)?;
    }
    let control = api.control.clone();
    let sessions = blocking(move || {
        let mut out = Vec::new();
        for s in control.sessions()? {
            let user = match s.id.parse() {
                Ok(n) => control.session_user(n)?,
                Err(_) => None,
            };
            out.push((s, user));
        }
        Ok(out)
    })
    .await?;
    let out = sessions
        .into_iter()
        .filter(|(s, _)| filter.path.as_ref().is_none_or(|p| *p == s.path))
        .filter_map(|(s, user)| {
            Some(SessionView {
                id: s.id.parse().ok()?,
                // RTSP readers: who their connection authenticated as; WebRTC: the snapshot.
                user: user.or((!s.user.is_empty()).then_some(s.user)),
                path: s.path,
                protocol: if s.transport == "webrtc" {
                    "webrtc"
                } else {
                    "rtsp"
                }
                .into(),
                transport: s.transport,
                remote: s.remote,
                bytes_sent: s.bytes_sent,
                bitrate_bps: s.bitrate_bps,
                packets_lost: s.packets_lost,
                jitter_ms: s.jitter_ms,
                round_trip_ms: s.round_trip_ms,
            })
        })
        .collect();
    Ok(Json(out))
}

/// Ends a reader session and closes its connection.
#[utoipa::path(delete, path = "/v1/sessions/{id}", tag = "sessions",
    params(("id" = u64, Path, description = "session number from the list")),
    responses((status = 204, description = "ended"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn kick_session(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let n = id
        .parse::<u64>()
        .map_err(|_| ApiError::bad_request("a session number"))?;
    let control = api.control.clone();
    match blocking(move || Ok(control.kick(n)?)).await? {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(ApiError::not_found(format!("no session {n}"))),
    }
}

//! `GET /v1/cascade`: the state of each upper platform (registered, last keepalive answered,
//! live sessions with their figures). Never the password.

use crate::api::{Api, ApiResult, ErrorBody, blocking};
use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UpperView {
    /// The upper platform's ID.
    pub server_id: String,
    /// Its SIP address as configured (`host:port`).
    pub address: String,
    /// `udp` or `tcp`.
    pub transport: String,
    /// The gateway's ID toward it.
    pub device_id: String,
    pub registered: bool,
    /// Successful registrations and refreshes so far.
    pub registrations: u64,
    /// Seconds since it last answered a keepalive (none yet: null).
    pub last_keepalive_s_ago: Option<u64>,
    pub sessions: Vec<CascadeSessionView>,
    /// Sessions it opened so far.
    pub sessions_total: u64,
    /// Its requests refused (not from its address, unshared channel, hostile SDP, busy).
    pub refused: u64,
    /// Why its SIP agent could not start, if it could not.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CascadeSessionView {
    pub channel: String,
    pub started_s_ago: u64,
    /// RTP packets and bytes sent to it.
    pub packets: u64,
    pub bytes: u64,
}

/// Upper platforms the gateway registers with (GB28181 cascade) and their sessions.
#[utoipa::path(get, path = "/v1/cascade", tag = "cascade",
    responses((status = 200, body = [UpperView]),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn list_uppers(State(api): State<Api>) -> ApiResult<Vec<UpperView>> {
    let control = api.control.clone();
    let v = blocking(move || Ok(control.cascade()?)).await?;
    Ok(Json(v))
}

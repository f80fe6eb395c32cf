//! The WHEP routes (on the API/metrics listener, next to `/v1` and the web page):
//! `POST /<path>/whep` for any path (a GB28181 channel, a pulled camera, a published path; 1
//! to [`MAX_SEGMENTS`] segments, as MediaMTX's `http://host/mystream/whep`), with permission
//! `read` on the path and a body `application/sdp` of at most
//! [`super::offer::MAX_OFFER_BYTES`]; `DELETE /<path>/whep/<session>`, and
//! `PATCH` answered 405 (no trickle ICE: the answer carries every candidate). Errors are
//! JSON `{"message": ...}`.

use super::{Sessions, WhepError};
use crate::auth::Action;
use crate::factory::ChannelHooks;
use crate::http::{Authorize, Denied};
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use std::net::SocketAddr;
use std::sync::Arc;

/// Validates a path name (400 when it is not one).
pub type CheckPath = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// How readers of a path get its ingest; None when there is no such path (404).
pub type Resolve = Arc<dyn Fn(&str) -> Option<Arc<dyn ChannelHooks>> + Send + Sync>;

/// Segments a path may have ([`crate::paths::check_path_name`]).
pub const MAX_SEGMENTS: usize = 4;

#[derive(Clone)]
struct Whep {
    sessions: Arc<Sessions>,
    resolve: Resolve,
    check_path: CheckPath,
    auth: Authorize,
}

/// The path of a WHEP URL from its matched segments (every parameter but the session).
fn path_of(params: &[(String, String)]) -> String {
    params
        .iter()
        .filter(|(k, _)| k != "session")
        .map(|(_, v)| v.as_str())
        .collect::<Vec<_>>()
        .join("/")
}

fn json_error(status: u16, message: &str, challenge: Option<String>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({ "message": message }).to_string(),
    )
        .into_response();
    if let Some(v) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

impl From<WhepError> for Response {
    fn from(e: WhepError) -> Response {
        json_error(e.status, &e.message, None)
    }
}

/// Name check then `read` permission on the path; the user name for the session list.
async fn admit(
    w: &Whep,
    headers: &HeaderMap,
    peer: SocketAddr,
    channel: &str,
) -> Result<String, Response> {
    (w.check_path)(channel).map_err(|e| json_error(400, &e, None))?;
    let auth = w.auth.clone();
    let (h, c) = (headers.clone(), channel.to_string());
    let decided = tokio::task::spawn_blocking(move || auth(&h, peer.ip(), Action::Read, &c)).await;
    match decided {
        Ok(Ok(())) => {}
        Ok(Err(Denied { status, challenge })) => {
            let m = if status == StatusCode::UNAUTHORIZED {
                "credentials required"
            } else {
                "the read permission on this path is required"
            };
            return Err(json_error(status.as_u16(), m, challenge));
        }
        Err(_) => return Err(json_error(500, "failed", None)),
    }
    let user = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| crate::auth::header::Authorization::parse(v).ok())
        .and_then(|a| a.user().map(str::to_string))
        .unwrap_or_else(|| "-".to_string());
    Ok(user)
}

async fn offer(
    State(w): State<Whep>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(params): Path<Vec<(String, String)>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let channel = path_of(&params);
    let user = match admit(&w, &headers, peer, &channel).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let Some(hooks) = (w.resolve)(&channel) else {
        return json_error(404, "no such path", None);
    };
    let transcode = match super::offer::parse_query(query.as_deref()) {
        Ok(t) => t,
        Err(e) => return json_error(400, &e, None),
    };
    let sdp_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/sdp"));
    if !sdp_type {
        return json_error(415, "the offer must be application/sdp", None);
    }
    let Ok(body) = axum::body::to_bytes(body, super::offer::MAX_OFFER_BYTES).await else {
        return json_error(
            413,
            &format!(
                "SDP offer larger than {} bytes",
                super::offer::MAX_OFFER_BYTES
            ),
            None,
        );
    };
    let sessions = w.sessions.clone();
    let remote = peer.to_string();
    let ch = channel.clone();
    let done = tokio::task::spawn_blocking(move || {
        sessions.offer(hooks, &ch, &body, remote, user, transcode)
    })
    .await;
    match done {
        Ok(Ok((answer, location))) => (
            StatusCode::CREATED,
            [
                (header::CONTENT_TYPE, "application/sdp".to_string()),
                (header::LOCATION, location),
                (header::CACHE_CONTROL, "no-cache".to_string()),
            ],
            answer,
        )
            .into_response(),
        Ok(Err(e)) => {
            crate::gateway::warn(&format!(
                "WHEP offer for {} from {peer} refused: {}",
                gstgb28181::core::id::printable(&channel),
                e.message
            ));
            e.into()
        }
        Err(_) => json_error(500, "failed", None),
    }
}

async fn remove(
    State(w): State<Whep>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(params): Path<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    let channel = path_of(&params);
    let token = params
        .iter()
        .find(|(k, _)| k == "session")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    if let Err(r) = admit(&w, &headers, peer, &channel).await {
        return r;
    }
    let sessions = w.sessions.clone();
    let ended = tokio::task::spawn_blocking(move || sessions.delete(&channel, &token)).await;
    match ended {
        Ok(true) => StatusCode::OK.into_response(),
        _ => json_error(404, "no such WHEP session", None),
    }
}

async fn no_trickle() -> Response {
    let mut r = json_error(
        405,
        "no trickle ICE: the answer carries every candidate",
        None,
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("DELETE"));
    r
}

/// The WHEP routes, for paths of 1 to [`MAX_SEGMENTS`] segments.
pub fn router(
    sessions: Arc<Sessions>,
    resolve: Resolve,
    check_path: CheckPath,
    auth: Authorize,
) -> Router {
    let mut r = Router::new();
    for n in 1..=MAX_SEGMENTS {
        let base: String = (1..=n).map(|i| format!("/{{p{i}}}")).collect();
        r = r.route(&format!("{base}/whep"), post(offer)).route(
            &format!("{base}/whep/{{session}}"),
            delete(remove).patch(no_trickle),
        );
    }
    r.with_state(Whep {
        sessions,
        resolve,
        check_path,
        auth,
    })
}

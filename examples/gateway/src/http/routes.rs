//! The routers the gateway serves today: `/metrics` and HLS files, each behind the
//! authorization hook. Handlers are thin: parsing is in [`super::files`], blocking work
//! (password checks, file reads, the metrics snapshot) goes to tokio's blocking pool.

use super::files::{ServedDir, hls_target};
use crate::auth::Action;
use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// A refusal: 401 with a challenge (no or bad credentials) or 403 (no permission).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub status: StatusCode,
    pub challenge: Option<String>,
}

impl Denied {
    /// 401 with `challenge` as `WWW-Authenticate`.
    pub fn unauthorized(challenge: String) -> Denied {
        Denied {
            status: StatusCode::UNAUTHORIZED,
            challenge: Some(challenge),
        }
    }

    pub fn forbidden() -> Denied {
        Denied {
            status: StatusCode::FORBIDDEN,
            challenge: None,
        }
    }
}

/// The access decision: request headers, source address, action and path (a channel; empty
/// for actions without one). Blocking is fine (run off the async workers).
pub type Authorize =
    Arc<dyn Fn(&HeaderMap, IpAddr, Action, &str) -> Result<(), Denied> + Send + Sync>;

fn text(status: StatusCode, body: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain")], body).into_response()
}

fn denied(d: Denied) -> Response {
    let mut r = match d.status {
        StatusCode::UNAUTHORIZED => text(d.status, "unauthorized\n"),
        StatusCode::FORBIDDEN => text(d.status, "forbidden\n"),
        s => text(s, "refused\n"),
    };
    if let Some(v) = d.challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

/// Runs the hook off the async workers; `Err` is the response to send.
async fn check(
    auth: &Authorize,
    headers: HeaderMap,
    peer: SocketAddr,
    action: Action,
    path: String,
) -> Result<(), Response> {
    let auth = auth.clone();
    match tokio::task::spawn_blocking(move || auth(&headers, peer.ip(), action, &path)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(d)) => Err(denied(d)),
        Err(_) => Err(text(StatusCode::INTERNAL_SERVER_ERROR, "error\n")),
    }
}

fn ok(content_type: &'static str, body: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// What renders the metrics text (`None`: no longer available).
pub type Render = Arc<dyn Fn() -> Option<String> + Send + Sync>;

#[derive(Clone)]
struct MetricsState {
    render: Render,
    auth: Authorize,
}

/// `GET /metrics` (action `metrics`).
pub fn metrics_router(render: Render, auth: Authorize) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(MetricsState { render, auth })
}

async fn metrics(
    State(st): State<MetricsState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = check(&st.auth, headers, peer, Action::Metrics, String::new()).await {
        return r;
    }
    let render = st.render.clone();
    match tokio::task::spawn_blocking(move || render()).await {
        Ok(Some(body)) => ok("text/plain; version=0.0.4", body.into_bytes()),
        _ => text(StatusCode::SERVICE_UNAVAILABLE, "stopping\n"),
    }
}

#[derive(Clone)]
struct HlsState {
    dir: Arc<ServedDir>,
    auth: Authorize,
}

/// `GET /<path>/<file>` below `dir` (action `read` on the path; [`hls_target`] checks
/// the URL).
pub fn hls_router(dir: ServedDir, auth: Authorize) -> Router {
    Router::new()
        .route("/{*path}", get(hls))
        .with_state(HlsState {
            dir: Arc::new(dir),
            auth,
        })
}

async fn hls(
    State(st): State<HlsState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let not_found = || text(StatusCode::NOT_FOUND, "not found\n");
    let path = uri.path().to_string();
    let Ok(target) = hls_target(&path) else {
        return not_found();
    };
    let channel = target.channel.to_string();
    if let Err(r) = check(&st.auth, headers, peer, Action::Read, channel).await {
        return r;
    }
    let dir = st.dir.clone();
    let read = tokio::task::spawn_blocking(move || {
        let t = hls_target(&path).ok()?;
        dir.read(&t).map(|body| (t.content_type, body))
    });
    match read.await {
        Ok(Some((content_type, body))) => ok(content_type, body),
        _ => not_found(),
    }
}

//! The control API: JSON over HTTP under `/v1`, every route behind the `api` permission
//! (401 without credentials, 403 without the right), errors as `{"message": ...}` with the
//! right status. Its OpenAPI document (`/v1/openapi.json`) is generated from the handlers'
//! annotations (utoipa): routes are only ever added through `OpenApiRouter::routes`, so the
//! router and the document cannot disagree. Handlers are thin; they reach the gateway only
//! through [`crate::gateway::Control`], and blocking work runs on tokio's blocking pool.

pub mod channels;
pub mod config;
pub mod devices;
pub mod directory;
pub mod events;
pub mod onvif;
pub mod paths;
pub mod playback;
pub mod playback_time;
pub mod ptz;
pub mod push;
pub mod recordings;
pub mod records;
pub mod sessions;
pub mod talk;

use crate::auth::Action;
use crate::gateway::Control;
use crate::http::{Authorize, Denied};
use axum::Json;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Request bodies of the API at most (they are small JSON objects); beyond: 413.
pub const MAX_BODY: usize = 16 << 10;

/// API requests answered, by HTTP status (`gateway_api_requests_total{status}` in /metrics).
pub struct RequestCounts([std::sync::atomic::AtomicU64; 500]);

impl Default for RequestCounts {
    fn default() -> Self {
        RequestCounts(std::array::from_fn(|_| Default::default()))
    }
}

impl RequestCounts {
    pub fn record(&self, status: StatusCode) {
        if let Some(c) = self.0.get(usize::from(status.as_u16()).wrapping_sub(100)) {
            c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    pub fn get(&self, status: u16) -> u64 {
        self.0
            .get(usize::from(status).wrapping_sub(100))
            .map_or(0, |c| c.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// The Prometheus text of the counter (statuses seen so far).
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut o = String::from(
            "# HELP gateway_api_requests_total Control API (/v1) requests answered, by HTTP status
             # TYPE gateway_api_requests_total counter
",
        );
        for (i, c) in self.0.iter().enumerate() {
            let n = c.load(std::sync::atomic::Ordering::Relaxed);
            if n > 0 {
                let _ = writeln!(
                    o,
                    "gateway_api_requests_total{{status=\"{}\"}} {n}",
                    i + 100
                );
            }
        }
        o
    }
}

/// What every handler gets.
#[derive(Clone)]
pub struct Api {
    pub control: Arc<Control>,
    auth: Authorize,
    openapi: Arc<String>,
}

/// An error answer: `{"message": "..."}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    pub message: String,
}

/// An error with its status; every handler error becomes a JSON [`ErrorBody`].
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    challenge: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            challenge: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message)
    }

    pub fn gone() -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "gateway stopping")
    }

    fn denied(d: Denied) -> ApiError {
        let message = match d.status {
            StatusCode::UNAUTHORIZED => "credentials required",
            StatusCode::FORBIDDEN => "the api permission is required",
            _ => "refused",
        };
        ApiError {
            status: d.status,
            message: message.into(),
            challenge: d.challenge,
        }
    }
}

impl From<crate::gateway::Gone> for ApiError {
    fn from(_: crate::gateway::Gone) -> ApiError {
        ApiError::gone()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(ErrorBody {
                message: self.message,
            }),
        )
            .into_response();
        if let Some(v) = self.challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        r
    }
}

pub type ApiResult<T> = Result<Json<T>, ApiError>;

/// Runs blocking work (SIP sends, RTSP server walks) off the async workers.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|_| Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "failed")))
}

/// A device or channel ID from a request: checked with the gateway's ID policy (400).
pub fn checked_id(api: &Api, id: &str) -> Result<(), ApiError> {
    api.control.check_id(id).map_err(ApiError::bad_request)
}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let c = openapi.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "gst-ipcam gateway control API",
        description = "Devices, channels, PTZ, reader sessions. Every route needs the `api` permission."
    ),
    modifiers(&Security),
    security(("basic" = []), ("bearer" = [])),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

/// The path the `api` permission is checked on: the device or channel a route names
/// (`/v1/devices/{id}/..`, `/v1/channels/{id}/..`), else empty.
fn permission_path(uri_path: &str) -> String {
    let mut parts = uri_path.trim_start_matches('/').split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("v1"), Some("devices" | "channels"), Some(id)) => id.to_string(),
        _ => String::new(),
    }
}

/// Authentication and the `api` permission, before any handler of a known route.
async fn require_api(
    State(api): State<Api>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let headers = req.headers().clone();
    let path = permission_path(req.uri().path());
    let auth = api.auth.clone();
    let decided =
        tokio::task::spawn_blocking(move || auth(&headers, peer.ip(), Action::Api, &path)).await;
    match decided {
        Ok(Ok(())) => next.run(req).await,
        Ok(Err(d)) => ApiError::denied(d).into_response(),
        Err(_) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "failed").into_response(),
    }
}

/// Errors that did not come from a handler (extractor rejections, 405, 413, timeouts) get
/// a JSON body too.
async fn json_errors(req: Request, next: Next) -> Response {
    let r = next.run(req).await;
    let status = r.status();
    let is_json = r
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if (status.is_client_error() || status.is_server_error()) && !is_json {
        let (parts, body) = r.into_parts();
        let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
        let text = String::from_utf8_lossy(&text).trim().to_string();
        let message = if text.is_empty() {
            status.canonical_reason().unwrap_or("error").to_string()
        } else {
            text
        };
        let mut out = ApiError::new(status, message).into_response();
        for (k, v) in parts.headers.iter() {
            if k == header::ALLOW || k == header::WWW_AUTHENTICATE {
                out.headers_mut().insert(k.clone(), v.clone());
            }
        }
        return out;
    }
    r
}

/// Counts every answer of the API (after [`json_errors`]: the status the client gets).
async fn count_requests(State(api): State<Api>, req: Request, next: Next) -> Response {
    let r = next.run(req).await;
    api.control.api_requests().record(r.status());
    r
}

async fn no_route() -> ApiError {
    ApiError::not_found("no such route")
}

/// The OpenAPI document of the API.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "meta",
    responses(
        (status = 200, description = "The OpenAPI 3 document of this API", content_type = "application/json"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)
    )
)]
async fn openapi(State(api): State<Api>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        api.openapi.as_str().to_owned(),
    )
        .into_response()
}

/// Every route with its document.
fn openapi_router() -> OpenApiRouter<Api> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(openapi))
        .routes(routes!(devices::list_devices))
        .routes(routes!(devices::get_device, devices::delete_device))
        .routes(routes!(devices::refresh_catalog))
        .routes(routes!(devices::query_info))
        .routes(routes!(devices::query_status))
        .routes(routes!(events::device_events))
        .routes(routes!(records::list_records))
        .routes(routes!(playback::start_playback))
        .routes(routes!(playback::list_playbacks))
        .routes(routes!(playback::control_playback))
        .routes(routes!(playback::stop_playback))
        .routes(routes!(channels::list_channels))
        .routes(routes!(channels::get_channel))
        .routes(routes!(channels::ptz))
        .routes(routes!(channels::set_preset, channels::delete_preset))
        .routes(routes!(channels::call_preset))
        .routes(routes!(channels::key_frame))
        .routes(routes!(paths::list_paths))
        .routes(routes!(push::list_pushes, push::add_push))
        .routes(routes!(push::remove_push))
        .routes(routes!(talk::list_talks, talk::add_talk))
        .routes(routes!(talk::remove_talk))
        .routes(routes!(onvif::discover))
        .routes(routes!(sessions::list_sessions))
        .routes(routes!(sessions::kick_session))
        .routes(routes!(recordings::list_recordings))
        .routes(routes!(recordings::fetch_recording))
        .routes(routes!(config::get_config))
        .routes(routes!(config::reload_config))
        .routes(routes!(crate::cascade::api::list_uppers))
}

/// The generated OpenAPI document (also what `/v1/openapi.json` serves).
pub fn document() -> utoipa::openapi::OpenApi {
    openapi_router().into_openapi()
}

/// The `/v1` router: `auth` decides access (action `api`).
pub fn router(control: Arc<Control>, auth: Authorize) -> axum::Router {
    let (router, doc) = openapi_router().split_for_parts();
    let openapi = Arc::new(doc.to_json().unwrap_or_else(|_| "{}".into()));
    let api = Api {
        control,
        auth,
        openapi,
    };
    router
        .route_layer(middleware::from_fn_with_state(api.clone(), require_api))
        .fallback(no_route)
        .with_state(api.clone())
        .layer(tower_http::limit::RequestBodyLimitLayer::new(MAX_BODY))
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn_with_state(api, count_requests))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_paths() {
        assert_eq!(
            permission_path("/v1/devices/34020000001320000001/catalog"),
            "34020000001320000001"
        );
        assert_eq!(permission_path("/v1/channels/x"), "x");
        assert_eq!(permission_path("/v1/devices"), "");
        assert_eq!(permission_path("/v1/sessions/3"), "");
    }

    /// Routes are added only through `OpenApiRouter::routes` (a plain axum `route` would serve a
    /// path the document does not list).
    #[test]
    fn routes_only_through_the_document() {
        for src in [
            include_str!("mod.rs"),
            include_str!("devices.rs"),
            include_str!("channels.rs"),
            include_str!("sessions.rs"),
            include_str!("paths.rs"),
            include_str!("push.rs"),
            include_str!("onvif.rs"),
            include_str!("recordings.rs"),
            include_str!("config.rs"),
            include_str!("records.rs"),
            include_str!("playback.rs"),
        ] {
            let needle = [".", "route("].concat();
            assert!(!src.contains(&needle), "a route outside the OpenAPI router");
        }
    }

    #[test]
    fn request_counts() {
        let c = RequestCounts::default();
        c.record(StatusCode::OK);
        c.record(StatusCode::OK);
        c.record(StatusCode::UNAUTHORIZED);
        assert_eq!(c.get(200), 2);
        assert_eq!(c.get(99), 0);
        assert_eq!(c.get(600), 0);
        let text = c.render();
        assert!(
            text.contains("gateway_api_requests_total{status=\"200\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("{status=\"401\"} 1\n"), "{text}");
        assert!(!text.contains("\"404\""), "{text}");
    }

    #[test]
    fn document_lists_every_operation() {
        let doc = document();
        let json = doc.to_json().unwrap();
        assert!(json.contains("\"/v1/devices/{id}\""));
        assert!(json.contains("\"basic\""));
        assert!(doc.paths.paths.len() >= 10);
    }
}

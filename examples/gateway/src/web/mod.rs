//! The web page (`/`): the device/channel tree, a live view by WHEP with an HLS fallback,
//! PTZ buttons and the reader sessions. Static files compiled into the binary (no CDN, no
//! build step); they hold no data, so they are served without credentials: everything they
//! show comes from the `/v1` API and WHEP, which ask for them (the page has a login form
//! and sends `Authorization: Basic` on its own fetches).

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const INDEX: &str = include_str!("index.html");
const APP: &str = include_str!("app.js");

fn page(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; media-src 'self' blob:; img-src 'self' data:",
            ),
        ],
        body,
    )
}

/// `GET /` and `GET /ui/app.js`.
pub fn router() -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { page("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/ui/app.js",
            get(|| async { page("text/javascript; charset=utf-8", APP) }),
        )
}

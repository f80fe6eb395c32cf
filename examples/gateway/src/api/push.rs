//! `GET /v1/push`, `POST /v1/push` (`{"path": ..., "url": "rtmp://..."}`) and
//! `DELETE /v1/push/{id}`: paths pushed to external RTMP servers ([`crate::push`]). URLs are
//! listed without their stream key or password.

use super::{Api, ApiError, ApiResult, ErrorBody, blocking};
use crate::gateway::{PushError, PushView};
use crate::push::PushConfig;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;

/// Pushes now: configured (`[[push]]`) and added through the API.
#[utoipa::path(get, path = "/v1/push", tag = "push",
    responses((status = 200, body = [PushView]), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub async fn list_pushes(State(api): State<Api>) -> ApiResult<Vec<PushView>> {
    let control = api.control.clone();
    Ok(Json(blocking(move || Ok(control.pushes()?)).await?))
}

/// Starts pushing a path to an RTMP URL (until deleted or the gateway stops; not kept over
/// a restart: `[[push]]` tables are).
#[utoipa::path(post, path = "/v1/push", tag = "push", request_body = PushConfig,
    responses((status = 201, body = PushView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn add_push(
    State(api): State<Api>,
    body: Result<Json<PushConfig>, JsonRejection>,
) -> Result<(StatusCode, Json<PushView>), ApiError> {
    let Json(cfg) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    cfg.check().map_err(ApiError::bad_request)?;
    let control = api.control.clone();
    let v = blocking(move || {
        control.add_push(cfg)?.map_err(|e| match e {
            PushError::Invalid(m) => ApiError::bad_request(m),
            PushError::Duplicate => ApiError::conflict(e.to_string()),
            PushError::TooMany | PushError::Stopping => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
        })
    })
    .await?;
    Ok((StatusCode::CREATED, Json(v)))
}

/// Stops a push.
#[utoipa::path(delete, path = "/v1/push/{id}", tag = "push",
    params(("id" = u64, Path, description = "push id")),
    responses((status = 204, description = "stopped"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn remove_push(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::bad_request("a push id (a number)"))?;
    let control = api.control.clone();
    if blocking(move || Ok(control.remove_push(id)?)).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no push {id}")))
    }
}

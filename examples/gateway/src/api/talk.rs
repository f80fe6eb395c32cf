//! `GET /v1/talk`, `POST /v1/talk` (`{"device_id": ..., "source": "<path>"}`) and
//! `DELETE /v1/talk/{id}`: voice broadcast (GB/T 28181 §9.12) of a path's audio to a device's
//! speaker ([`crate::gateway::TalkRequest`]).

use super::{Api, ApiError, ApiResult, ErrorBody, blocking};
use crate::gateway::{TalkError, TalkRequest, TalkView};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;

/// Talks now and the last ones that ended (up to 16 in all).
#[utoipa::path(get, path = "/v1/talk", tag = "talk",
    responses((status = 200, body = [TalkView]), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub async fn list_talks(State(api): State<Api>) -> ApiResult<Vec<TalkView>> {
    let control = api.control.clone();
    Ok(Json(blocking(move || Ok(control.talks()?)).await?))
}

/// Sends the audio of a path (a publisher such as ffmpeg or OBS with a microphone, a camera,
/// a pulled stream) to a registered device's speaker: the gateway sends the Broadcast, takes
/// the device's INVITE and sends G.711 in the law the device asks for (transcoding anything
/// else). Answers at once with state `calling`; the list shows `talking` once the device
/// called back.
#[utoipa::path(post, path = "/v1/talk", tag = "talk", request_body = TalkRequest,
    responses((status = 201, body = TalkView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn add_talk(
    State(api): State<Api>,
    body: Result<Json<TalkRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<TalkView>), ApiError> {
    let Json(req) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let control = api.control.clone();
    let v = blocking(move || {
        control.add_talk(req)?.map_err(|e| match e {
            TalkError::Invalid(m) => ApiError::bad_request(m),
            TalkError::NotFound(m) => ApiError::not_found(m),
            TalkError::Busy => ApiError::conflict(e.to_string()),
            TalkError::TooMany | TalkError::Stopping => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
        })
    })
    .await?;
    Ok((StatusCode::CREATED, Json(v)))
}

/// Ends a talk (BYE to the device) and removes it from the list.
#[utoipa::path(delete, path = "/v1/talk/{id}", tag = "talk",
    params(("id" = u64, Path, description = "talk id")),
    responses((status = 204, description = "ended"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn remove_talk(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::bad_request("a talk id (a number)"))?;
    let control = api.control.clone();
    if blocking(move || Ok(control.remove_talk(id)?)).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no talk {id}")))
    }
}

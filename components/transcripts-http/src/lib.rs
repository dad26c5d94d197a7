//! The transcripts-http component: `POST /api/v1/meetings/{id}/transcript`, the HTTP way for
//! a speech-to-text worker to hand in one segment (the other is Redis channel
//! `earshot:transcripts`, the `transcripts` component). The caller needs a token of scope
//! `publish` for the meeting; the segment then goes through exactly the pipeline the Redis
//! trigger uses (`transcript_intake`).
//!
//! Replies: 200 `{"offset": "<stream id>" | null}`; errors `{"error": "<reason>"}` with
//! 400/401/403/404/405/413/500/503 (see [`api::ApiError`]).

use std::time::{SystemTime, UNIX_EPOCH};

use earshot_component_common::request::read_body;
use earshot_component_common::request_log::{serve_logged, RefusedLevel, RequestLog};
use earshot_component_common::response::json_response;
use earshot_protocol::ids::IdError;
use earshot_protocol::transcript::{parse_intake_path, IntakeReply};
use spin_sdk::http::{IncomingRequest, Method, Response};
use transcript_intake::spin::intake;
use transcript_intake::{Intake, IntakeError, Via};

mod api;
mod auth;

use api::{ApiError, RequestParts};

async fn handle(req: IncomingRequest) -> Response {
    serve_logged("transcripts-http", RefusedLevel::Warn, req, serve).await
}

/// The component's export: the macro's wit-bindgen glue is `unsafe` (`export_name`, raw
/// pointers), so `unsafe_code` is allowed in this module alone; everything else in the crate
/// stays under the workspace's `deny`.
#[allow(unsafe_code)]
mod export {
    #[spin_sdk::http_component]
    async fn handle(req: spin_sdk::http::IncomingRequest) -> spin_sdk::http::Response {
        super::handle(req).await
    }
}

async fn serve(
    req: IncomingRequest,
    parts: &RequestParts,
    log: &mut RequestLog,
) -> Result<Response, ApiError> {
    let meeting = parse_intake_path(&parts.path).map_err(|e| match e {
        IdError::UnknownRoute => ApiError::NotFound,
        _ => ApiError::BadRequest("invalid meeting id".into()),
    })?;
    log.set("meeting_id", meeting.to_string());
    if parts.method != Method::Post {
        return Err(ApiError::MethodNotAllowed);
    }
    // Authenticated before the body is read: an anonymous caller costs no buffering.
    let token = auth::authenticate(parts, &meeting, now_unix()?)?;
    log.set("sub", token.sub.clone());
    let body = read_body(req, parts, api::MAX_BODY_BYTES).await?;
    let input = Intake {
        payload: &body,
        via: Via::Http,
        path_meeting: Some(&meeting),
        sub: Some(&token.sub),
    };
    match intake(input).await {
        Ok(accepted) => {
            if let Some(offset) = &accepted.offset {
                log.set("offset", offset.clone());
            }
            Ok(json_response(
                200,
                &IntakeReply {
                    offset: accepted.offset,
                },
            ))
        }
        Err(IntakeError::Rejected(rejection)) => Err(rejection.into()),
        Err(IntakeError::Unavailable(detail)) => Err(ApiError::Unavailable(detail)),
    }
}

/// Wall-clock unix seconds (WASI `wall-clock` on wasm32-wasip2).
fn now_unix() -> Result<u64, ApiError> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| ApiError::Internal("system clock before 1970".into()))
}

//! The transcripts-http component: the meeting routes under `/api/v1/meetings/`.
//!
//! - `POST /api/v1/meetings/{id}/transcript` (scope `publish`): the HTTP way for a
//!   speech-to-text worker to hand in one segment (the other is Redis channel
//!   `earshot:transcripts`, the `transcripts` component); the segment goes through exactly
//!   the pipeline the Redis trigger uses (`transcript_intake`). 200 `{"offset": …|null}`.
//! - `GET /api/v1/meetings/{id}/transcript?format=json|srt|vtt|txt&since=&until=` (scope
//!   `subscribe`): the stored transcript, streamed (`export`).
//! - `DELETE /api/v1/meetings/{id}` (scope `admin`): everything of the meeting removed
//!   (`delete`). 200 `{"meeting_id","deleted":{"redis_keys","kv_keys"}}`.
//!
//! Errors are `{"error": "<reason>"}` with 400/401/403/404/405/413/500/503 (see
//! [`api::ApiError`]). One request line per request (`request_log`).

use std::time::{SystemTime, UNIX_EPOCH};

use earshot_auth::Scope;
use earshot_component_common::request::read_body;
use earshot_component_common::request_log::{RefusedLevel, RequestLog};
use earshot_component_common::response::{json_response, HttpFailure};
use earshot_export::ExportQuery;
use earshot_protocol::transcript::IntakeReply;
use earshot_protocol::MeetingId;
use serde_json::json;
use spin_sdk::http::{IncomingRequest, Method, Response, ResponseOutparam};
use transcript_intake::spin::intake;
use transcript_intake::{Intake, IntakeError, Via};

mod api;
mod auth;
mod body;
mod delete;
mod export;
mod routes;
mod store;

use api::{ApiError, RequestParts};
use routes::Route;

/// The `component` of every log line.
const COMPONENT: &str = "transcripts-http";

/// What a route answers: a whole response, or an export to stream.
enum Reply {
    Whole(Response),
    Export(export::Export),
}

async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    let parts = RequestParts::of(&req);
    let mut log = RequestLog::start(COMPONENT, RefusedLevel::Warn, &parts);
    match serve(req, &parts, &mut log).await {
        Ok(Reply::Whole(response)) => {
            let status = *response.status();
            body::send_whole(out, response).await;
            log.emit(status);
        }
        Ok(Reply::Export(export)) => export.send(out, log),
        Err(err) => {
            log.failed(&err);
            body::send_whole(out, err.response()).await;
            log.emit(err.status());
        }
    }
}

/// The component's export: the macro's wit-bindgen glue is `unsafe` (`export_name`, raw
/// pointers), so `unsafe_code` is allowed in this module alone; everything else in the crate
/// stays under the workspace's `deny`.
#[allow(unsafe_code)]
mod export_glue {
    #[spin_sdk::http_component]
    async fn handle(
        req: spin_sdk::http::IncomingRequest,
        out: spin_sdk::http::ResponseOutparam,
    ) {
        super::handle(req, out).await
    }
}

async fn serve(
    req: IncomingRequest,
    parts: &RequestParts,
    log: &mut RequestLog,
) -> Result<Reply, ApiError> {
    let route = routes::parse(&parts.path)?;
    match route {
        Route::Transcript(meeting) => {
            log.set("meeting_id", meeting.to_string());
            match parts.method {
                Method::Post => take_segment(req, parts, &meeting, log).await.map(Reply::Whole),
                Method::Get => export(parts, meeting, log).map(Reply::Export),
                _ => Err(ApiError::MethodNotAllowed("GET, POST")),
            }
        }
        Route::Meeting(meeting) => {
            log.set("meeting_id", meeting.to_string());
            match parts.method {
                Method::Delete => delete_meeting(parts, &meeting, log).map(Reply::Whole),
                _ => Err(ApiError::MethodNotAllowed("DELETE")),
            }
        }
        // Meeting end (issue 12, part B): the meeting-end library's route.
        Route::End(meeting) => Ok(Reply::Whole(
            meeting_end::serve(Ok(meeting), parts, log).await,
        )),
    }
}

/// `POST …/transcript`: one segment through the intake pipeline.
async fn take_segment(
    req: IncomingRequest,
    parts: &RequestParts,
    meeting: &MeetingId,
    log: &mut RequestLog,
) -> Result<Response, ApiError> {
    // Authenticated before the body is read: an anonymous caller costs no buffering.
    let token = auth::authenticate(parts, Scope::Publish, meeting, now_unix()?)?;
    log.set("sub", token.sub.clone());
    let body = read_body(req, parts, api::MAX_BODY_BYTES).await?;
    let input = Intake {
        payload: &body,
        via: Via::Http,
        path_meeting: Some(meeting),
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

/// `GET …/transcript`: the export, once the caller may read the meeting.
fn export(
    parts: &RequestParts,
    meeting: MeetingId,
    log: &mut RequestLog,
) -> Result<export::Export, ApiError> {
    let token = auth::authenticate(parts, Scope::Subscribe, &meeting, now_unix()?)?;
    log.set("sub", token.sub.clone());
    let query = ExportQuery::parse(parts.query())?;
    export::Export::prepare(meeting, query)
}

/// `DELETE /api/v1/meetings/{id}`.
fn delete_meeting(
    parts: &RequestParts,
    meeting: &MeetingId,
    log: &mut RequestLog,
) -> Result<Response, ApiError> {
    let token = auth::authenticate(parts, Scope::Admin, meeting, now_unix()?)?;
    log.set("sub", token.sub.clone());
    if let Some(jti) = &token.jti {
        log.set("jti", jti.clone());
    }
    let deleted = delete::delete(meeting, &token)?;
    Ok(json_response(
        200,
        &json!({
            "meeting_id": meeting.as_str(),
            "deleted": {"redis_keys": deleted.redis, "kv_keys": deleted.kv},
        }),
    ))
}

/// Wall-clock unix seconds (WASI `wall-clock` on wasm32-wasip2).
fn now_unix() -> Result<u64, ApiError> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| ApiError::Internal("system clock before 1970".into()))
}

//! The Spin shell: the HTTP entry point (`wasi:http/incoming-handler`) and the [`Effects`]
//! over Spin's key-value store, outbound Redis and outbound HTTP. Everything it decides is
//! about HTTP (signature, method, media type, body); the connection is the state machine's.

mod backend;
mod request;

use std::time::{SystemTime, UNIX_EPOCH};

use earshot_component_common::grip;
use earshot_component_common::request::read_body;
use earshot_component_common::response::HttpFailure as _;
use earshot_protocol::events::{decode_events, encode_events, CONTENT_TYPE};
use earshot_protocol::ids::IdError;
use earshot_protocol::WsRoute;
use serde_json::json;
use spin_sdk::http::{IncomingRequest, Method, Response};
use spin_sdk::http_component;
use spin_sdk::variables;

use crate::auth::Credentials;
use crate::effects::Effects as _;
use crate::gripsig;
use crate::meta::Meta;
use crate::session::{self, Input};
use crate::settings::Settings;
use backend::SpinBackend;
use request::{HttpError, RequestParts};

/// Header naming the relay's connection.
const CONNECTION_ID_HEADER: &str = "connection-id";

/// Longest `Connection-Id` accepted, in bytes. Pushpin's ids are ~40 bytes; the id is echoed
/// to the client, stored in presence and logged, so an unbounded one is refused.
const MAX_CONNECTION_ID_BYTES: usize = 128;

#[http_component]
async fn handle(req: IncomingRequest) -> Response {
    let parts = RequestParts::of(&req);
    match serve(req, &parts).await {
        Ok(response) => response,
        Err(err) => {
            let level = if err.status() >= 500 { "error" } else { "warn" };
            let mut line = json!({
                "level": level,
                "component": "ingest",
                "msg": "request refused",
                "method": parts.method.to_string(),
                "path": parts.redacted_path(),
                "status": err.status(),
                "reason": err.reason(),
            });
            if let Some(detail) = err.detail() {
                line["detail"] = detail.into();
            }
            println!("{line}");
            err.response()
        }
    }
}

async fn serve(req: IncomingRequest, parts: &RequestParts) -> Result<Response, HttpError> {
    let settings = load_settings()?;
    let now_ms = now_ms()?;
    // Before anything else, so an unsigned caller learns nothing, not even which routes exist.
    if !settings.grip_sig_key.is_empty() {
        let values: Vec<&str> = parts.header_values(gripsig::HEADER).collect();
        gripsig::verify(&settings.grip_sig_key, &values, now_ms / 1000)
            .map_err(|e| HttpError::Unauthorized(e.to_string()))?;
    }
    let route = match WsRoute::parse(&parts.path, parts.query()) {
        Err(IdError::UnknownRoute) => return Err(HttpError::NotFound),
        route => route,
    };
    if parts.method != Method::Post {
        return Err(HttpError::MethodNotAllowed);
    }
    let connection_id = connection_id(parts)?;
    let body = read_body(req, parts, request::MAX_BODY_BYTES).await?;
    check_content_type(parts, body.is_empty())?;
    let events = decode_events(&body)
        .map_err(|e| HttpError::BadRequest(format!("malformed events: {e}")))?;
    let input = Input {
        route,
        connection_id,
        credentials: Credentials {
            query: parts.query().map(str::to_owned),
            authorization: parts
                .header_values("authorization")
                .map(str::to_owned)
                .collect(),
            protocols: {
                let offered: Vec<&str> = parts.header_values("sec-websocket-protocol").collect();
                (!offered.is_empty()).then(|| offered.join(", "))
            },
        },
        path: parts.redacted_path(),
        meta: Meta::from_headers(|name| parts.header(name)),
        events,
        now_ms,
    };
    let mut backend = SpinBackend::new(&settings);
    let reply = session::handle(input, &settings, &mut backend);
    // Channel messages go out after the connection's own state is settled; a failure is
    // logged by the backend and changes nothing for the client.
    let publishes = backend.take_http_publishes();
    for (url, body) in publishes {
        if let Err(detail) = grip::http_publish(&url, body).await {
            let line = reply
                .log
                .line(crate::log::Level::Warn, "publish failed")
                .with("detail", detail.0);
            backend.log(line.into_value());
        }
    }
    let mut response = Response::builder()
        .status(200)
        .header("content-type", CONTENT_TYPE)
        .header("cache-control", "no-store")
        .body(encode_events(&reply.events))
        .build();
    for (name, value) in reply.headers {
        response.set_header(name, value);
    }
    Ok(response)
}

/// The relay's `Connection-Id`: exactly one, visible ASCII, bounded.
fn connection_id(parts: &RequestParts) -> Result<String, HttpError> {
    let ids: Vec<&str> = parts.header_values(CONNECTION_ID_HEADER).collect();
    match ids.as_slice() {
        [id] if !id.is_empty()
            && id.len() <= MAX_CONNECTION_ID_BYTES
            && id.bytes().all(|b| (0x21..=0x7e).contains(&b)) =>
        {
            Ok((*id).to_owned())
        }
        [] => Err(HttpError::BadRequest("missing Connection-Id".into())),
        _ => Err(HttpError::BadRequest("invalid Connection-Id".into())),
    }
}

/// The body must be `application/websocket-events` (parameters and case aside). An empty
/// body (the relay's keep-alive) may come without a type: there is nothing to interpret.
fn check_content_type(parts: &RequestParts, empty_body: bool) -> Result<(), HttpError> {
    let types: Vec<&str> = parts.header_values("content-type").collect();
    let ok = match types.as_slice() {
        [] => empty_body,
        [t] => t
            .split(';')
            .next()
            .is_some_and(|media| media.trim().eq_ignore_ascii_case(CONTENT_TYPE)),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(HttpError::BadRequest(format!(
            "content type must be {CONTENT_TYPE}"
        )))
    }
}

/// Reads every variable, applying the documented defaults.
fn load_settings() -> Result<Settings, HttpError> {
    Settings::from_lookup(|name| match variables::get(name) {
        Ok(value) => Ok(Some(value)),
        Err(variables::Error::Undefined(_)) => Ok(None),
        Err(e) => Err(format!("{e:?}")),
    })
    .map_err(|e| HttpError::Misconfigured(e.to_string()))
}

/// Wall-clock unix milliseconds (WASI `wall-clock`).
fn now_ms() -> Result<u64, HttpError> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .map_err(|_| HttpError::Internal("system clock before 1970".into()))
}

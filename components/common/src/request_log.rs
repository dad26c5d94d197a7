//! One JSON line per request on stdout: `level`, `component`, `msg: "request"`, `method`,
//! `path` (tokens redacted), `status`, `duration_ms`, then what the route recorded and, for a
//! failure, its `reason` and log-only `detail`.

use std::time::Instant;

use serde_json::{json, Map, Value};
use spin_sdk::http::{IncomingRequest, Response};

use crate::request::RequestParts;
use crate::response::HttpFailure;

/// The level of a line for a 4xx reply (2xx is `info`, 5xx `error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedLevel {
    /// A refusal is ordinary life of the surface.
    Info,
    /// A refusal is worth noticing.
    Warn,
}

/// What the request line will say; routes fill in what they learn.
pub struct RequestLog {
    started: Instant,
    component: &'static str,
    refused: RefusedLevel,
    method: String,
    path: String,
    fields: Map<String, Value>,
}

impl RequestLog {
    /// Starts the clock for one request of `component`.
    pub fn start(component: &'static str, refused: RefusedLevel, parts: &RequestParts) -> Self {
        RequestLog {
            started: Instant::now(),
            component,
            refused,
            method: parts.method.to_string(),
            path: parts.redacted_path(),
            fields: Map::new(),
        }
    }

    /// Records string field `key` (replacing an earlier value). Never a token.
    pub fn set(&mut self, key: &'static str, value: impl Into<String>) {
        self.fields.insert(key.into(), Value::String(value.into()));
    }

    /// Records a failure's reason and log-only detail.
    pub fn failed(&mut self, err: &impl HttpFailure) {
        self.set("reason", err.reason());
        match err.detail() {
            Some(detail) => self.set("detail", detail),
            None => {
                self.fields.remove("detail");
            }
        }
    }

    /// Prints the line.
    pub fn emit(self, status: u16) {
        let level = match (status, self.refused) {
            (500.., _) => "error",
            (400.., RefusedLevel::Warn) => "warn",
            _ => "info",
        };
        let mut line = self.fields;
        line.insert("level".into(), json!(level));
        line.insert("component".into(), json!(self.component));
        line.insert("msg".into(), json!("request"));
        line.insert("method".into(), json!(self.method));
        line.insert("path".into(), json!(self.path));
        line.insert("status".into(), json!(status));
        line.insert(
            "duration_ms".into(),
            json!(self.started.elapsed().as_secs_f64() * 1000.0),
        );
        println!("{}", Value::Object(line));
    }
}

/// Answers `req` with `route`, turning its error into the error reply, and logs the request
/// line: the whole of a component's HTTP entry point.
pub async fn serve_logged<E: HttpFailure>(
    component: &'static str,
    refused: RefusedLevel,
    req: IncomingRequest,
    route: impl AsyncFnOnce(IncomingRequest, &RequestParts, &mut RequestLog) -> Result<Response, E>,
) -> Response {
    let parts = RequestParts::of(&req);
    let mut log = RequestLog::start(component, refused, &parts);
    let response = match route(req, &parts, &mut log).await {
        Ok(response) => response,
        Err(err) => {
            log.failed(&err);
            err.response()
        }
    };
    log.emit(*response.status());
    response
}

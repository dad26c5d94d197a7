//! One JSON line per request on stdout (the segment's own line comes from
//! `transcript_intake`). Tokens never reach it: the path goes through `redact_query`, and
//! of a token only its `sub` is recorded.

use std::time::Instant;

use serde_json::{json, Map, Value};

use crate::api::{ApiError, RequestParts};

/// What the request line will say; the route fills in what it learns.
pub(crate) struct RequestLog {
    started: Instant,
    method: String,
    path: String,
    /// The path's meeting, once parsed.
    pub(crate) meeting_id: Option<String>,
    /// The token's subject, once verified.
    pub(crate) sub: Option<String>,
    /// The stored segment's offset.
    pub(crate) offset: Option<String>,
    reason: Option<String>,
    detail: Option<String>,
}

impl RequestLog {
    /// Starts the clock for one request.
    pub(crate) fn start(parts: &RequestParts) -> RequestLog {
        RequestLog {
            started: Instant::now(),
            method: parts.method.to_string(),
            path: earshot_auth::redact_query(&parts.path_with_query),
            meeting_id: None,
            sub: None,
            offset: None,
            reason: None,
            detail: None,
        }
    }

    /// Records a failure's reason and log-only detail.
    pub(crate) fn failed(&mut self, err: &ApiError) {
        self.reason = Some(err.reason());
        self.detail = err.detail().map(str::to_owned);
    }

    /// Prints the line: `info` for 2xx, `warn` for a refused request, `error` for 5xx.
    pub(crate) fn emit(self, status: u16) {
        let level = match status {
            500.. => "error",
            400.. => "warn",
            _ => "info",
        };
        let mut line = Map::new();
        line.insert("level".into(), json!(level));
        line.insert("component".into(), json!("transcripts-http"));
        line.insert("msg".into(), json!("request"));
        line.insert("method".into(), json!(self.method));
        line.insert("path".into(), json!(self.path));
        line.insert("status".into(), json!(status));
        line.insert(
            "duration_ms".into(),
            json!(self.started.elapsed().as_secs_f64() * 1000.0),
        );
        let optional = [
            ("meeting_id", self.meeting_id),
            ("sub", self.sub),
            ("offset", self.offset),
            ("reason", self.reason),
            ("detail", self.detail),
        ];
        for (key, value) in optional {
            if let Some(v) = value {
                line.insert(key.into(), Value::String(v));
            }
        }
        println!("{}", Value::Object(line));
    }
}

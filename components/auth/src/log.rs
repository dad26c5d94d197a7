//! One JSON line per request on stdout. Tokens never reach it: the path goes through
//! `redact_query`, and only `sub`, `jti` and reasons are recorded.

use std::time::Instant;

use serde_json::{json, Map, Value};

use crate::api::{ApiError, RequestParts};

/// What the request line will say; routes fill in what they learn.
pub(crate) struct RequestLog {
    started: Instant,
    method: String,
    path: String,
    /// Route name (`token`, `introspect`, `revoke`), once matched.
    pub(crate) route: Option<&'static str>,
    /// Subject of the token concerned.
    pub(crate) sub: Option<String>,
    /// `jti` of the token concerned.
    pub(crate) jti: Option<String>,
    /// Why the request failed or the token was inactive.
    pub(crate) reason: Option<String>,
    detail: Option<String>,
}

impl RequestLog {
    /// Starts the clock for one request.
    pub(crate) fn start(parts: &RequestParts) -> RequestLog {
        RequestLog {
            started: Instant::now(),
            method: parts.method.to_string(),
            path: earshot_auth::redact_query(&parts.path_with_query),
            route: None,
            sub: None,
            jti: None,
            reason: None,
            detail: None,
        }
    }

    /// Records a failure's reason and log-only detail.
    pub(crate) fn failed(&mut self, err: &ApiError) {
        self.reason = Some(err.reason());
        self.detail = err.detail().map(str::to_owned);
    }

    /// Prints the line.
    pub(crate) fn emit(self, status: u16) {
        let level = if status >= 500 { "error" } else { "info" };
        let mut line = Map::new();
        line.insert("level".into(), json!(level));
        line.insert("component".into(), json!("auth"));
        line.insert("msg".into(), json!("request"));
        line.insert("method".into(), json!(self.method));
        line.insert("path".into(), json!(self.path));
        line.insert("status".into(), json!(status));
        line.insert(
            "duration_ms".into(),
            json!(self.started.elapsed().as_secs_f64() * 1000.0),
        );
        let optional = [
            ("route", self.route.map(str::to_owned)),
            ("sub", self.sub),
            ("jti", self.jti),
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

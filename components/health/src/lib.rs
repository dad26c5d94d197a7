//! The health component: `/api/v1/health` (the exact contract in DESIGN.md),
//! `/api/v1/health/detailed` (latency and error per dependency), `/api/v1/ping`, and
//! `/api/v1/openapi.json` (the API's description, so a deployment on Spin serves it too).

use std::time::Instant;

use serde::Serialize;
use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::{key_value, redis, variables};

/// The key the storage check writes and reads back; namespaced so it never collides
/// with application data.
const STORAGE_PROBE_KEY: &str = "earshot:health:probe";

/// The OpenAPI 3.1 description of every HTTP route (tests/openapi.rs keeps it true).
const OPENAPI_JSON: &str = include_str!("../../../docs/openapi.json");

/// The contract answer: exactly these three fields.
#[derive(Serialize)]
struct Health {
    redis: &'static str,
    storage: &'static str,
    version: &'static str,
}

#[derive(Serialize)]
struct Check {
    status: &'static str,
    latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
struct Checks {
    redis: Check,
    storage: Check,
}

#[derive(Serialize)]
struct Detailed {
    status: &'static str,
    version: &'static str,
    checks: Checks,
}

fn status(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "down"
    }
}

fn timed(f: impl FnOnce() -> Result<(), String>) -> Check {
    let started = Instant::now();
    let result = f();
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(()) => Check { status: "ok", latency_ms, error: None },
        Err(e) => Check { status: "down", latency_ms, error: Some(e) },
    }
}

/// A real PING through outbound Redis; the host bounds it with a short timeout.
fn check_redis() -> Check {
    timed(|| {
        let url = variables::get("redis_url").map_err(|e| format!("redis_url: {e}"))?;
        if url.is_empty() {
            return Err("not configured".into());
        }
        let conn = redis::Connection::open(&url).map_err(|e| format!("connect: {e}"))?;
        match conn.execute("PING", &[]).map_err(|e| format!("PING: {e}"))?.as_slice() {
            [redis::RedisResult::Status(s)] if s == "PONG" => Ok(()),
            other => Err(format!("unexpected PING reply: {other:?}")),
        }
    })
}

/// The key-value store answers a write and reads it back.
fn check_storage() -> Check {
    timed(|| {
        let store = key_value::Store::open_default().map_err(|e| format!("open: {e}"))?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis().to_string())
            .unwrap_or_default();
        store.set(STORAGE_PROBE_KEY, stamp.as_bytes()).map_err(|e| format!("set: {e}"))?;
        match store.get(STORAGE_PROBE_KEY).map_err(|e| format!("get: {e}"))? {
            Some(v) if v == stamp.as_bytes() => Ok(()),
            _ => Err("read back a different value".into()),
        }
    })
}

fn json(status: u16, body: &impl Serialize) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .body(serde_json::to_vec(body).unwrap_or_default())
        .build()
}

fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    let version = env!("CARGO_PKG_VERSION");
    let path = req.path().trim_end_matches('/');
    if *req.method() != spin_sdk::http::Method::Get && *req.method() != spin_sdk::http::Method::Head {
        return Ok(json(405, &serde_json::json!({"error": "method not allowed"})));
    }
    Ok(match path {
        "/api/v1/ping" => json(200, &serde_json::json!({"status": "ok"})),
        "/api/v1/openapi.json" => Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(OPENAPI_JSON)
            .build(),
        "/api/v1/health/detailed" => {
            let checks = Checks { redis: check_redis(), storage: check_storage() };
            let all_ok = checks.redis.status == "ok" && checks.storage.status == "ok";
            json(200, &Detailed { status: if all_ok { "ok" } else { "degraded" }, version, checks })
        }
        "/api/v1/health" => {
            let redis = check_redis().status == "ok";
            let storage = check_storage().status == "ok";
            // 200 either way: the body says what is down; a probe that wants liveness
            // uses /api/v1/ping.
            json(200, &Health { redis: status(redis), storage: status(storage), version })
        }
        _ => json(404, &serde_json::json!({"error": "not found"})),
    })
}

/// The component's export: the macro's wit-bindgen glue is `unsafe` (`export_name`, raw
/// pointers), so `unsafe_code` is allowed in this module alone; everything else in the crate
/// stays under the workspace's `deny`.
#[allow(unsafe_code)]
mod export {
    #[spin_sdk::http_component]
    fn handle(req: spin_sdk::http::Request) -> anyhow::Result<impl spin_sdk::http::IntoResponse> {
        super::handle(req)
    }
}

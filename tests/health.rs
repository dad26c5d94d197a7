//! Health contract (DESIGN.md): the real health.wasm under the embedded host, with a
//! real Redis up, killed, and configured through `SPIN_VARIABLE_*`.

use std::time::Duration;

use earshot_testkit::{earshot, RedisServer};
use serde_json::Value;

fn get_json(url: &str) -> (u16, Value) {
    let resp = reqwest::blocking::get(url).expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().expect("json body"))
}

#[test]
fn health_without_redis_is_exactly_the_contract() {
    let server = earshot!().start().unwrap();
    let (status, body) = get_json(&server.url("/api/v1/health"));
    assert_eq!(status, 200);
    assert_eq!(
        body,
        serde_json::json!({"redis": "down", "storage": "ok", "version": env!("CARGO_PKG_VERSION")})
    );
    let (status, body) = get_json(&server.url("/api/v1/ping"));
    assert_eq!((status, &body["status"]), (200, &Value::from("ok")));
}

#[test]
fn health_follows_redis_up_then_killed() {
    let mut redis = RedisServer::start().unwrap();
    let server = earshot!().redis(redis.url()).start().unwrap();
    let (status, body) = get_json(&server.url("/api/v1/health"));
    assert_eq!(status, 200);
    assert_eq!(body["redis"], "ok", "{body}");
    assert_eq!(body["storage"], "ok", "{body}");

    let (_, detailed) = get_json(&server.url("/api/v1/health/detailed"));
    assert_eq!(detailed["status"], "ok", "{detailed}");
    assert!(detailed["checks"]["redis"]["latency_ms"].as_f64().unwrap() >= 0.0);

    redis.kill();
    let started = std::time::Instant::now();
    let (status, body) = get_json(&server.url("/api/v1/health"));
    assert_eq!(status, 200, "health answers 200 even when Redis is down");
    assert_eq!(body["redis"], "down", "{body}");
    assert_eq!(body["storage"], "ok", "{body}");
    assert!(started.elapsed() < Duration::from_secs(5), "health took {:?} with Redis down", started.elapsed());
    let (_, detailed) = get_json(&server.url("/api/v1/health/detailed"));
    assert_eq!(detailed["status"], "degraded");
    assert!(detailed["checks"]["redis"]["error"].as_str().is_some_and(|e| !e.is_empty()), "{detailed}");

    redis.restart().unwrap();
    let (_, body) = get_json(&server.url("/api/v1/health"));
    assert_eq!(body["redis"], "ok", "reconnects without a restart: {body}");
}

#[test]
fn spin_variable_env_overrides_a_manifest_default() {
    // No --redis: the only way health can reach Redis is the redis_url variable,
    // whose spin.toml default is empty.
    let redis = RedisServer::start().unwrap();
    let server = earshot!().env("SPIN_VARIABLE_REDIS_URL", &redis.url()).start().unwrap();
    let (_, body) = get_json(&server.url("/api/v1/health"));
    assert_eq!(body["redis"], "ok", "{body}");
}

//! Both triggers, in-process, on the real components (built through the testkit) and a
//! real `redis-server`: an HTTP request routed to `health` and answered; a message
//! PUBLISHed on the `transcripts` Redis trigger's channel taken in through the host's
//! key-value and outbound Redis.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use earshot_host::kv::{KeyValueBackend, SqliteKv};
use earshot_host::{App, HostConfig};
use earshot_testkit::{build_components, RedisServer};
use http_body_util::{BodyExt, Full};

/// How long a PUBLISHed segment may take to reach the transcript stream: the trigger
/// subscribes asynchronously after `spawn_redis_triggers`, then one guest call.
const INTAKE_DEADLINE: Duration = Duration::from_secs(20);

fn manifest(dir: &std::path::Path) -> PathBuf {
    let wasm = build_components().expect("building the components");
    let text = format!(
        r#"
spin_manifest_version = 2
[application]
name = "triggers"
[application.trigger.redis]
address = "{{{{ redis_url }}}}"

[variables]
redis_url = {{ default = "" }}

[[trigger.http]]
route = "/api/v1/ping"
component = "health"

[[trigger.http]]
route = "/api/v1/health"
component = "health"

[[trigger.redis]]
channel = "earshot:transcripts"
component = "transcripts"

[component.health]
source = "{wasm}/health.wasm"
key_value_stores = ["default"]
allowed_outbound_hosts = ["redis://*:*"]
[component.health.variables]
redis_url = "{{{{ redis_url }}}}"

[component.transcripts]
source = "{wasm}/transcripts.wasm"
key_value_stores = ["default"]
allowed_outbound_hosts = ["redis://*:*"]
[component.transcripts.variables]
redis_url = "{{{{ redis_url }}}}"
grip_publish_url = ""
"#,
        wasm = wasm.display()
    );
    let path = dir.join("spin.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn load(redis_url: Option<String>, kv: Arc<dyn KeyValueBackend>) -> (tempfile::TempDir, App) {
    let dir = tempfile::tempdir().unwrap();
    let path = manifest(dir.path());
    let config = HostConfig {
        kv_path: dir.path().join("kv.db"),
        redis_url,
        variable_overrides: Default::default(),
        cache_dir: Some(dir.path().join("cache")),
        instances: Default::default(),
    };
    let app = App::load_with_env(&path, config, kv, |_| None).await.expect("loading the app");
    (dir, app)
}

async fn get(app: &App, path: &str) -> (u16, serde_json::Value) {
    let req = http::Request::get(path).header("host", "test").body(Full::new(Bytes::new())).unwrap();
    let resp = app.handle_http(req, None).await;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("reading the body").to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or_else(|_| String::from_utf8_lossy(&body).into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_request_is_routed_to_its_component_and_answered() {
    let redis = RedisServer::start().unwrap();
    let (_dir, app) = load(Some(redis.url()), Arc::new(SqliteKv::in_memory().unwrap())).await;
    assert_eq!(get(&app, "/api/v1/ping").await, (200, serde_json::json!({"status": "ok"})));
    let (status, health) = get(&app, "/api/v1/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["redis"], "ok", "outbound Redis reached the real server: {health}");
    assert_eq!(health["storage"], "ok", "key-value reached SQLite: {health}");
    assert_eq!(get(&app, "/api/v1/elsewhere").await.0, 404, "no route, no component");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_segment_reaches_the_redis_trigger_component() {
    let redis = RedisServer::start().unwrap();
    let kv = Arc::new(SqliteKv::in_memory().unwrap());
    // The intake takes segments only for a meeting it knows: one with presence.
    kv.set("default", "meeting:m1:presence", br#"{"mic":{"connection_id":"c","since_ms":1}}"#).unwrap();
    let (_dir, app) = load(Some(redis.url()), kv.clone()).await;
    let app = Arc::new(app);
    assert_eq!(app.redis_triggers()[0].address.as_deref(), Some(redis.url().as_str()));
    app.spawn_redis_triggers();
    let segment = r#"{"meeting_id":"m1","source":"mic","text":"hello","is_final":true,"start_ms":0,"end_ms":900}"#;
    let deadline = Instant::now() + INTAKE_DEADLINE;
    // PUBLISH until the trigger has subscribed and the segment is stored.
    loop {
        redis.cli(&["PUBLISH", "earshot:transcripts", segment]).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        if redis.cli(&["XLEN", "transcript:m1"]).unwrap().trim() != "0" {
            break;
        }
        assert!(Instant::now() < deadline, "no segment reached transcript:m1 within {INTAKE_DEADLINE:?}");
    }
    let stored = redis.cli(&["XRANGE", "transcript:m1", "-", "+"]).unwrap();
    assert!(stored.contains("hello"), "{stored}");
    assert!(kv.get("default", "meeting:m1:state").unwrap().is_some(), "meeting state written through key-value");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_redis_address_leaves_the_trigger_idle() {
    let (_dir, app) = load(None, Arc::new(SqliteKv::in_memory().unwrap())).await;
    let app = Arc::new(app);
    assert_eq!(app.redis_triggers()[0].address, None);
    app.spawn_redis_triggers();
    assert_eq!(get(&app, "/api/v1/ping").await.0, 200, "the app still serves HTTP");
}

//! The embedded host runs what `spin.toml` says, and refuses what Spin refuses.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use earshot_host::kv::SqliteKv;
use earshot_host::{App, HostConfig};
use earshot_testkit::{build_components, earshot, repo_root};

/// The repository's manifests: `spin.toml` (self-hosted, with the Redis trigger),
/// `spin-cloud.toml` (HTTP intake only) and any other `spin*.toml` at the root.
fn root_manifests() -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(repo_root())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name.starts_with("spin") && name.ends_with(".toml")
        })
        .collect();
    found.sort();
    found
}

/// `text` with component sources pointing at the freshly built .wasm files.
fn with_built_sources(text: &str) -> String {
    let wasm_dir = build_components().unwrap();
    text.replace(
        "source = \"components/target/wasm32-wasip2/release/",
        &format!("source = \"{}/", wasm_dir.display()),
    )
}

/// Copies the repository's spin.toml into a temp dir, with absolute component
/// sources, then applies `edit`.
fn manifest_copy(edit: impl FnOnce(String) -> String) -> (tempfile::TempDir, std::path::PathBuf) {
    let text = with_built_sources(&std::fs::read_to_string(repo_root().join("spin.toml")).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spin.toml");
    std::fs::write(&path, edit(text)).unwrap();
    (dir, path)
}

fn remove_route(text: &str, route: &str) -> String {
    let block = format!("[[trigger.http]]\nroute = \"{route}\"\ncomponent = \"health\"\n");
    assert!(text.contains(&block), "spin.toml has no {route} block");
    text.replace(&block, "")
}

#[test]
fn answers_come_from_the_wasm_that_spin_toml_routes_to() {
    let (_dir, path) = manifest_copy(|t| remove_route(&t, "/api/v1/health"));
    let server = earshot!().manifest(&path).start().unwrap();
    let resp = reqwest::blocking::get(server.url("/api/v1/health")).unwrap();
    assert_eq!(resp.status().as_u16(), 404, "no route in the manifest → no health");
    let resp = reqwest::blocking::get(server.url("/api/v1/ping")).unwrap();
    assert_eq!(resp.status().as_u16(), 200, "the other health routes still served");
}

#[test]
fn a_component_without_a_key_value_grant_is_refused_by_the_store() {
    // The health table comes first in spin.toml: drop its grant only.
    let (_dir, path) = manifest_copy(|t| t.replacen("key_value_stores = [\"default\"]\n", "", 1));
    let text = std::fs::read_to_string(&path).unwrap();
    let health_table = text.split("[component.health]").nth(1).unwrap().split("[component.auth]").next().unwrap();
    assert!(!health_table.contains("key_value_stores ="), "the grant was removed:\n{health_table}");
    let server = earshot!().manifest(&path).start().unwrap();
    let body: serde_json::Value = reqwest::blocking::get(server.url("/api/v1/health/detailed")).unwrap().json().unwrap();
    assert_eq!(body["checks"]["storage"]["status"], "down", "{body}");
    let error = body["checks"]["storage"]["error"].as_str().unwrap_or_default();
    assert!(error.to_lowercase().contains("accessdenied"), "Spin's access-denied error, got {error:?}");
}

#[test]
fn a_component_importing_an_unknown_interface_fails_at_load_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    // A component (WAT text, which wasmtime accepts like a .wasm) that imports an
    // interface this host does not provide.
    std::fs::write(
        dir.path().join("llm.wat"),
        r#"(component (import "fermyon:spin/llm@2.0.0" (instance (export "infer" (func)))))"#,
    )
    .unwrap();
    let manifest = r#"
spin_manifest_version = 2
[application]
name = "needs-llm"
[[trigger.http]]
route = "/..."
component = "llm"
[component.llm]
source = "llm.wat"
"#;
    std::fs::write(dir.path().join("spin.toml"), manifest).unwrap();
    let err = earshot!().manifest(dir.path().join("spin.toml")).start().err().expect("load must fail");
    let text = format!("{err:#}");
    assert!(text.contains("fermyon:spin/llm@2.0.0"), "error names the interface: {text}");
}

#[test]
fn a_key_value_label_the_host_lacks_fails_at_load() {
    let (_dir, path) = manifest_copy(|t| t.replacen("key_value_stores = [\"default\"]", "key_value_stores = [\"default\", \"nope\"]", 1));
    let err = earshot!().manifest(&path).start().err().expect("load must fail");
    assert!(format!("{err:#}").contains("nope"), "{err:#}");
}

#[test]
fn every_manifest_holds_only_keys_spin_accepts() {
    // Spin's manifest v2 schema: these are the only top-level and component keys.
    let allowed = [
        "source", "description", "key_value_stores", "allowed_outbound_hosts", "variables", "build",
        "files", "exclude_files", "environment", "sqlite_databases", "ai_models", "dependencies",
        "dependencies_inherit_configuration", "tool",
    ];
    for path in root_manifests() {
        let name = path.display();
        let doc: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
        for key in doc.keys() {
            assert!(
                ["spin_manifest_version", "application", "variables", "trigger", "component"].contains(&key.as_str()),
                "{name}: unknown top-level key {key}"
            );
        }
        for (id, c) in doc["component"].as_table().unwrap() {
            for key in c.as_table().unwrap().keys() {
                assert!(allowed.contains(&key.as_str()), "{name}: component {id}: key {key} is not in Spin's schema");
            }
            let source = c["source"].as_str().unwrap();
            assert!(Path::new(source).is_relative(), "{name}: sources stay relative so spin build/up work");
        }
    }
}

/// Loads `path` (sources pointed at the built components) with the embedded host,
/// in-process, with the required secrets provided the way Spin's environment
/// provider would.
async fn load_root_manifest(path: &Path, redis_url: Option<String>) -> (tempfile::TempDir, App) {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join(path.file_name().unwrap());
    std::fs::write(&copy, with_built_sources(&std::fs::read_to_string(path).unwrap())).unwrap();
    let config = HostConfig {
        kv_path: dir.path().join("kv.db"),
        redis_url,
        variable_overrides: Default::default(),
        cache_dir: earshot_host::cache::default_cache_dir(),
        instances: Default::default(),
    };
    let secrets = |k: &str| match k {
        "SPIN_VARIABLE_JWT_SECRET" => Some("a-test-secret-that-is-at-least-32-bytes".to_owned()),
        "SPIN_VARIABLE_ADMIN_KEY" => Some("test-admin-key".to_owned()),
        _ => None,
    };
    let app = App::load_with_env(&copy, config, Arc::new(SqliteKv::in_memory().unwrap()), secrets)
        .await
        .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
    (dir, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_host_loads_every_manifest_of_the_repository() {
    let manifests = root_manifests();
    let names: Vec<String> = manifests.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert!(names.contains(&"spin.toml".to_owned()), "{names:?}");
    assert!(names.contains(&"spin-cloud.toml".to_owned()), "{names:?}");
    for path in &manifests {
        let (_dir, app) = load_root_manifest(path, None).await;
        assert!(!app.summary().is_empty(), "{}: components loaded", path.display());
        assert!(
            app.redis_triggers().iter().all(|t| t.address.is_none()),
            "{}: without Redis every Redis trigger is idle: {:?}",
            path.display(),
            app.redis_triggers()
        );
        let ping = http::Request::get("/api/v1/ping")
            .header("host", "test")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        assert_eq!(app.handle_http(ping, None).await.status(), 200, "{}: health answers", path.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spin_toml_runs_the_redis_trigger_and_spin_cloud_toml_has_none() {
    let root = repo_root();
    let (_dir, app) = load_root_manifest(&root.join("spin.toml"), Some("redis://127.0.0.1:1".into())).await;
    let channels: Vec<(&str, Option<&str>)> =
        app.redis_triggers().iter().map(|t| (t.channel.as_str(), t.address.as_deref())).collect();
    assert_eq!(channels, [("earshot:transcripts", Some("redis://127.0.0.1:1"))], "--redis is the trigger's address");
    let (_dir, cloud) = load_root_manifest(&root.join("spin-cloud.toml"), None).await;
    assert!(cloud.redis_triggers().is_empty(), "spin-cloud.toml takes transcripts over HTTP only");
}

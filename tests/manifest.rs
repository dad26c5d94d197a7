//! The embedded host runs what `spin.toml` says, and refuses what Spin refuses.

use std::path::Path;

use earshot_testkit::{build_components, earshot, repo_root};

/// Copies the repository's spin.toml into a temp dir, with absolute component
/// sources, then applies `edit`.
fn manifest_copy(edit: impl FnOnce(String) -> String) -> (tempfile::TempDir, std::path::PathBuf) {
    let wasm_dir = build_components().unwrap();
    let text = std::fs::read_to_string(repo_root().join("spin.toml")).unwrap();
    let text = text.replace(
        "source = \"components/target/wasm32-wasip2/release/",
        &format!("source = \"{}/", wasm_dir.display()),
    );
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
fn spin_toml_holds_only_keys_spin_accepts() {
    // Spin's manifest v2 schema: these are the only top-level and component keys.
    let text = std::fs::read_to_string(repo_root().join("spin.toml")).unwrap();
    let doc: toml::Table = text.parse().unwrap();
    for key in doc.keys() {
        assert!(
            ["spin_manifest_version", "application", "variables", "trigger", "component"].contains(&key.as_str()),
            "unknown top-level key {key}"
        );
    }
    let allowed = [
        "source", "description", "key_value_stores", "allowed_outbound_hosts", "variables", "build",
        "files", "exclude_files", "environment", "sqlite_databases", "ai_models", "dependencies",
        "dependencies_inherit_configuration", "tool",
    ];
    for (id, c) in doc["component"].as_table().unwrap() {
        for key in c.as_table().unwrap().keys() {
            assert!(allowed.contains(&key.as_str()), "component {id}: key {key} is not in Spin's schema");
        }
        let source = c["source"].as_str().unwrap();
        assert!(Path::new(source).is_relative(), "sources stay relative so spin build/up work");
    }
}

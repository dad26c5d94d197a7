//! The loader, case by case: every folder under `tests/loader/` holds a `spin.toml`
//! (with its WAT components) and a `case.toml` of inputs and the expected outcome.
//! A `$WASM` in a case's `spin.toml` stands for the folder of the real components,
//! built through the testkit only for the cases that use it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use earshot_host::kv::SqliteKv;
use earshot_host::{App, HostConfig, RedisTriggerPlan};
use http_body_util::Full;
use serde::Deserialize;

/// Inputs beyond `spin.toml`, and what loading it must produce.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    /// `SPIN_VARIABLE_*` the loader sees (instead of the process environment).
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// Host variable overrides.
    #[serde(default)]
    overrides: BTreeMap<String, String>,
    /// `earshot up --redis`.
    #[serde(default)]
    redis_url: Option<String>,
    expect: Expect,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    /// The load fails and its error (with causes) contains each of these.
    #[serde(default)]
    error: Option<Vec<String>>,
    /// Route pattern → component.
    #[serde(default)]
    routes: Option<BTreeMap<String, String>>,
    /// Path → status `handle_http` answers.
    #[serde(default)]
    requests: BTreeMap<String, u16>,
    /// Application variable → resolved value.
    #[serde(default)]
    variables: BTreeMap<String, String>,
    /// Component → key-value labels it is granted.
    #[serde(default)]
    kv: BTreeMap<String, Vec<String>>,
    /// Redis triggers as the host will run them.
    #[serde(default)]
    redis_triggers: Option<Vec<ExpectedTrigger>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectedTrigger {
    channel: String,
    component: String,
    #[serde(default)]
    address: Option<String>,
}

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/loader")
}

/// The case's folder copied to a temp dir, `$WASM` replaced by the built components.
fn staged(case_dir: &Path) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(case_dir).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    let manifest = dir.path().join("spin.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    if text.contains("$WASM") {
        let wasm = earshot_testkit::build_components().expect("building the components");
        std::fs::write(&manifest, text.replace("$WASM", &wasm.display().to_string())).unwrap();
    }
    (dir, manifest)
}

async fn run(name: &str, case_dir: &Path) -> Result<(), String> {
    let case: Case = toml::from_str(&std::fs::read_to_string(case_dir.join("case.toml")).unwrap())
        .map_err(|e| format!("case.toml: {e}"))?;
    let (_dir, manifest) = staged(case_dir);
    let config = HostConfig {
        kv_path: PathBuf::from("unused.db"),
        redis_url: case.redis_url.clone(),
        variable_overrides: case.overrides.clone(),
        cache_dir: None,
        instances: Default::default(),
    };
    let kv = Arc::new(SqliteKv::in_memory().unwrap());
    let env = case.env.clone();
    let loaded = App::load_with_env(&manifest, config, kv, move |k| env.get(k).cloned()).await;
    let expect = case.expect;
    let app = match (loaded, &expect.error) {
        (Err(e), Some(wanted)) => {
            let text = format!("{e:#}");
            return match wanted.iter().find(|w| !text.contains(w.as_str())) {
                None => Ok(()),
                Some(missing) => Err(format!("error lacks {missing:?}: {text}")),
            };
        }
        (Err(e), None) => return Err(format!("load failed: {e:#}")),
        (Ok(_), Some(wanted)) => return Err(format!("load succeeded, expected an error containing {wanted:?}")),
        (Ok(app), None) => app,
    };
    let mut failures = Vec::new();
    if let Some(routes) = &expect.routes {
        let got: BTreeMap<String, String> =
            app.manifest().http_triggers.iter().map(|t| (t.route.clone(), t.component.clone())).collect();
        if &got != routes {
            failures.push(format!("routes {got:?}, expected {routes:?}"));
        }
    }
    for (path, status) in &expect.requests {
        let req = http::Request::get(path.as_str()).body(Full::new(Bytes::new())).unwrap();
        let got = app.handle_http(req, None).await.status().as_u16();
        if got != *status {
            failures.push(format!("GET {path} answered {got}, expected {status}"));
        }
    }
    for (name, value) in &expect.variables {
        if app.variable(name) != Some(value.as_str()) {
            failures.push(format!("variable {name} = {:?}, expected {value:?}", app.variable(name)));
        }
    }
    for (component, labels) in &expect.kv {
        let got = app.manifest().components.get(component).map(|c| &c.key_value_stores);
        if got != Some(labels) {
            failures.push(format!("component {component} kv {got:?}, expected {labels:?}"));
        }
    }
    if let Some(triggers) = &expect.redis_triggers {
        let wanted: Vec<RedisTriggerPlan> = triggers
            .iter()
            .map(|t| RedisTriggerPlan { channel: t.channel.clone(), component: t.component.clone(), address: t.address.clone() })
            .collect();
        if app.redis_triggers() != wanted.as_slice() {
            failures.push(format!("redis triggers {:?}, expected {wanted:?}", app.redis_triggers()));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("{name}: {}", failures.join("; ")))
    }
}

#[tokio::test]
async fn every_loader_case_has_its_expected_outcome() {
    let mut names: Vec<String> = std::fs::read_dir(cases_dir())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().join("case.toml").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 10, "the cases are there: {names:?}");
    let mut failed = Vec::new();
    for name in &names {
        if let Err(e) = run(name, &cases_dir().join(name)).await {
            failed.push(format!("{name}: {e}"));
        }
    }
    assert!(failed.is_empty(), "{} of {} loader cases failed:\n{}", failed.len(), names.len(), failed.join("\n"));
}

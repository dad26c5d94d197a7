//! Scenario 5, cold start: from spawning `earshot up` (with Redis, a fresh state folder)
//! to its first HTTP 200 from `GET /api/v1/health`, polled every millisecond on the
//! port it was told to listen on. With N components: N = 1 is `health` alone, the
//! application's own count is the real `spin.toml`, larger counts add copies of the
//! largest component (ingest) under their own ids and routes. "Warm" starts load the
//! precompiled components from the cache (every restart after the first); "empty cache"
//! starts compile every distinct .wasm with Cranelift first (a new machine or release).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use earshot_testkit::RedisServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::Sizes;
use crate::report::Runs;

/// Longest a start may take before it counts as failed (an empty cache compiles).
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Time between health polls.
const POLL_INTERVAL: Duration = Duration::from_millis(1);

/// One row per component count, plus the empty-cache row.
pub(crate) struct ColdRuns {
    pub(crate) rows: Vec<(String, Runs)>,
    pub(crate) app_components: usize,
}

/// Writes a manifest with `n` components next to a copy-free reference to the real
/// .wasm files (sources made absolute).
fn manifest(dir: &Path, n: usize) -> anyhow::Result<(PathBuf, usize)> {
    let root = earshot_testkit::repo_root();
    let text = std::fs::read_to_string(root.join("spin.toml")).context("reading spin.toml")?;
    let mut doc: toml::Table = toml::from_str(&text).context("parsing spin.toml")?;
    let components = doc
        .get_mut("component")
        .and_then(|c| c.as_table_mut())
        .context("spin.toml has no components")?;
    let app_count = components.len();
    for (_, c) in components.iter_mut() {
        let c = c.as_table_mut().context("component is a table")?;
        c.remove("build");
        if let Some(src) = c.get("source").and_then(|s| s.as_str()) {
            let abs = root.join(src);
            c.insert(
                "source".into(),
                toml::Value::String(abs.display().to_string()),
            );
        }
    }
    // Keep `health` first, then the others in name order.
    let mut ids: Vec<String> = components.keys().cloned().collect();
    ids.sort_by_key(|id| (id != "health", id.clone()));
    let keep: Vec<String> = ids.iter().take(n).cloned().collect();
    components.retain(|id, _| keep.iter().any(|k| k == id));
    let mut copies = Vec::new();
    if n > app_count {
        let largest = ids
            .iter()
            .max_by_key(|id| {
                let src = doc["component"][id.as_str()]["source"]
                    .as_str()
                    .unwrap_or_default();
                std::fs::metadata(src).map(|m| m.len()).unwrap_or(0)
            })
            .cloned()
            .context("no component to copy")?;
        let template = doc["component"][largest.as_str()].clone();
        let components = doc
            .get_mut("component")
            .and_then(|c| c.as_table_mut())
            .expect("checked above");
        for i in 0..n - app_count {
            let id = format!("{largest}-copy-{i}");
            components.insert(id.clone(), template.clone());
            copies.push(id);
        }
    }
    if let Some(trigger) = doc.get_mut("trigger").and_then(|t| t.as_table_mut()) {
        for (_, list) in trigger.iter_mut() {
            if let Some(list) = list.as_array_mut() {
                list.retain(|t| {
                    t.get("component")
                        .and_then(|c| c.as_str())
                        .is_some_and(|c| keep.iter().any(|k| k == c))
                });
            }
        }
        let http = trigger
            .entry("http")
            .or_insert_with(|| toml::Value::Array(Vec::new()));
        if let Some(http) = http.as_array_mut() {
            for id in &copies {
                let mut t = toml::Table::new();
                t.insert(
                    "route".into(),
                    toml::Value::String(format!("/bench/{id}/...")),
                );
                t.insert("component".into(), toml::Value::String(id.clone()));
                http.push(toml::Value::Table(t));
            }
        }
    }
    let path = dir.join(format!("spin-{n}.toml"));
    std::fs::write(&path, toml::to_string(&doc)?)?;
    Ok((path, app_count))
}

/// The number of components in the application's own `spin.toml`.
pub(crate) fn app_component_count() -> anyhow::Result<usize> {
    let dir = tempfile::tempdir()?;
    Ok(manifest(dir.path(), 1)?.1)
}

async fn health_ok(port: u16) -> bool {
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    if s.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 12];
    matches!(tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf)).await, Ok(Ok(_)) if buf.starts_with(b"HTTP/1.1 200"))
}

/// One start: milliseconds from spawn to the first healthy answer.
async fn start_once(bin: &Path, manifest: &Path, cache: &Path, redis: &str) -> anyhow::Result<f64> {
    let state = tempfile::tempdir()?;
    let port = earshot_testkit::free_port();
    let t0 = Instant::now();
    let mut child = Command::new(bin)
        .arg("up")
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--internal-listen",
            "127.0.0.1:0",
            // The server's start, as before speech-to-text: the model loads after it.
            "--no-asr",
            "--redis",
            redis,
            "--manifest",
        ])
        .arg(manifest)
        .arg("--kv-path")
        .arg(state.path().join("kv.db"))
        .arg("--cache-dir")
        .arg(cache)
        .current_dir(state.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let result = loop {
        if health_ok(port).await {
            break Ok(t0.elapsed().as_secs_f64() * 1000.0);
        }
        if let Some(status) = child.try_wait()? {
            break Err(anyhow::anyhow!("earshot up exited during start ({status})"));
        }
        if t0.elapsed() > START_TIMEOUT {
            break Err(anyhow::anyhow!(
                "no healthy answer within {START_TIMEOUT:?}"
            ));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// Runs the scenario.
pub(crate) async fn run(bin: &Path, sizes: &Sizes) -> anyhow::Result<ColdRuns> {
    let redis = RedisServer::start()?;
    let dir = tempfile::tempdir()?;
    let app_components = app_component_count()?;
    let mut rows = Vec::new();
    let warm_cache = dir.path().join("cache-warm");
    for &n in &sizes.cold_components {
        let n = if n == 0 { app_components } else { n };
        let (m, _) = manifest(dir.path(), n)?;
        // Prime the cache (untimed): every later start is a warm one.
        start_once(bin, &m, &warm_cache, &redis.url())
            .await
            .with_context(|| format!("priming {n} components"))?;
        let mut runs = Runs::default();
        for rep in 0..sizes.reps.max(3) {
            eprintln!("  cold start: {n} components, warm cache, run {}", rep + 1);
            runs.push(start_once(bin, &m, &warm_cache, &redis.url()).await?);
        }
        rows.push((
            format!(
                "{n} component{} (warm cache)",
                if n == 1 { "" } else { "s" }
            ),
            runs,
        ));
    }
    let (m, _) = manifest(dir.path(), app_components)?;
    let mut runs = Runs::default();
    for rep in 0..sizes.reps {
        eprintln!(
            "  cold start: {app_components} components, empty cache, run {}",
            rep + 1
        );
        let cache = tempfile::tempdir()?;
        runs.push(start_once(bin, &m, cache.path(), &redis.url()).await?);
    }
    rows.push((
        format!("{app_components} components (empty cache: Cranelift compiles)"),
        runs,
    ));
    if rows.is_empty() {
        bail!("no component counts configured");
    }
    Ok(ColdRuns {
        rows,
        app_components,
    })
}

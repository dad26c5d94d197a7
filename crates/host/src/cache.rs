//! Precompiled-component cache: Cranelift runs once per distinct .wasm, later starts
//! load native code straight from disk.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use anyhow::Context;
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

/// The default cache folder: `$XDG_CACHE_HOME/earshot/components` or
/// `~/.cache/earshot/components`.
pub fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|base| base.join("earshot").join("components"))
}

/// The cache key: the .wasm's SHA-256 plus the engine's compatibility hash (wasmtime
/// version and every codegen setting), so a changed engine never loads stale code.
fn cache_key(engine: &Engine, wasm: &[u8]) -> String {
    let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut engine_hash);
    let digest = Sha256::digest(wasm);
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("{hex}-{:016x}.cwasm", engine_hash.finish())
}

/// Compiles the component at `path`, or loads its precompiled form from `cache_dir`.
pub fn compile_cached(engine: &Engine, path: &Path, cache_dir: Option<&Path>) -> anyhow::Result<Component> {
    let wasm = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let Some(dir) = cache_dir else {
        return Component::new(engine, &wasm).map_err(anyhow::Error::from).context("compiling");
    };
    let cached = dir.join(cache_key(engine, &wasm));
    if cached.exists() {
        // SAFETY: the file was written by `Engine::precompile_component` of an engine
        // with the same compatibility hash (it is in the name), in a folder only this
        // host writes; wasmtime still checks its header and refuses a mismatch.
        #[allow(unsafe_code)]
        let loaded = unsafe { Component::deserialize_file(engine, &cached) };
        match loaded {
            Ok(c) => return Ok(c),
            Err(e) => tracing::warn!(path = %cached.display(), error = format!("{:#}", anyhow::Error::from(e)), "ignoring unusable cached component"),
        }
    }
    let bytes = engine.precompile_component(&wasm).map_err(anyhow::Error::from).context("compiling")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // Write then rename, so a concurrent start never reads half a file.
    let tmp = dir.join(format!(".{}.{}", std::process::id(), cached.file_name().and_then(|n| n.to_str()).unwrap_or("tmp")));
    std::fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &cached).with_context(|| format!("renaming to {}", cached.display()))?;
    #[allow(unsafe_code)]
    // SAFETY: as above; these are the bytes this engine just produced.
    let component = unsafe { Component::deserialize(engine, &bytes) };
    component.map_err(anyhow::Error::from).context("loading the just-compiled component")
}

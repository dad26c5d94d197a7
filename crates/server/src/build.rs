//! `earshot up --build`: the manifest's build commands, as `spin build` runs them.

use std::path::Path;

use anyhow::Context;

/// Runs every distinct `[component.<id>.build]` command of the manifest once.
pub fn build_components(manifest_path: &Path) -> anyhow::Result<()> {
    let manifest = earshot_host::manifest::Manifest::load(manifest_path)?;
    let mut done = Vec::new();
    for (id, c) in &manifest.components {
        let Some(build) = &c.build else { continue };
        let dir = manifest.base_dir.join(build.workdir.as_deref().unwrap_or("."));
        if done.contains(&(build.command.clone(), dir.clone())) {
            continue;
        }
        tracing::info!(event = "build", component = %id, command = %build.command, "building component");
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(&build.command)
            .current_dir(&dir)
            // A host build's target dir must not capture the wasm build's output,
            // which spin.toml expects under components/target.
            .env_remove("CARGO_TARGET_DIR")
            .stdout(std::process::Stdio::from(std::io::stderr()))
            .status()
            .with_context(|| format!("running the build of component `{id}`"))?;
        anyhow::ensure!(status.success(), "the build of component `{id}` failed ({status})");
        done.push((build.command.clone(), dir));
    }
    Ok(())
}

//! Development secrets for the embedded defaults: `earshot up` with no configuration
//! must work, yet `jwt_secret` and `admin_key` have no safe default. The first run
//! generates random ones next to the key-value file and reuses them afterwards, so
//! tokens minted locally stay valid across restarts. Production sets
//! `SPIN_VARIABLE_JWT_SECRET` / `SPIN_VARIABLE_ADMIN_KEY`, which always win.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Bytes of randomness in each generated secret (HS256 keys need at least 32).
const DEV_SECRET_BYTES: usize = 32;

/// The variables a fresh checkout cannot run without.
const DEV_SECRET_VARIABLES: [&str; 2] = ["jwt_secret", "admin_key"];

/// The file holding the generated values.
pub(crate) fn dev_secrets_path(state_dir: &Path) -> PathBuf {
    state_dir.join("dev-secrets.json")
}

#[derive(Serialize, Deserialize, Default)]
pub(crate) struct DevSecrets {
    pub(crate) jwt_secret: String,
    pub(crate) admin_key: String,
}

fn random_hex() -> anyhow::Result<String> {
    let mut bytes = [0u8; DEV_SECRET_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Loads (or creates) the development secrets in `state_dir`.
pub(crate) fn load_or_create(state_dir: &Path) -> anyhow::Result<DevSecrets> {
    let path = dev_secrets_path(state_dir);
    if let Some(secrets) = load(&path)? {
        return Ok(secrets);
    }
    let secrets = DevSecrets { jwt_secret: random_hex()?, admin_key: random_hex()? };
    std::fs::create_dir_all(state_dir).with_context(|| format!("creating {}", state_dir.display()))?;
    // Written under a private name, then linked into place: `earshot up` and `earshot token`
    // may race to create the file, and neither may ever read it half-written.
    let temp = state_dir.join(format!(".dev-secrets.{}.tmp", random_hex()?));
    let write = || -> anyhow::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .with_context(|| format!("creating {}", temp.display()))?;
        file.write_all(serde_json::to_string_pretty(&secrets)?.as_bytes())?;
        file.sync_all()?;
        Ok(())
    };
    let linked = write().and_then(|()| match std::fs::hard_link(&temp, &path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(anyhow::Error::new(e).context(format!("creating {}", path.display()))),
    });
    let _ = std::fs::remove_file(&temp);
    if !linked? {
        // Another process won the race: use its secrets.
        return load(&path)?.with_context(|| format!("{} vanished while being created", path.display()));
    }
    tracing::warn!(path = %path.display(), "generated development secrets (set SPIN_VARIABLE_JWT_SECRET and SPIN_VARIABLE_ADMIN_KEY in production)");
    Ok(secrets)
}

fn load(path: &Path) -> anyhow::Result<Option<DevSecrets>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map(Some).with_context(|| format!("parsing {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context(format!("reading {}", path.display()))),
    }
}

/// The HS256 secret `earshot up` in `state_dir` signs with: `SPIN_VARIABLE_JWT_SECRET` when
/// set, else the development one (created now if this is the first run).
pub(crate) fn jwt_secret(state_dir: &Path) -> anyhow::Result<String> {
    match std::env::var(earshot_host::variables::env_name("jwt_secret")) {
        Ok(secret) => Ok(secret),
        Err(_) => Ok(load_or_create(state_dir)?.jwt_secret),
    }
}

/// Fills `overrides` with development values for required secret variables that no
/// `SPIN_VARIABLE_*` provides.
pub(crate) fn dev_defaults(
    manifest: &Path,
    state_dir: &Path,
    overrides: &mut BTreeMap<String, String>,
) -> anyhow::Result<()> {
    let manifest = earshot_host::manifest::Manifest::load(manifest)?;
    let missing: Vec<&str> = DEV_SECRET_VARIABLES
        .into_iter()
        .filter(|name| {
            manifest.variables.get(*name).is_some_and(|d| d.default.is_none())
                && std::env::var(earshot_host::variables::env_name(name)).is_err()
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let secrets = load_or_create(state_dir)?;
    for name in missing {
        let value = if name == "jwt_secret" { &secrets.jwt_secret } else { &secrets.admin_key };
        overrides.insert(name.to_owned(), value.clone());
    }
    Ok(())
}

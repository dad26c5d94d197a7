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
    if let Ok(text) = std::fs::read_to_string(&path) {
        return serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()));
    }
    let secrets = DevSecrets { jwt_secret: random_hex()?, admin_key: random_hex()? };
    std::fs::create_dir_all(state_dir).with_context(|| format!("creating {}", state_dir.display()))?;
    let mut file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?
    };
    file.write_all(serde_json::to_string_pretty(&secrets)?.as_bytes())?;
    tracing::warn!(path = %path.display(), "generated development secrets (set SPIN_VARIABLE_JWT_SECRET and SPIN_VARIABLE_ADMIN_KEY in production)");
    Ok(secrets)
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

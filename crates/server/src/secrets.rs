//! Development secrets for the embedded defaults: `earshot up` with no configuration
//! must work, yet `jwt_secret`, `admin_key` and `grip_sig_key` have no safe default.
//! (`grip_sig_key` matters even locally: without it anyone could POST forged
//! WebSocket-over-HTTP events and `Meta-*` state straight to the ingest component.) The first run
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

/// The variables a fresh checkout cannot run without (or, for `grip_sig_key`, should
/// not: its manifest default is empty so `spin up` behind a trusted proxy still works).
const DEV_SECRET_VARIABLES: [&str; 3] = ["jwt_secret", "admin_key", "grip_sig_key"];

/// The file holding the generated values.
pub fn dev_secrets_path(state_dir: &Path) -> PathBuf {
    state_dir.join("dev-secrets.json")
}

#[derive(Serialize, Deserialize, Default)]
pub(crate) struct DevSecrets {
    pub(crate) jwt_secret: String,
    pub(crate) admin_key: String,
    /// Signs `Grip-Sig` between the relay and the components. Files written before
    /// it existed lack it; it is then derived from `jwt_secret` (see `grip_sig_key`).
    #[serde(default)]
    pub(crate) grip_sig_key: String,
}

impl DevSecrets {
    /// The `Grip-Sig` key: the stored one, or for an older file one derived from
    /// `jwt_secret` (a keyed hash, so neither reveals the other).
    pub(crate) fn grip_sig_key(&self) -> String {
        if !self.grip_sig_key.is_empty() {
            return self.grip_sig_key.clone();
        }
        use sha2::Digest;
        let digest = sha2::Sha256::digest(format!("earshot grip-sig key\0{}", self.jwt_secret).as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
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
    let secrets = DevSecrets { jwt_secret: random_hex()?, admin_key: random_hex()?, grip_sig_key: random_hex()? };
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
    tracing::warn!(path = %path.display(), "generated development secrets (set SPIN_VARIABLE_JWT_SECRET, SPIN_VARIABLE_ADMIN_KEY and SPIN_VARIABLE_GRIP_SIG_KEY in production)");
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
pub fn jwt_secret(state_dir: &Path) -> anyhow::Result<String> {
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
            manifest.variables.get(*name).is_some_and(|d| d.default.as_deref().is_none_or(str::is_empty))
                && std::env::var(earshot_host::variables::env_name(name)).is_err()
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let secrets = load_or_create(state_dir)?;
    for name in missing {
        let value = match name {
            "jwt_secret" => secrets.jwt_secret.clone(),
            "admin_key" => secrets.admin_key.clone(),
            _ => secrets.grip_sig_key(),
        };
        overrides.insert(name.to_owned(), value);
    }
    Ok(())
}

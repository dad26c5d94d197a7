//! The variables every socket component reads (spin.toml `[variables]`), read per request so
//! a changed value takes effect without a redeploy, and the helpers a component's own
//! settings parse the rest with. Parsing is pure; the Spin shell supplies the lookup.

use earshot_auth::{DEFAULT_AUDIENCE, MIN_SECRET_BYTES};

/// The token variables, as `earshot_auth::Verifier::from_settings` takes them.
#[derive(Debug, Clone, Default)]
pub struct TokenSettings {
    /// `jwt_algorithm`: HS256 (default), EdDSA or ES256.
    pub algorithm: String,
    /// `jwt_secret`: the HS256 key.
    pub secret: String,
    /// `jwt_public_key`: PEM, for the asymmetric algorithms.
    pub public_key: String,
    /// `jwt_audience`: the `aud` a token must carry.
    pub audience: String,
}

/// What both socket components are configured with.
#[derive(Debug, Clone)]
pub struct ConnSettings {
    /// How tokens are verified.
    pub token: TokenSettings,
    /// Redis URL; empty: no Redis.
    pub redis_url: String,
    /// Key of the relay's `Grip-Sig` JWT (HS256); empty: requests are not signed.
    pub grip_sig_key: String,
}

/// A variable that cannot be used; never shows a value (some are secrets).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// The host could not produce the variable.
    #[error("variable {name}: {detail}")]
    Unreadable {
        /// The variable.
        name: &'static str,
        /// What the host said.
        detail: String,
    },
    /// Not a positive whole number.
    #[error("variable {0} is not a positive whole number")]
    NotPositive(&'static str),
    /// An HMAC key shorter than its hash (RFC 7518 §3.2), brute-forceable from one signature.
    #[error("variable {name} is {len} bytes; at least {min} are required")]
    KeyTooShort {
        /// The variable.
        name: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The least accepted.
        min: usize,
    },
}

/// A variable lookup (`Ok(None)`: undefined) with the documented defaults applied.
pub struct Variables<F>(pub F);

impl<F> Variables<F>
where
    F: FnMut(&'static str) -> Result<Option<String>, String>,
{
    /// Variable `name`, or `default` when it is undefined or blank.
    pub fn text(&mut self, name: &'static str, default: &str) -> Result<String, SettingsError> {
        match (self.0)(name) {
            Ok(Some(v)) if !v.trim().is_empty() => Ok(v),
            Ok(_) => Ok(default.to_owned()),
            Err(detail) => Err(SettingsError::Unreadable { name, detail }),
        }
    }

    /// Variable `name` as a positive whole number, `default` when undefined or blank.
    pub fn positive(&mut self, name: &'static str, default: u64) -> Result<u64, SettingsError> {
        let value = self.text(name, &default.to_string())?;
        match value.trim().parse::<u64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(SettingsError::NotPositive(name)),
        }
    }
}

impl ConnSettings {
    /// Reads the shared variables (`jwt_*`, `redis_url`, `grip_sig_key`).
    pub fn from_variables<F>(vars: &mut Variables<F>) -> Result<ConnSettings, SettingsError>
    where
        F: FnMut(&'static str) -> Result<Option<String>, String>,
    {
        let token = TokenSettings {
            algorithm: vars.text("jwt_algorithm", "HS256")?,
            secret: vars.text("jwt_secret", "")?,
            public_key: vars.text("jwt_public_key", "")?,
            audience: vars.text("jwt_audience", DEFAULT_AUDIENCE)?,
        };
        let redis_url = vars.text("redis_url", "")?.trim().to_owned();
        let grip_sig_key = vars.text("grip_sig_key", "")?;
        if !grip_sig_key.is_empty() && grip_sig_key.len() < MIN_SECRET_BYTES {
            return Err(SettingsError::KeyTooShort {
                name: "grip_sig_key",
                len: grip_sig_key.len(),
                min: MIN_SECRET_BYTES,
            });
        }
        Ok(ConnSettings {
            token,
            redis_url,
            grip_sig_key,
        })
    }

    /// Reads the shared variables through `lookup`.
    pub fn from_lookup(
        lookup: impl FnMut(&'static str) -> Result<Option<String>, String>,
    ) -> Result<ConnSettings, SettingsError> {
        ConnSettings::from_variables(&mut Variables(lookup))
    }

    /// Whether a Redis is configured.
    pub fn has_redis(&self) -> bool {
        !self.redis_url.is_empty()
    }
}

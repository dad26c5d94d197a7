//! The component's variables (spin.toml `[variables]`), read per request so a changed value
//! takes effect without a redeploy.

use earshot_auth::{Issuer, KeyAlgorithm, Verifier, DEFAULT_AUDIENCE, DEFAULT_MAX_TOKEN_TTL_S};
use spin_sdk::variables;

use crate::api::ApiError;

/// Token and admin settings.
pub(crate) struct Settings {
    jwt_secret: String,
    jwt_algorithm: String,
    jwt_public_key: String,
    jwt_audience: String,
    /// Guards issuing and revoke-by-jti; empty switches both off.
    pub(crate) admin_key: String,
    /// Longest lifetime of an issued token, seconds; also how long a revoke-by-jti of an unknown
    /// `jti` is remembered.
    pub(crate) max_token_ttl_s: u64,
    /// Redis URL (empty: none): how a revocation reaches every relay.
    pub(crate) redis_url: String,
    /// The relay's GRIP publish endpoint (empty: publish by Redis), for revocation notices.
    pub(crate) grip_publish_url: String,
}

impl Settings {
    /// Reads every variable, applying the documented defaults to undefined ones.
    pub(crate) fn load() -> Result<Settings, ApiError> {
        let max_ttl = var("max_token_ttl_s", "")?;
        let max_token_ttl_s = match max_ttl.trim() {
            "" => DEFAULT_MAX_TOKEN_TTL_S,
            v => v.parse().map_err(|_| {
                ApiError::Misconfigured(format!(
                    "max_token_ttl_s `{v}` is not a whole number of seconds"
                ))
            })?,
        };
        Ok(Settings {
            jwt_secret: var("jwt_secret", "")?,
            jwt_algorithm: var("jwt_algorithm", "HS256")?,
            jwt_public_key: var("jwt_public_key", "")?,
            jwt_audience: var("jwt_audience", DEFAULT_AUDIENCE)?,
            admin_key: var("admin_key", "")?,
            max_token_ttl_s,
            redis_url: var("redis_url", "")?.trim().to_owned(),
            grip_publish_url: var("grip_publish_url", "")?.trim().to_owned(),
        })
    }

    /// The verifier for the configured algorithm and key.
    pub(crate) fn verifier(&self) -> Result<Verifier, ApiError> {
        Verifier::from_settings(
            &self.jwt_algorithm,
            &self.jwt_secret,
            &self.jwt_public_key,
            &self.jwt_audience,
        )
        .map_err(|e| ApiError::Misconfigured(e.to_string()))
    }

    /// The HS256 issuer; issuing is off when a public-key algorithm is configured, since this
    /// component holds no private key and its HS256 tokens would not verify.
    pub(crate) fn issuer(&self) -> Result<Issuer, ApiError> {
        let algorithm = KeyAlgorithm::parse(&self.jwt_algorithm)
            .map_err(|e| ApiError::Misconfigured(e.to_string()))?;
        if algorithm != KeyAlgorithm::Hs256 {
            return Err(ApiError::Disabled("token issue disabled"));
        }
        Issuer::from_settings(&self.jwt_secret, &self.jwt_audience)
            .map_err(|e| ApiError::Misconfigured(e.to_string()))
    }
}

/// One variable, `default` when undefined. Values are never put in errors (some are secrets).
fn var(name: &str, default: &str) -> Result<String, ApiError> {
    match variables::get(name) {
        Ok(value) => Ok(value),
        Err(variables::Error::Undefined(_)) => Ok(default.to_owned()),
        Err(e) => Err(ApiError::Misconfigured(format!("variable {name}: {e:?}"))),
    }
}

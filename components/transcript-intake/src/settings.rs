//! The variables intake reads (spin.toml `[variables]`), per message so a changed value
//! takes effect without a redeploy. Parsing is pure; the Spin shell supplies the lookup.

/// What intake is configured with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntakeSettings {
    /// Redis URL; empty: no Redis, so final segments cannot be stored.
    pub redis_url: String,
    /// GRIP publish endpoint (`http://relay/publish/`); empty: publish through Redis.
    pub grip_publish_url: String,
}

/// A variable that cannot be read; never shows a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("variable {name}: {detail}")]
pub struct SettingsError {
    /// The variable.
    pub name: &'static str,
    /// What the host said.
    pub detail: String,
}

impl IntakeSettings {
    /// Reads every variable through `lookup` (`Ok(None)`: undefined, which means empty).
    pub fn from_lookup(
        mut lookup: impl FnMut(&'static str) -> Result<Option<String>, String>,
    ) -> Result<IntakeSettings, SettingsError> {
        let mut text = |name: &'static str| -> Result<String, SettingsError> {
            lookup(name)
                .map(|v| v.unwrap_or_default().trim().to_owned())
                .map_err(|detail| SettingsError { name, detail })
        };
        Ok(IntakeSettings {
            redis_url: text("redis_url")?,
            grip_publish_url: text("grip_publish_url")?,
        })
    }

    /// Whether a Redis is configured.
    pub fn has_redis(&self) -> bool {
        !self.redis_url.is_empty()
    }
}

//! The variables intake reads (spin.toml `[variables]`), per message so a changed value
//! takes effect without a redeploy. Parsing is pure; the Spin shell supplies the lookup.

/// How long a meeting's transcript is kept after its last final segment, in seconds, when
/// `transcript_retention_s` is unset: 30 days, long enough to export and hand a meeting on
/// (notes, CRM, a summariser) and short enough that meeting content does not pile up
/// forever (docs/configuration.md).
pub const DEFAULT_TRANSCRIPT_RETENTION_S: u64 = 30 * 24 * 3_600;

/// What intake is configured with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntakeSettings {
    /// Redis URL; empty: no Redis, so final segments cannot be stored.
    pub redis_url: String,
    /// GRIP publish endpoint (`http://relay/publish/`); empty: publish through Redis.
    pub grip_publish_url: String,
    /// Seconds the transcript stream lives after its last final segment (`EXPIRE`,
    /// refreshed by every final); 0 keeps it until it is deleted.
    pub transcript_retention_s: u64,
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
        let retention = text("transcript_retention_s")?;
        let transcript_retention_s = if retention.is_empty() {
            DEFAULT_TRANSCRIPT_RETENTION_S
        } else {
            retention.parse().map_err(|_| SettingsError {
                name: "transcript_retention_s",
                detail: "not a whole number of seconds".into(),
            })?
        };
        Ok(IntakeSettings {
            redis_url: text("redis_url")?,
            grip_publish_url: text("grip_publish_url")?,
            transcript_retention_s,
        })
    }

    /// Whether a Redis is configured.
    pub fn has_redis(&self) -> bool {
        !self.redis_url.is_empty()
    }
}

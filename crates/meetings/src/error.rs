//! The crate's typed errors.

/// Why a sweep step or a delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum MeetingsError {
    /// The settings cannot work (e.g. a webhook URL without a secret).
    #[error("invalid meeting-end config: {0}")]
    Config(String),
    /// A Redis command failed.
    #[error("redis {what}: {source}")]
    Redis {
        /// What was being attempted.
        what: &'static str,
        /// The client's error.
        #[source]
        source: redis::RedisError,
    },
    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    Http(String),
}

impl MeetingsError {
    /// A `map_err` adapter naming what failed.
    pub(crate) fn redis(what: &'static str) -> impl FnOnce(redis::RedisError) -> MeetingsError {
        move |source| MeetingsError::Redis { what, source }
    }
}

//! The worker's typed errors.

use earshot_asr_engine::EngineError;

/// Why the worker, or one of its streams, stopped.
#[derive(Debug, thiserror::Error)]
pub enum TranscriberError {
    /// The settings cannot work (see `WorkerConfig::validate`).
    #[error("invalid worker config: {0}")]
    Config(String),
    /// A Redis command failed (connection lost, timeout, refused).
    #[error("redis {what}: {source}")]
    Redis {
        /// What was being attempted.
        what: &'static str,
        /// The client's error.
        #[source]
        source: redis::RedisError,
    },
    /// Redis answered something of another shape than the command returns.
    #[error("redis {what}: unexpected reply {detail}")]
    Reply {
        /// What was being attempted.
        what: &'static str,
        /// The reply, abbreviated.
        detail: String,
    },
    /// The engine failed to open a session or to recognise audio.
    #[error("engine: {0}")]
    Engine(#[from] EngineError),
    /// The engine's blocking thread panicked or was cancelled.
    #[error("engine thread: {0}")]
    EngineThread(String),
    /// Another worker holds the stream's lease now (this one was too slow to renew it):
    /// nothing more of the stream is published by this worker.
    #[error("lease lost")]
    LeaseLost,
}

impl TranscriberError {
    /// A Redis failure while doing `what`.
    pub(crate) fn redis(what: &'static str) -> impl FnOnce(redis::RedisError) -> Self {
        move |source| TranscriberError::Redis { what, source }
    }

    /// An unexpected reply to `what`.
    pub(crate) fn reply(what: &'static str, value: &redis::Value) -> Self {
        let mut detail = format!("{value:?}");
        detail.truncate(200);
        TranscriberError::Reply { what, detail }
    }
}

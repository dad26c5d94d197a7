//! What a Deepgram session is opened with: the key, the endpoint, the recognition options and
//! every limit of the bridge, and the `/v1/listen` URL built from them.

use std::fmt;
use std::time::Duration;

use earshot_asr_engine::{EngineError, SAMPLE_RATE_HZ};
use url::Url;

/// Deepgram's hosted API; a self-hosted deployment is another origin with the same paths.
pub const DEFAULT_BASE_URL: &str = "wss://api.deepgram.com";

/// Path of the live-streaming endpoint, appended when the base URL names only an origin.
pub const LISTEN_PATH: &str = "/v1/listen";

/// Model asked for by default: Deepgram's current general-purpose streaming model, the one
/// `keyterm` prompting works with.
pub const DEFAULT_MODEL: &str = "nova-3";

/// Silence, in ms, after which Deepgram ends an utterance (`speech_final`): 300 ms keeps
/// finals about a third of a second behind speech without cutting at every breath.
pub const DEFAULT_ENDPOINTING_MS: u32 = 300;

/// Word gap, in ms, after which Deepgram sends `UtteranceEnd`: 1000 ms is Deepgram's
/// smallest accepted value and the one its docs recommend for live captions.
pub const DEFAULT_UTTERANCE_END_MS: u32 = 1_000;

/// Smallest `utterance_end_ms` Deepgram accepts, in ms (it rejects the handshake below it).
pub const MIN_UTTERANCE_END_MS: u32 = 1_000;

/// How often a `KeepAlive` goes out while no audio flows: Deepgram closes a socket that
/// carried nothing for 10 s (`NET-0001`); 3 s stays well under that and under the ≤ 5 s the
/// issue asks for, even when a tick is late on a loaded machine.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(3);

/// Longest allowed keep-alive interval: half of Deepgram's 10 s idle close.
pub const MAX_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);

/// How long one WebSocket handshake (TCP, TLS, HTTP upgrade) may take: 10 s covers a slow
/// TLS start across continents; longer, the worker is better off retrying the stream.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Reconnects tried after a socket drops before the session fails: with the backoff below
/// that is about 7.5 s of trying, longer than Deepgram's usual blips, short enough that the
/// worker (which retries with its own backoff) takes over from a real outage.
pub const DEFAULT_RECONNECT_ATTEMPTS: u32 = 5;

/// Wait before the first reconnect; doubled for each further attempt.
pub const DEFAULT_RECONNECT_BACKOFF: Duration = Duration::from_millis(250);

/// Longest wait between two reconnects, whatever the doubling says.
pub const MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(4);

/// How long `flush` waits for Deepgram's last results and its close after `CloseStream`:
/// Deepgram answers within a second or two of the last audio; 10 s bounds a stuck server.
pub const DEFAULT_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Audio kept for replay since the last final, in ms: Deepgram finalises every few seconds
/// of speech (and on every silence), so 120 s is only reached when it stopped answering;
/// past it the oldest sent audio is dropped (logged) so memory stays bounded at 3.75 MiB.
pub const DEFAULT_MAX_UNSETTLED_MS: u64 = 120_000;

/// Largest binary frame sent, in ms of audio: Deepgram recommends 20–100 ms chunks for
/// live audio; larger chunks only add latency, a replay is cut into pieces of this size.
pub const MAX_AUDIO_FRAME_MS: u64 = 100;

/// A Deepgram API key. A secret: its `Debug` and `Display` never show it, and it is only
/// ever written into the `Authorization` header (marked sensitive).
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key as given by Deepgram's console (surrounding whitespace removed).
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into().trim().to_owned())
    }

    /// The key itself, for the `Authorization` header only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for ApiKey {
    fn from(key: String) -> Self {
        ApiKey::new(key)
    }
}

impl From<&str> for ApiKey {
    fn from(key: &str) -> Self {
        ApiKey::new(key)
    }
}

/// Everything a [`crate::DeepgramEngine`] needs. Build with [`DeepgramConfig::new`] and
/// adjust the public fields; [`crate::DeepgramEngine::new`] checks them.
#[derive(Debug, Clone)]
pub struct DeepgramConfig {
    /// The API key (`Authorization: Token <key>`).
    pub api_key: ApiKey,
    /// `ws://` or `wss://` origin (`wss://api.deepgram.com`, a self-hosted Deepgram), or a
    /// full listen URL when the path differs from [`LISTEN_PATH`].
    pub base_url: String,
    /// `model=`; `None` lets Deepgram pick its default.
    pub model: Option<String>,
    /// `language=` (BCP-47, e.g. `en-US`, or `multi`); `None` for the model's default.
    pub language: Option<String>,
    /// `keyterm=` once per term: words the model should favour (names, jargon).
    pub keyterms: Vec<String>,
    /// `diarize=true`: Deepgram tags words with speakers (one source may hold several).
    pub diarize: bool,
    /// `punctuate=true`: punctuated, capitalised transcripts and `punctuated_word`s.
    pub punctuate: bool,
    /// `endpointing=` in ms (see [`DEFAULT_ENDPOINTING_MS`]).
    pub endpointing_ms: u32,
    /// `utterance_end_ms=` in ms (see [`DEFAULT_UTTERANCE_END_MS`]).
    pub utterance_end_ms: u32,
    /// Interval between keep-alives while no audio flows (see [`DEFAULT_KEEPALIVE_INTERVAL`]).
    pub keepalive_interval: Duration,
    /// Limit of one handshake (see [`DEFAULT_CONNECT_TIMEOUT`]).
    pub connect_timeout: Duration,
    /// Reconnects tried after a drop (see [`DEFAULT_RECONNECT_ATTEMPTS`]).
    pub reconnect_attempts: u32,
    /// First reconnect's wait, doubled each attempt up to [`MAX_RECONNECT_BACKOFF`].
    pub reconnect_backoff: Duration,
    /// Limit of `flush` (see [`DEFAULT_FLUSH_TIMEOUT`]).
    pub flush_timeout: Duration,
    /// Replay buffer bound in ms of audio (see [`DEFAULT_MAX_UNSETTLED_MS`]).
    pub max_unsettled_ms: u64,
}

impl DeepgramConfig {
    /// The defaults above against Deepgram's hosted API with `api_key`.
    pub fn new(api_key: impl Into<ApiKey>) -> Self {
        DeepgramConfig {
            api_key: api_key.into(),
            base_url: DEFAULT_BASE_URL.to_owned(),
            model: Some(DEFAULT_MODEL.to_owned()),
            language: None,
            keyterms: Vec::new(),
            diarize: false,
            punctuate: true,
            endpointing_ms: DEFAULT_ENDPOINTING_MS,
            utterance_end_ms: DEFAULT_UTTERANCE_END_MS,
            keepalive_interval: DEFAULT_KEEPALIVE_INTERVAL,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            reconnect_attempts: DEFAULT_RECONNECT_ATTEMPTS,
            reconnect_backoff: DEFAULT_RECONNECT_BACKOFF,
            flush_timeout: DEFAULT_FLUSH_TIMEOUT,
            max_unsettled_ms: DEFAULT_MAX_UNSETTLED_MS,
        }
    }

    /// The same configuration against another endpoint (self-hosted Deepgram, a stand-in).
    pub fn with_base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = base_url.into();
        self
    }

    /// Checks the settings and builds the `/v1/listen` URL with its query.
    pub(crate) fn listen_url(&self) -> Result<Url, EngineError> {
        if self.api_key.expose().is_empty() {
            return Err(EngineError::Setup("the Deepgram API key is empty".into()));
        }
        if self.utterance_end_ms < MIN_UTTERANCE_END_MS {
            return Err(EngineError::Setup(format!(
                "utterance_end_ms is {} ms; Deepgram accepts {MIN_UTTERANCE_END_MS} ms or more",
                self.utterance_end_ms
            )));
        }
        if self.keepalive_interval.is_zero() || self.keepalive_interval > MAX_KEEPALIVE_INTERVAL {
            return Err(EngineError::Setup(format!(
                "keepalive_interval is {:?}; it must be above zero and at most {MAX_KEEPALIVE_INTERVAL:?}",
                self.keepalive_interval
            )));
        }
        let mut url = Url::parse(&self.base_url).map_err(|e| {
            EngineError::Setup(format!(
                "Deepgram URL {:?} is not a URL: {e}",
                self.base_url
            ))
        })?;
        if !matches!(url.scheme(), "ws" | "wss") {
            return Err(EngineError::Setup(format!(
                "Deepgram URL {:?} must start with ws:// or wss://",
                self.base_url
            )));
        }
        if url.path().is_empty() || url.path() == "/" {
            url.set_path(LISTEN_PATH);
        }
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("encoding", "linear16")
                .append_pair("sample_rate", &SAMPLE_RATE_HZ.to_string())
                .append_pair("channels", "1")
                .append_pair("interim_results", "true")
                .append_pair("endpointing", &self.endpointing_ms.to_string())
                .append_pair("utterance_end_ms", &self.utterance_end_ms.to_string())
                .append_pair("vad_events", "true");
            if self.punctuate {
                query.append_pair("punctuate", "true");
            }
            if let Some(model) = &self.model {
                query.append_pair("model", model);
            }
            if let Some(language) = &self.language {
                query.append_pair("language", language);
            }
            for term in &self.keyterms {
                query.append_pair("keyterm", term);
            }
            if self.diarize {
                query.append_pair("diarize", "true");
            }
        }
        Ok(url)
    }

    /// Wait before reconnect number `attempt` (1-based): doubling, capped.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.reconnect_backoff
            .saturating_mul(factor)
            .min(MAX_RECONNECT_BACKOFF)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_never_shows_in_debug_or_display() {
        let config = DeepgramConfig::new("dg-secret-123");
        let shown = format!("{config:?} {}", config.api_key);
        assert!(!shown.contains("dg-secret-123"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn listen_url_carries_the_protocol_and_options() {
        let mut config = DeepgramConfig::new("dg-key-xyz");
        config.language = Some("en-US".into());
        config.keyterms = vec!["Earshot".into(), "Deep gram".into()];
        config.diarize = true;
        let url = config.listen_url().unwrap();
        assert_eq!(url.host_str(), Some("api.deepgram.com"));
        assert_eq!(url.path(), LISTEN_PATH);
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        for (k, v) in [
            ("encoding", "linear16"),
            ("sample_rate", "16000"),
            ("channels", "1"),
            ("interim_results", "true"),
            ("endpointing", "300"),
            ("utterance_end_ms", "1000"),
            ("vad_events", "true"),
            ("model", "nova-3"),
            ("language", "en-US"),
            ("keyterm", "Earshot"),
            ("keyterm", "Deep gram"),
            ("diarize", "true"),
        ] {
            assert!(
                pairs.contains(&(k.into(), v.into())),
                "{k}={v} missing in {url}"
            );
        }
        assert!(
            !url.as_str().contains("dg-key-xyz"),
            "the key travels in a header only"
        );
    }

    #[test]
    fn a_full_listen_path_is_kept() {
        let config = DeepgramConfig::new("k").with_base_url("ws://10.0.0.5:8080/custom/listen");
        assert_eq!(config.listen_url().unwrap().path(), "/custom/listen");
    }

    #[test]
    fn bad_settings_are_setup_errors() {
        let bad = [
            DeepgramConfig::new(" "),
            DeepgramConfig::new("k").with_base_url("https://api.deepgram.com"),
            DeepgramConfig::new("k").with_base_url("not a url"),
            DeepgramConfig {
                utterance_end_ms: 500,
                ..DeepgramConfig::new("k")
            },
            DeepgramConfig {
                keepalive_interval: Duration::from_secs(8),
                ..DeepgramConfig::new("k")
            },
        ];
        for config in bad {
            assert!(matches!(config.listen_url(), Err(EngineError::Setup(_))));
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let config = DeepgramConfig::new("k");
        assert_eq!(config.backoff(1), Duration::from_millis(250));
        assert_eq!(config.backoff(2), Duration::from_millis(500));
        assert_eq!(config.backoff(3), Duration::from_secs(1));
        assert_eq!(config.backoff(40), MAX_RECONNECT_BACKOFF);
    }
}

//! The engine and its sessions: the synchronous face of the bridge. Each session runs its
//! socket task on a thread of its own (a current-thread tokio runtime), so the caller's
//! `push` only queues audio and collects what arrived, whatever runtime the caller uses.

use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use earshot_asr_engine::{Engine, EngineError, Hypothesis, Session, SessionSpec};
use tokio::sync::mpsc;
use tracing::{debug, info};

use crate::config::DeepgramConfig;
use crate::stream::{Command, Event, Shared, Stream};

/// Time `open` and `flush` wait beyond the configured connect and flush limits for the
/// session thread to report: the thread enforces the limits itself, this only guards
/// against a thread that never answers.
const THREAD_REPORT_GRACE: Duration = Duration::from_secs(2);

/// Deepgram live streaming behind Earshot's [`Engine`] interface.
#[derive(Debug, Clone)]
pub struct DeepgramEngine {
    shared: Arc<Shared>,
}

impl DeepgramEngine {
    /// Checks `config` and prepares the listen URL (and TLS for `wss://`); connects nothing.
    pub fn new(config: DeepgramConfig) -> Result<Self, EngineError> {
        let url = config.listen_url()?;
        let tls = (url.scheme() == "wss").then(tls_config).transpose()?;
        info!(
            host = url.host_str().unwrap_or(""),
            model = config.model.as_deref().unwrap_or("default"),
            "deepgram engine ready"
        );
        Ok(DeepgramEngine {
            shared: Arc::new(Shared { config, url, tls }),
        })
    }

    /// The settings this engine opens sessions with.
    pub fn config(&self) -> &DeepgramConfig {
        &self.shared.config
    }
}

/// TLS client settings: Mozilla's roots (webpki-roots, no system store needed), ring.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, EngineError> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| EngineError::Setup(format!("TLS setup failed: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

impl Engine for DeepgramEngine {
    fn name(&self) -> &str {
        "deepgram"
    }

    /// Connects (blocking up to `connect_timeout`): a refused key fails here, once.
    fn open(&self, spec: &SessionSpec) -> Result<Box<dyn Session>, EngineError> {
        let (command_tx, command_rx) = mpsc::unbounded_channel();
        let (event_tx, event_rx) = std_mpsc::channel();
        let (ready_tx, ready_rx) = std_mpsc::channel();
        let stream = Stream::new(self.shared.clone(), spec.clone(), command_rx, event_tx);
        thread::Builder::new()
            .name(format!("deepgram-{}-{}", spec.meeting_id, spec.source))
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(stream.run(ready_tx)),
                    Err(e) => {
                        let _ = ready_tx.send(Err(EngineError::Setup(format!(
                            "cannot start the Deepgram session runtime: {e}"
                        ))));
                    }
                }
            })
            .map_err(|e| {
                EngineError::Setup(format!("cannot start the Deepgram session thread: {e}"))
            })?;
        match ready_rx.recv_timeout(self.shared.config.connect_timeout + THREAD_REPORT_GRACE) {
            Ok(Ok(())) => Ok(Box::new(DeepgramSession {
                commands: command_tx,
                events: event_rx,
                settled_ms: spec.start_ms,
                pending_error: None,
                closed: false,
                flush_timeout: self.shared.config.flush_timeout,
                spec: spec.clone(),
            })),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(EngineError::Transport(
                "the Deepgram session thread did not report its handshake".into(),
            )),
        }
    }
}

/// One live Deepgram stream. `push` queues audio and returns the hypotheses received so
/// far; `settled_ms` is the end of the last final (empty finals over silence count).
#[derive(Debug)]
pub struct DeepgramSession {
    commands: mpsc::UnboundedSender<Command>,
    events: std_mpsc::Receiver<Event>,
    settled_ms: u64,
    /// A failure seen while hypotheses were still to be returned: reported next call.
    pending_error: Option<EngineError>,
    closed: bool,
    flush_timeout: Duration,
    spec: SessionSpec,
}

impl DeepgramSession {
    /// Takes every event that arrived, without waiting.
    fn collect(&mut self) -> Result<Vec<Hypothesis>, EngineError> {
        let mut out = Vec::new();
        loop {
            match self.events.try_recv() {
                Ok(event) => {
                    if self.apply(event, &mut out) {
                        break;
                    }
                }
                Err(std_mpsc::TryRecvError::Empty) => break,
                Err(std_mpsc::TryRecvError::Disconnected) => {
                    if !self.closed {
                        self.fail(EngineError::Transport(
                            "the Deepgram session thread ended".into(),
                        ));
                    }
                    break;
                }
            }
        }
        self.result(out)
    }

    /// Records one event; `true` when nothing more will follow.
    fn apply(&mut self, event: Event, out: &mut Vec<Hypothesis>) -> bool {
        match event {
            Event::Hypothesis(hypothesis) => {
                out.push(hypothesis);
                false
            }
            Event::Settled(ms) => {
                self.settled_ms = self.settled_ms.max(ms);
                false
            }
            Event::Failed(error) => {
                self.fail(error);
                true
            }
            Event::Finished => {
                self.closed = true;
                true
            }
        }
    }

    fn fail(&mut self, error: EngineError) {
        self.closed = true;
        self.pending_error = Some(error);
    }

    /// Hypotheses first; a failure is reported once they have been handed over.
    fn result(&mut self, out: Vec<Hypothesis>) -> Result<Vec<Hypothesis>, EngineError> {
        if out.is_empty() {
            if let Some(error) = self.pending_error.take() {
                return Err(error);
            }
        }
        Ok(out)
    }

    fn ensure_open(&mut self) -> Result<(), EngineError> {
        if let Some(error) = self.pending_error.take() {
            return Err(error);
        }
        if self.closed {
            return Err(EngineError::Closed);
        }
        Ok(())
    }
}

impl Session for DeepgramSession {
    fn push(&mut self, pcm_s16le: &[u8]) -> Result<Vec<Hypothesis>, EngineError> {
        self.ensure_open()?;
        // Never an empty frame: Deepgram reads an empty binary message as end of stream.
        if !pcm_s16le.is_empty()
            && self
                .commands
                .send(Command::Audio(pcm_s16le.to_vec()))
                .is_err()
        {
            debug!(meeting_id = %self.spec.meeting_id, source = %self.spec.source, "audio after the session task ended");
        }
        self.collect()
    }

    fn poll(&mut self) -> Result<Vec<Hypothesis>, EngineError> {
        self.ensure_open()?;
        self.collect()
    }

    fn flush(&mut self) -> Result<Vec<Hypothesis>, EngineError> {
        self.ensure_open()?;
        let mut out = Vec::new();
        if self.commands.send(Command::Finish).is_err() {
            self.closed = true;
            return Err(EngineError::Transport(
                "the Deepgram session thread ended".into(),
            ));
        }
        let deadline = Instant::now() + self.flush_timeout + THREAD_REPORT_GRACE;
        while !self.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(event) => {
                    self.apply(event, &mut out);
                }
                Err(_) => {
                    self.fail(EngineError::Transport(
                        "Deepgram did not finish the stream in time".into(),
                    ));
                }
            }
        }
        self.closed = true;
        // The stream's end is settled only if it finished; a failure keeps the last final.
        match self.pending_error.take() {
            Some(error) if out.is_empty() => Err(error),
            Some(error) => {
                // The caller gets the words; the error would be lost behind a closed session,
                // so it is logged here.
                tracing::warn!(meeting_id = %self.spec.meeting_id, source = %self.spec.source, %error, "deepgram flush ended early");
                Ok(out)
            }
            None => Ok(out),
        }
    }

    fn settled_ms(&self) -> u64 {
        self.settled_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hosted_api_gets_tls_and_a_stand_in_plain_websocket() {
        let hosted = DeepgramEngine::new(DeepgramConfig::new("k")).unwrap();
        assert!(hosted.shared.tls.is_some(), "wss:// needs TLS");
        assert_eq!(hosted.shared.url.scheme(), "wss");
        let local = DeepgramEngine::new(DeepgramConfig::new("k").with_base_url("ws://127.0.0.1:9"))
            .unwrap();
        assert!(local.shared.tls.is_none());
    }

    #[test]
    fn an_unreachable_endpoint_is_a_retryable_open_error() {
        // Port 9 (discard) on loopback: nothing listens there in the test environment.
        let engine =
            DeepgramEngine::new(DeepgramConfig::new("k").with_base_url("ws://127.0.0.1:9"))
                .unwrap();
        let error = engine
            .open(&SessionSpec::new("m", "mic"))
            .err()
            .expect("nothing listens");
        assert!(error.is_retryable(), "{error:?}");
    }
}

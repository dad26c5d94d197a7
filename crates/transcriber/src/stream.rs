//! One leased audio stream, from its committed position to its end: read a bounded batch,
//! feed the engine, publish what it heard through the fenced commit, repeat; flush and let
//! go once every session of the stream closed and the audio is read to its end.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use earshot_asr_engine::{pcm_ms, Engine, EngineError, Hypothesis, Session, SessionSpec};
use earshot_protocol::asr::speaker_label;
use earshot_protocol::transcript::{Segment, INTAKE_CHANNEL, MAX_TEXT_BYTES};
use redis::aio::{ConnectionManager, MultiplexedConnection};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::config::WorkerConfig;
use crate::error::TranscriberError;
use crate::stats::WorkerStats;
use crate::store::{self, CommitKind, Committed, Finish, Resume, StreamKeys};

/// Entry boundaries remembered past the committed position: 3,000 (a minute of 20 ms
/// frames, a few hundred KiB). An utterance longer than that only makes the next commit
/// coarser (an older boundary is kept), never wrong.
const MAX_PENDING_BOUNDARIES: usize = 3_000;

/// How a stream's task ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamEnd {
    /// Sessions closed and the audio read to its end.
    Ended,
    /// No audio for the abandon bound, sessions never announced closed.
    Abandoned,
    /// The worker is shutting down: lease released, the position left for the next worker.
    Stopped,
}

/// What a stream's task needs from its worker.
pub(crate) struct StreamCtx {
    pub(crate) keys: StreamKeys,
    pub(crate) worker_id: Arc<str>,
    pub(crate) config: Arc<WorkerConfig>,
    pub(crate) engine: Arc<dyn Engine>,
    pub(crate) stats: Arc<WorkerStats>,
    pub(crate) client: redis::Client,
    pub(crate) shutdown: watch::Receiver<bool>,
}

/// Aborts a task when dropped (the lease renewer lives exactly as long as its stream).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Transcribes the stream whose lease the caller just took; releases it at the end.
pub(crate) async fn transcribe(ctx: StreamCtx) -> Result<StreamEnd, TranscriberError> {
    let mut ops = store::command_connection(&ctx.client).await?;
    let lost = Arc::new(AtomicBool::new(false));
    let _renewer = AbortOnDrop(tokio::spawn(renew_lease(
        ops.clone(),
        ctx.keys.clone(),
        ctx.worker_id.clone(),
        ctx.config.clone(),
        lost.clone(),
    )));
    let result = Transcription::start(&ctx, ops.clone(), lost).await;
    let result = match result {
        Ok(mut t) => t.run().await,
        Err(e) => Err(e),
    };
    let (meeting, source) = (ctx.keys.meeting.as_str(), ctx.keys.source);
    ctx.stats.remove(meeting, source);
    match &result {
        Ok(StreamEnd::Ended | StreamEnd::Abandoned) => {}
        Err(TranscriberError::LeaseLost) => {}
        Ok(StreamEnd::Stopped) | Err(_) => {
            // Let the next worker resume from the committed position now, not at the TTL.
            if let Err(e) = store::release(&mut ops, &ctx.keys, &ctx.worker_id).await {
                warn!(meeting_id = meeting, source = %source, error = %e, "lease release failed; it lapses");
            }
        }
    }
    result
}

/// Renews the lease every `renew_interval` while held; raises `lost` once it is not.
async fn renew_lease(
    mut con: ConnectionManager,
    keys: StreamKeys,
    worker: Arc<str>,
    config: Arc<WorkerConfig>,
    lost: Arc<AtomicBool>,
) {
    let mut tick = tokio::time::interval(config.renew_interval);
    tick.tick().await;
    loop {
        tick.tick().await;
        match store::renew(&mut con, &keys, &worker, config.lease_ttl).await {
            Ok(true) => {}
            Ok(false) => {
                warn!(meeting_id = keys.meeting.as_str(), source = %keys.source, "lease lost to another worker");
                lost.store(true, Ordering::SeqCst);
                return;
            }
            // The fenced scripts keep a lapsed lease harmless; keep trying.
            Err(e) => {
                warn!(meeting_id = keys.meeting.as_str(), source = %keys.source, error = %e, "lease renewal failed")
            }
        }
    }
}

/// A stream being transcribed.
struct Transcription<'c> {
    ctx: &'c StreamCtx,
    ops: ConnectionManager,
    reader: MultiplexedConnection,
    lost: Arc<AtomicBool>,
    session: Option<Box<dyn Session>>,
    /// Position after the last entry read.
    read: Resume,
    /// The committed resume position, as this worker last stored it.
    committed: Resume,
    /// End positions of entries read after `committed`, oldest first.
    boundaries: VecDeque<Resume>,
    last_audio: Instant,
    behind: bool,
}

impl<'c> Transcription<'c> {
    async fn start(
        ctx: &'c StreamCtx,
        mut ops: ConnectionManager,
        lost: Arc<AtomicBool>,
    ) -> Result<Self, TranscriberError> {
        let reader = store::blocking_connection(&ctx.client, ctx.config.block_timeout).await?;
        let position = store::load_position(&mut ops, &ctx.keys).await?;
        let committed = Resume {
            entry_id: position.entry_id.clone(),
            bytes: position.bytes,
            ms: position.ms,
        };
        info!(
            meeting_id = ctx.keys.meeting.as_str(),
            source = %ctx.keys.source,
            worker_id = &*ctx.worker_id,
            entry_id = %position.entry_id,
            position_ms = position.ms,
            "stream leased, resuming at the committed position"
        );
        ctx.stats
            .update(ctx.keys.meeting.as_str(), ctx.keys.source, |s| {
                s.read_ms = position.ms;
                s.committed_ms = position.ms;
            });
        Ok(Transcription {
            ctx,
            ops,
            reader,
            lost,
            session: None,
            read: committed.clone(),
            committed,
            boundaries: VecDeque::new(),
            last_audio: Instant::now(),
            behind: false,
        })
    }

    fn meeting(&self) -> &str {
        self.ctx.keys.meeting.as_str()
    }

    async fn run(&mut self) -> Result<StreamEnd, TranscriberError> {
        let config = self.ctx.config.clone();
        let mut shutdown = self.ctx.shutdown.clone();
        loop {
            if self.lost.load(Ordering::SeqCst) {
                return Err(TranscriberError::LeaseLost);
            }
            if *shutdown.borrow() {
                return Ok(StreamEnd::Stopped);
            }
            let read = store::xread(
                &mut self.reader,
                &self.ctx.keys.audio,
                &self.read.entry_id,
                config.batch_entries,
                config.block_timeout,
            );
            let entries = tokio::select! {
                entries = read => store::audio_entries(entries?),
                _ = shutdown.changed() => return Ok(StreamEnd::Stopped),
            };
            if entries.is_empty() {
                if let Some(end) = self.quiet().await? {
                    return Ok(end);
                }
                continue;
            }
            let full = entries.len() >= config.batch_entries;
            self.feed(entries).await?;
            self.measure_lag(full).await?;
        }
    }

    /// Nothing arrived within a block timeout: finish the open utterance after the idle
    /// bound, end the stream once its sessions closed (or after the abandon bound).
    async fn quiet(&mut self) -> Result<Option<StreamEnd>, TranscriberError> {
        let idle = self.last_audio.elapsed();
        if self.session.is_some() && idle >= self.ctx.config.idle_flush {
            debug!(meeting_id = self.meeting(), source = %self.ctx.keys.source, "no audio: finishing the open utterance");
            self.flush().await?;
        }
        let open = store::has_open_sessions(&mut self.ops, &self.ctx.keys).await?;
        let abandon = open && idle >= self.ctx.config.abandon_after;
        if open && !abandon {
            return Ok(None);
        }
        self.flush().await?;
        let keys = &self.ctx.keys;
        match store::finish(
            &mut self.ops,
            keys,
            &self.ctx.worker_id,
            &self.read.entry_id,
            abandon,
        )
        .await?
        {
            Finish::GoesOn => Ok(None),
            Finish::Ended => {
                self.ctx.stats.count_ended();
                let end = if abandon {
                    warn!(meeting_id = self.meeting(), source = %keys.source, position_ms = self.read.ms, "stream abandoned: no audio and no close announced");
                    StreamEnd::Abandoned
                } else {
                    info!(meeting_id = self.meeting(), source = %keys.source, position_ms = self.read.ms, "stream transcribed to its end");
                    StreamEnd::Ended
                };
                Ok(Some(end))
            }
        }
    }

    /// Feeds one batch of entries to the engine and publishes what it heard.
    async fn feed(&mut self, entries: Vec<store::AudioEntry>) -> Result<(), TranscriberError> {
        let start_ms = self.read.ms;
        let mut pcm = Vec::with_capacity(entries.iter().map(|e| e.pcm.len()).sum());
        for entry in entries {
            self.read.bytes += entry.pcm.len() as u64;
            self.read.ms = pcm_ms(usize::try_from(self.read.bytes).unwrap_or(usize::MAX));
            self.read.entry_id = entry.id;
            if self.boundaries.len() >= MAX_PENDING_BOUNDARIES {
                self.boundaries.pop_front();
            }
            self.boundaries.push_back(self.read.clone());
            pcm.extend_from_slice(&entry.pcm);
        }
        self.last_audio = Instant::now();
        let session = match self.session.take() {
            Some(session) => session,
            None => self.open(start_ms).await?,
        };
        let (session, (hypotheses, settled)) = on_engine_thread(session, move |s| {
            let h = s.push(&pcm)?;
            Ok((h, s.settled_ms()))
        })
        .await?;
        self.session = Some(session);
        self.publish(hypotheses, settled).await?;
        let read_ms = self.read.ms;
        self.ctx
            .stats
            .update(self.meeting(), self.ctx.keys.source, |s| {
                s.read_ms = read_ms
            });
        Ok(())
    }

    /// Opens an engine session whose first byte is at `start_ms` of the stream (a free
    /// future: `self` holds a `Session`, which is `Send` but not `Sync`).
    fn open(
        &self,
        start_ms: u64,
    ) -> impl std::future::Future<Output = Result<Box<dyn Session>, TranscriberError>> + Send + 'static
    {
        let spec =
            SessionSpec::new(self.meeting(), self.ctx.keys.source.as_str()).starting_at(start_ms);
        let engine = self.ctx.engine.clone();
        async move {
            tokio::task::spawn_blocking(move || engine.open(&spec))
                .await
                .map_err(|e| TranscriberError::EngineThread(e.to_string()))?
                .map_err(TranscriberError::Engine)
        }
    }

    /// Ends the open engine session (if any), publishes its last hypotheses and commits the
    /// whole read audio as settled.
    async fn flush(&mut self) -> Result<(), TranscriberError> {
        let Some(session) = self.session.take() else {
            return self.commit_settled(self.read.ms, true).await;
        };
        let (_, hypotheses) = on_engine_thread(session, |s| s.flush()).await?;
        let read_ms = self.read.ms;
        self.publish(hypotheses, read_ms).await?;
        self.commit_settled(read_ms, true).await
    }

    /// Publishes `hypotheses` in order; each final commits the position up to where the
    /// engine settled (but never past the next final's audio), so dying between two finals
    /// loses neither.
    async fn publish(
        &mut self,
        hypotheses: Vec<Hypothesis>,
        settled_ms: u64,
    ) -> Result<(), TranscriberError> {
        let mut any_final = false;
        for (i, h) in hypotheses.iter().enumerate() {
            // An empty final is the engine taking an utterance back (it dropped it as not
            // speech): it goes out as an empty interim, which the intake passes through
            // without storing and the page reads as "remove this source's interim line".
            // It commits no position, so a resumed worker may send it again: harmless.
            let retraction = h.is_final && h.text.trim().is_empty();
            if h.text.trim().is_empty() && !retraction {
                continue;
            }
            let mut segment = self.segment(h);
            segment.is_final &= !retraction;
            let h = &Hypothesis { is_final: segment.is_final, ..h.clone() };
            let payload = serde_json::to_vec(&segment).expect("segments serialize");
            let (kind, resume) = if h.is_final {
                any_final = true;
                let next_final = hypotheses[i + 1..]
                    .iter()
                    .filter(|n| n.is_final)
                    .map(|n| n.start_ms)
                    .min();
                let target = settled_ms.min(next_final.unwrap_or(u64::MAX));
                (CommitKind::Final, self.resume_at(target))
            } else {
                (CommitKind::Interim, self.committed.clone())
            };
            let outcome = store::commit(
                &mut self.ops,
                &self.ctx.keys,
                &self.ctx.worker_id,
                INTAKE_CHANNEL,
                &payload,
                kind,
                segment.end_ms,
                &resume,
            )
            .await?;
            self.committed_to(resume);
            let (meeting, source) = (self.meeting().to_owned(), self.ctx.keys.source);
            match (outcome, kind) {
                (Committed::Duplicate, _) => {
                    debug!(meeting_id = %meeting, source = %source, start_ms = segment.start_ms, end_ms = segment.end_ms, "segment already covered by a published final: suppressed");
                    self.ctx.stats.count_duplicate(&meeting, source);
                }
                (Committed::Done, CommitKind::Final) => {
                    info!(meeting_id = %meeting, source = %source, start_ms = segment.start_ms, end_ms = segment.end_ms, position_ms = self.committed.ms, "final published");
                    self.ctx.stats.count_final(&meeting, source);
                }
                (Committed::Done, _) => self.ctx.stats.count_interim(&meeting, source),
            }
        }
        if !any_final {
            self.commit_settled(settled_ms, false).await?;
        }
        Ok(())
    }

    /// Commits the position up to `settled_ms` without a segment, when it moved at least
    /// `commit_every` (or at all, when `always`).
    async fn commit_settled(
        &mut self,
        settled_ms: u64,
        always: bool,
    ) -> Result<(), TranscriberError> {
        let every = u64::try_from(self.ctx.config.commit_every.as_millis()).unwrap_or(u64::MAX);
        if !always && settled_ms < self.committed.ms.saturating_add(every) {
            return Ok(());
        }
        let resume = self.resume_at(settled_ms);
        if resume == self.committed {
            return Ok(());
        }
        store::commit(
            &mut self.ops,
            &self.ctx.keys,
            &self.ctx.worker_id,
            INTAKE_CHANNEL,
            b"",
            CommitKind::Position,
            0,
            &resume,
        )
        .await?;
        self.committed_to(resume);
        Ok(())
    }

    /// The last entry boundary at or before `target_ms` (the committed position if none),
    /// forgetting the boundaries before it.
    fn resume_at(&mut self, target_ms: u64) -> Resume {
        let mut resume = self.committed.clone();
        while self.boundaries.front().is_some_and(|b| b.ms <= target_ms) {
            resume = self.boundaries.pop_front().expect("just checked");
        }
        resume
    }

    fn committed_to(&mut self, resume: Resume) {
        if resume.bytes > self.committed.bytes {
            self.committed = resume;
            let ms = self.committed.ms;
            self.ctx
                .stats
                .update(self.meeting(), self.ctx.keys.source, |s| {
                    s.committed_ms = ms
                });
        }
    }

    /// The intake segment of a hypothesis, clamped to what the intake accepts.
    fn segment(&self, h: &Hypothesis) -> Segment {
        let source = self.ctx.keys.source;
        let mut text = h.text.trim().to_owned();
        if text.len() > MAX_TEXT_BYTES {
            let mut cut = MAX_TEXT_BYTES;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        Segment {
            meeting_id: self.meeting().to_owned(),
            source,
            text,
            is_final: h.is_final,
            start_ms: h.start_ms,
            end_ms: h.end_ms.max(h.start_ms),
            speaker: Some(speaker_label(source).to_owned()),
            confidence: h
                .confidence
                .filter(|c| c.is_finite())
                .map(|c| f64::from(c.clamp(0.0, 1.0))),
        }
    }

    /// Lag after a read: a full batch means more may be waiting, so the newest entry's
    /// append time is compared with the last read one's; a short batch means caught up.
    async fn measure_lag(&mut self, full: bool) -> Result<(), TranscriberError> {
        let lag_ms = if full {
            let newest = store::newest_id(&mut self.ops, &self.ctx.keys.audio).await?;
            match (
                newest.as_deref().and_then(store::id_ms),
                store::id_ms(&self.read.entry_id),
            ) {
                (Some(newest), Some(read)) => newest.saturating_sub(read),
                _ => 0,
            }
        } else {
            0
        };
        let (meeting, source) = (self.meeting().to_owned(), self.ctx.keys.source);
        self.ctx
            .stats
            .update(&meeting, source, |s| s.lag_ms = lag_ms);
        let warn_ms = u64::try_from(self.ctx.config.lag_warn.as_millis()).unwrap_or(u64::MAX);
        if lag_ms > warn_ms && !self.behind {
            self.behind = true;
            warn!(meeting_id = %meeting, source = %source, lag_ms, bound_ms = warn_ms, "transcription falling behind real time");
        } else if lag_ms <= warn_ms && self.behind {
            self.behind = false;
            info!(meeting_id = %meeting, source = %source, lag_ms, "transcription caught up");
        }
        Ok(())
    }
}

/// Runs `f` on the session on a blocking thread (engine calls may run a model), handing
/// the session back.
async fn on_engine_thread<T: Send + 'static>(
    mut session: Box<dyn Session>,
    f: impl FnOnce(&mut dyn Session) -> Result<T, EngineError> + Send + 'static,
) -> Result<(Box<dyn Session>, T), TranscriberError> {
    let (session, result) = tokio::task::spawn_blocking(move || {
        let result = f(session.as_mut());
        (session, result)
    })
    .await
    .map_err(|e| TranscriberError::EngineThread(e.to_string()))?;
    Ok((session, result?))
}

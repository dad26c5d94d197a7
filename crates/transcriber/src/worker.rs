//! The worker: finds active audio streams, leases each it has room for, and runs one
//! transcription task per leased stream (`stream.rs`).
//!
//! Discovery never polls audio keys. New sessions arrive as events on the announcement
//! stream, read with a blocking `XREAD` from the id the worker last saw (taken at start, so
//! an event between two reads is never skipped). A stream whose worker died is found by
//! sweeping the active set at start and every lease TTL: its lease lapsed, so `SET NX`
//! succeeds for exactly one of the workers trying.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use earshot_asr_engine::Engine;
use earshot_protocol::asr::{
    parse_active_member, ACTIVE_STREAMS_KEY, EVENT_FIELD_EVENT, EVENT_FIELD_MEETING,
    EVENT_FIELD_SOURCE, EVENT_OPEN, SESSIONS_STREAM_KEY,
};
use earshot_protocol::{MeetingId, Source};
use redis::aio::{ConnectionManager, MultiplexedConnection};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::config::WorkerConfig;
use crate::error::TranscriberError;
use crate::stats::WorkerStats;
use crate::store::{self, StreamKeys};
use crate::stream::{self, StreamCtx, StreamEnd};

/// Session events buffered between the announcement reader and the dispatcher: 1,024. The
/// reader blocks (and Redis keeps the events) when the dispatcher falls behind.
const EVENT_QUEUE: usize = 1_024;

/// Session events read per `XREAD` of the announcement stream: 100 (each is a few dozen
/// bytes).
const EVENTS_PER_READ: usize = 100;

/// A transcription worker over one Redis.
pub struct Worker {
    config: Arc<WorkerConfig>,
    engine: Arc<dyn Engine>,
    id: Arc<str>,
    stats: Arc<WorkerStats>,
}

/// Picks `<host>-<pid>-<8 random hex>`: readable in `GET asr:lease:…`, unique across
/// restarts of the same process id.
fn generated_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_owned());
    let mut random = [0u8; 4];
    // Without randomness the pid still tells this machine's workers apart.
    let _ = getrandom::fill(&mut random);
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    format!("{host}-{}-{hex}", std::process::id())
}

impl Worker {
    /// A worker with `config`, transcribing with `engine`; refuses an invalid config.
    pub fn new(config: WorkerConfig, engine: Arc<dyn Engine>) -> Result<Self, TranscriberError> {
        config.validate()?;
        let id: Arc<str> = config.worker_id.clone().unwrap_or_else(generated_id).into();
        Ok(Worker {
            config: Arc::new(config),
            engine,
            id,
            stats: Arc::new(WorkerStats::default()),
        })
    }

    /// The id this worker writes into its leases.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The worker's figures, live (render them with [`WorkerStats::render_prometheus`]).
    pub fn stats(&self) -> Arc<WorkerStats> {
        self.stats.clone()
    }

    /// Runs until `shutdown` completes: then every stream stops, releases its lease (the
    /// committed position stays for the next worker) and `run` returns. Returns an error
    /// only when Redis cannot be reached at start; later failures are logged and retried
    /// (the announcement reader reconnects, a failed stream is resumed by a later sweep).
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), TranscriberError> {
        let client = redis::Client::open(self.config.redis_url.as_str())
            .map_err(TranscriberError::redis("open client"))?;
        let mut ops = store::command_connection(&client).await?;
        // Start after the newest event: older sessions are found by the sweep below.
        let after = store::newest_id(&mut ops, SESSIONS_STREAM_KEY)
            .await?
            .unwrap_or_else(|| "0-0".to_owned());
        info!(
            worker_id = &*self.id,
            engine = self.engine.name(),
            "transcription worker started"
        );
        let (stop_tx, stop_rx) = watch::channel(false);
        let (event_tx, mut events) = mpsc::channel(EVENT_QUEUE);
        let mut reader = JoinSet::new();
        reader.spawn(read_events(
            client.clone(),
            after,
            self.config.clone(),
            event_tx,
        ));
        let mut dispatch = Dispatch {
            worker: &self,
            client,
            ops,
            stop: stop_rx,
            tasks: JoinSet::new(),
            running: HashMap::new(),
        };
        let mut sweep = tokio::time::interval(self.config.lease_ttl);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = sweep.tick() => dispatch.sweep().await,
                Some((meeting, source)) = events.recv() => dispatch.claim(meeting, source).await,
                Some(done) = dispatch.tasks.join_next_with_id(), if !dispatch.tasks.is_empty() => {
                    dispatch.finished(done);
                }
            }
        }
        reader.abort_all();
        let _ = stop_tx.send(true);
        let grace = tokio::time::timeout(self.config.shutdown_grace, async {
            while let Some(done) = dispatch.tasks.join_next_with_id().await {
                dispatch.finished(done);
            }
        });
        if grace.await.is_err() {
            warn!(
                worker_id = &*self.id,
                "streams still busy at shutdown: their leases lapse"
            );
        }
        info!(worker_id = &*self.id, "transcription worker stopped");
        Ok(())
    }
}

/// Reads session events and forwards each `open` to the dispatcher, reconnecting after a
/// failure (a block timeout later, so a Redis outage is not hammered).
async fn read_events(
    client: redis::Client,
    mut after: String,
    config: Arc<WorkerConfig>,
    tx: mpsc::Sender<(MeetingId, Source)>,
) {
    let mut con: Option<MultiplexedConnection> = None;
    loop {
        let result = match con.as_mut() {
            Some(c) => read_some_events(c, &mut after, &config, &tx).await,
            None => match store::blocking_connection(&client, config.block_timeout).await {
                Ok(c) => {
                    con = Some(c);
                    continue;
                }
                Err(e) => Err(e),
            },
        };
        match result {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                warn!(error = %e, "reading session events failed; reconnecting");
                con = None;
                tokio::time::sleep(config.block_timeout).await;
            }
        }
    }
}

/// One read of session events; `false` once the dispatcher is gone.
async fn read_some_events(
    con: &mut MultiplexedConnection,
    after: &mut String,
    config: &WorkerConfig,
    tx: &mpsc::Sender<(MeetingId, Source)>,
) -> Result<bool, TranscriberError> {
    let entries = store::xread(
        con,
        SESSIONS_STREAM_KEY,
        after,
        EVENTS_PER_READ,
        config.block_timeout,
    )
    .await?;
    for (id, fields) in entries {
        *after = id;
        let field = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        if field(EVENT_FIELD_EVENT).as_deref() != Some(EVENT_OPEN) {
            // A close needs no dispatch: the stream's task sees it when caught up.
            continue;
        }
        let meeting = field(EVENT_FIELD_MEETING).and_then(|m| MeetingId::parse(&m).ok());
        let source = field(EVENT_FIELD_SOURCE).and_then(|s| Source::parse(&s).ok());
        let (Some(meeting), Some(source)) = (meeting, source) else {
            warn!(event_id = %after, "session event without a valid meeting and source: ignored");
            continue;
        };
        if tx.send((meeting, source)).await.is_err() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// What a stream's task returns: the stream and how it ended.
type StreamOutcome = ((MeetingId, Source), Result<StreamEnd, TranscriberError>);

/// The dispatcher's state: which streams this worker runs.
struct Dispatch<'w> {
    worker: &'w Worker,
    client: redis::Client,
    ops: ConnectionManager,
    stop: watch::Receiver<bool>,
    tasks: JoinSet<StreamOutcome>,
    /// Streams running, by task id (a panicked task reports only its id).
    running: HashMap<tokio::task::Id, (MeetingId, Source)>,
}

impl Dispatch<'_> {
    /// Tries every active stream this worker does not run (their lease may have lapsed).
    async fn sweep(&mut self) {
        let members: Vec<String> = match redis::cmd("SMEMBERS")
            .arg(ACTIVE_STREAMS_KEY)
            .query_async(&mut self.ops)
            .await
        {
            Ok(members) => members,
            Err(e) => {
                warn!(worker_id = &*self.worker.id, error = %e, "reading the active streams failed");
                return;
            }
        };
        for member in members {
            match parse_active_member(&member) {
                Some((meeting, source)) => self.claim(meeting, source).await,
                None => warn!(member = %member, "active stream of another shape: ignored"),
            }
        }
    }

    /// Leases the stream and starts its task, unless this worker runs it already, is full,
    /// or another worker holds it.
    async fn claim(&mut self, meeting: MeetingId, source: Source) {
        let stream = (meeting, source);
        if self.running.values().any(|s| *s == stream)
            || self.running.len() >= self.worker.config.max_streams
        {
            return;
        }
        let keys = StreamKeys::new(stream.0.clone(), source);
        let worker = &self.worker;
        match store::acquire(&mut self.ops, &keys, &worker.id, worker.config.lease_ttl).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                warn!(meeting_id = stream.0.as_str(), source = %source, error = %e, "lease request failed");
                return;
            }
        }
        let ctx = StreamCtx {
            keys,
            worker_id: worker.id.clone(),
            config: worker.config.clone(),
            engine: worker.engine.clone(),
            stats: worker.stats.clone(),
            client: self.client.clone(),
            shutdown: self.stop.clone(),
        };
        let name = stream.clone();
        let task = self
            .tasks
            .spawn(async move { (name, stream::transcribe(ctx).await) });
        self.running.insert(task.id(), stream);
    }

    /// A stream's task ended.
    fn finished(&mut self, done: Result<(tokio::task::Id, StreamOutcome), tokio::task::JoinError>) {
        let id = match &done {
            Ok((id, _)) => *id,
            Err(e) => e.id(),
        };
        self.running.remove(&id);
        match done {
            Ok((_, (_, Ok(_)))) => {}
            Ok((_, ((meeting, source), Err(TranscriberError::LeaseLost)))) => {
                warn!(meeting_id = meeting.as_str(), source = %source, "stream left: its lease passed to another worker");
            }
            Ok((_, ((meeting, source), Err(e)))) => {
                error!(meeting_id = meeting.as_str(), source = %source, error = %e, "stream failed; a later sweep retries it from the committed position");
            }
            // Its lease lapses and a sweep (of any worker) resumes the stream.
            Err(e) => error!(worker_id = &*self.worker.id, error = %e, "stream task failed"),
        }
    }
}

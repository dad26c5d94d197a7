//! Every size and duration of every scenario, full and `--quick`, in one place. The full
//! sizes are the (10k subscribers, up to 100k idle connections, 1,000+ PCM
//! streams) fitted into ten minutes on a 2-core machine; `--quick` keeps each scenario's
//! shape at a size that runs in seconds, so CI proves the bench still works.

use std::time::Duration;

/// Sizes of one invocation.
#[derive(Debug, Clone)]
pub(crate) struct Sizes {
    /// Repeated runs per measurement (tables show min / median / max over them).
    pub(crate) reps: usize,

    /// Handshakes timed one at a time, per run.
    pub(crate) hop_latency_samples: usize,
    /// Handshakes timed with a batch in flight, per run.
    pub(crate) hop_throughput_events: usize,
    /// Connections opened per batch; small enough that a batch is handshaken well
    /// within the relay's 1 s keep-alive, so no keep-alive calls mix into the timing.
    pub(crate) hop_batch: usize,

    /// Idle subscriber connections held (capped by the open-file limit).
    pub(crate) idle_connections: usize,
    /// Subscribers per meeting in the idle scenario (channels = connections / this).
    pub(crate) idle_per_meeting: usize,
    /// Window over which idle CPU is measured.
    pub(crate) idle_window: Duration,
    /// How often each idle client sends `{"type":"keepalive"}` in the keep-alive window.
    pub(crate) keepalive_period: Duration,
    /// Window over which keep-alive CPU is measured.
    pub(crate) keepalive_window: Duration,

    /// Subscribers in the fan-out scenario.
    pub(crate) fanout_subscribers: usize,
    /// Meetings (channels) they are spread over.
    pub(crate) fanout_meetings: usize,
    /// Offered delivery rate, messages/s summed over subscribers (publishes/s ×
    /// subscribers per meeting).
    pub(crate) fanout_rate: u64,
    /// Publishing window per run.
    pub(crate) fanout_window: Duration,
    /// Message sizes, bytes.
    pub(crate) fanout_sizes: Vec<usize>,
    /// Bisection steps of the search for the highest rate with p99 within the bound,
    /// after the fixed load points (0: the load points only).
    pub(crate) fanout_search_steps: usize,
    /// Longest wait for the server to go quiet before each fan-out window.
    pub(crate) fanout_settle: Duration,

    /// First number of concurrent PCM streams tried.
    pub(crate) ingest_start: usize,
    /// Largest number tried.
    pub(crate) ingest_max: usize,
    /// Bisection steps between the last passing and the first failing number.
    pub(crate) ingest_bisect: usize,
    /// Audio per stream per trial.
    pub(crate) ingest_audio: Duration,

    /// Component counts for cold start (0: the application's own `spin.toml`).
    pub(crate) cold_components: Vec<usize>,
}

impl Sizes {
    /// The full run: under ten minutes on the 2-core machine.
    pub(crate) fn full() -> Self {
        Sizes {
            reps: 3,
            hop_latency_samples: 1024,
            hop_throughput_events: 4096,
            hop_batch: 256,
            idle_connections: 100_000,
            idle_per_meeting: 100,
            idle_window: Duration::from_secs(3),
            keepalive_period: Duration::from_secs(30),
            keepalive_window: Duration::from_secs(3),
            fanout_subscribers: 10_000,
            fanout_meetings: 100,
            fanout_rate: 200_000,
            fanout_window: Duration::from_secs(3),
            fanout_sizes: vec![100, 4096],
            // Three steps halve the bracket to an eighth (a few percent of the maximum)
            // in ~30 s per size.
            fanout_search_steps: 3,
            // A system that fell behind drains its backlog first; 10 s covers the worst seen.
            fanout_settle: Duration::from_secs(10),
            ingest_start: 128,
            ingest_max: 4000,
            ingest_bisect: 2,
            ingest_audio: Duration::from_secs(4),
            cold_components: vec![1, 0, 8],
        }
    }

    /// The smoke run: every scenario's code path, in under a minute.
    pub(crate) fn quick() -> Self {
        Sizes {
            reps: 1,
            hop_latency_samples: 128,
            hop_throughput_events: 256,
            hop_batch: 64,
            idle_connections: 1_000,
            idle_per_meeting: 100,
            idle_window: Duration::from_secs(1),
            keepalive_period: Duration::from_secs(1),
            keepalive_window: Duration::from_secs(1),
            fanout_subscribers: 200,
            fanout_meetings: 10,
            fanout_rate: 10_000,
            fanout_window: Duration::from_secs(1),
            fanout_sizes: vec![100, 4096],
            // The smoke run exercises the load points but not the search, and waits at
            // most 2 s for quiet: with the search and 10 s settles `--quick` took ~10 min.
            fanout_search_steps: 0,
            fanout_settle: Duration::from_secs(2),
            ingest_start: 16,
            ingest_max: 32,
            ingest_bisect: 0,
            ingest_audio: Duration::from_secs(1),
            cold_components: vec![0],
        }
    }
}

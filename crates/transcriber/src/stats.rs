//! What a worker reports: per stream, how far it read and committed and how far behind the
//! newest audio it is; totals of segments published and duplicates suppressed. Shared with
//! whoever renders `/metrics` ([`WorkerStats::render_prometheus`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use earshot_protocol::Source;

/// One stream's figures, as of its last read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamStats {
    /// Stream position read and fed to the engine, ms.
    pub read_ms: u64,
    /// Committed resume position, ms.
    pub committed_ms: u64,
    /// How far the newest audio in Redis is ahead of what was read, ms (0: caught up).
    pub lag_ms: u64,
    /// Finals published for this stream by this worker.
    pub finals: u64,
    /// Interims published for this stream by this worker.
    pub interims: u64,
    /// Segments suppressed because a published final already covered their audio.
    pub duplicates: u64,
}

/// A worker's figures, updated by its streams.
#[derive(Debug, Default)]
pub struct WorkerStats {
    streams: Mutex<BTreeMap<(String, Source), StreamStats>>,
    finals: AtomicU64,
    interims: AtomicU64,
    duplicates: AtomicU64,
    streams_ended: AtomicU64,
}

/// Escapes a Prometheus label value.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl WorkerStats {
    /// The streams this worker transcribes now, with their figures.
    pub fn streams(&self) -> Vec<(String, Source, StreamStats)> {
        self.lock()
            .iter()
            .map(|((m, s), st)| (m.clone(), *s, st.clone()))
            .collect()
    }

    /// One stream's figures, if this worker transcribes it.
    pub fn stream(&self, meeting: &str, source: Source) -> Option<StreamStats> {
        self.lock().get(&(meeting.to_owned(), source)).cloned()
    }

    /// Finals published since the worker started.
    pub fn finals_published(&self) -> u64 {
        self.finals.load(Ordering::Relaxed)
    }

    /// Interims published since the worker started.
    pub fn interims_published(&self) -> u64 {
        self.interims.load(Ordering::Relaxed)
    }

    /// Segments suppressed as duplicates since the worker started.
    pub fn duplicates_suppressed(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }

    /// Streams this worker ended (read to the end after their sessions closed).
    pub fn streams_ended(&self) -> u64 {
        self.streams_ended.load(Ordering::Relaxed)
    }

    /// The figures in Prometheus' text format, `earshot_asr_*`.
    pub fn render_prometheus(&self) -> String {
        let streams = self.streams();
        let mut out = String::new();
        let gauge = |out: &mut String, name: &str, help: &str, kind: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        gauge(
            &mut out,
            "earshot_asr_streams",
            "Audio streams this worker transcribes.",
            "gauge",
        );
        let _ = writeln!(out, "earshot_asr_streams {}", streams.len());
        type Field = fn(&StreamStats) -> u64;
        let per_stream: [(&str, &str, Field); 3] = [
            (
                "earshot_asr_lag_ms",
                "How far the newest audio is ahead of what was read, ms.",
                |s| s.lag_ms,
            ),
            ("earshot_asr_read_ms", "Stream position read, ms.", |s| {
                s.read_ms
            }),
            (
                "earshot_asr_committed_ms",
                "Committed resume position, ms.",
                |s| s.committed_ms,
            ),
        ];
        for (name, help, field) in per_stream {
            gauge(&mut out, name, help, "gauge");
            for (meeting, source, st) in &streams {
                let _ = writeln!(
                    out,
                    "{name}{{meeting_id=\"{}\",source=\"{source}\"}} {}",
                    label(meeting),
                    field(st)
                );
            }
        }
        let totals = [
            (
                "earshot_asr_finals_total",
                "Final segments published.",
                self.finals_published(),
            ),
            (
                "earshot_asr_interims_total",
                "Interim segments published.",
                self.interims_published(),
            ),
            (
                "earshot_asr_duplicates_suppressed_total",
                "Segments suppressed because a final already covered their audio.",
                self.duplicates_suppressed(),
            ),
            (
                "earshot_asr_streams_ended_total",
                "Streams read to their end.",
                self.streams_ended(),
            ),
        ];
        for (name, help, value) in totals {
            gauge(&mut out, name, help, "counter");
            let _ = writeln!(out, "{name} {value}");
        }
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, Source), StreamStats>> {
        // The map holds plain figures: one a panicking holder left behind is still usable.
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn update(&self, meeting: &str, source: Source, f: impl FnOnce(&mut StreamStats)) {
        f(self.lock().entry((meeting.to_owned(), source)).or_default());
    }

    pub(crate) fn remove(&self, meeting: &str, source: Source) {
        self.lock().remove(&(meeting.to_owned(), source));
    }

    pub(crate) fn count_final(&self, meeting: &str, source: Source) {
        self.finals.fetch_add(1, Ordering::Relaxed);
        self.update(meeting, source, |s| s.finals += 1);
    }

    pub(crate) fn count_interim(&self, meeting: &str, source: Source) {
        self.interims.fetch_add(1, Ordering::Relaxed);
        self.update(meeting, source, |s| s.interims += 1);
    }

    pub(crate) fn count_duplicate(&self, meeting: &str, source: Source) {
        self.duplicates.fetch_add(1, Ordering::Relaxed);
        self.update(meeting, source, |s| s.duplicates += 1);
    }

    pub(crate) fn count_ended(&self) {
        self.streams_ended.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_per_stream_gauges_and_totals() {
        let stats = WorkerStats::default();
        stats.update("m1", Source::Mic, |s| {
            s.lag_ms = 1500;
            s.read_ms = 4000;
        });
        stats.count_final("m1", Source::Mic);
        let text = stats.render_prometheus();
        assert!(text.contains("earshot_asr_streams 1\n"), "{text}");
        assert!(
            text.contains("earshot_asr_lag_ms{meeting_id=\"m1\",source=\"mic\"} 1500\n"),
            "{text}"
        );
        assert!(text.contains("earshot_asr_read_ms{meeting_id=\"m1\",source=\"mic\"} 4000\n"));
        assert!(text.contains("earshot_asr_finals_total 1\n"));
        assert_eq!(stats.stream("m1", Source::Mic).unwrap().finals, 1);
        stats.remove("m1", Source::Mic);
        assert!(stats
            .render_prometheus()
            .contains("earshot_asr_streams 0\n"));
        assert_eq!(stats.finals_published(), 1, "totals outlive the stream");
    }
}

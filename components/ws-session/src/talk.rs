//! A meeting's talk record in the key-value store (`meeting:{id}:talk`): the finished speech
//! intervals of each source on the wall clock, bounded, plus whether a source is speaking
//! now — what the `stats` events and the subscribe snapshot are computed from. Pure: the
//! updates are compare-and-swap closures, the statistics a function of the record.
//!
//! The record is storage of the two socket components, not a wire shape: ingest writes it
//! (speech starts and ends, the `stats` election), subscribe reads it for the snapshot. It
//! lives here, once, so neither can drift from the other.

use std::collections::{BTreeMap, VecDeque};

use earshot_protocol::meeting::TalkSummary;
use earshot_protocol::{MeetingId, Source};
use serde::{Deserialize, Serialize};

/// Finished speech intervals kept per source. A talker produces roughly one interval per
/// phrase, 10–20 a minute, so a thousand cover 50–100 minutes of speech while the record
/// stays under ~30 KB per source (it is rewritten at every speech end). Older intervals
/// are dropped and the statistics window starts after them (`complete_from_ms`).
pub const MAX_SPEECH_INTERVALS: usize = 1_000;

/// Key-value key of a meeting's talk record.
pub fn talk_key(meeting: &MeetingId) -> String {
    format!("meeting:{meeting}:talk")
}

/// Key-value key of the unix milliseconds of the meeting's last `stats` event: the
/// compare-and-swap on it elects one emitter per [`earshot_protocol::meeting::STATS_INTERVAL_MS`].
pub fn stats_at_key(meeting: &MeetingId) -> String {
    format!("meeting:{meeting}:stats-at")
}

/// One source's speech on the meeting's wall clock.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceTalk {
    /// Finished speech intervals `[start, end)`, unix milliseconds, oldest first.
    #[serde(default)]
    pub intervals: VecDeque<(u64, u64)>,
    /// Every interval of this source ending after this instant is on record (0: all).
    #[serde(default)]
    pub complete_from_ms: u64,
    /// Start of the speech under way, unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speaking_since_ms: Option<u64>,
}

/// A meeting's talk record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TalkRecord {
    /// The meeting's first analysed sample, unix milliseconds: where statistics start.
    pub started_ms: u64,
    /// Per source.
    #[serde(default)]
    pub sources: BTreeMap<Source, SourceTalk>,
}

/// One change to a talk record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TalkChange {
    /// A session of `source` started analysing at `at_ms`: the meeting's statistics start
    /// then at the latest; a speech left open by an earlier session (one that died without
    /// cleanup) is forgotten.
    SessionStarted { source: Source, at_ms: u64 },
    /// `source` started speaking at `at_ms`.
    SpeechStarted { source: Source, at_ms: u64 },
    /// `source` spoke over `[start_ms, end_ms)` and stopped.
    SpeechEnded {
        source: Source,
        start_ms: u64,
        end_ms: u64,
    },
}

/// Reads a stored record; an unreadable one counts as none (it is replaced on the next
/// change: statistics are advisory).
pub fn read(bytes: Option<&[u8]>) -> Option<TalkRecord> {
    bytes.and_then(|b| serde_json::from_slice(b).ok())
}

/// The record after `change`.
pub fn apply(current: Option<&[u8]>, change: TalkChange) -> Vec<u8> {
    let mut record = read(current);
    let at = match change {
        TalkChange::SessionStarted { at_ms, .. } | TalkChange::SpeechStarted { at_ms, .. } => at_ms,
        TalkChange::SpeechEnded { start_ms, .. } => start_ms,
    };
    let record = record.get_or_insert_with(|| TalkRecord {
        started_ms: at,
        sources: BTreeMap::new(),
    });
    record.started_ms = record.started_ms.min(at);
    match change {
        TalkChange::SessionStarted { source, .. } => {
            record.sources.entry(source).or_default().speaking_since_ms = None;
        }
        TalkChange::SpeechStarted { source, at_ms } => {
            record.sources.entry(source).or_default().speaking_since_ms = Some(at_ms);
        }
        TalkChange::SpeechEnded {
            source,
            start_ms,
            end_ms,
        } => {
            let talk = record.sources.entry(source).or_default();
            talk.speaking_since_ms = None;
            talk.intervals.push_back((start_ms, end_ms));
            while talk.intervals.len() > MAX_SPEECH_INTERVALS {
                if let Some((_, end)) = talk.intervals.pop_front() {
                    talk.complete_from_ms = talk.complete_from_ms.max(end);
                }
            }
        }
    }
    serde_json::to_vec(&record).expect("talk records serialize")
}

/// The meeting's statistics from its first analysed audio (or the oldest interval every
/// source still has on record) to `max(now_ms, audio_until_ms)`, counting speech under way
/// up to then. `audio_until_ms` is where the caller's own audio ends on the wall clock:
/// audio sent faster than real time runs ahead of `now_ms`. Every source is listed.
pub fn summary(record: &TalkRecord, now_ms: u64, audio_until_ms: u64) -> TalkSummary {
    let from = record
        .sources
        .values()
        .map(|t| t.complete_from_ms)
        .fold(record.started_ms, u64::max);
    let latest = record.sources.values().flat_map(|t| {
        t.intervals
            .back()
            .map(|&(_, end)| end)
            .into_iter()
            .chain(t.speaking_since_ms)
    });
    let to = latest.fold(now_ms.max(audio_until_ms), u64::max).max(from);
    let sources = [Source::Mic, Source::Sys].map(|source| {
        let talk = record.sources.get(&source);
        let mut intervals: Vec<(u64, u64)> = talk
            .map(|t| t.intervals.iter().copied().collect())
            .unwrap_or_default();
        if let Some(since) = talk.and_then(|t| t.speaking_since_ms) {
            intervals.push((since, to));
        }
        (source, intervals)
    });
    let stats = earshot_vad::talk_stats(sources, from, to);
    TalkSummary {
        window_ms: stats.span_ms,
        talk_ms: stats.talk_ms_per_source.into_iter().collect(),
        overlap_ms: stats.overlap_ms,
        silence_ms: stats.silence_ms,
        wall_ms: to,
    }
}

/// What the stats election decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Election {
    /// This connection emits now (the stored time is now `now_ms`).
    Won,
    /// Someone emitted at this unix millisecond; the next election is due an interval later.
    Lost { last_ms: u64 },
}

/// The election's compare-and-swap step: given the stored time of the last `stats` event,
/// whether a connection standing at `now_ms` emits (and the value to store).
pub fn elect(current: Option<&[u8]>, now_ms: u64, interval_ms: u64) -> (Election, Option<Vec<u8>>) {
    let last = current
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|s| s.parse::<u64>().ok());
    match last {
        Some(last) if now_ms < last.saturating_add(interval_ms) => {
            (Election::Lost { last_ms: last }, None)
        }
        _ => (Election::Won, Some(now_ms.to_string().into_bytes())),
    }
}

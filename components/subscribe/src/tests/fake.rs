//! The subscriber routes' effects over memory, with switches to make each capability fail.
//! The history script is modelled on the stream's entries: the real script runs against a
//! real Redis in the integration tests.

use std::collections::BTreeMap;

use serde_json::Value;

use earshot_ws_session::effects::{EffectError, Effects};

use crate::effects::SubscribeEffects;
use crate::history::History;

/// A transcript stream as the history script sees it.
#[derive(Default)]
pub(super) struct TranscriptStream {
    /// Offset and segment field, oldest first.
    pub(super) entries: Vec<(String, Option<Vec<u8>>)>,
    /// `max-deleted-entry-id` (moved by `XDEL` only).
    pub(super) max_deleted: String,
    /// Entries removed so far (`entries-added` − `length`).
    pub(super) removed: u64,
    /// Models Redis before 7.0: neither of the two above is reported.
    pub(super) redis6: bool,
}

#[derive(Default)]
pub(super) struct Fake {
    pub(super) kv: BTreeMap<String, Vec<u8>>,
    /// Every key-value operation fails.
    pub(super) kv_down: bool,
    /// Every Redis command fails.
    pub(super) redis_down: bool,
    pub(super) transcripts: BTreeMap<String, TranscriptStream>,
    /// History reads, with the count asked for.
    pub(super) history_reads: Vec<(String, String, usize)>,
    pub(super) logs: Vec<Value>,
}

fn down(what: &str) -> EffectError {
    EffectError(format!("{what} is down"))
}

impl Effects for Fake {
    fn kv_get(&mut self, key: &str) -> Result<Option<Vec<u8>>, EffectError> {
        if self.kv_down {
            return Err(down("kv"));
        }
        Ok(self.kv.get(key).cloned())
    }

    fn log(&mut self, line: Value) {
        self.logs.push(line);
    }
}

impl SubscribeEffects for Fake {
    fn redis_history(
        &mut self,
        key: &str,
        after: &str,
        count: usize,
    ) -> Result<History, EffectError> {
        if self.redis_down {
            return Err(down("redis"));
        }
        self.history_reads
            .push((key.to_owned(), after.to_owned(), count));
        let Some(stream) = self.transcripts.get(key) else {
            return Ok(History::default());
        };
        Ok(History {
            entries: stream
                .entries
                .iter()
                .rev()
                .filter(|(id, _)| earshot_protocol::grip::id_after(id, after))
                .take(count)
                .cloned()
                .collect(),
            max_deleted: (!stream.redis6).then(|| stream.max_deleted.clone()),
            removed: (!stream.redis6).then_some(stream.removed),
            first: stream.entries.first().map(|(id, _)| id.clone()),
        })
    }
}

impl Fake {
    /// Appends a segment to a transcript stream (what the transcripts component does).
    pub(super) fn append_segment(&mut self, key: &str, offset: &str, segment: &Value) {
        let stream = self
            .transcripts
            .entry(key.to_owned())
            .or_insert_with(|| TranscriptStream {
                max_deleted: "0-0".to_owned(),
                ..TranscriptStream::default()
            });
        stream
            .entries
            .push((offset.to_owned(), Some(segment.to_string().into_bytes())));
    }

    /// Trims a transcript stream to its newest `keep` entries (`XTRIM MAXLEN keep`).
    pub(super) fn trim_segments(&mut self, key: &str, keep: usize) {
        let stream = self.transcripts.get_mut(key).expect("stream exists");
        let drop = stream.entries.len().saturating_sub(keep);
        stream.entries.drain(..drop);
        stream.removed += drop as u64;
    }

    /// Deletes one entry of a transcript stream (`XDEL`).
    pub(super) fn delete_segment(&mut self, key: &str, offset: &str) {
        let stream = self.transcripts.get_mut(key).expect("stream exists");
        stream.entries.retain(|(id, _)| id != offset);
        stream.removed += 1;
        if earshot_protocol::grip::id_after(offset, &stream.max_deleted) {
            stream.max_deleted = offset.to_owned();
        }
    }

    /// The `state` of every state-transition line, in order.
    pub(super) fn states(&self) -> Vec<String> {
        self.logs
            .iter()
            .filter_map(|l| l["state"].as_str().map(str::to_owned))
            .collect()
    }
}

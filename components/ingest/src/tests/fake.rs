//! [`Effects`] over memory, with switches to make each capability fail. Redis's sliding-log
//! script is modelled with the key-value algorithm (`ratelimit::slide`) on its own clock: the
//! real script runs against a real Redis in the integration tests.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::effects::{EffectError, Effects, Update};
use crate::history::History;
use crate::ratelimit::{slide, Admission};
use crate::settings::RateLimit;

/// One appended stream entry: its fields in order.
pub(super) type Entry = Vec<(String, Vec<u8>)>;

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
    /// The next `n` compare-and-swaps lose to a concurrent writer (who wrote the same value).
    pub(super) cas_races: usize,
    /// Redis's clock for the rate-limit script, unix ms.
    pub(super) redis_clock_ms: u64,
    pub(super) redis_zsets: BTreeMap<String, Vec<u8>>,
    /// Every Redis command fails.
    pub(super) redis_down: bool,
    /// XADDs that succeed before Redis starts failing.
    pub(super) xadd_budget: Option<usize>,
    pub(super) streams: BTreeMap<String, Vec<Entry>>,
    pub(super) xadd_maxlen: Option<u64>,
    pub(super) transcripts: BTreeMap<String, TranscriptStream>,
    /// History reads, with the count asked for.
    pub(super) history_reads: Vec<(String, String, usize)>,
    pub(super) redis_published: Vec<(String, Value)>,
    pub(super) http_published: Vec<(String, Value)>,
    pub(super) logs: Vec<Value>,
    pub(super) next_random: u8,
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

    fn kv_update(&mut self, key: &str, update: &mut Update<'_>) -> Result<(), EffectError> {
        if self.kv_down {
            return Err(down("kv"));
        }
        loop {
            let current = self.kv.get(key).cloned();
            let Some(next) = update(current.as_deref()) else {
                return Ok(());
            };
            if self.cas_races > 0 {
                self.cas_races -= 1;
                continue;
            }
            self.kv.insert(key.to_owned(), next);
            return Ok(());
        }
    }

    fn redis_admit(
        &mut self,
        key: &str,
        member: &str,
        limit: RateLimit,
    ) -> Result<bool, EffectError> {
        if self.redis_down {
            return Err(down("redis"));
        }
        let (admission, next) = slide(
            self.redis_zsets.get(key).map(Vec::as_slice),
            member,
            self.redis_clock_ms,
            limit,
        );
        if let Some(next) = next {
            self.redis_zsets.insert(key.to_owned(), next);
        }
        Ok(admission == Admission::Admitted)
    }

    fn redis_xadd(
        &mut self,
        key: &str,
        maxlen: u64,
        fields: &[(&str, &[u8])],
    ) -> Result<(), EffectError> {
        if self.redis_down {
            return Err(down("redis"));
        }
        if let Some(budget) = self.xadd_budget.as_mut() {
            if *budget == 0 {
                return Err(down("redis"));
            }
            *budget -= 1;
        }
        self.xadd_maxlen = Some(maxlen);
        let entry = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
            .collect();
        self.streams.entry(key.to_owned()).or_default().push(entry);
        Ok(())
    }

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

    fn redis_publish(&mut self, channel: &str, payload: &[u8]) -> Result<(), EffectError> {
        if self.redis_down {
            return Err(down("redis"));
        }
        self.redis_published.push((
            channel.to_owned(),
            serde_json::from_slice(payload).expect("JSON payload"),
        ));
        Ok(())
    }

    fn http_publish(&mut self, url: &str, body: Vec<u8>) {
        self.http_published.push((
            url.to_owned(),
            serde_json::from_slice(&body).expect("JSON body"),
        ));
    }

    fn random_hex(&mut self, bytes: usize) -> Result<String, EffectError> {
        self.next_random += 1;
        Ok(format!("{:02x}", self.next_random).repeat(bytes))
    }

    fn log(&mut self, line: Value) {
        self.logs.push(line);
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

    /// The meeting events published (by Redis) to `meeting:m1`, parsed.
    pub(super) fn meeting_events(&self) -> Vec<Value> {
        self.redis_published
            .iter()
            .filter(|(channel, _)| channel == "earshot:grip:meeting:m1")
            .map(|(_, item)| {
                serde_json::from_str(
                    item["formats"]["ws-message"]["content"]
                        .as_str()
                        .expect("text item"),
                )
                .expect("JSON event")
            })
            .collect()
    }

    /// The `state` of every state-transition line, in order.
    pub(super) fn states(&self) -> Vec<String> {
        self.logs
            .iter()
            .filter_map(|l| l["state"].as_str().map(str::to_owned))
            .collect()
    }
}

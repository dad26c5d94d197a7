//! The ingest route's effects over memory, with switches to make each capability fail. Redis's sliding-log
//! script is modelled with the key-value algorithm (`ratelimit::slide`) on its own clock: the
//! real script runs against a real Redis in the integration tests.

use std::collections::BTreeMap;

use earshot_protocol::meeting_end::ScriptCall;
use serde_json::Value;

use earshot_ws_session::effects::Effects;

use crate::announce::Announcement;
use crate::effects::{EffectError, IngestEffects, Update};
use crate::ratelimit::{slide, Admission};
use crate::settings::RateLimit;

/// One appended stream entry: its fields in order.
pub(super) type Entry = Vec<(String, Vec<u8>)>;

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
    pub(super) redis_published: Vec<(String, Value)>,
    /// Session announcements: the announcement script's keys and arguments.
    pub(super) announced: Vec<([String; 3], [String; 6])>,
    /// Announcements fail (the rest of Redis works).
    pub(super) announce_down: bool,
    pub(super) http_published: Vec<(String, Value)>,
    /// Every meeting script run (`earshot_protocol::meeting_end`), in order.
    pub(super) scripts: Vec<ScriptCall>,
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

    fn log(&mut self, line: Value) {
        self.logs.push(line);
    }
}

impl IngestEffects for Fake {
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

    fn redis_announce(&mut self, announcement: &Announcement<'_>) -> Result<(), EffectError> {
        if self.redis_down || self.announce_down {
            return Err(down("redis"));
        }
        self.announced
            .push((announcement.keys(), announcement.args()));
        Ok(())
    }

    fn redis_script(&mut self, call: &ScriptCall) -> Result<(), EffectError> {
        if self.redis_down {
            return Err(down("redis"));
        }
        self.scripts.push(call.clone());
        Ok(())
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
}

impl Fake {
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

//! The pipeline over in-memory effects: what is stored, published and logged per outcome.

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use earshot_protocol::grip::{Item, PublishRequest};
use earshot_protocol::meeting::MeetingState;
use earshot_protocol::transcript::MAX_TEXT_BYTES;
use earshot_protocol::MeetingId;
use serde_json::Value;

use crate::effects::{EffectError, Effects, Update};
use crate::intake::{process, Accepted, Intake, IntakeError, Rejection, Via};
use crate::settings::IntakeSettings;
use crate::state;

#[derive(Default)]
struct Fake {
    kv: HashMap<String, Vec<u8>>,
    /// (key, maxlen, field, value) of every XADD.
    xadds: Vec<(String, u64, String, Vec<u8>)>,
    /// The retention (`EXPIRE` seconds) each XADD set.
    ttls: Vec<u64>,
    /// (channel, payload) of every Redis PUBLISH.
    published: Vec<(String, Vec<u8>)>,
    /// (url, body) of every HTTP publish.
    posted: Vec<(String, Vec<u8>)>,
    logs: Vec<Value>,
    kv_down: bool,
    redis_down: bool,
    /// Ops in order, to check XADD comes before PUBLISH.
    ops: Vec<&'static str>,
}

impl Effects for Fake {
    fn kv_get(&mut self, key: &str) -> Result<Option<Vec<u8>>, EffectError> {
        if self.kv_down {
            return Err(EffectError("kv down".into()));
        }
        Ok(self.kv.get(key).cloned())
    }

    fn kv_update(&mut self, key: &str, update: &mut Update<'_>) -> Result<(), EffectError> {
        self.ops.push("kv_update");
        if let Some(next) = update(self.kv.get(key).map(Vec::as_slice)) {
            self.kv.insert(key.to_owned(), next);
        }
        Ok(())
    }

    fn redis_xadd(&mut self, key: &str, maxlen: u64, field: &str, value: &[u8], ttl_s: u64) -> Result<String, EffectError> {
        if self.redis_down {
            return Err(EffectError("redis down".into()));
        }
        self.ops.push("xadd");
        self.ttls.push(ttl_s);
        self.xadds.push((key.into(), maxlen, field.into(), value.to_vec()));
        Ok(format!("1700000000000-{}", self.xadds.len() - 1))
    }

    fn redis_publish(&mut self, channel: &str, payload: &[u8]) -> Result<(), EffectError> {
        if self.redis_down {
            return Err(EffectError("redis down".into()));
        }
        self.ops.push("publish");
        self.published.push((channel.into(), payload.to_vec()));
        Ok(())
    }

    async fn http_publish(&mut self, url: &str, body: Vec<u8>) -> Result<(), EffectError> {
        self.ops.push("publish");
        self.posted.push((url.into(), body));
        Ok(())
    }

    fn log(&mut self, line: Value) {
        self.logs.push(line);
    }
}

impl Fake {
    /// A fake where meeting `m1` is known (an ingest connection connected).
    fn with_known_meeting() -> Fake {
        let mut fake = Fake::default();
        fake.kv.insert("meeting:m1:presence".into(), br#"{"mic":{"connection_id":"c","since_ms":1}}"#.to_vec());
        fake
    }

    fn last_log(&self) -> &Value {
        self.logs.last().expect("a log line")
    }
}

/// Runs a future that never waits (the fake's effects are all ready at once).
fn ready<F: Future>(f: F) -> F::Output {
    match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the fake never waits"),
    }
}

fn redis() -> IntakeSettings {
    IntakeSettings { redis_url: "redis://r:6379".into(), grip_publish_url: String::new(), transcript_retention_s: 3_600 }
}

fn run(fake: &mut Fake, settings: &IntakeSettings, payload: &str) -> Result<Accepted, IntakeError> {
    let input = Intake { payload: payload.as_bytes(), via: Via::Redis, path_meeting: None, sub: None };
    ready(process(&input, settings, fake, 42))
}

const FINAL: &str = r#"{"meeting_id":"m1","source":"system","text":"hello","is_final":true,"start_ms":0,"end_ms":900,"speaker":"A","confidence":0.9}"#;
const INTERIM: &str = r#"{"meeting_id":"m1","source":"mic","text":"hel","is_final":false,"start_ms":0,"end_ms":400}"#;

#[test]
fn a_final_segment_is_stored_then_state_then_published() {
    let mut fake = Fake::with_known_meeting();
    let accepted = run(&mut fake, &redis(), FINAL).unwrap();
    assert_eq!(accepted.offset.as_deref(), Some("1700000000000-0"));
    assert_eq!(fake.ops, ["xadd", "kv_update", "publish"]);

    let (key, maxlen, field, value) = &fake.xadds[0];
    assert_eq!((key.as_str(), *maxlen, field.as_str()), ("transcript:m1", 10_000, "segment"));
    let stored: Value = serde_json::from_slice(value).unwrap();
    assert_eq!(stored["source"], "sys", "stored canonically");
    assert_eq!(stored["text"], "hello");

    let state: MeetingState = serde_json::from_slice(&fake.kv["meeting:m1:state"]).unwrap();
    assert_eq!(state, MeetingState { last_transcript_offset: Some("1700000000000-0".into()), final_segments: 1, updated_ms: 42 });

    let (channel, payload) = &fake.published[0];
    assert_eq!(channel, "earshot:grip:transcript:m1");
    let item: Item = serde_json::from_slice(payload).unwrap();
    assert_eq!((item.channel.as_str(), item.id.as_deref()), ("transcript:m1", Some("1700000000000-0")));
    let content: Value = serde_json::from_str(item.formats.ws_message.unwrap().content.as_deref().unwrap()).unwrap();
    assert_eq!((content["type"].as_str(), content["offset"].as_str(), content["text"].as_str()), (Some("transcript"), Some("1700000000000-0"), Some("hello")));

    let log = fake.last_log();
    assert_eq!((log["level"].as_str(), log["msg"].as_str(), log["meeting_id"].as_str(), log["source"].as_str()), (Some("info"), Some("segment accepted"), Some("m1"), Some("sys")));
    assert_eq!((log["component"].as_str(), log["via"].as_str(), log["offset"].as_str()), (Some("transcripts"), Some("redis"), Some("1700000000000-0")));
    assert!(!log.to_string().contains("hello"), "text stays out of logs: {log}");
}

#[test]
fn an_interim_segment_is_published_without_id_and_not_stored() {
    let mut fake = Fake::with_known_meeting();
    let accepted = run(&mut fake, &redis(), INTERIM).unwrap();
    assert_eq!(accepted.offset, None);
    assert!(fake.xadds.is_empty() && !fake.kv.contains_key("meeting:m1:state"));
    let item: Item = serde_json::from_slice(&fake.published[0].1).unwrap();
    assert_eq!(item.id, None);
    assert_eq!(fake.last_log()["level"], "debug");
}

#[test]
fn the_http_publish_url_wins_over_redis() {
    let mut fake = Fake::with_known_meeting();
    let settings = IntakeSettings { grip_publish_url: "http://relay/publish/".into(), ..redis() };
    run(&mut fake, &settings, FINAL).unwrap();
    assert!(fake.published.is_empty());
    let (url, body) = &fake.posted[0];
    assert_eq!(url, "http://relay/publish/");
    let req: PublishRequest = serde_json::from_slice(body).unwrap();
    assert_eq!(req.items[0].id.as_deref(), Some("1700000000000-0"));
}

#[test]
fn refused_segments_touch_nothing_and_log_the_reason() {
    let huge_text = FINAL.replace("hello", &"x".repeat(MAX_TEXT_BYTES + 1));
    let cases: [(&str, String, &str); 6] = [
        ("not json", "{nope".into(), "malformed segment"),
        ("wrong shape", r#"{"meeting_id":"m1"}"#.into(), "malformed segment"),
        ("bad meeting id", FINAL.replace("\"m1\"", "\"../etc\""), "invalid meeting id"),
        ("text too long", huge_text, "text too long"),
        ("too large", format!("{:width$}", FINAL, width = 20_000), "segment too large"),
        ("unknown meeting", FINAL.replace("\"m1\"", "\"m2\""), "unknown meeting"),
    ];
    for (name, payload, reason) in cases {
        let mut fake = Fake::with_known_meeting();
        let err = run(&mut fake, &redis(), &payload).unwrap_err();
        assert!(matches!(err, IntakeError::Rejected(_)), "{name}: {err:?}");
        assert!(fake.ops.is_empty(), "{name}: nothing stored or published: {:?}", fake.ops);
        let log = fake.last_log();
        assert_eq!((log["level"].as_str(), log["msg"].as_str()), (Some("warn"), Some("segment rejected")), "{name}");
        assert!(log["reason"].as_str().unwrap().starts_with(reason), "{name}: {log}");
    }
    // A refused payload's claimed meeting is logged (clipped), when there is one.
    let mut fake = Fake::with_known_meeting();
    let _ = run(&mut fake, &redis(), &FINAL.replace("\"m1\"", "\"../etc\""));
    assert_eq!(fake.last_log()["meeting_id"], "../etc");
}

#[test]
fn a_meeting_with_a_state_record_is_known() {
    let mut fake = Fake::default();
    assert_eq!(run(&mut fake, &redis(), FINAL).unwrap_err(), IntakeError::Rejected(Rejection::UnknownMeeting));
    fake.kv.insert("meeting:m1:state".into(), b"{}".to_vec());
    assert!(run(&mut fake, &redis(), FINAL).is_ok());
}

#[test]
fn the_http_path_must_name_the_segments_meeting() {
    let mut fake = Fake::with_known_meeting();
    let other = MeetingId::parse("m9").unwrap();
    let input = Intake { payload: FINAL.as_bytes(), via: Via::Http, path_meeting: Some(&other), sub: Some("worker") };
    let err = ready(process(&input, &redis(), &mut fake, 1)).unwrap_err();
    assert_eq!(err, IntakeError::Rejected(Rejection::MeetingMismatch));
    let log = fake.last_log();
    assert_eq!((log["path_meeting_id"].as_str(), log["sub"].as_str(), log["component"].as_str()), (Some("m9"), Some("worker"), Some("transcripts-http")));
    assert!(fake.ops.is_empty());
}

#[test]
fn backend_failures_lose_the_segment_loudly() {
    let mut fake = Fake::with_known_meeting();
    fake.redis_down = true;
    assert!(matches!(run(&mut fake, &redis(), FINAL), Err(IntakeError::Unavailable(_))));
    assert!(fake.published.is_empty(), "nothing published that history lacks");
    assert_eq!((fake.last_log()["level"].as_str(), fake.last_log()["msg"].as_str()), (Some("error"), Some("segment not stored")));

    let mut fake = Fake::with_known_meeting();
    fake.kv_down = true;
    assert!(matches!(run(&mut fake, &redis(), FINAL), Err(IntakeError::Unavailable(_))));

    // No Redis: a final segment cannot be stored; an interim one has nowhere to go but is fine.
    let mut fake = Fake::with_known_meeting();
    assert!(matches!(run(&mut fake, &IntakeSettings::default(), FINAL), Err(IntakeError::Unavailable(_))));
    assert!(run(&mut fake, &IntakeSettings::default(), INTERIM).is_ok());
    assert!(fake.logs.iter().any(|l| l["msg"] == "publish failed"));
}

#[test]
fn state_keeps_the_newest_offset_and_counts() {
    let s1 = state::advance(None, "5-0", 10);
    let s2 = state::advance(Some(&s1), "4-9", 11);
    let s3 = state::advance(Some(b"garbage"), "1-0", 12);
    let parse = |b: &[u8]| serde_json::from_slice::<MeetingState>(b).unwrap();
    assert_eq!(parse(&s2), MeetingState { last_transcript_offset: Some("5-0".into()), final_segments: 2, updated_ms: 11 });
    assert_eq!(parse(&s3).final_segments, 1);
}

#[test]
fn every_stored_final_sets_the_transcript_retention() {
    let mut fake = Fake::with_known_meeting();
    run(&mut fake, &redis(), FINAL).unwrap();
    run(&mut fake, &redis(), INTERIM).unwrap();
    let forever = IntakeSettings { transcript_retention_s: 0, ..redis() };
    run(&mut fake, &forever, FINAL).unwrap();
    assert_eq!(fake.ttls, [3_600, 0], "one per stored final; interims are not stored");
}

#[test]
fn retention_defaults_to_thirty_days_and_refuses_a_non_number() {
    use crate::settings::DEFAULT_TRANSCRIPT_RETENTION_S;
    let lookup = |retention: Option<&'static str>| {
        IntakeSettings::from_lookup(move |name| Ok(if name == "transcript_retention_s" { retention.map(str::to_owned) } else { None }))
    };
    assert_eq!(DEFAULT_TRANSCRIPT_RETENTION_S, 2_592_000);
    assert_eq!(lookup(None).unwrap().transcript_retention_s, DEFAULT_TRANSCRIPT_RETENTION_S);
    assert_eq!(lookup(Some(" ")).unwrap().transcript_retention_s, DEFAULT_TRANSCRIPT_RETENTION_S);
    assert_eq!(lookup(Some("86400")).unwrap().transcript_retention_s, 86_400);
    assert_eq!(lookup(Some("0")).unwrap().transcript_retention_s, 0);
    let err = lookup(Some("30d")).unwrap_err();
    assert_eq!(err.name, "transcript_retention_s");
    assert!(!err.to_string().contains("30d"), "a refusal never shows the value");
}

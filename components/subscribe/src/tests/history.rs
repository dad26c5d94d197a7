//! `/ws/transcript/{id}?since=`: history after `since`, oldest first, behind the relay's
//! hold; truncation; the seam with live delivery.

use earshot_protocol::grip::{id_after, Control};
use earshot_protocol::transcript::MAX_REPLAY_SEGMENTS;
use earshot_protocol::Event;
use serde_json::{json, Value};

use super::fake::Fake;
use super::{close, redis, settings, text, token, Conn};
use crate::history::{self, Flat, History};

const STREAM: &str = "transcript:m1";

fn transcript(since: Option<&str>) -> Conn {
    let query = since.map(|s| format!("since={s}"));
    let mut conn = Conn::new("/api/v1/ws/transcript/m1", query.as_deref(), "sub-1");
    conn.credentials.authorization = vec![format!("Bearer {}", token("subscribe", &["m1"]))];
    conn
}

fn segment(i: u64) -> Value {
    json!({"meeting_id":"m1","source":"mic","text":format!("segment {i}"),"is_final":true,"start_ms":i*1000,"end_ms":i*1000+900})
}

fn offset(i: u64) -> String {
    format!("{}-0", 1_700_000_000_000 + i)
}

/// Appends segments `range` with offsets `offset(i)`.
fn append(fake: &mut Fake, range: std::ops::RangeInclusive<u64>) {
    for i in range {
        fake.append_segment(STREAM, &offset(i), &segment(i));
    }
}

fn hold() -> Event {
    Event::Text(
        Control::Hold {
            channel: STREAM.into(),
        }
        .to_text(),
    )
}

fn subscribe() -> Event {
    Event::Text(
        Control::Subscribe {
            channel: STREAM.into(),
        }
        .to_text(),
    )
}

fn release(after: &str) -> Event {
    Event::Text(
        Control::Release {
            channel: STREAM.into(),
            after: Some(after.into()),
        }
        .to_text(),
    )
}

/// The JSON of every non-control TEXT event.
fn messages(events: &[Event]) -> Vec<Value> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Text(t) if !t.starts_with("c:") => Some(serde_json::from_str(t).unwrap()),
            _ => None,
        })
        .collect()
}

fn offsets(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m["offset"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn history_after_since_goes_out_oldest_first_then_the_hold_is_released() {
    let settings = redis();
    let mut fake = Fake::default();
    append(&mut fake, 1..=5);
    let mut conn = transcript(Some(&offset(2)));

    let reply = conn.send(&settings, &mut fake, vec![Event::Open]);
    assert_eq!(reply.events, vec![Event::Open, hold(), subscribe()]);
    assert_eq!(conn.meta["followup"], format!("replay:{}", offset(2)));
    assert!(
        fake.history_reads.is_empty(),
        "nothing is read before the subscription is effective"
    );

    // The relay's follow-up, once the subscription is effective: no events.
    let reply = conn.at(5).send(&settings, &mut fake, vec![]);
    let sent = messages(&reply.events);
    assert_eq!(offsets(&sent), [offset(3), offset(4), offset(5)]);
    assert_eq!(sent[0]["type"], "transcript");
    assert_eq!(sent[0]["text"], "segment 3");
    assert_eq!(sent[0]["is_final"], true);
    assert_eq!(reply.events.last(), Some(&release(&offset(5))));
    assert_eq!(
        fake.history_reads,
        [(STREAM.to_owned(), offset(2), MAX_REPLAY_SEGMENTS + 1)]
    );
    assert_eq!(conn.meta["followup"], "none");

    // Later requests replay nothing again.
    let reply = conn
        .at(10)
        .send(&settings, &mut fake, vec![text(r#"{"type":"keepalive"}"#)]);
    assert!(reply.events.is_empty());
    assert_eq!(fake.history_reads.len(), 1);
}

#[test]
fn nothing_after_since_releases_at_since() {
    let settings = redis();
    for with_stream in [false, true] {
        let mut fake = Fake::default();
        if with_stream {
            append(&mut fake, 1..=3);
        }
        let mut conn = transcript(Some(&offset(3)));
        conn.send(&settings, &mut fake, vec![Event::Open]);
        let reply = conn.at(5).send(&settings, &mut fake, vec![]);
        assert_eq!(
            reply.events,
            vec![release(&offset(3))],
            "stream: {with_stream}"
        );
    }
}

/// The relay's hold/release as `crates/relay/src/session.rs` applies it: items published
/// while held are buffered; on release those with an id at or below `after` are dropped.
#[test]
fn the_seam_between_history_and_live_has_no_gap_and_no_duplicate() {
    let settings = redis();
    let mut fake = Fake::default();
    append(&mut fake, 1..=3);
    let mut conn = transcript(Some(&offset(1)));
    conn.send(&settings, &mut fake, vec![Event::Open]);

    // Published before the subscription took effect: the relay never delivers these live,
    // but they are in the stream.
    append(&mut fake, 4..=4);
    // Appended and published after the subscription took effect, before the replay reads:
    // held by the relay and in the stream.
    append(&mut fake, 5..=6);
    let mut held: Vec<(Option<String>, Value)> = (5..=6)
        .map(|i| {
            (
                Some(offset(i)),
                json!({"type":"transcript","offset":offset(i)}),
            )
        })
        .collect();
    // An interim segment: live only, no id.
    held.push((None, json!({"type":"transcript","is_final":false})));

    let reply = conn.at(5).send(&settings, &mut fake, vec![]);

    // Appended after the read: held too (published after the subscription).
    append(&mut fake, 7..=8);
    held.extend((7..=8).map(|i| {
        (
            Some(offset(i)),
            json!({"type":"transcript","offset":offset(i)}),
        )
    }));

    let Some(Event::Text(last)) = reply.events.last() else {
        panic!("no release")
    };
    let Some(Ok(Control::Release {
        after: Some(after), ..
    })) = Control::parse(last)
    else {
        panic!("last event is not a release: {last}")
    };
    let mut client: Vec<Value> = messages(&reply.events);
    client.extend(
        held.into_iter()
            .filter(|(id, _)| id.as_deref().is_none_or(|id| id_after(id, &after)))
            .map(|(_, m)| m),
    );
    let finals: Vec<String> = client
        .iter()
        .filter_map(|m| m["offset"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        finals,
        (2..=8).map(offset).collect::<Vec<_>>(),
        "every final once, in order"
    );
    assert_eq!(
        client.iter().filter(|m| m["is_final"] == false).count(),
        1,
        "the interim passes"
    );
}

#[test]
fn trimmed_history_is_reported_before_the_replay() {
    let settings = redis();
    let mut fake = Fake::default();
    append(&mut fake, 1..=5);
    fake.trim_segments(STREAM, 2);

    let mut conn = transcript(Some(&offset(1)));
    conn.send(&settings, &mut fake, vec![Event::Open]);
    let reply = conn.at(5).send(&settings, &mut fake, vec![]);
    let sent = messages(&reply.events);
    assert_eq!(
        sent[0],
        json!({"type":"history_truncated","since":offset(1),"first_offset":offset(4)})
    );
    assert_eq!(offsets(&sent[1..]), [offset(4), offset(5)]);
    assert_eq!(reply.events.last(), Some(&release(&offset(5))));

    // Asking for everything kept, of a trimmed stream: the start is gone.
    let mut conn = transcript(Some("0-0"));
    conn.send(&settings, &mut fake, vec![Event::Open]);
    let sent = messages(&conn.at(5).send(&settings, &mut fake, vec![]).events);
    assert_eq!(sent[0]["type"], "history_truncated");

    // Resuming at the newest trimmed entry misses nothing, but Redis does not record which
    // id that was: the report errs on the side of a warning.
    let mut conn = transcript(Some(&offset(3)));
    conn.send(&settings, &mut fake, vec![Event::Open]);
    let sent = messages(&conn.at(5).send(&settings, &mut fake, vec![]).events);
    assert_eq!(sent[0]["type"], "history_truncated");
    assert_eq!(offsets(&sent[1..]), [offset(4), offset(5)]);

    // Resuming at a retained entry: no report.
    let mut conn = transcript(Some(&offset(4)));
    conn.send(&settings, &mut fake, vec![Event::Open]);
    let sent = messages(&conn.at(5).send(&settings, &mut fake, vec![]).events);
    assert_eq!(offsets(&sent), [offset(5)]);
}

#[test]
fn an_entry_deleted_after_since_is_reported_exactly() {
    let settings = redis();
    let mut fake = Fake::default();
    append(&mut fake, 1..=5);
    fake.delete_segment(STREAM, &offset(3));

    let mut conn = transcript(Some(&offset(1)));
    conn.send(&settings, &mut fake, vec![Event::Open]);
    let sent = messages(&conn.at(5).send(&settings, &mut fake, vec![]).events);
    assert_eq!(
        sent[0],
        json!({"type":"history_truncated","since":offset(1),"first_offset":offset(2)})
    );
    assert_eq!(offsets(&sent[1..]), [offset(2), offset(4), offset(5)]);

    let mut conn = transcript(Some(&offset(3)));
    conn.send(&settings, &mut fake, vec![Event::Open]);
    let sent = messages(&conn.at(5).send(&settings, &mut fake, vec![]).events);
    assert_eq!(
        offsets(&sent),
        [offset(4), offset(5)],
        "nothing after 3 is missing"
    );
}

#[test]
fn before_redis_7_truncation_is_judged_by_the_first_retained_entry() {
    let settings = redis();
    let mut fake = Fake::default();
    append(&mut fake, 3..=4);
    fake.transcripts.get_mut(STREAM).unwrap().redis6 = true;
    let mut conn = transcript(Some(&offset(1)));
    conn.send(&settings, &mut fake, vec![Event::Open]);
    let sent = messages(&conn.at(5).send(&settings, &mut fake, vec![]).events);
    assert_eq!(sent[0]["type"], "history_truncated");
    assert_eq!(sent[0]["first_offset"], offset(3));

    let mut conn = transcript(Some("0-0"));
    conn.send(&settings, &mut fake, vec![Event::Open]);
    let sent = messages(&conn.at(5).send(&settings, &mut fake, vec![]).events);
    assert_eq!(
        offsets(&sent),
        [offset(3), offset(4)],
        "0-0 asks for whatever is kept"
    );
}

#[test]
fn a_replay_is_bounded_and_says_what_it_left_out() {
    let settings = redis();
    let mut fake = Fake::default();
    let total = MAX_REPLAY_SEGMENTS as u64 + 5;
    append(&mut fake, 1..=total);
    let mut conn = transcript(Some("0-0"));
    conn.send(&settings, &mut fake, vec![Event::Open]);
    let reply = conn.at(5).send(&settings, &mut fake, vec![]);
    let sent = messages(&reply.events);
    assert_eq!(sent.len(), MAX_REPLAY_SEGMENTS + 1);
    assert_eq!(
        sent[0],
        json!({"type":"history_truncated","since":"0-0","first_offset":offset(6)})
    );
    assert_eq!(sent[1]["offset"], offset(6), "the newest are kept");
    assert_eq!(sent[MAX_REPLAY_SEGMENTS]["offset"], offset(total));
    assert_eq!(reply.events.last(), Some(&release(&offset(total))));
}

#[test]
fn an_invalid_since_is_a_bad_request() {
    for since in ["abc", "12", "1-", "1-99999999999999999999999", "-1-0"] {
        let mut fake = Fake::default();
        let mut conn = transcript(Some(since));
        let reply = conn.send(&redis(), &mut fake, vec![Event::Open]);
        assert_eq!(
            reply.events,
            vec![Event::Open, close(1002, "bad request: invalid since")],
            "{since}"
        );
        assert_eq!(conn.state(), "closed");
        assert!(conn
            .at(5)
            .send(&redis(), &mut fake, vec![])
            .events
            .is_empty());
        assert!(fake.history_reads.is_empty());
    }
}

#[test]
fn an_unreachable_redis_at_replay_closes_1011() {
    let mut fake = Fake::default();
    let mut conn = transcript(Some("0-0"));
    conn.send(&redis(), &mut fake, vec![Event::Open]);
    fake.redis_down = true;
    let reply = conn.at(5).send(&redis(), &mut fake, vec![]);
    assert_eq!(
        reply.events,
        vec![close(1011, "transcript history unavailable")]
    );
    assert_eq!(conn.state(), "closed");
}

#[test]
fn without_since_or_without_redis_the_route_is_live_only() {
    // No `since`: no hold, no read.
    let mut fake = Fake::default();
    let mut conn = transcript(None);
    let reply = conn.send(&redis(), &mut fake, vec![Event::Open]);
    assert_eq!(reply.events, vec![Event::Open, subscribe()]);
    assert!(conn
        .at(5)
        .send(&redis(), &mut fake, vec![])
        .events
        .is_empty());
    assert!(fake.history_reads.is_empty());

    // `since` but no Redis configured: live only, and the log says so.
    let no_redis = settings(&[]);
    let mut fake = Fake::default();
    let mut conn = transcript(Some("0-0"));
    let reply = conn.send(&no_redis, &mut fake, vec![Event::Open]);
    assert_eq!(reply.events, vec![Event::Open, subscribe()]);
    assert!(conn
        .at(5)
        .send(&no_redis, &mut fake, vec![])
        .events
        .is_empty());
    assert!(fake.history_reads.is_empty());
    assert!(fake
        .logs
        .iter()
        .any(|l| l["level"] == "warn" && l["msg"].as_str().unwrap().contains("live only")));
}

#[test]
fn a_client_gone_before_the_follow_up_costs_no_read() {
    let mut fake = Fake::default();
    append(&mut fake, 1..=2);
    let mut conn = transcript(Some("0-0"));
    conn.send(&redis(), &mut fake, vec![Event::Open]);
    let reply = conn
        .at(5)
        .send(&redis(), &mut fake, vec![Event::Disconnect]);
    assert!(reply.events.is_empty());
    assert!(fake.history_reads.is_empty());
}

#[test]
fn unreadable_entries_are_skipped_and_logged() {
    let mut fake = Fake::default();
    append(&mut fake, 1..=1);
    fake.transcripts
        .get_mut(STREAM)
        .unwrap()
        .entries
        .push((offset(2), Some(b"not json".to_vec())));
    fake.transcripts
        .get_mut(STREAM)
        .unwrap()
        .entries
        .push((offset(3), None));
    append(&mut fake, 4..=4);
    let mut conn = transcript(Some("0-0"));
    conn.send(&redis(), &mut fake, vec![Event::Open]);
    let reply = conn.at(5).send(&redis(), &mut fake, vec![]);
    assert_eq!(offsets(&messages(&reply.events)), [offset(1), offset(4)]);
    assert_eq!(reply.events.last(), Some(&release(&offset(4))));
    let warning = fake
        .logs
        .iter()
        .find(|l| l["msg"] == "unreadable transcript entries skipped")
        .unwrap();
    assert_eq!(warning["offsets"], json!([offset(2), offset(3)]));
}

#[test]
fn the_scripts_flat_reply_parses() {
    let b = |s: &str| Flat::Bytes(s.as_bytes().to_vec());
    let parsed = history::parse_reply(vec![
        b("3-0"),
        b("4-0"),
        Flat::Int(3),
        b("5-0"),
        b(r#"{"a":1}"#),
        b("4-0"),
        Flat::Nil,
    ])
    .unwrap();
    assert_eq!(
        parsed,
        History {
            entries: vec![
                ("5-0".into(), Some(br#"{"a":1}"#.to_vec())),
                ("4-0".into(), None)
            ],
            max_deleted: Some("3-0".into()),
            first: Some("4-0".into()),
            removed: Some(3),
        }
    );
    let empty = history::parse_reply(vec![Flat::Nil, Flat::Nil, Flat::Nil]).unwrap();
    assert_eq!(empty, History::default());
    assert!(history::parse_reply(vec![Flat::Nil, Flat::Nil]).is_err());
    assert!(history::parse_reply(vec![Flat::Nil, Flat::Nil, Flat::Nil, b("1-0")]).is_err());
    assert!(history::parse_reply(vec![Flat::Int(1), Flat::Nil, Flat::Nil]).is_err());
    assert!(history::parse_reply(vec![Flat::Nil, Flat::Nil, Flat::Int(-1)]).is_err());
}

#[test]
fn since_must_be_a_stream_id_redis_takes() {
    let now = 1_700_000_000_000;
    assert!(history::valid_since("0-0", now));
    assert!(history::valid_since(&format!("{now}-{}", u64::MAX), now));
    assert!(history::valid_since(
        &format!("{}-0", now + history::SINCE_CLOCK_LEEWAY_MS),
        now
    ));
    // From the future: never issued, and live segments would be held back until then.
    assert!(!history::valid_since(
        &format!("{}-0", now + history::SINCE_CLOCK_LEEWAY_MS + 1),
        now
    ));
    // The largest id: Redis can name nothing after it.
    assert!(!history::valid_since(
        &format!("{}-{}", u64::MAX, u64::MAX),
        now
    ));
    assert!(!history::valid_since(&format!("{}0-0", u64::MAX), now));
    assert!(!history::valid_since("1-x", now));
}

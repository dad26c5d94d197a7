//! `/ws/meetings/{id}`: the snapshot on subscribe, behind the relay's hold.

use earshot_protocol::grip::Control;
use earshot_protocol::meeting::{Presence, PresenceEntry};
use earshot_protocol::{Event, Source};
use earshot_ws_session::talk::{self, TalkChange};
use serde_json::{json, Value};

use super::fake::Fake;
use super::{close, redis, Conn};
use earshot_ws_session::testing::T0;

const CHANNEL: &str = "meeting:m1";

fn snapshot_of(events: &[Event]) -> Value {
    let [Event::Text(snapshot), Event::Text(release)] = events else {
        panic!("expected the snapshot and the release: {events:?}")
    };
    assert_eq!(
        Control::parse(release).unwrap().unwrap(),
        Control::Release {
            channel: CHANNEL.into(),
            after: None
        }
    );
    serde_json::from_str(snapshot).unwrap()
}

#[test]
fn a_new_subscriber_gets_the_meeting_as_it_stands_first() {
    let settings = redis();
    let mut fake = Fake::default();
    // A mic streaming since T0 (the presence record ingest keeps), a transcript segment on
    // record.
    let presence: Presence = [(
        Source::Mic,
        PresenceEntry {
            connection_id: "c1".into(),
            since_ms: T0,
        },
    )]
    .into_iter()
    .collect();
    fake.kv.insert(
        "meeting:m1:presence".into(),
        serde_json::to_vec(&presence).unwrap(),
    );
    fake.kv.insert(
        "meeting:m1:state".into(),
        json!({"last_transcript_offset":"1700000000123-0","final_segments":4,"updated_ms":T0})
            .to_string()
            .into_bytes(),
    );

    let mut watcher = Conn::subscriber("/api/v1/ws/meetings/m1");
    let reply = watcher.at(50).send(&settings, &mut fake, vec![Event::Open]);
    assert_eq!(
        reply.events,
        vec![
            Event::Open,
            Event::Text(
                Control::Hold {
                    channel: CHANNEL.into()
                }
                .to_text()
            ),
            Event::Text(
                Control::Subscribe {
                    channel: CHANNEL.into()
                }
                .to_text()
            ),
        ]
    );
    assert_eq!(watcher.meta["followup"], "snapshot");

    let reply = watcher.at(60).send(&settings, &mut fake, vec![]);
    assert_eq!(
        snapshot_of(&reply.events),
        json!({
            "type": "snapshot",
            "meeting_id": "m1",
            "sources": [{"source": "mic", "connection_id": "c1", "since_ms": T0}],
            "last_transcript_offset": "1700000000123-0",
            "talk": null,
        })
    );
    assert_eq!(watcher.meta["followup"], "none");
    assert!(
        watcher
            .at(70)
            .send(&settings, &mut fake, vec![])
            .events
            .is_empty(),
        "the snapshot goes out once"
    );
}

#[test]
fn an_empty_meeting_has_an_empty_snapshot() {
    let mut fake = Fake::default();
    let mut watcher = Conn::subscriber("/api/v1/ws/meetings/m1");
    watcher.send(&redis(), &mut fake, vec![Event::Open]);
    // The client's keepalive may ride on the follow-up: the snapshot still comes first.
    let reply = watcher.at(5).send(
        &redis(),
        &mut fake,
        vec![super::text(r#"{"type":"keepalive"}"#)],
    );
    assert_eq!(
        snapshot_of(&reply.events),
        json!({"type":"snapshot","meeting_id":"m1","sources":[],"last_transcript_offset":null,"talk":null})
    );
}

#[test]
fn an_unreadable_store_closes_1011_rather_than_sending_an_empty_snapshot() {
    let mut fake = Fake::default();
    let mut watcher = Conn::subscriber("/api/v1/ws/meetings/m1");
    watcher.send(&redis(), &mut fake, vec![Event::Open]);
    fake.kv_down = true;
    let reply = watcher.at(5).send(&redis(), &mut fake, vec![]);
    assert_eq!(reply.events, vec![close(1011, "meeting state unavailable")]);
}

#[test]
fn a_later_subscriber_sees_the_talk_so_far_in_its_snapshot() {
    let settings = redis();
    let mut fake = Fake::default();
    // What ingest recorded for a mic that spoke twice for a second, from T0 + 20 ms.
    let mut record = None;
    for change in [
        TalkChange::SessionStarted {
            source: Source::Mic,
            at_ms: T0 + 20,
        },
        TalkChange::SpeechEnded {
            source: Source::Mic,
            start_ms: T0 + 20,
            end_ms: T0 + 1_020,
        },
        TalkChange::SpeechEnded {
            source: Source::Mic,
            start_ms: T0 + 2_020,
            end_ms: T0 + 3_020,
        },
    ] {
        record = Some(talk::apply(record.as_deref(), change));
    }
    let key = talk::talk_key(&earshot_protocol::MeetingId::parse("m1").unwrap());
    fake.kv.insert(key, record.unwrap());

    let mut watcher = Conn::subscriber("/api/v1/ws/meetings/m1");
    watcher
        .at(5_000)
        .send(&settings, &mut fake, vec![Event::Open]);
    let reply = watcher.at(5_010).send(&settings, &mut fake, vec![]);
    let snapshot = snapshot_of(&reply.events);
    assert_eq!(snapshot["sources"], json!([]));
    let talk = &snapshot["talk"];
    assert_eq!(talk["talk_ms"]["mic"], 2_000, "{talk}");
    assert_eq!(talk["wall_ms"], T0 + 5_010, "up to now");
    assert_eq!(talk["window_ms"], 5_010 - 20);
}

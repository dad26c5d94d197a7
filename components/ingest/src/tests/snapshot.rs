//! `/ws/meetings/{id}`: the snapshot on subscribe, behind the relay's hold.

use earshot_protocol::grip::Control;
use earshot_protocol::Event;
use serde_json::{json, Value};

use super::fake::Fake;
use super::{close, redis, streaming, Conn, T0};

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
    // A mic streaming since T0, a transcript segment on record.
    let _mic = streaming(&mut fake, &settings);
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

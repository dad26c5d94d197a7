//! The session announcement to the transcription workers: `open` at the handshake (before
//! the ack, so no frame precedes it), `close` at the stream's end whatever ends it, nothing
//! for a connection that never completed a handshake.

use earshot_protocol::ingest::ServerMessage;
use earshot_protocol::Event;
use serde_json::Value;

use super::fake::Fake;
use super::{close, redis, settings, streaming, text, Conn, HANDSHAKE};

/// The handshake ack's session id in `events`.
fn acked_session(events: &[Event]) -> String {
    events
        .iter()
        .find_map(|e| match e {
            Event::Text(t) => match serde_json::from_str::<Value>(t).ok()? {
                v if v["type"] == "handshake_ack" => Some(v["session_id"].as_str()?.to_owned()),
                _ => None,
            },
            _ => None,
        })
        .expect("a handshake_ack")
}

#[test]
fn a_session_is_announced_open_at_the_handshake_and_closed_at_the_end() {
    let settings = redis();
    let mut fake = Fake::default();
    let mut conn = Conn::ingest("c1");
    conn.send(&settings, &mut fake, vec![Event::Open]);
    assert!(fake.announced.is_empty(), "nothing before the handshake");
    let reply = conn
        .at(10)
        .send(&settings, &mut fake, vec![text(HANDSHAKE)]);
    let session = acked_session(&reply.events);
    let keys = [
        "earshot:asr:active".to_owned(),
        "earshot:asr:open:m1:mic".to_owned(),
        "earshot:asr:sessions".to_owned(),
    ];
    let open = |event: &str| {
        [
            "m1:mic".to_owned(),
            session.clone(),
            event.to_owned(),
            "10000".to_owned(),
            "m1".to_owned(),
            "mic".to_owned(),
        ]
    };
    assert_eq!(fake.announced, vec![(keys.clone(), open("open"))]);

    conn.at(20)
        .send(&settings, &mut fake, vec![Event::Binary(vec![0; 640])]);
    assert_eq!(fake.announced.len(), 1, "frames announce nothing");
    conn.at(30).send(
        &settings,
        &mut fake,
        vec![text(r#"{"type":"close_stream"}"#)],
    );
    assert_eq!(
        fake.announced,
        vec![(keys.clone(), open("open")), (keys, open("close"))]
    );
}

#[test]
fn every_end_of_a_handshaken_stream_announces_close() {
    let settings = settings(&[("redis_url", "redis://r:6379"), ("idle_timeout_ms", "3000")]);
    let ends: [(u64, Vec<Event>); 3] = [
        (20, vec![Event::Disconnect]),
        (
            20,
            vec![Event::Close {
                code: Some(1000),
                reason: "bye".into(),
            }],
        ),
        (5_000, vec![]),
    ];
    for (at, events) in ends {
        let mut fake = Fake::default();
        let mut conn = streaming(&mut fake, &settings);
        conn.at(at).send(&settings, &mut fake, events.clone());
        assert_eq!(conn.state(), "closed", "{events:?}");
        let kinds: Vec<&str> = fake.announced.iter().map(|(_, a)| a[2].as_str()).collect();
        assert_eq!(kinds, ["open", "close"], "{events:?}");
        assert_eq!(
            fake.announced[0].1[1], fake.announced[1].1[1],
            "one session id"
        );
    }
}

#[test]
fn connections_without_a_handshake_or_redis_announce_nothing() {
    let mut fake = Fake::default();
    let mut conn = Conn::ingest("c1");
    conn.send(&redis(), &mut fake, vec![Event::Open]);
    conn.at(10).send(
        &redis(),
        &mut fake,
        vec![text(r#"{"type":"close_stream"}"#)],
    );
    assert!(fake.announced.is_empty());

    let no_redis = settings(&[]);
    let mut fake = Fake::default();
    let mut conn = streaming(&mut fake, &no_redis);
    conn.at(20).send(
        &no_redis,
        &mut fake,
        vec![text(r#"{"type":"close_stream"}"#)],
    );
    assert!(
        fake.announced.is_empty(),
        "no audio store, nothing to transcribe"
    );
}

#[test]
fn a_failed_open_announcement_refuses_the_stream_and_a_failed_close_is_logged() {
    let settings = redis();
    let mut fake = Fake {
        announce_down: true,
        ..Fake::default()
    };
    let mut conn = Conn::ingest("c1");
    conn.send(&settings, &mut fake, vec![Event::Open]);
    let reply = conn
        .at(10)
        .send(&settings, &mut fake, vec![text(HANDSHAKE)]);
    assert!(
        !reply
            .events
            .iter()
            .any(|e| matches!(e, Event::Text(t) if t.contains("handshake_ack"))),
        "no ack for a stream no worker would hear"
    );
    assert_eq!(
        reply.events.last(),
        Some(&close(1011, "audio store unavailable"))
    );

    let mut fake = Fake::default();
    let mut conn = streaming(&mut fake, &settings);
    fake.announce_down = true;
    let reply = conn.at(20).send(
        &settings,
        &mut fake,
        vec![text(r#"{"type":"close_stream"}"#)],
    );
    let closed = ServerMessage::Closed {
        frames: 0,
        bytes: 0,
    };
    assert!(reply.events.contains(&Event::Text(closed.to_json())));
    assert_eq!(reply.events.last(), Some(&close(1000, "stream closed")));
    assert!(fake
        .logs
        .iter()
        .any(|l| l["level"] == "error" && l["msg"] == "session announcement failed"));
}

//! The ingest route driven the way the relay drives it: each request carries the `Meta-*`
//! headers the previous reply set, over fake effects and a controlled clock.

mod analytics;
mod announce;
mod fake;
mod meeting_life;

use earshot_protocol::ingest::ServerMessage;
use earshot_protocol::limits::{AUDIO_STREAM_MAXLEN, MAX_FRAME_BYTES};
use earshot_protocol::meeting::Presence;
use earshot_protocol::{Event, Source};
use earshot_ws_session::meta::Meta;
use earshot_ws_session::session::Reply;
use earshot_ws_session::testing::{self, close, header, text, token, HANDSHAKE, T0};
use serde_json::{json, Value};

use crate::ingest::{self, Ingest};
use crate::presence::{self, Change};
use crate::ratelimit::{slide, Admission};
use crate::settings::{RateLimit, Settings};
use crate::state::StreamState;
use fake::Fake;

/// A connection to the ingest component, driven like the relay.
type Conn = testing::Conn<Ingest<Fake>>;

fn settings(vars: &[(&'static str, &str)]) -> Settings {
    Settings::from_lookup(testing::lookup(vars)).unwrap()
}

fn server(message: ServerMessage) -> Event {
    Event::Text(message.to_json())
}

fn presence(fake: &Fake) -> Presence {
    serde_json::from_slice(&fake.kv["meeting:m1:presence"]).unwrap()
}

/// Opens and handshakes an ingest connection with Redis configured.
fn streaming(fake: &mut Fake, settings: &Settings) -> Conn {
    let mut conn = Conn::ingest("c1");
    conn.send(settings, fake, vec![Event::Open]);
    conn.at(10).send(settings, fake, vec![text(HANDSHAKE)]);
    conn
}

fn redis() -> Settings {
    settings(&[("redis_url", "redis://127.0.0.1:6379")])
}

#[test]
fn an_ingest_session_from_open_to_close_stream() {
    let settings = redis();
    let mut fake = Fake::default();
    let mut conn = Conn::ingest("c1");

    let reply = conn.send(&settings, &mut fake, vec![Event::Open]);
    assert_eq!(reply.events, vec![Event::Open]);
    assert_eq!(
        header(&reply, "sec-websocket-extensions"),
        Some(r#"grip; message-prefix="""#)
    );
    assert_eq!(header(&reply, "keep-alive-interval"), Some("1"));
    assert_eq!(conn.state(), "connected");
    assert_eq!(conn.meta["sub"], "agent%201");
    assert_eq!(presence(&fake)[&Source::Mic].connection_id, "c1");
    let (channel, item) = &fake.redis_published[0];
    assert_eq!(channel, "earshot:grip:meeting:m1");
    assert_eq!(item["channel"], "meeting:m1");
    let event: Value =
        serde_json::from_str(item["formats"]["ws-message"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(
        event,
        json!({"type":"source_connected","meeting_id":"m1","source":"mic","connection_id":"c1","at_ms":T0})
    );

    let reply = conn
        .at(100)
        .send(&settings, &mut fake, vec![text(HANDSHAKE)]);
    let session_id = "01".repeat(ingest::SESSION_ID_BYTES);
    let ack = ServerMessage::HandshakeAck {
        connection_id: "c1".into(),
        session_id: session_id.clone(),
        max_frame_bytes: MAX_FRAME_BYTES,
    };
    assert_eq!(reply.events, vec![server(ack)]);
    assert_eq!(conn.state(), "handshake_complete");

    let reply = conn.at(200).send(
        &settings,
        &mut fake,
        vec![Event::Binary(vec![1; 640]), Event::Binary(vec![2; 320])],
    );
    assert_eq!(
        reply.events,
        vec![server(ServerMessage::Ack {
            frames: 2,
            bytes: 960
        })]
    );
    assert_eq!(conn.state(), "pcm_streaming");
    let entries = &fake.streams["audio:m1:mic"];
    let fields = |i: usize| -> Vec<(String, Vec<u8>)> { entries[i].clone() };
    assert_eq!(
        fields(1),
        vec![
            ("seq".to_owned(), b"2".to_vec()),
            ("bytes".to_owned(), b"320".to_vec()),
            ("session".to_owned(), session_id.as_bytes().to_vec()),
            ("pcm".to_owned(), vec![2; 320]),
        ]
    );
    assert_eq!(fields(0)[0].1, b"1");
    assert_eq!(fake.xadd_maxlen, Some(AUDIO_STREAM_MAXLEN));

    let reply = conn.at(300).send(
        &settings,
        &mut fake,
        vec![text(r#"{"type":"close_stream"}"#)],
    );
    assert_eq!(
        reply.events,
        vec![
            server(ServerMessage::Closed {
                frames: 2,
                bytes: 960
            }),
            close(1000, "stream closed")
        ]
    );
    assert_eq!(header(&reply, "keep-alive-interval"), None);
    assert_eq!(conn.state(), "closed");
    assert!(presence(&fake).is_empty());
    let (_, item) = fake.redis_published.last().unwrap();
    let event: Value =
        serde_json::from_str(item["formats"]["ws-message"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(event["type"], "source_disconnected");
    assert_eq!(event["reason"], "close_stream");

    assert_eq!(
        testing::states(&fake.logs),
        [
            "connecting",
            "connected",
            "handshake_complete",
            "pcm_streaming",
            "cleanup_complete"
        ]
    );
    let tok = conn
        .query
        .as_deref()
        .unwrap()
        .split("token=")
        .nth(1)
        .unwrap()
        .to_owned();
    for line in &fake.logs {
        assert_eq!(line["component"], "ingest", "{line}");
        assert_eq!(line["meeting_id"], "m1", "{line}");
        assert_eq!(line["source"], "mic", "{line}");
        assert_eq!(line["connection_id"], "c1", "{line}");
        assert!(
            !line.to_string().contains(&tok),
            "a token reached the log: {line}"
        );
    }

    // The relay may still forward the client's close reply: nothing happens twice.
    let published = fake.redis_published.len();
    let reply = conn
        .at(400)
        .send(&settings, &mut fake, vec![close(1000, "")]);
    assert!(reply.events.is_empty());
    assert_eq!(fake.redis_published.len(), published);
}

#[test]
fn acks_are_paced_and_flushed_by_keep_alives() {
    let settings = redis();
    let mut fake = Fake::default();
    let mut conn = streaming(&mut fake, &settings);
    let frame = || Event::Binary(vec![0; 100]);

    let first = conn.at(1_000).send(&settings, &mut fake, vec![frame()]);
    assert_eq!(
        first.events,
        vec![server(ServerMessage::Ack {
            frames: 1,
            bytes: 100
        })],
        "the first ack is immediate"
    );
    let soon =
        conn.at(1_000 + ingest::ACK_MIN_INTERVAL_MS - 1)
            .send(&settings, &mut fake, vec![frame()]);
    assert!(
        soon.events.is_empty(),
        "too soon after the last ack: pending"
    );
    let keep_alive = conn.at(2_000).send(&settings, &mut fake, vec![]);
    assert_eq!(
        keep_alive.events,
        vec![server(ServerMessage::Ack {
            frames: 2,
            bytes: 200
        })]
    );
    let nothing_new = conn.at(3_000).send(&settings, &mut fake, vec![]);
    assert!(nothing_new.events.is_empty(), "no ack without new frames");
}

#[test]
fn auth_failures_refuse_the_open_with_1008() {
    let settings = redis();
    let cases: Vec<(Option<String>, &str)> = vec![
        (None, "auth failed: missing token"),
        (
            Some(token("subscribe", &["m1"])),
            "auth failed: scope not granted: ingest",
        ),
        (
            Some(token("ingest", &["m2"])),
            "auth failed: meeting not granted",
        ),
        (Some("not.a.jwt".into()), "auth failed: malformed token"),
    ];
    for (tok, reason) in cases {
        let mut fake = Fake::default();
        let query = match &tok {
            Some(t) => format!("source=mic&token={t}"),
            None => "source=mic".into(),
        };
        let mut conn = Conn::new("/api/v1/ws/ingest/meetings/m1", Some(&query), "c1");
        let reply = conn.send(&settings, &mut fake, vec![Event::Open]);
        assert_eq!(reply.events, vec![Event::Open, close(1008, reason)]);
        assert_eq!(conn.state(), "closed");
        assert!(
            fake.kv.is_empty() && fake.redis_zsets.is_empty(),
            "a refused connection leaves no trace"
        );
        assert!(fake.redis_published.is_empty());
        // Anything the relay still forwards is ignored.
        let later = conn.at(5).send(&settings, &mut fake, vec![text(HANDSHAKE)]);
        assert!(later.events.is_empty());
    }
}

#[test]
fn two_token_carriers_are_ambiguous() {
    let mut fake = Fake::default();
    let mut conn = Conn::ingest("c1");
    conn.credentials.authorization = vec![format!("Bearer {}", token("ingest", &["m1"]))];
    let reply = conn.send(&redis(), &mut fake, vec![Event::Open]);
    assert_eq!(reply.events[1], close(1008, "auth failed: ambiguous token"));
}

#[test]
fn revoked_tokens_are_refused_and_an_unreadable_list_fails_closed() {
    let settings = redis();
    let mut fake = Fake::default();
    let exp = T0 / 1000 + 3_600;
    fake.kv.insert(
        "revoked:jti-1".into(),
        json!({ "exp": exp }).to_string().into_bytes(),
    );
    let reply = Conn::ingest("c1").send(&settings, &mut fake, vec![Event::Open]);
    assert_eq!(
        reply.events,
        vec![Event::Open, close(1008, "auth failed: token revoked")]
    );

    let mut fake = Fake {
        kv_down: true,
        ..Fake::default()
    };
    let reply = Conn::ingest("c1").send(&settings, &mut fake, vec![Event::Open]);
    assert_eq!(
        reply.events,
        vec![Event::Open, close(1011, "token store unavailable")]
    );
}

#[test]
fn unusable_token_settings_are_the_backends_fault() {
    let settings = settings(&[("jwt_secret", "short")]);
    let reply = Conn::ingest("c1").send(&settings, &mut Fake::default(), vec![Event::Open]);
    assert_eq!(
        reply.events,
        vec![Event::Open, close(1011, "auth misconfigured")]
    );
}

fn open_n(
    settings: &Settings,
    fake: &mut Fake,
    ids: std::ops::Range<usize>,
    at: u64,
) -> Vec<Reply> {
    fake.redis_clock_ms = T0 + at;
    ids.map(|i| {
        Conn::ingest(&format!("c{i}"))
            .at(at)
            .send(settings, fake, vec![Event::Open])
    })
    .collect()
}

#[test]
fn the_sixth_connection_in_a_window_is_told_to_try_again_later() {
    for settings in [settings(&[]), redis()] {
        let mut fake = Fake {
            cas_races: 3,
            ..Fake::default()
        };
        let replies = open_n(&settings, &mut fake, 0..5, 0);
        assert!(replies.iter().all(|r| r.events == vec![Event::Open]));
        let sixth = open_n(&settings, &mut fake, 5..6, 9_999);
        assert_eq!(
            sixth[0].events,
            vec![Event::Open, close(1013, "Try again later")]
        );
        // The first admissions leave the window at exactly 10 s: room again.
        let later = open_n(&settings, &mut fake, 6..7, 10_000);
        assert_eq!(
            later[0].events,
            vec![Event::Open],
            "redis: {}",
            settings.has_redis()
        );
    }
}

#[test]
fn the_rate_limit_is_per_meeting_and_source() {
    let settings = settings(&[]);
    let mut fake = Fake::default();
    open_n(&settings, &mut fake, 0..5, 0);
    let query = format!("source=sys&token={}", token("ingest", &["m1"]));
    let mut sys = Conn::new("/api/v1/ws/ingest/meetings/m1", Some(&query), "s1");
    assert_eq!(
        sys.send(&settings, &mut fake, vec![Event::Open]).events,
        vec![Event::Open]
    );
}

#[test]
fn a_failing_redis_rate_limiter_refuses_with_1011() {
    let mut fake = Fake {
        redis_down: true,
        ..Fake::default()
    };
    let reply = Conn::ingest("c1").send(&redis(), &mut fake, vec![Event::Open]);
    assert_eq!(
        reply.events,
        vec![Event::Open, close(1011, "rate limiter unavailable")]
    );
}

#[test]
fn the_sliding_log_is_exact_and_idempotent() {
    let limit = RateLimit {
        count: 2,
        window_ms: 1_000,
    };
    let (a, log) = slide(None, "a", 100, limit);
    assert_eq!(a, Admission::Admitted);
    let (b, log) = slide(log.as_deref(), "b", 600, limit);
    assert_eq!(b, Admission::Admitted);
    assert_eq!(
        slide(log.as_deref(), "c", 1_099, limit),
        (Admission::Refused, None)
    );
    let (again, _) = slide(log.as_deref(), "a", 1_099, limit);
    assert_eq!(
        again,
        Admission::Admitted,
        "a retried OPEN is not counted twice"
    );
    let (c, log) = slide(log.as_deref(), "c", 1_100, limit);
    assert_eq!(c, Admission::Admitted, "a's admission left the window");
    let kept: Vec<(u64, String)> = serde_json::from_slice(&log.unwrap()).unwrap();
    assert_eq!(kept, vec![(600, "b".to_owned()), (1_100, "c".to_owned())]);
    assert_eq!(
        slide(Some(b"garbage"), "a", 0, limit).0,
        Admission::Admitted
    );
}

#[test]
fn protocol_violations_close_with_their_codes() {
    let settings = redis();
    let cases: Vec<(Vec<Event>, bool, Event)> = vec![
        (
            vec![Event::Binary(vec![0; 10])],
            false,
            close(1002, "binary before handshake"),
        ),
        (
            vec![Event::Binary(vec![0; MAX_FRAME_BYTES + 1])],
            true,
            close(1009, "frame too large"),
        ),
        (
            vec![text(HANDSHAKE)],
            true,
            close(1002, "duplicate handshake"),
        ),
        (
            vec![text("not json")],
            false,
            close(1002, "malformed message"),
        ),
        (
            vec![text(r#"{"type":"dance"}"#)],
            false,
            close(1002, "unknown message type"),
        ),
        (
            vec![text(
                r#"{"type":"handshake","protocol":1,"encoding":"opus","sample_rate":16000,"channels":1}"#,
            )],
            false,
            close(1003, "unsupported audio format: encoding"),
        ),
    ];
    for (events, handshaken, expected) in cases {
        let mut fake = Fake::default();
        let mut conn = Conn::ingest("c1");
        conn.send(&settings, &mut fake, vec![Event::Open]);
        if handshaken {
            conn.at(10)
                .send(&settings, &mut fake, vec![text(HANDSHAKE)]);
        }
        let reply = conn.at(20).send(&settings, &mut fake, events);
        assert_eq!(reply.events, vec![expected.clone()]);
        assert_eq!(conn.state(), "closed");
        assert!(presence(&fake).is_empty(), "{expected:?} clears presence");
        assert_eq!(
            testing::states(&fake.logs).last().map(String::as_str),
            Some("cleanup_complete")
        );
    }
}

#[test]
fn a_frame_maximal_in_size_is_accepted() {
    let settings = redis();
    let mut fake = Fake::default();
    let mut conn = streaming(&mut fake, &settings);
    let reply = conn.at(20).send(
        &settings,
        &mut fake,
        vec![Event::Binary(vec![0; MAX_FRAME_BYTES])],
    );
    assert_eq!(
        reply.events,
        vec![server(ServerMessage::Ack {
            frames: 1,
            bytes: MAX_FRAME_BYTES as u64
        })]
    );
}

#[test]
fn audio_without_redis_closes_1011() {
    let settings = settings(&[]);
    let mut fake = Fake::default();
    let mut conn = streaming(&mut fake, &settings);
    let reply = conn
        .at(20)
        .send(&settings, &mut fake, vec![Event::Binary(vec![0; 10])]);
    assert_eq!(reply.events, vec![close(1011, "audio store unavailable")]);
}

#[test]
fn a_failed_append_is_never_counted_and_what_was_stored_is_acked() {
    let settings = redis();
    let mut fake = Fake::default();
    let mut conn = streaming(&mut fake, &settings);
    fake.xadd_budget = Some(1);
    let reply = conn.at(20).send(
        &settings,
        &mut fake,
        vec![
            Event::Binary(vec![0; 10]),
            Event::Binary(vec![0; 20]),
            Event::Binary(vec![0; 30]),
        ],
    );
    assert_eq!(
        reply.events,
        vec![
            server(ServerMessage::Ack {
                frames: 1,
                bytes: 10
            }),
            close(1011, "audio store unavailable")
        ]
    );
    assert_eq!(
        (conn.meta["frames"].as_str(), conn.meta["bytes"].as_str()),
        ("1", "10")
    );
    assert_eq!(
        fake.streams["audio:m1:mic"].len(),
        1,
        "nothing after the failure is attempted"
    );
}

#[test]
fn no_handshake_in_time_closes_1002() {
    let settings = redis();
    let mut fake = Fake::default();
    let mut conn = Conn::ingest("c1");
    conn.send(&settings, &mut fake, vec![Event::Open]);
    let before = conn
        .at(4_999)
        .send(&settings, &mut fake, vec![text(r#"{"type":"keepalive"}"#)]);
    assert!(
        before.events.is_empty(),
        "keepalives do not stand in for the handshake, but the deadline is not yet due"
    );
    let late = conn
        .at(5_000)
        .send(&settings, &mut fake, vec![text(HANDSHAKE)]);
    assert_eq!(late.events, vec![close(1002, "handshake timeout")]);
    assert!(presence(&fake).is_empty());
}

#[test]
fn silence_closes_1000_idle_and_keepalives_prevent_it() {
    let settings = settings(&[("redis_url", "redis://r:6379"), ("idle_timeout_ms", "3000")]);
    let mut fake = Fake::default();
    let mut conn = streaming(&mut fake, &settings);
    conn.at(2_000)
        .send(&settings, &mut fake, vec![text(r#"{"type":"keepalive"}"#)]);
    assert!(conn
        .at(4_999)
        .send(&settings, &mut fake, vec![])
        .events
        .is_empty());
    let idle = conn.at(5_000).send(&settings, &mut fake, vec![]);
    assert_eq!(idle.events, vec![close(1000, "idle")]);
    let (_, item) = fake.redis_published.last().unwrap();
    assert!(
        item.to_string().contains(r#"\"reason\":\"idle\""#),
        "{item}"
    );
}

#[test]
fn client_close_is_echoed_and_disconnect_is_silent() {
    let settings = redis();
    for (code, echoed) in [
        (Some(4000), 4000),
        (None, 1000),
        (Some(1005), 1000),
        (Some(1001), 1001),
    ] {
        let mut fake = Fake::default();
        let mut conn = streaming(&mut fake, &settings);
        let reply = conn.at(20).send(
            &settings,
            &mut fake,
            vec![Event::Close {
                code,
                reason: "bye".into(),
            }],
        );
        assert_eq!(reply.events, vec![close(echoed, "client closed")]);
        assert!(presence(&fake).is_empty());
    }
    let mut fake = Fake::default();
    let mut conn = streaming(&mut fake, &settings);
    let reply = conn
        .at(20)
        .send(&settings, &mut fake, vec![Event::Disconnect]);
    assert!(reply.events.is_empty());
    assert_eq!(conn.state(), "closed");
    let (_, item) = fake.redis_published.last().unwrap();
    assert!(
        item.to_string().contains(r#"\"reason\":\"disconnected\""#),
        "{item}"
    );
}

#[test]
fn invalid_ids_are_refused_with_1002_before_auth() {
    for (path, query, reason) in [
        (
            "/api/v1/ws/ingest/meetings/a%20b",
            Some("source=mic"),
            "bad request: invalid meeting id",
        ),
        (
            "/api/v1/ws/ingest/meetings/m1",
            None,
            "bad request: missing source",
        ),
        (
            "/api/v1/ws/ingest/meetings/m1",
            Some("source=spk"),
            "bad request: invalid source",
        ),
    ] {
        let reply =
            Conn::new(path, query, "c1").send(&redis(), &mut Fake::default(), vec![Event::Open]);
        assert_eq!(
            reply.events,
            vec![Event::Open, close(1002, reason)],
            "{path}"
        );
    }
}

#[test]
fn requests_without_usable_state_close_1011() {
    let settings = redis();
    let reply = Conn::ingest("c1").send(&settings, &mut Fake::default(), vec![text(HANDSHAKE)]);
    assert_eq!(reply.events, vec![close(1011, "connection state lost")]);
    let reply = Conn::ingest("c1").send(&settings, &mut Fake::default(), vec![Event::Disconnect]);
    assert!(
        reply.events.is_empty(),
        "the end of a connection never accepted needs nothing"
    );

    let mut fake = Fake::default();
    let mut conn = streaming(&mut fake, &settings);
    conn.path = "/api/v1/ws/ingest/meetings/m2".into();
    let reply = conn.at(20).send(&settings, &mut fake, vec![]);
    assert_eq!(reply.events, vec![close(1011, "connection state mismatch")]);

    let mut conn = streaming(&mut fake, &settings);
    conn.meta.insert("frames".into(), "many".into());
    let reply = conn.at(20).send(&settings, &mut fake, vec![]);
    assert_eq!(reply.events, vec![close(1011, "connection state lost")]);
}

#[test]
fn presence_disconnects_only_their_own_entry() {
    let first = presence::apply(
        None,
        &Change::Connected {
            source: Source::Mic,
            connection_id: "a",
            since_ms: 1,
        },
    );
    let second = presence::apply(
        first.as_deref(),
        &Change::Connected {
            source: Source::Mic,
            connection_id: "b",
            since_ms: 2,
        },
    );
    let stale = presence::apply(
        second.as_deref(),
        &Change::Disconnected {
            source: Source::Mic,
            connection_id: "a",
        },
    );
    assert_eq!(
        stale, None,
        "a reconnect replaced the entry; the old connection's end leaves it"
    );
    let gone = presence::apply(
        second.as_deref(),
        &Change::Disconnected {
            source: Source::Mic,
            connection_id: "b",
        },
    );
    assert_eq!(gone.as_deref(), Some(&b"{}"[..]));
}

#[test]
fn publishing_prefers_the_grip_endpoint_and_warns_without_transport() {
    let settings_http = settings(&[
        ("grip_publish_url", "http://relay:5561/publish/"),
        ("redis_url", "redis://r:6379"),
    ]);
    let mut fake = Fake::default();
    Conn::ingest("c1").send(&settings_http, &mut fake, vec![Event::Open]);
    assert!(fake.redis_published.is_empty());
    let (url, body) = &fake.http_published[0];
    assert_eq!(url, "http://relay:5561/publish/");
    assert_eq!(body["items"][0]["channel"], "meeting:m1");
    assert!(body["items"][0]["formats"]["ws-message"]["content"]
        .as_str()
        .unwrap()
        .contains("source_connected"));

    let mut fake = Fake::default();
    Conn::ingest("c1").send(&settings(&[]), &mut fake, vec![Event::Open]);
    assert!(
        fake.logs
            .iter()
            .any(|l| l["level"] == "warn"
                && l["msg"].as_str().unwrap().starts_with("publish skipped"))
    );

    let mut fake = Fake::default();
    let mut conn = Conn::ingest("c1");
    conn.send(&redis(), &mut fake, vec![Event::Open]);
    fake.redis_down = true;
    let reply = conn.at(10).send(
        &redis(),
        &mut fake,
        vec![text(r#"{"type":"close_stream"}"#)],
    );
    assert_eq!(
        reply.events.last(),
        Some(&close(1000, "stream closed")),
        "a failed publish never fails the connection"
    );
}

#[test]
fn presence_failures_never_fail_the_stream() {
    let settings = redis();
    let mut fake = Fake::default();
    let mut conn = Conn::ingest("c1");
    conn.send(&settings, &mut fake, vec![Event::Open]);
    fake.kv_down = true;
    let reply = conn.at(10).send(
        &settings,
        &mut fake,
        vec![text(r#"{"type":"close_stream"}"#)],
    );
    assert_eq!(reply.events.last(), Some(&close(1000, "stream closed")));
    assert!(fake
        .logs
        .iter()
        .any(|l| l["level"] == "error" && l["msg"] == "presence update failed"));
}

#[test]
fn settings_default_and_validate() {
    let s = Settings::from_lookup(|_| Ok(None)).unwrap();
    assert_eq!((s.handshake_timeout_ms, s.idle_timeout_ms), (5_000, 10_000));
    assert_eq!(
        s.rate_limit,
        RateLimit {
            count: 5,
            window_ms: 10_000
        }
    );
    assert_eq!(s.conn.token.audience, "earshot");
    assert!(!s.has_redis());
    let bad =
        Settings::from_lookup(|name| Ok((name == "rate_limit_count").then(|| "0".to_owned())));
    assert!(bad.is_err());
    let weak =
        Settings::from_lookup(|name| Ok((name == "grip_sig_key").then(|| "changeme".to_owned())));
    assert!(weak.is_err(), "a guessable Grip-Sig key is refused");
    let unreadable = Settings::from_lookup(|_| Err("host says no".to_owned()));
    assert!(unreadable.is_err());
}

#[test]
fn spin_toml_gives_the_component_exactly_its_variables() {
    let manifest = include_str!("../../../../spin.toml");
    let table = manifest
        .split("[component.ingest.variables]")
        .nth(1)
        .expect("spin.toml has [component.ingest.variables]");
    let table = table.split("\n[").next().unwrap();
    let names = [
        "jwt_secret",
        "jwt_algorithm",
        "jwt_public_key",
        "jwt_audience",
        "redis_url",
        "grip_publish_url",
        "grip_sig_key",
        "handshake_timeout_ms",
        "idle_timeout_ms",
        "rate_limit_count",
        "rate_limit_window_ms",
        "meeting_end_grace_s",
        "audio_retention_s",
    ];
    for name in names {
        assert!(
            table.contains(&format!("{name} = \"{{{{ {name} }}}}\"")),
            "{name} missing from [component.ingest.variables]"
        );
        assert!(
            manifest.contains(&format!("\n{name} = {{")),
            "{name} missing from [variables]"
        );
    }
    let granted = table.lines().filter(|l| l.contains(" = ")).count();
    assert_eq!(granted, names.len(), "only what it reads:\n{table}");
}

#[test]
fn the_stream_state_round_trips_with_the_detector() {
    let settings = redis();
    let mut fake = Fake::default();
    let mut conn = streaming(&mut fake, &settings);
    conn.at(20)
        .send(&settings, &mut fake, vec![Event::Binary(vec![7; 640])]);
    for field in [
        "session",
        "frames",
        "bytes",
        "vad-format",
        "vad",
        "audio-start-ms",
    ] {
        assert!(conn.meta.contains_key(field), "{field}: {:?}", conn.meta);
    }
    assert!(
        !conn.meta.contains_key("followup"),
        "subscriber fields are the subscribe component's"
    );
    let lookup = conn.meta.clone();
    let meta: Meta<StreamState> =
        Meta::from_headers(|name| lookup.get(name.strip_prefix("meta-")?).map(String::as_str))
            .unwrap()
            .unwrap();
    assert_eq!((meta.ext.frames, meta.ext.bytes), (1, 640));
    assert_eq!(meta.source, Some(Source::Mic));
    assert_eq!(
        meta.to_headers().len(),
        conn.meta.len(),
        "nothing lost or added"
    );

    conn.meta.remove("vad");
    let reply = conn.at(30).send(&settings, &mut fake, vec![]);
    assert_eq!(
        reply.events,
        vec![close(1011, "connection state lost")],
        "a detector format without its state is lost state"
    );
}

#[test]
fn only_the_ingest_route_is_this_components() {
    use earshot_protocol::WsRoute;
    use earshot_ws_session::session::Component;
    let route = |path: &str, query: Option<&str>| WsRoute::parse(path, query).unwrap();
    assert!(Ingest::<Fake>::serves(&route(
        "/api/v1/ws/ingest/meetings/m1",
        Some("source=sys")
    )));
    assert!(!Ingest::<Fake>::serves(&route(
        "/api/v1/ws/meetings/m1",
        None
    )));
    assert!(!Ingest::<Fake>::serves(&route(
        "/api/v1/ws/transcript/m1",
        None
    )));
}

//! The subscriber routes driven the way the relay drives them: each request carries the
//! `Meta-*` headers the previous reply set, over fake effects and a controlled clock.

mod fake;
mod history;
mod snapshot;

use earshot_protocol::grip::Control;
use earshot_protocol::Event;
use earshot_ws_session::settings::ConnSettings;
use earshot_ws_session::testing::{self, close, header, text, token};

use crate::subscriber::Subscribe;
use fake::Fake;

/// A connection to the subscribe component, driven like the relay.
type Conn = testing::Conn<Subscribe<Fake>>;

fn settings(vars: &[(&'static str, &str)]) -> ConnSettings {
    ConnSettings::from_lookup(testing::lookup(vars)).unwrap()
}

fn redis() -> ConnSettings {
    settings(&[("redis_url", "redis://127.0.0.1:6379")])
}

#[test]
fn a_subprotocol_is_selected_whether_accepted_or_refused() {
    let settings = redis();
    let mut conn = Conn::new("/api/v1/ws/meetings/m1", None, "s1");
    conn.credentials.protocols = Some(format!(
        "earshot.v1, bearer.{}",
        token("subscribe", &["m1"])
    ));
    let reply = conn.send(&settings, &mut Fake::default(), vec![Event::Open]);
    assert_eq!(header(&reply, "sec-websocket-protocol"), Some("earshot.v1"));
    assert_eq!(
        reply.events.len(),
        3,
        "accepted: OPEN, the hold and the subscription"
    );

    let mut conn = Conn::new("/api/v1/ws/meetings/m1", None, "s2");
    conn.credentials.protocols = Some("bearer.garbage".into());
    let reply = conn.send(&settings, &mut Fake::default(), vec![Event::Open]);
    assert_eq!(
        header(&reply, "sec-websocket-protocol"),
        Some("bearer.garbage")
    );
    assert_eq!(
        reply.events,
        vec![Event::Open, close(1008, "auth failed: malformed token")]
    );
}

#[test]
fn subscribers_are_subscribed_to_their_channel() {
    let settings = redis();
    // The meeting route holds its channel until the snapshot went out; the transcript
    // route without `since` is live only.
    for (path, channel, held) in [
        ("/api/v1/ws/meetings/m1", "meeting:m1", true),
        ("/api/v1/ws/transcript/m1", "transcript:m1", false),
    ] {
        let mut fake = Fake::default();
        let mut conn = Conn::subscriber(path);
        let reply = conn.send(&settings, &mut fake, vec![Event::Open]);
        let hold = Control::Hold {
            channel: channel.into(),
        }
        .to_text();
        let subscribe = Control::Subscribe {
            channel: channel.into(),
        }
        .to_text();
        let expected = if held {
            vec![Event::Open, Event::Text(hold), Event::Text(subscribe)]
        } else {
            vec![Event::Open, Event::Text(subscribe)]
        };
        assert_eq!(reply.events, expected);
        assert_eq!(
            header(&reply, "sec-websocket-extensions"),
            Some(r#"grip; message-prefix="""#)
        );
        assert_eq!(header(&reply, "keep-alive-interval"), None);
        assert_eq!(fake.states(), ["connecting", "connected"]);
        assert!(fake.kv.is_empty(), "subscribers have no presence");
        if held {
            let followup = conn.at(5).send(&settings, &mut fake, vec![]);
            assert_eq!(followup.events.len(), 2, "the snapshot and the release");
            assert!(fake.kv.is_empty(), "the snapshot only reads");
        }

        let keepalive =
            conn.at(10)
                .send(&settings, &mut fake, vec![text(r#"{"type":"keepalive"}"#)]);
        assert!(keepalive.events.is_empty());
        let chat = conn.at(20).send(&settings, &mut fake, vec![text("hello")]);
        assert_eq!(
            chat.events,
            vec![close(1003, "subscribers send no messages")]
        );
    }
    let mut fake = Fake::default();
    let mut conn = Conn::subscriber("/api/v1/ws/meetings/m1");
    conn.send(&settings, &mut fake, vec![Event::Open]);
    conn.at(5).send(&settings, &mut fake, vec![]);
    let reply = conn
        .at(10)
        .send(&settings, &mut fake, vec![Event::Binary(vec![1])]);
    assert_eq!(
        reply.events,
        vec![close(1003, "binary not accepted on subscriber routes")]
    );
}

#[test]
fn subscribers_need_the_subscribe_scope() {
    let mut conn = Conn::new("/api/v1/ws/transcript/m1", None, "s1");
    conn.credentials.authorization = vec![format!("Bearer {}", token("ingest", &["m1"]))];
    let reply = conn.send(&redis(), &mut Fake::default(), vec![Event::Open]);
    assert_eq!(
        reply.events,
        vec![
            Event::Open,
            close(1008, "auth failed: scope not granted: subscribe")
        ]
    );
}

#[test]
fn an_invalid_meeting_id_is_refused_with_1002_before_auth() {
    let reply = Conn::new("/api/v1/ws/meetings/..", None, "c1").send(
        &redis(),
        &mut Fake::default(),
        vec![Event::Open],
    );
    assert_eq!(
        reply.events,
        vec![Event::Open, close(1002, "bad request: invalid meeting id")]
    );
}

#[test]
fn every_log_line_names_the_subscribe_component_and_the_connection() {
    let settings = redis();
    let mut fake = Fake::default();
    let mut conn = Conn::subscriber("/api/v1/ws/meetings/m1");
    conn.send(&settings, &mut fake, vec![Event::Open]);
    conn.at(5).send(&settings, &mut fake, vec![]);
    conn.at(10).send(
        &settings,
        &mut fake,
        vec![Event::Close {
            code: None,
            reason: String::new(),
        }],
    );
    assert_eq!(
        testing::states(&fake.logs),
        ["connecting", "connected", "cleanup_complete"]
    );
    for line in &fake.logs {
        assert_eq!(line["component"], "subscribe", "{line}");
        assert_eq!(line["meeting_id"], "m1", "{line}");
        assert_eq!(line["source"], serde_json::Value::Null, "{line}");
        assert_eq!(line["connection_id"], "sub-1", "{line}");
    }
    let cleanup = fake.logs.last().unwrap();
    assert!(
        cleanup.get("frames").is_none(),
        "subscribers carry no audio counters: {cleanup}"
    );
}

#[test]
fn the_ingest_route_is_not_this_components() {
    use earshot_protocol::WsRoute;
    use earshot_ws_session::session::Component;
    let route = |path: &str, query: Option<&str>| WsRoute::parse(path, query).unwrap();
    assert!(Subscribe::<Fake>::serves(&route(
        "/api/v1/ws/meetings/m1",
        None
    )));
    assert!(Subscribe::<Fake>::serves(&route(
        "/api/v1/ws/transcript/m1",
        Some("since=0-0")
    )));
    assert!(!Subscribe::<Fake>::serves(&route(
        "/api/v1/ws/ingest/meetings/m1",
        Some("source=mic")
    )));
}

#[test]
fn the_followup_round_trips_and_a_bad_one_is_lost_state() {
    let settings = redis();
    let mut fake = Fake::default();
    let mut conn = Conn::new(
        "/api/v1/ws/transcript/m1",
        Some("since=1700000000000-0"),
        "s1",
    );
    conn.credentials.authorization = vec![format!("Bearer {}", token("subscribe", &["m1"]))];
    conn.send(&settings, &mut fake, vec![Event::Open]);
    assert_eq!(conn.meta["followup"], "replay:1700000000000-0");
    conn.meta.insert("followup".into(), "replay:".into());
    let reply = conn.at(5).send(&settings, &mut fake, vec![]);
    assert_eq!(reply.events, vec![close(1011, "connection state lost")]);
}

#[test]
fn spin_toml_gives_the_component_exactly_its_variables() {
    let manifest = include_str!("../../../../spin.toml");
    let table = manifest
        .split("[component.subscribe.variables]")
        .nth(1)
        .expect("spin.toml has [component.subscribe.variables]");
    let table = table.split("\n[").next().unwrap();
    let names = [
        "jwt_secret",
        "jwt_algorithm",
        "jwt_public_key",
        "jwt_audience",
        "redis_url",
        "grip_sig_key",
    ];
    for name in names {
        assert!(
            table.contains(&format!("{name} = \"{{{{ {name} }}}}\"")),
            "{name} missing from [component.subscribe.variables]"
        );
        assert!(
            manifest.contains(&format!("\n{name} = {{")),
            "{name} missing from [variables]"
        );
    }
    let granted = table.lines().filter(|l| l.contains(" = ")).count();
    assert_eq!(granted, names.len(), "only what it reads:\n{table}");
}

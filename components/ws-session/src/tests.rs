//! The shared connection life, driven through a toy component that records which hooks ran:
//! what every socket component gets without writing it.

use std::collections::BTreeMap;

use earshot_protocol::{CloseCode, Event, Source, WsRoute};
use jwt_simple::prelude::{Claims, Duration, HS256Key, MACLike, NoCustomClaims, UnixTimeStamp};
use serde_json::Value;

use crate::auth::select_subprotocol;
use crate::effects::{EffectError, Effects};
use crate::gripsig::{self, GripSigError};
use crate::meta::{self, Fields, Meta, MetaError, Phase, StateFields};
use crate::session::{Component, Scope, Session};
use crate::settings::{ConnSettings, TokenSettings};
use crate::testing::{close, header, lookup, states, text, token, Conn, T0};

/// A component's own field, to see it round-trip next to the shared ones.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Toy {
    texts: u64,
}

impl StateFields for Toy {
    fn opened(_now_ms: u64) -> Toy {
        Toy { texts: 0 }
    }

    fn write(&self, out: &mut Vec<(&'static str, String)>) {
        out.push(("texts", self.texts.to_string()));
    }

    fn read(fields: &Fields<'_>) -> Result<Toy, MetaError> {
        Ok(Toy {
            texts: fields.number("texts")?,
        })
    }
}

#[derive(Default)]
struct Host {
    kv: BTreeMap<String, Vec<u8>>,
    kv_down: bool,
    logs: Vec<Value>,
    /// The hooks that ran, in order.
    hooks: Vec<String>,
}

impl Effects for Host {
    fn kv_get(&mut self, key: &str) -> Result<Option<Vec<u8>>, EffectError> {
        if self.kv_down {
            return Err(EffectError("kv is down".into()));
        }
        Ok(self.kv.get(key).cloned())
    }

    fn log(&mut self, line: Value) {
        self.logs.push(line);
    }
}

/// Serves the meeting route; text is counted, `"no"` refuses the OPEN when it is the sub.
struct ToyComponent;

impl Component for ToyComponent {
    const NAME: &'static str = "toy";
    const SCOPE: Scope = Scope::Subscribe;
    type Settings = ConnSettings;
    type Effects = Host;
    type State = Toy;

    fn token_settings(settings: &ConnSettings) -> &TokenSettings {
        &settings.token
    }

    fn serves(route: &WsRoute) -> bool {
        matches!(route, WsRoute::Meeting { .. })
    }

    fn open(s: &mut Session<'_, Self>, sub: &str) {
        s.effects.hooks.push("open".into());
        s.accept(sub);
    }

    fn resumed(s: &mut Session<'_, Self>, ending: bool) {
        s.effects.hooks.push(format!("resumed ending={ending}"));
    }

    fn text(s: &mut Session<'_, Self>, text: &str) {
        s.effects.hooks.push(format!("text {text}"));
        s.state().ext.texts += 1;
        if text == "bye" {
            s.close(CloseCode::Normal, "bye");
        }
    }

    fn binary(s: &mut Session<'_, Self>, _data: &[u8]) {
        s.close(CloseCode::Unsupported, "no binary");
    }

    fn closing(s: &mut Session<'_, Self>) {
        s.effects.hooks.push("closing".into());
    }

    fn cleanup(s: &mut Session<'_, Self>, why: &str) -> Vec<(&'static str, Value)> {
        s.effects.hooks.push(format!("cleanup {why}"));
        vec![("texts", s.state().ext.texts.into())]
    }

    fn finish(s: &mut Session<'_, Self>) {
        s.effects.hooks.push("finish".into());
    }
}

fn settings() -> ConnSettings {
    ConnSettings::from_lookup(lookup(&[])).unwrap()
}

fn toy() -> Conn<ToyComponent> {
    Conn::subscriber("/api/v1/ws/meetings/m1")
}

#[test]
fn the_shared_life_calls_the_components_hooks_in_order() {
    let settings = settings();
    let mut host = Host::default();
    let mut conn = toy();
    let reply = conn.send(&settings, &mut host, vec![Event::Open]);
    assert_eq!(reply.events, vec![Event::Open]);
    assert_eq!(
        header(&reply, "sec-websocket-extensions"),
        Some(r#"grip; message-prefix="""#)
    );
    assert_eq!(conn.state(), "connected");
    assert_eq!(
        conn.meta["texts"], "0",
        "the component's own field rides along"
    );
    let reply = conn.at(10).send(
        &settings,
        &mut host,
        vec![text("a"), text("bye"), text("late")],
    );
    assert_eq!(reply.events, vec![close(1000, "bye")]);
    assert_eq!(conn.state(), "closed");
    assert_eq!(
        host.hooks,
        [
            "open",
            "finish",
            "resumed ending=false",
            "text a",
            "text bye",
            "closing",
            "cleanup bye"
        ],
        "nothing runs after the close, and a closed reply is not `finish`ed"
    );
    assert_eq!(states(&host.logs), ["connecting", "cleanup_complete"]);
    let cleanup = host.logs.last().unwrap();
    assert_eq!(cleanup["state"], "cleanup_complete");
    assert_eq!(cleanup["texts"], 2, "the component's cleanup fields");
    for line in &host.logs {
        assert_eq!(line["component"], "toy", "{line}");
        assert_eq!(line["meeting_id"], "m1", "{line}");
        assert_eq!(line["connection_id"], "sub-1", "{line}");
        assert_eq!(line["source"], Value::Null, "{line}");
    }
}

#[test]
fn a_request_that_ends_the_connection_is_resumed_as_ending() {
    let settings = settings();
    let mut host = Host::default();
    let mut conn = toy();
    conn.send(&settings, &mut host, vec![Event::Open]);
    host.hooks.clear();
    let reply = conn
        .at(10)
        .send(&settings, &mut host, vec![Event::Disconnect]);
    assert!(reply.events.is_empty(), "a disconnect is silent");
    assert_eq!(
        host.hooks,
        ["resumed ending=true", "cleanup disconnected"],
        "a disconnect is no close: `closing` does not run"
    );
}

#[test]
fn client_closes_are_echoed_with_a_code_that_may_be_sent() {
    let settings = settings();
    for (code, echoed) in [(Some(4000), 4000), (None, 1000), (Some(1005), 1000)] {
        let mut host = Host::default();
        let mut conn = toy();
        conn.send(&settings, &mut host, vec![Event::Open]);
        let reply = conn.at(10).send(
            &settings,
            &mut host,
            vec![Event::Close {
                code,
                reason: "x".into(),
            }],
        );
        assert_eq!(reply.events, vec![close(echoed, "client closed")]);
        assert!(host.hooks.contains(&"closing".to_owned()));
    }
}

#[test]
fn the_relays_faults_close_1011() {
    let settings = settings();
    let mut host = Host::default();
    let reply = toy().send(&settings, &mut host, vec![text("hi")]);
    assert_eq!(reply.events, vec![close(1011, "connection state lost")]);

    let mut conn = toy();
    conn.send(&settings, &mut host, vec![Event::Open]);
    let again = conn.at(5).send(&settings, &mut host, vec![Event::Open]);
    assert_eq!(again.events, vec![close(1011, "unexpected OPEN")]);

    let mut conn = toy();
    conn.send(&settings, &mut host, vec![Event::Open]);
    conn.meta.remove("texts");
    let lost = conn.at(5).send(&settings, &mut host, vec![]);
    assert_eq!(
        lost.events,
        vec![close(1011, "connection state lost")],
        "a missing component field is lost state too"
    );

    let mut conn = toy();
    conn.send(&settings, &mut host, vec![Event::Open]);
    conn.path = "/api/v1/ws/meetings/m2".into();
    let moved = conn.at(5).send(&settings, &mut host, vec![]);
    assert_eq!(moved.events, vec![close(1011, "connection state mismatch")]);
}

#[test]
fn refusals_happen_before_the_component_sees_the_connection() {
    let settings = settings();
    let mut host = Host::default();
    let mut conn: Conn<ToyComponent> = Conn::new("/api/v1/ws/meetings/m1", None, "s1");
    conn.credentials.authorization = vec![format!("Bearer {}", token("ingest", &["m1"]))];
    let reply = conn.send(&settings, &mut host, vec![Event::Open]);
    assert_eq!(
        reply.events,
        vec![
            Event::Open,
            close(1008, "auth failed: scope not granted: subscribe")
        ]
    );
    assert!(host.hooks.is_empty());
    assert_eq!(conn.state(), "closed", "remembered as closed");
    assert!(conn
        .at(5)
        .send(&settings, &mut host, vec![text("x")])
        .events
        .is_empty());

    let reply = Conn::<ToyComponent>::subscriber("/api/v1/ws/meetings/..").send(
        &settings,
        &mut host,
        vec![Event::Open],
    );
    assert_eq!(
        reply.events,
        vec![Event::Open, close(1002, "bad request: invalid meeting id")]
    );

    let mut host = Host {
        kv_down: true,
        ..Host::default()
    };
    let reply = toy().send(&settings, &mut host, vec![Event::Open]);
    assert_eq!(
        reply.events,
        vec![Event::Open, close(1011, "token store unavailable")]
    );
    assert!(host.hooks.is_empty());
}

#[test]
fn meta_round_trips_through_visible_ascii() {
    let mut meta: Meta<Toy> = Meta::opened("m1", Some(Source::Sys), "agent é%1\n", T0);
    meta.phase = Phase::PcmStreaming;
    meta.ext.texts = 3;
    let headers = meta.to_headers();
    assert!(
        headers
            .iter()
            .all(|(_, v)| v.bytes().all(|b| (0x21..=0x7e).contains(&b))),
        "{headers:?}"
    );
    let lookup: BTreeMap<String, String> = headers
        .into_iter()
        .map(|(n, v)| {
            (
                n.replacen(meta::RESPONSE_PREFIX, meta::REQUEST_PREFIX, 1),
                v,
            )
        })
        .collect();
    let back = Meta::from_headers(|name| lookup.get(name).map(String::as_str)).unwrap();
    assert_eq!(back, Some(meta));
    assert_eq!(meta::decode("%zz"), None);
    assert_eq!(Meta::<Toy>::from_headers(|_| None), Ok(None));
}

#[test]
fn a_subprotocol_is_selected_from_what_was_offered() {
    assert_eq!(
        select_subprotocol(Some("bearer.abc, earshot.v1")).as_deref(),
        Some("earshot.v1")
    );
    assert_eq!(
        select_subprotocol(Some("bearer.abc")).as_deref(),
        Some("bearer.abc")
    );
    assert_eq!(select_subprotocol(Some("chat, superchat")), None);
    assert_eq!(select_subprotocol(None), None);
}

#[test]
fn shared_settings_default_and_validate() {
    let s = ConnSettings::from_lookup(|_| Ok(None)).unwrap();
    assert_eq!(s.token.audience, "earshot");
    assert_eq!(s.token.algorithm, "HS256");
    assert!(!s.has_redis());
    let s = ConnSettings::from_lookup(lookup(&[("redis_url", " redis://r:6379 ")])).unwrap();
    assert_eq!(s.redis_url, "redis://r:6379");
    let weak = ConnSettings::from_lookup(|name| {
        Ok((name == "grip_sig_key").then(|| "changeme".to_owned()))
    });
    assert!(weak.is_err(), "a guessable Grip-Sig key is refused");
    let unreadable = ConnSettings::from_lookup(|_| Err("host says no".to_owned()));
    assert!(unreadable.is_err());
}

fn grip_sig(key: &str, valid_for: Option<u64>, now_s: u64) -> String {
    let mut claims = Claims::create(Duration::from_secs(1)).with_issuer("pushpin");
    claims.issued_at = Some(UnixTimeStamp::from_secs(now_s));
    claims.expires_at = valid_for.map(|s| UnixTimeStamp::from_secs(now_s + s));
    claims.invalid_before = None;
    HS256Key::from_bytes(key.as_bytes())
        .authenticate::<NoCustomClaims>(claims)
        .unwrap()
}

#[test]
fn grip_sig_must_be_a_current_hs256_jwt_with_the_key() {
    let now = T0 / 1000;
    let key = "relay-key-relay-key-relay-key-32";
    let good = grip_sig(key, Some(3_600), now);
    assert_eq!(gripsig::verify(key, &[good.as_str()], now), Ok(()));
    assert_eq!(gripsig::verify(key, &[], now), Err(GripSigError::Missing));
    assert_eq!(
        gripsig::verify(key, &[good.as_str(), good.as_str()], now),
        Err(GripSigError::Ambiguous)
    );
    assert_eq!(
        gripsig::verify("other-key-other-key-other-key-32b", &[good.as_str()], now),
        Err(GripSigError::Invalid)
    );
    let old = grip_sig(key, Some(10), now - 100);
    assert_eq!(
        gripsig::verify(key, &[old.as_str()], now),
        Err(GripSigError::Expired)
    );
    let forever = grip_sig(key, None, now);
    assert_eq!(
        gripsig::verify(key, &[forever.as_str()], now),
        Err(GripSigError::NoExpiry)
    );
}

/// A manifest's tables, comments and blank lines dropped: header → bodies (a repeated
/// header such as `[[trigger.http]]` has one body per occurrence), in order.
fn tables(manifest: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in manifest.lines() {
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            if let Some((header, body)) = current.take() {
                out.entry(header).or_default().push(body);
            }
            current = Some((line.to_owned(), String::new()));
        } else if let Some((_, body)) = current.as_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    if let Some((header, body)) = current {
        out.entry(header).or_default().push(body);
    }
    out
}

#[test]
fn spin_cloud_toml_is_spin_toml_without_the_redis_trigger() {
    let spin = tables(include_str!("../../../spin.toml"));
    let cloud = tables(include_str!("../../../spin-cloud.toml"));
    let mut expected = spin.clone();
    expected.remove("[application.trigger.redis]");
    expected.remove("[[trigger.redis]]");
    expected.retain(|header, _| {
        !header.starts_with("[component.transcripts]")
            && !header.starts_with("[component.transcripts.")
    });
    assert_eq!(cloud, expected, "spin-cloud.toml drifted from spin.toml");
    assert!(
        spin["[application.trigger.redis]"][0].contains("address = \"{{ redis_url }}\""),
        "the trigger's address is the redis_url variable, never a fixed host"
    );
    let routes = |t: &BTreeMap<String, Vec<String>>| t["[[trigger.http]]"].join("");
    for (route, component) in [
        ("/api/v1/ws/ingest/...", "ingest"),
        ("/api/v1/ws/meetings/...", "subscribe"),
        ("/api/v1/ws/transcript/...", "subscribe"),
        ("/api/v1/ws/...", "subscribe"),
    ] {
        let block = format!("route = \"{route}\"\ncomponent = \"{component}\"\n");
        assert!(routes(&spin).contains(&block), "{route} → {component}");
    }
}

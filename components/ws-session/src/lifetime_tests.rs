//! A token's lifetime on a live connection, as the shared code runs it: the `Meta-*` the
//! relay arms its timer and revocation index from, `refresh` accepted or refused with the
//! reason, and the expiry check on a request that arrives after `exp`.

use std::collections::BTreeMap;

use earshot_auth::{revocation_key, RevocationRecord};
use earshot_protocol::{CloseCode, Event, WsRoute};
use serde_json::Value;

use crate::effects::{EffectError, Effects};
use crate::meta::{Fields, MetaError, StateFields};
use crate::session::{Component, Scope, Session};
use crate::settings::{ConnSettings, TokenSettings};
use crate::testing::{lookup, text, token_for, Conn, T0};

const T0_S: u64 = T0 / 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Nothing;

impl StateFields for Nothing {
    fn opened(_now_ms: u64) -> Nothing {
        Nothing
    }
    fn write(&self, _out: &mut Vec<(&'static str, String)>) {}
    fn read(_fields: &Fields<'_>) -> Result<Nothing, MetaError> {
        Ok(Nothing)
    }
}

#[derive(Default)]
struct Host {
    kv: BTreeMap<String, Vec<u8>>,
    logs: Vec<Value>,
    texts: Vec<String>,
}

impl Effects for Host {
    fn kv_get(&mut self, key: &str) -> Result<Option<Vec<u8>>, EffectError> {
        Ok(self.kv.get(key).cloned())
    }
    fn log(&mut self, line: Value) {
        self.logs.push(line);
    }
}

/// The meeting route with scope `subscribe`; texts that are not refreshes are recorded.
struct Listener;

impl Component for Listener {
    const NAME: &'static str = "listener";
    const SCOPE: Scope = Scope::Subscribe;
    type Settings = ConnSettings;
    type Effects = Host;
    type State = Nothing;

    fn token_settings(settings: &ConnSettings) -> &TokenSettings {
        &settings.token
    }
    fn serves(route: &WsRoute) -> bool {
        matches!(route, WsRoute::Meeting { .. })
    }
    fn open(s: &mut Session<'_, Self>, sub: &str) {
        s.accept(sub);
    }
    fn resumed(_s: &mut Session<'_, Self>, _ending: bool) {}
    fn text(s: &mut Session<'_, Self>, text: &str) {
        s.effects.texts.push(text.to_owned());
    }
    fn binary(_s: &mut Session<'_, Self>, _data: &[u8]) {}
}

fn settings() -> ConnSettings {
    ConnSettings::from_lookup(lookup(&[])).unwrap()
}

/// A connection opened at T0 with a 3-second token `jti-a` of `alice`.
fn opened(host: &mut Host) -> Conn<Listener> {
    let mut conn = Conn::new("/api/v1/ws/meetings/m1", None, "c1");
    let token = token_for("alice", "subscribe", &["m1"], "jti-a", T0_S, Some(3));
    conn.credentials.authorization = vec![format!("Bearer {token}")];
    let reply = conn.send(&settings(), host, vec![Event::Open]);
    assert_eq!(reply.events, vec![Event::Open]);
    conn
}

fn refresh(token: &str) -> Event {
    text(&format!(r#"{{"type":"refresh","token":"{token}"}}"#))
}

fn closed_with(reply: &crate::session::Reply) -> Option<(u16, String)> {
    reply.events.iter().find_map(|e| match e {
        Event::Close { code, reason } => Some(((*code)?, reason.clone())),
        _ => None,
    })
}

#[test]
fn an_accepted_connection_tells_the_relay_its_tokens_exp_and_jti() {
    let mut host = Host::default();
    let conn = opened(&mut host);
    assert_eq!(conn.meta["token-exp"], (T0_S + 3).to_string());
    assert_eq!(conn.meta["jti"], "jti-a");
}

#[test]
fn a_refused_open_arms_nothing() {
    let mut host = Host::default();
    let mut conn: Conn<Listener> = Conn::new("/api/v1/ws/meetings/m1", None, "c1");
    let token = token_for("alice", "ingest", &["m1"], "jti-a", T0_S, Some(3));
    conn.credentials.authorization = vec![format!("Bearer {token}")];
    let reply = conn.send(&settings(), &mut host, vec![Event::Open]);
    assert_eq!(closed_with(&reply).unwrap().0, 1008);
    assert!(!conn.meta.contains_key("token-exp"));
}

#[test]
fn a_refresh_for_the_same_subject_renews_exp_and_jti() {
    let mut host = Host::default();
    let mut conn = opened(&mut host);
    let fresh = token_for(
        "alice",
        "subscribe ingest",
        &["m1", "m2"],
        "jti-b",
        T0_S + 2,
        Some(60),
    );
    let reply = conn
        .at(2_000)
        .send(&settings(), &mut host, vec![refresh(&fresh)]);
    let exp = T0_S + 62;
    assert_eq!(
        reply.events,
        vec![text(&format!(r#"{{"type":"refreshed","exp":{exp}}}"#))]
    );
    assert_eq!(conn.meta["token-exp"], exp.to_string());
    assert_eq!(conn.meta["jti"], "jti-b");
    assert!(host.texts.is_empty(), "the component never sees a refresh");
    // Past the first token's exp, the connection lives on with the second.
    let reply = conn
        .at(10_000)
        .send(&settings(), &mut host, vec![text("hello")]);
    assert_eq!(closed_with(&reply), None);
    assert_eq!(host.texts, ["hello"]);
}

#[test]
fn a_refresh_to_a_token_without_jti_clears_the_old_jti() {
    let mut host = Host::default();
    let mut conn = opened(&mut host);
    let claims = jwt_simple::prelude::Claims::with_custom_claims(
        serde_json::json!({"scope": "subscribe", "meetings": ["m1"]}),
        jwt_simple::prelude::Duration::from_secs(60),
    )
    .with_subject("alice")
    .with_audience("earshot");
    let key = jwt_simple::prelude::HS256Key::from_bytes(crate::testing::SECRET.as_bytes());
    let no_jti = jwt_simple::prelude::MACLike::authenticate(&key, claims).unwrap();
    // jwt-simple stamps its own clock: run the refresh at the real time.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    conn.meta
        .insert("token-exp".into(), (now / 1000 + 3).to_string());
    conn.now_ms = now;
    let reply = conn.send(&settings(), &mut host, vec![refresh(&no_jti)]);
    assert_eq!(closed_with(&reply), None, "{:?}", reply.events);
    assert_eq!(
        conn.meta["jti"], "",
        "an empty value clears what the relay holds"
    );
}

#[test]
fn bad_refreshes_close_1008_with_the_reason() {
    let cases = [
        (
            token_for("bob", "subscribe", &["m1"], "jti-b", T0_S, Some(60)),
            "auth failed: refresh for another subject",
        ),
        (
            token_for("alice", "ingest", &["m1"], "jti-b", T0_S, Some(60)),
            "auth failed: scope not granted: subscribe",
        ),
        (
            token_for("alice", "subscribe", &["m2"], "jti-b", T0_S, Some(60)),
            "auth failed: meeting not granted",
        ),
        // Within the OPEN's clock leeway, yet already expired: no use as a refresh.
        (
            token_for("alice", "subscribe", &["m1"], "jti-b", T0_S - 1, Some(2)),
            "auth failed: token expired",
        ),
        ("not.a.token".to_owned(), "auth failed: malformed token"),
        ("revoked".to_owned(), "auth failed: token revoked"),
    ];
    for (token, reason) in cases {
        let mut host = Host::default();
        let token = if token == "revoked" {
            host.kv.insert(
                revocation_key("jti-r"),
                RevocationRecord { exp: T0_S + 60 }.to_json(),
            );
            token_for("alice", "subscribe", &["m1"], "jti-r", T0_S, Some(60))
        } else {
            token
        };
        let mut conn = opened(&mut host);
        let reply = conn
            .at(1_500)
            .send(&settings(), &mut host, vec![refresh(&token)]);
        assert_eq!(
            closed_with(&reply),
            Some((1008, reason.to_owned())),
            "{reason}"
        );
        assert_eq!(conn.state(), "closed");
    }
    let mut host = Host::default();
    let mut conn = opened(&mut host);
    let reply = conn.send(&settings(), &mut host, vec![text(r#"{"type":"refresh"}"#)]);
    assert_eq!(
        closed_with(&reply),
        Some((1008, "auth failed: missing token".to_owned()))
    );
}

#[test]
fn a_request_after_exp_closes_unless_it_brings_a_refresh() {
    let mut host = Host::default();
    let mut conn = opened(&mut host);
    let reply = conn.at(2_999).send(&settings(), &mut host, vec![]);
    assert_eq!(closed_with(&reply), None, "a millisecond before exp");
    let mut late = opened(&mut host);
    let reply = conn
        .at(3_000)
        .send(&settings(), &mut host, vec![text("hi")]);
    assert_eq!(
        closed_with(&reply),
        Some((
            CloseCode::PolicyViolation.code(),
            "auth failed: token expired".into()
        ))
    );
    assert!(
        host.texts.is_empty(),
        "nothing of an expired connection reaches the component"
    );

    let fresh = token_for("alice", "subscribe", &["m1"], "jti-b", T0_S + 3, Some(60));
    let reply = late
        .at(3_200)
        .send(&settings(), &mut host, vec![refresh(&fresh)]);
    assert_eq!(
        closed_with(&reply),
        None,
        "the refresh in the same batch is taken first"
    );
    assert_eq!(late.meta["token-exp"], (T0_S + 63).to_string());
}

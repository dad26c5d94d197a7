//! A test driver for the socket components' unit tests: one WebSocket connection driven the
//! way the relay drives it (each request carries the `Meta-*` the previous reply set), tokens
//! signed with a fixed secret, a fixed clock. Built for `cfg(test)` and the `testing` feature
//! (a dev-dependency of the components), never into a .wasm.

use std::collections::BTreeMap;
use std::marker::PhantomData;

use earshot_auth::{IssueRequest, Issuer};
use earshot_protocol::{Event, WsRoute};

use crate::auth::Credentials;
use crate::meta::{self, Meta};
use crate::session::{self, Component, Reply};

/// The HS256 secret of every test token (and `jwt_secret` of [`lookup`]).
pub const SECRET: &str = "0123456789abcdef0123456789abcdef";
/// The driver's clock at its start: 2023-11-14, unix ms.
pub const T0: u64 = 1_700_000_000_000;
/// A capture agent's handshake (16 kHz mono PCM).
pub const HANDSHAKE: &str =
    r#"{"type":"handshake","protocol":1,"encoding":"pcm_s16le","sample_rate":16000,"channels":1}"#;

/// A variable lookup over `vars`, with `jwt_secret` = [`SECRET`] unless given.
pub fn lookup(
    vars: &[(&'static str, &str)],
) -> impl FnMut(&'static str) -> Result<Option<String>, String> {
    let vars: BTreeMap<&str, String> = vars.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
    move |name| {
        Ok(match name {
            "jwt_secret" => Some(vars.get(name).cloned().unwrap_or_else(|| SECRET.to_owned())),
            _ => vars.get(name).cloned(),
        })
    }
}

/// A token of subject `agent 1` with `scope` for `meetings`, `jti-1`, issued at [`T0`].
pub fn token(scope: &str, meetings: &[&str]) -> String {
    token_with_jti(scope, meetings, "jti-1")
}

/// [`token`] with its own `jti`.
pub fn token_with_jti(scope: &str, meetings: &[&str], jti: &str) -> String {
    token_for("agent 1", scope, meetings, jti, T0 / 1000, None)
}

/// A token of `sub` with `scope` for `meetings`, issued at `iat` (unix seconds) for `ttl_s`
/// (`None`: the issuer's default of an hour).
pub fn token_for(
    sub: &str,
    scope: &str,
    meetings: &[&str],
    jti: &str,
    iat: u64,
    ttl_s: Option<u64>,
) -> String {
    let request = IssueRequest {
        sub: sub.into(),
        scope: scope.into(),
        meetings: meetings.iter().map(|m| (*m).to_owned()).collect(),
        ttl_s,
    };
    Issuer::from_settings(SECRET, "")
        .unwrap()
        .issue(&request, iat, 86_400, jti.into())
        .unwrap()
        .token
}

/// One WebSocket connection to component `C` as the relay sees it.
pub struct Conn<C> {
    /// The request path.
    pub path: String,
    /// The query string.
    pub query: Option<String>,
    /// The handshake's token carriers.
    pub credentials: Credentials,
    /// The relay's `Connection-Id`.
    pub connection_id: String,
    /// What `Set-Meta-*` stored (name without prefix → value).
    pub meta: BTreeMap<String, String>,
    /// The clock of the next request, unix ms.
    pub now_ms: u64,
    component: PhantomData<C>,
}

impl<C: Component> Conn<C> {
    /// A connection to `path?query`, its token (if any) in the query.
    pub fn new(path: &str, query: Option<&str>, connection_id: &str) -> Conn<C> {
        Conn {
            path: path.into(),
            query: query.map(str::to_owned),
            credentials: Credentials {
                query: query.map(str::to_owned),
                ..Credentials::default()
            },
            connection_id: connection_id.into(),
            meta: BTreeMap::new(),
            now_ms: T0,
            component: PhantomData,
        }
    }

    /// The mic of meeting `m1`, with an `ingest` token in the query.
    pub fn ingest(connection_id: &str) -> Conn<C> {
        let query = format!("source=mic&token={}", token("ingest", &["m1"]));
        Conn::new("/api/v1/ws/ingest/meetings/m1", Some(&query), connection_id)
    }

    /// A subscriber (`sub-1`) to `path`, with a `subscribe` token for every meeting as bearer.
    pub fn subscriber(path: &str) -> Conn<C> {
        let mut conn = Conn::new(path, None, "sub-1");
        conn.credentials.authorization = vec![format!("Bearer {}", token("subscribe", &["*"]))];
        conn
    }

    /// One request carrying `events`; the reply's `Set-Meta-*` is kept for the next one.
    pub fn send(
        &mut self,
        settings: &C::Settings,
        effects: &mut C::Effects,
        events: Vec<Event>,
    ) -> Reply {
        let meta = self.meta.clone();
        let input = session::Input {
            route: WsRoute::parse(&self.path, self.query.as_deref()),
            connection_id: self.connection_id.clone(),
            credentials: self.credentials.clone(),
            path: earshot_auth::redact_query(&format!(
                "{}?{}",
                self.path,
                self.query.clone().unwrap_or_default()
            )),
            meta: Meta::from_headers(|name| {
                meta.get(name.strip_prefix(meta::REQUEST_PREFIX)?)
                    .map(String::as_str)
            }),
            events,
            now_ms: self.now_ms,
        };
        let reply = session::handle::<C>(input, settings, effects);
        for (name, value) in &reply.headers {
            assert!(
                value
                    .bytes()
                    .all(|b| (0x21..=0x7e).contains(&b) || b == b' '),
                "{name}: {value:?}"
            );
            if let Some(field) = name.strip_prefix(meta::RESPONSE_PREFIX) {
                self.meta.insert(field.to_owned(), value.clone());
            }
        }
        reply
    }

    /// Sets the clock of the next request to [`T0`] + `ms_after_t0`.
    pub fn at(&mut self, ms_after_t0: u64) -> &mut Conn<C> {
        self.now_ms = T0 + ms_after_t0;
        self
    }

    /// The connection's phase as the relay stored it.
    pub fn state(&self) -> &str {
        &self.meta["state"]
    }
}

/// Response header `name` of `reply`.
pub fn header<'r>(reply: &'r Reply, name: &str) -> Option<&'r str> {
    reply
        .headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// A TEXT event.
pub fn text(json: &str) -> Event {
    Event::Text(json.into())
}

/// A CLOSE event.
pub fn close(code: u16, reason: &str) -> Event {
    Event::close(code, reason)
}

/// The `state` of every state-transition line among `logs`, in order.
pub fn states(logs: &[serde_json::Value]) -> Vec<String> {
    logs.iter()
        .filter_map(|l| l["state"].as_str().map(str::to_owned))
        .collect()
}

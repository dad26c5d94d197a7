//! The connection state machine: one WebSocket-over-HTTP request in (its events, the
//! connection's `Meta-*` state, the time), one reply out (events for the client, the new
//! state). Pure: every side effect goes through the component's effects, so the whole
//! protocol runs in unit tests. What the route does with an accepted connection (the ingest
//! protocol, a subscription) is the component's, behind [`Component`].

pub use earshot_auth::Scope;
use earshot_protocol::close::{fit_reason, AUTH_FAILED_PREFIX, BAD_REQUEST_PREFIX};
use earshot_protocol::grip::GRIP_EXTENSION;
use earshot_protocol::ids::IdError;
use earshot_protocol::lifetime::{
    RefreshRequest, Refreshed, REASON_REFRESH_OTHER_SUBJECT, REASON_TOKEN_EXPIRED,
};
use earshot_protocol::{CloseCode, Event, Source, WsRoute};

use serde_json::Value;

use crate::auth::{
    authenticate, authenticate_refresh, select_subprotocol, AuthFailure, Credentials,
    RefreshFailure,
};
use crate::effects::Effects;
use crate::log::{Level, Line, LogContext, State};
use crate::meta::{Meta, MetaError, Phase, StateFields};
use crate::settings::TokenSettings;
use earshot_auth::AuthError;

/// Response headers besides `Set-Meta-*`.
pub mod header {
    /// Turns GRIP on for the connection (answer to OPEN).
    pub const SEC_WEBSOCKET_EXTENSIONS: &str = "sec-websocket-extensions";
    /// The selected subprotocol (answer to OPEN).
    pub const SEC_WEBSOCKET_PROTOCOL: &str = "sec-websocket-protocol";
    /// Asks the relay for an empty request after this many seconds without one.
    pub const KEEP_ALIVE_INTERVAL: &str = "keep-alive-interval";
}

/// Close reasons of the shared connection code (the ones clients act on are in
/// `earshot_protocol::close`).
pub mod reason {
    /// 1011: the token variables are unusable.
    pub const AUTH_MISCONFIGURED: &str = "auth misconfigured";
    /// 1011: the revocation list could not be read.
    pub const TOKEN_STORE_UNAVAILABLE: &str = "token store unavailable";
    /// 1011: a request of an accepted connection lacks its state (relay fault).
    pub const STATE_LOST: &str = "connection state lost";
    /// 1011: the state names another meeting or source than the path (relay fault).
    pub const STATE_MISMATCH: &str = "connection state mismatch";
    /// 1011: an OPEN on a connection already open (relay fault).
    pub const UNEXPECTED_OPEN: &str = "unexpected OPEN";
    /// Presence reason and echo-close reason when the client closed.
    pub const CLIENT_CLOSED: &str = "client closed";
    /// Presence reason when the connection dropped without a close.
    pub const DISCONNECTED: &str = "disconnected";
}

/// A socket component: what it adds to the shared life of a connection. The hooks take the
/// whole [`Session`], so a component's handlers see the same request the shared code does.
pub trait Component: Sized {
    /// The `component` of every log line (the manifest's component id).
    const NAME: &'static str;
    /// The scope a token needs on this component's routes.
    const SCOPE: Scope;
    /// The component's variables.
    type Settings;
    /// The component's host capabilities.
    type Effects: Effects;
    /// The component's own `Meta-*` fields.
    type State: StateFields;

    /// The token variables among the settings.
    fn token_settings(settings: &Self::Settings) -> &TokenSettings;

    /// Whether `route` is this component's (the shell answers 404 to any other).
    fn serves(route: &WsRoute) -> bool;

    /// An authenticated OPEN: accept ([`Session::accept`]) or refuse ([`Session::refuse`]).
    fn open(s: &mut Session<'_, Self>, sub: &str);

    /// A request of a live connection, before its events (`ending`: they close it).
    fn resumed(s: &mut Session<'_, Self>, ending: bool);

    /// A text message from the client.
    fn text(s: &mut Session<'_, Self>, text: &str);

    /// A binary message from the client.
    fn binary(s: &mut Session<'_, Self>, data: &[u8]);

    /// The connection is about to close (either side): the last word before the close.
    fn closing(_s: &mut Session<'_, Self>) {}

    /// The connection is over because of `why`: release what it held. Returns extra fields
    /// for the `cleanup_complete` line.
    fn cleanup(_s: &mut Session<'_, Self>, _why: &str) -> Vec<(&'static str, Value)> {
        Vec::new()
    }

    /// The reply of a connection still live is about to go out.
    fn finish(_s: &mut Session<'_, Self>) {}
}

/// One request, as the Spin shell parsed it.
#[derive(Debug)]
pub struct Input<S> {
    /// The route; never `IdError::UnknownRoute` (that is an HTTP 404 before any event).
    pub route: Result<WsRoute, IdError>,
    /// The relay's `Connection-Id`.
    pub connection_id: String,
    /// The replayed handshake's token carriers.
    pub credentials: Credentials,
    /// Path and query with any token redacted, for the log.
    pub path: String,
    /// The connection's state from `Meta-*` headers.
    pub meta: Result<Option<Meta<S>>, MetaError>,
    /// The events, in order.
    pub events: Vec<Event>,
    /// Unix milliseconds.
    pub now_ms: u64,
}

/// The reply: status 200, `application/websocket-events`.
#[derive(Debug)]
pub struct Reply {
    /// Events for the client.
    pub events: Vec<Event>,
    /// Response headers, `Set-Meta-*` included.
    pub headers: Vec<(String, String)>,
    /// The connection's log context, for anything the shell logs afterwards.
    pub log: LogContext,
}

/// Handles one request of component `C`.
pub fn handle<C: Component>(
    input: Input<C::State>,
    settings: &C::Settings,
    effects: &mut C::Effects,
) -> Reply {
    let Input {
        route,
        connection_id,
        credentials,
        path,
        meta,
        events,
        now_ms,
    } = input;
    let log = LogContext {
        component: C::NAME,
        meeting_id: route.as_ref().ok().map(|r| r.meeting().to_string()),
        source: route.as_ref().ok().and_then(route_source),
        connection_id: connection_id.clone(),
        sub: None,
    };
    let route = match route {
        Ok(route) => route,
        Err(e) => return bad_route(&e, &credentials, &path, &events, log, effects),
    };
    let mut session = Session::<C> {
        settings,
        effects,
        route: &route,
        connection_id: &connection_id,
        now_ms,
        log,
        meta: None,
        out: Vec::new(),
        headers: Vec::new(),
    };
    let mut events = events.into_iter();
    match meta {
        Err(e) => session.stateless_failure(reason::STATE_LOST, &e.to_string()),
        Ok(None) => match events.next() {
            Some(Event::Open) => session.open(&credentials, &path),
            // The end of a connection that was never accepted: nothing to clean up.
            Some(Event::Close { .. } | Event::Disconnect) => {}
            Some(_) | None => {
                session.stateless_failure(reason::STATE_LOST, "request without Meta-State")
            }
        },
        Ok(Some(meta)) => {
            session.resume(meta);
            // The relay closes at `exp` itself; this catches a GRIP proxy that does not
            // (Pushpin) on the connection's next request. A refresh in this very batch
            // gets its chance first.
            let refreshing = events.as_slice().iter().any(is_refresh);
            if session.live() && !refreshing && session.token_expired() {
                session.close(CloseCode::PolicyViolation, REASON_TOKEN_EXPIRED);
            }
            if session.live() {
                let ending = events
                    .as_slice()
                    .iter()
                    .any(|e| matches!(e, Event::Close { .. } | Event::Disconnect));
                C::resumed(&mut session, ending);
            }
        }
    }
    for event in events {
        if !session.live() {
            break;
        }
        session.on_event(event);
    }
    session.finish()
}

/// An OPEN (or any request) on a route whose meeting id or source is invalid: refused with
/// 1002 before authentication.
fn bad_route(
    e: &IdError,
    credentials: &Credentials,
    path: &str,
    events: &[Event],
    log: LogContext,
    effects: &mut impl Effects,
) -> Reply {
    let mut out = Vec::new();
    let mut headers = Vec::new();
    match events.first() {
        Some(Event::Close { .. } | Event::Disconnect) => {}
        first => {
            if first == Some(&Event::Open) {
                effects.log(
                    log.transition(State::Connecting, "connecting")
                        .with("path", path)
                        .into_value(),
                );
                if let Some(p) = select_subprotocol(credentials.protocols.as_deref()) {
                    headers.push((header::SEC_WEBSOCKET_PROTOCOL.to_owned(), p));
                }
                out.push(Event::Open);
            }
            let reason = format!("{BAD_REQUEST_PREFIX}{e}");
            let code = CloseCode::ProtocolError.code();
            effects.log(
                log.line(Level::Warn, "connection refused")
                    .with("code", code)
                    .with("reason", reason.as_str())
                    .into_value(),
            );
            out.push(Event::close(code, fit_reason(&reason)));
        }
    }
    Reply {
        events: out,
        headers,
        log,
    }
}

/// The ingest source a route names; `None` on subscriber routes.
pub fn route_source(route: &WsRoute) -> Option<Source> {
    match route {
        WsRoute::Ingest { source, .. } => Some(*source),
        WsRoute::Meeting { .. } | WsRoute::Transcript { .. } => None,
    }
}

/// One request being handled.
pub struct Session<'a, C: Component> {
    /// The component's variables.
    pub settings: &'a C::Settings,
    /// The component's host capabilities.
    pub effects: &'a mut C::Effects,
    /// The connection's route.
    pub route: &'a WsRoute,
    /// The relay's `Connection-Id`.
    pub connection_id: &'a str,
    /// The request's time, unix milliseconds.
    pub now_ms: u64,
    /// What every log line of the connection carries.
    pub log: LogContext,
    /// The connection's state; `None` until accepted or refused.
    pub meta: Option<Meta<C::State>>,
    /// Events for the client, in order.
    pub out: Vec<Event>,
    /// Response headers besides `Set-Meta-*`.
    pub headers: Vec<(String, String)>,
}

impl<C: Component> Session<'_, C> {
    /// Whether the connection is accepted and not yet closed.
    pub fn live(&self) -> bool {
        self.meta.as_ref().is_some_and(|m| m.phase != Phase::Closed)
    }

    /// The accepted connection's state. Handlers run only on live connections.
    pub fn state(&mut self) -> &mut Meta<C::State> {
        self.meta
            .as_mut()
            .expect("handlers run only on accepted connections")
    }

    /// Writes one log line.
    pub fn emit(&mut self, line: Line) {
        self.effects.log(line.into_value());
    }

    /// An OPEN: authenticate, then accept through the component, or refuse.
    fn open(&mut self, credentials: &Credentials, path: &str) {
        let line = self
            .log
            .transition(State::Connecting, "connecting")
            .with("path", path);
        self.emit(line);
        if let Some(p) = select_subprotocol(credentials.protocols.as_deref()) {
            self.headers
                .push((header::SEC_WEBSOCKET_PROTOCOL.to_owned(), p));
        }
        // Accepted or refused, the reply starts with OPEN: a refusal is a close the client
        // can read, not a failed handshake.
        self.out.push(Event::Open);
        let now_unix = self.now_ms / 1000;
        let token = match authenticate(
            credentials,
            C::token_settings(self.settings),
            C::SCOPE,
            self.route.meeting(),
            now_unix,
            self.effects,
        ) {
            Ok(token) => token,
            Err(AuthFailure::Denied(e)) => {
                return self.refuse(
                    CloseCode::PolicyViolation,
                    &format!("{AUTH_FAILED_PREFIX}{e}"),
                    None,
                )
            }
            Err(AuthFailure::Misconfigured(e)) => {
                return self.refuse(
                    CloseCode::InternalError,
                    reason::AUTH_MISCONFIGURED,
                    Some(e.to_string()),
                )
            }
            Err(AuthFailure::StoreUnavailable(e)) => {
                return self.refuse(
                    CloseCode::InternalError,
                    reason::TOKEN_STORE_UNAVAILABLE,
                    Some(e.0),
                )
            }
        };
        self.log.sub = Some(token.sub.clone());
        C::open(self, &token.sub);
        if self.live() {
            // Accepted: the relay arms its expiry timer and its revocation index from these.
            let meta = self.state();
            meta.token_exp = Some(token.exp);
            meta.jti = token.jti;
        }
    }

    /// Whether the connection's token has expired (`exp` is a whole second: expired from
    /// its first millisecond on, as the relay's timer counts).
    fn token_expired(&self) -> bool {
        let exp = self.meta.as_ref().and_then(|m| m.token_exp);
        exp.is_some_and(|exp| self.now_ms >= exp.saturating_mul(1000))
    }

    /// A `refresh`: a fresher token for the same subject, scope and meeting renews the
    /// connection (`refreshed` with the new `exp`); anything else closes it 1008 (1011
    /// when the token variables or the revocation list fail).
    fn refresh(&mut self, request: RefreshRequest) {
        let denied = |e: &dyn std::fmt::Display| format!("{AUTH_FAILED_PREFIX}{e}");
        let Some(token) = request.token else {
            return self.close(CloseCode::PolicyViolation, &denied(&AuthError::Missing));
        };
        let sub = self.state().sub.clone();
        let result = authenticate_refresh(
            &token,
            &sub,
            C::token_settings(self.settings),
            C::SCOPE,
            self.route.meeting(),
            self.now_ms,
            self.effects,
        );
        let verified = match result {
            Ok(verified) => verified,
            Err(RefreshFailure::OtherSubject) => {
                return self.close(
                    CloseCode::PolicyViolation,
                    &denied(&REASON_REFRESH_OTHER_SUBJECT),
                )
            }
            Err(RefreshFailure::Auth(AuthFailure::Denied(e))) => {
                return self.close(CloseCode::PolicyViolation, &denied(&e))
            }
            Err(RefreshFailure::Auth(AuthFailure::Misconfigured(e))) => {
                let line = self
                    .log
                    .line(Level::Error, "refresh failed")
                    .with("detail", e.to_string());
                self.emit(line);
                return self.close(CloseCode::InternalError, reason::AUTH_MISCONFIGURED);
            }
            Err(RefreshFailure::Auth(AuthFailure::StoreUnavailable(e))) => {
                let line = self
                    .log
                    .line(Level::Error, "refresh failed")
                    .with("detail", e.0);
                self.emit(line);
                return self.close(CloseCode::InternalError, reason::TOKEN_STORE_UNAVAILABLE);
            }
        };
        let exp = verified.exp;
        let meta = self.state();
        meta.token_exp = Some(exp);
        meta.jti = verified.jti;
        let line = self
            .log
            .line(Level::Info, "token refreshed")
            .with("exp", exp);
        self.emit(line);
        self.out.push(Event::Text(Refreshed { exp }.to_json()));
    }

    /// Refuses an OPEN (the reply already holds the OPEN): close, and remember the connection
    /// as closed so anything the relay still forwards is ignored.
    pub fn refuse(&mut self, code: CloseCode, reason: &str, detail: Option<String>) {
        let level = if code == CloseCode::InternalError {
            Level::Error
        } else {
            Level::Warn
        };
        let mut line = self
            .log
            .line(level, "connection refused")
            .with("code", code.code())
            .with("reason", reason);
        if let Some(detail) = detail {
            line = line.with("detail", detail);
        }
        self.emit(line);
        self.out.push(Event::close(code.code(), fit_reason(reason)));
        let sub = self.log.sub.clone().unwrap_or_default();
        let mut meta = Meta::opened(
            self.route.meeting().as_str(),
            route_source(self.route),
            &sub,
            self.now_ms,
        );
        meta.phase = Phase::Closed;
        self.meta = Some(meta);
    }

    /// Accepts the OPEN: state `connected`, GRIP on.
    pub fn accept(&mut self, sub: &str) {
        self.meta = Some(Meta::opened(
            self.route.meeting().as_str(),
            route_source(self.route),
            sub,
            self.now_ms,
        ));
        self.headers.push((
            header::SEC_WEBSOCKET_EXTENSIONS.to_owned(),
            GRIP_EXTENSION.to_owned(),
        ));
    }

    /// A request of an existing connection: check its state.
    fn resume(&mut self, meta: Meta<C::State>) {
        if !meta.sub.is_empty() {
            self.log.sub = Some(meta.sub.clone());
        }
        if meta.meeting != self.route.meeting().as_str() || meta.source != route_source(self.route)
        {
            let detail = format!(
                "state is for meeting {} source {:?}",
                meta.meeting, meta.source
            );
            return self.stateless_failure(reason::STATE_MISMATCH, &detail);
        }
        self.meta = Some(meta);
    }

    /// A request this component cannot place (no or unreadable state): close 1011. The relay
    /// is at fault, so the client is told to retry.
    fn stateless_failure(&mut self, reason: &str, detail: &str) {
        let code = CloseCode::InternalError.code();
        let line = self
            .log
            .line(Level::Error, "closing")
            .with("code", code)
            .with("reason", reason)
            .with("detail", detail);
        self.emit(line);
        self.out.push(Event::close(code, reason));
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Open => self.close(CloseCode::InternalError, reason::UNEXPECTED_OPEN),
            Event::Ping(_) | Event::Pong(_) => {}
            Event::Close { code, .. } => self.client_closed(code),
            Event::Disconnect => self.cleanup(reason::DISCONNECTED),
            Event::Text(text) => match RefreshRequest::parse(&text) {
                Some(request) => self.refresh(request),
                None => C::text(self, &text),
            },
            Event::Binary(data) => C::binary(self, &data),
        }
    }

    /// Closes the connection with `code` and `reason`, which is also why it ended.
    pub fn close(&mut self, code: CloseCode, reason: &str) {
        self.close_because(code, reason, reason);
    }

    /// Closes with `code` and `reason`; `why` is the cleanup reason (ingest: presence's).
    pub fn close_because(&mut self, code: CloseCode, reason: &str, why: &str) {
        C::closing(self);
        let level = match code {
            CloseCode::Normal => Level::Info,
            CloseCode::InternalError => Level::Error,
            _ => Level::Warn,
        };
        let line = self
            .log
            .line(level, "closing")
            .with("code", code.code())
            .with("reason", reason);
        self.emit(line);
        self.out.push(Event::close(code.code(), fit_reason(reason)));
        self.cleanup(why);
    }

    /// The client closed: answer with the same code (RFC 6455 §5.5.1), or 1000 when it sent
    /// none or one that may not be sent.
    fn client_closed(&mut self, code: Option<u16>) {
        let code = code
            .filter(|c| sendable(*c))
            .unwrap_or(CloseCode::Normal.code());
        C::closing(self);
        let line = self
            .log
            .line(Level::Info, "client closed")
            .with("code", code);
        self.emit(line);
        self.out.push(Event::close(code, reason::CLIENT_CLOSED));
        self.cleanup(reason::CLIENT_CLOSED);
    }

    /// The connection is over: the component releases what it held, the state is closed.
    fn cleanup(&mut self, why: &str) {
        let fields = C::cleanup(self, why);
        self.state().phase = Phase::Closed;
        let mut line = self
            .log
            .transition(State::CleanupComplete, "cleanup complete")
            .with("reason", why);
        for (name, value) in fields {
            line = line.with(name, value);
        }
        self.emit(line);
    }

    fn finish(mut self) -> Reply {
        if self.live() {
            C::finish(&mut self);
        }
        let mut headers = self.headers;
        if let Some(meta) = &self.meta {
            headers.extend(meta.to_headers());
        }
        Reply {
            events: self.out,
            headers,
            log: self.log,
        }
    }
}

/// Whether an event is a client's `refresh`.
fn is_refresh(e: &Event) -> bool {
    matches!(e, Event::Text(t) if RefreshRequest::parse(t).is_some())
}

/// Whether an endpoint may send close code `code` (RFC 6455 §7.4: 1004–1006 and 1015 are
/// reserved or never on the wire; 3000–4999 are for applications).
fn sendable(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

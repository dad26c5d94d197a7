//! The connection state machine: one WebSocket-over-HTTP request in (its events, the
//! connection's `Meta-*` state, the time), one reply out (events for the client, the new
//! state). Pure: every side effect goes through [`Effects`], so the whole protocol runs in
//! unit tests. Route-specific handling lives in `ingest.rs` and `subscriber.rs`.

use earshot_auth::Scope;
use earshot_protocol::close::{fit_reason, AUTH_FAILED_PREFIX, BAD_REQUEST_PREFIX};
use earshot_protocol::grip::GRIP_EXTENSION;
use earshot_protocol::ids::IdError;
use earshot_protocol::{CloseCode, Event, Source, WsRoute};

use crate::auth::{authenticate, select_subprotocol, AuthFailure, Credentials};
use crate::effects::Effects;
use crate::log::{Level, LogContext, State};
use crate::meta::{Meta, MetaError, Phase};
use crate::settings::Settings;

/// Response headers besides `Set-Meta-*`.
pub(crate) mod header {
    /// Turns GRIP on for the connection (answer to OPEN).
    pub(crate) const SEC_WEBSOCKET_EXTENSIONS: &str = "sec-websocket-extensions";
    /// The selected subprotocol (answer to OPEN).
    pub(crate) const SEC_WEBSOCKET_PROTOCOL: &str = "sec-websocket-protocol";
    /// Asks the relay for an empty request after this many seconds without one.
    pub(crate) const KEEP_ALIVE_INTERVAL: &str = "keep-alive-interval";
}

/// Close reasons that are this component's own business (the ones clients act on are in
/// `earshot_protocol::close`).
pub(crate) mod reason {
    /// 1011: the token variables are unusable.
    pub(crate) const AUTH_MISCONFIGURED: &str = "auth misconfigured";
    /// 1011: the revocation list could not be read.
    pub(crate) const TOKEN_STORE_UNAVAILABLE: &str = "token store unavailable";
    /// 1011: a request of an accepted connection lacks its state (relay fault).
    pub(crate) const STATE_LOST: &str = "connection state lost";
    /// 1011: the state names another meeting or source than the path (relay fault).
    pub(crate) const STATE_MISMATCH: &str = "connection state mismatch";
    /// 1011: an OPEN on a connection already open (relay fault).
    pub(crate) const UNEXPECTED_OPEN: &str = "unexpected OPEN";
    /// 1011: no randomness for a session id.
    pub(crate) const SESSION_ID_UNAVAILABLE: &str = "session id unavailable";
    /// Presence reason and echo-close reason when the client closed.
    pub(crate) const CLIENT_CLOSED: &str = "client closed";
    /// Presence reason when the connection dropped without a close.
    pub(crate) const DISCONNECTED: &str = "disconnected";
    /// Presence reason after `close_stream`.
    pub(crate) const CLOSE_STREAM: &str = "close_stream";
}

/// One request, as the Spin shell parsed it.
#[derive(Debug)]
pub(crate) struct Input {
    /// The route; never `IdError::UnknownRoute` (that is an HTTP 404 before any event).
    pub(crate) route: Result<WsRoute, IdError>,
    /// The relay's `Connection-Id`.
    pub(crate) connection_id: String,
    /// The replayed handshake's token carriers.
    pub(crate) credentials: Credentials,
    /// Path and query with any token redacted, for the log.
    pub(crate) path: String,
    /// The connection's state from `Meta-*` headers.
    pub(crate) meta: Result<Option<Meta>, MetaError>,
    /// The events, in order.
    pub(crate) events: Vec<Event>,
    /// Unix milliseconds.
    pub(crate) now_ms: u64,
}

/// The reply: status 200, `application/websocket-events`.
#[derive(Debug)]
pub(crate) struct Reply {
    /// Events for the client.
    pub(crate) events: Vec<Event>,
    /// Response headers, `Set-Meta-*` included.
    pub(crate) headers: Vec<(String, String)>,
    /// The connection's log context, for anything the shell logs afterwards.
    pub(crate) log: LogContext,
}

/// Handles one request.
pub(crate) fn handle(input: Input, settings: &Settings, effects: &mut impl Effects) -> Reply {
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
        meeting_id: route.as_ref().ok().map(|r| r.meeting().to_string()),
        source: route.as_ref().ok().and_then(route_source),
        connection_id: connection_id.clone(),
        sub: None,
    };
    let route = match route {
        Ok(route) => route,
        Err(e) => return bad_route(&e, &credentials, &path, &events, log, effects),
    };
    let mut session = Session {
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
            // What a subscriber is owed goes out before its events are looked at, unless
            // the client is already gone.
            let ending = events
                .as_slice()
                .iter()
                .any(|e| matches!(e, Event::Close { .. } | Event::Disconnect));
            if session.live() && !session.is_ingest() && !ending {
                session.subscriber_followup();
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

fn route_source(route: &WsRoute) -> Option<Source> {
    match route {
        WsRoute::Ingest { source, .. } => Some(*source),
        WsRoute::Meeting { .. } | WsRoute::Transcript { .. } => None,
    }
}

/// One request being handled.
pub(crate) struct Session<'a, E: Effects> {
    pub(crate) settings: &'a Settings,
    pub(crate) effects: &'a mut E,
    pub(crate) route: &'a WsRoute,
    pub(crate) connection_id: &'a str,
    pub(crate) now_ms: u64,
    pub(crate) log: LogContext,
    /// The connection's state; `None` until accepted or refused.
    pub(crate) meta: Option<Meta>,
    /// Events for the client, in order.
    pub(crate) out: Vec<Event>,
    /// Response headers besides `Set-Meta-*`.
    pub(crate) headers: Vec<(String, String)>,
}

impl<E: Effects> Session<'_, E> {
    /// Whether the connection is accepted and not yet closed.
    pub(crate) fn live(&self) -> bool {
        self.meta.as_ref().is_some_and(|m| m.phase != Phase::Closed)
    }

    /// The accepted connection's state. Handlers run only on live connections.
    pub(crate) fn state(&mut self) -> &mut Meta {
        self.meta
            .as_mut()
            .expect("handlers run only on accepted connections")
    }

    pub(crate) fn is_ingest(&self) -> bool {
        matches!(self.route, WsRoute::Ingest { .. })
    }

    /// Writes one log line.
    pub(crate) fn emit(&mut self, line: crate::log::Line) {
        self.effects.log(line.into_value());
    }

    /// An OPEN: authenticate, then accept through the route's handler, or refuse.
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
        let scope = if self.is_ingest() {
            Scope::Ingest
        } else {
            Scope::Subscribe
        };
        let now_unix = self.now_ms / 1000;
        let token = match authenticate(
            credentials,
            &self.settings.token,
            scope,
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
        match self.route {
            WsRoute::Ingest { meeting, source } => self.open_ingest(meeting, *source, &token.sub),
            WsRoute::Meeting { .. } | WsRoute::Transcript { .. } => {
                self.open_subscriber(&token.sub)
            }
        }
    }

    /// Refuses an OPEN (the reply already holds the OPEN): close, and remember the connection
    /// as closed so anything the relay still forwards is ignored.
    pub(crate) fn refuse(&mut self, code: CloseCode, reason: &str, detail: Option<String>) {
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
    pub(crate) fn accept(&mut self, sub: &str) {
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

    /// A request of an existing connection: check its state, then its timeouts.
    fn resume(&mut self, meta: Meta) {
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
        let live = meta.phase != Phase::Closed;
        self.meta = Some(meta);
        if live && self.is_ingest() {
            self.ingest_timeouts();
        }
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
            Event::Text(text) if self.is_ingest() => self.ingest_text(&text),
            Event::Text(text) => self.subscriber_text(&text),
            Event::Binary(data) if self.is_ingest() => self.ingest_binary(&data),
            Event::Binary(_) => self.subscriber_binary(),
        }
    }

    /// Closes the connection with `code` and `reason`, which is also why presence ends.
    pub(crate) fn close(&mut self, code: CloseCode, reason: &str) {
        self.close_because(code, reason, reason);
    }

    /// Closes with `code` and `reason`; `why` is the presence and cleanup reason. Audio
    /// already stored but not yet acknowledged is acknowledged first, so the client knows
    /// exactly what survived.
    pub(crate) fn close_because(&mut self, code: CloseCode, reason: &str, why: &str) {
        if self.is_ingest() {
            self.flush_ack(true);
        }
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
        if self.is_ingest() {
            self.flush_ack(true);
        }
        let line = self
            .log
            .line(Level::Info, "client closed")
            .with("code", code);
        self.emit(line);
        self.out.push(Event::close(code, reason::CLIENT_CLOSED));
        self.cleanup(reason::CLIENT_CLOSED);
    }

    /// The connection is over: close the talk analytics and clear presence (ingest), mark
    /// it closed.
    fn cleanup(&mut self, why: &str) {
        if let WsRoute::Ingest { meeting, source } = self.route {
            self.finish_analytics();
            let stream = crate::presence::Stream {
                meeting,
                source: *source,
                connection_id: self.connection_id,
            };
            crate::presence::disconnected(
                self.settings,
                self.effects,
                &self.log,
                stream,
                self.now_ms,
                why,
            );
        }
        let (frames, bytes) = {
            let state = self.state();
            state.phase = Phase::Closed;
            (state.frames, state.bytes)
        };
        let mut line = self
            .log
            .transition(State::CleanupComplete, "cleanup complete")
            .with("reason", why);
        if self.is_ingest() {
            line = line.with("frames", frames).with("bytes", bytes);
        }
        self.emit(line);
    }

    fn finish(mut self) -> Reply {
        if self.live() && self.is_ingest() {
            self.periodic_stats();
            self.flush_ack(false);
            let interval = earshot_protocol::limits::KEEP_ALIVE_INTERVAL_S.to_string();
            self.headers
                .push((header::KEEP_ALIVE_INTERVAL.to_owned(), interval));
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

/// Whether an endpoint may send close code `code` (RFC 6455 §7.4: 1004–1006 and 1015 are
/// reserved or never on the wire; 3000–4999 are for applications).
fn sendable(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

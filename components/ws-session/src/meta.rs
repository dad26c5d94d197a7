//! A connection's state between requests. Components are stateless per request, so the state
//! rides on the connection itself: every reply sets `Set-Meta-<name>` headers and the relay
//! sends them back as `Meta-<name>` on the connection's next request (WebSocket-over-HTTP),
//! stripping any `Meta-*` a client sent. Values are visible ASCII: anything else (and `%`) is
//! percent-encoded.

use std::fmt::Debug;

use earshot_protocol::Source;

/// Prefix of the request headers carrying state.
pub const REQUEST_PREFIX: &str = "meta-";
/// Prefix of the response headers setting state.
pub const RESPONSE_PREFIX: &str = "set-meta-";

/// Names of the fields every connection carries (after the prefix); a component's own
/// fields ([`StateFields`]) are named by the component.
pub mod field {
    /// [`super::Phase`].
    pub const STATE: &str = "state";
    /// Meeting id the connection was accepted for.
    pub const MEETING: &str = "meeting";
    /// Ingest source (`mic`/`sys`); absent on subscriber routes.
    pub const SOURCE: &str = "source";
    /// The token's subject, for the log.
    pub const SUB: &str = "sub";
    /// When the connection was accepted, unix milliseconds.
    pub const OPENED_MS: &str = "opened-ms";
    /// The token's `exp` (unix seconds): the relay closes the connection then.
    pub const TOKEN_EXP: &str = earshot_protocol::lifetime::META_TOKEN_EXP;
    /// The token's `jti` (empty: none): the relay closes the connection when it is revoked.
    pub const JTI: &str = earshot_protocol::lifetime::META_JTI;
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Accepted; an ingest connection awaits its handshake, a subscriber is subscribed.
    Connected,
    /// Handshake acknowledged, no frame yet.
    HandshakeComplete,
    /// At least one frame appended.
    PcmStreaming,
    /// Closed (by either side) or refused; later requests change nothing.
    Closed,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Connected => "connected",
            Phase::HandshakeComplete => "handshake_complete",
            Phase::PcmStreaming => "pcm_streaming",
            Phase::Closed => "closed",
        }
    }

    fn parse(s: &str) -> Option<Phase> {
        [
            Phase::Connected,
            Phase::HandshakeComplete,
            Phase::PcmStreaming,
            Phase::Closed,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }
}

/// The fields a component keeps on the connection besides the shared ones.
pub trait StateFields: Sized + Clone + Debug + PartialEq {
    /// The fields of a connection accepted at `now_ms`.
    fn opened(now_ms: u64) -> Self;

    /// Appends `(field name, value)` pairs, unencoded. A field that goes from set to unset is
    /// written with a value rather than dropped: the relay keeps the last value it was given,
    /// and proxies differ on whether an empty `Set-Meta-*` clears one.
    fn write(&self, out: &mut Vec<(&'static str, String)>);

    /// Reads the fields back.
    fn read(fields: &Fields<'_>) -> Result<Self, MetaError>;
}

/// Everything remembered about a connection: the shared fields and the component's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta<S> {
    /// Where the connection is in its life.
    pub phase: Phase,
    /// The meeting it was accepted for.
    pub meeting: String,
    /// The ingest source; `None` on subscriber routes.
    pub source: Option<Source>,
    /// The token's subject.
    pub sub: String,
    /// When it was accepted, unix milliseconds.
    pub opened_ms: u64,
    /// The current token's `exp`, unix seconds (`None`: not known, as on a refused OPEN).
    pub token_exp: Option<u64>,
    /// The current token's `jti`, when it has one.
    pub jti: Option<String>,
    /// The component's own fields.
    pub ext: S,
}

/// Why the state on a request cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    /// A field the state needs is absent.
    #[error("missing meta field {0}")]
    Missing(&'static str),
    /// A field does not parse.
    #[error("invalid meta field {0}")]
    Invalid(&'static str),
}

/// A request's state fields, decoded on demand.
pub struct Fields<'f> {
    get: &'f dyn Fn(&'static str) -> Result<Option<String>, MetaError>,
}

impl Fields<'_> {
    /// Field `name`, decoded; `None` when absent or empty.
    pub fn get(&self, name: &'static str) -> Result<Option<String>, MetaError> {
        (self.get)(name)
    }

    /// Field `name`, which must be present.
    pub fn required(&self, name: &'static str) -> Result<String, MetaError> {
        self.get(name)?.ok_or(MetaError::Missing(name))
    }

    /// Field `name` as a number, which must be present.
    pub fn number(&self, name: &'static str) -> Result<u64, MetaError> {
        self.required(name)?
            .parse()
            .map_err(|_| MetaError::Invalid(name))
    }

    /// Field `name` as a number, when present.
    pub fn optional_number(&self, name: &'static str) -> Result<Option<u64>, MetaError> {
        self.get(name)?
            .map(|v| v.parse().map_err(|_| MetaError::Invalid(name)))
            .transpose()
    }
}

impl<S: StateFields> Meta<S> {
    /// A freshly accepted connection at `now_ms`.
    pub fn opened(meeting: &str, source: Option<Source>, sub: &str, now_ms: u64) -> Meta<S> {
        Meta {
            phase: Phase::Connected,
            meeting: meeting.to_owned(),
            source,
            sub: sub.to_owned(),
            opened_ms: now_ms,
            token_exp: None,
            jti: None,
            ext: S::opened(now_ms),
        }
    }

    /// The `Set-Meta-*` response headers carrying this state (all of it, every time, so a
    /// reply never depends on what an earlier one set).
    pub fn to_headers(&self) -> Vec<(String, String)> {
        let mut fields: Vec<(&str, String)> = vec![
            (field::STATE, self.phase.as_str().to_owned()),
            (field::MEETING, self.meeting.clone()),
            (field::SUB, self.sub.clone()),
            (field::OPENED_MS, self.opened_ms.to_string()),
        ];
        if let Some(source) = self.source {
            fields.push((field::SOURCE, source.as_str().to_owned()));
        }
        if let Some(exp) = self.token_exp {
            fields.push((field::TOKEN_EXP, exp.to_string()));
            // Written even when empty: a refresh to a token without `jti` must clear the
            // old one, or revoking the old token would still close this connection.
            fields.push((field::JTI, self.jti.clone().unwrap_or_default()));
        }
        self.ext.write(&mut fields);
        fields
            .into_iter()
            .map(|(name, value)| (format!("{RESPONSE_PREFIX}{name}"), encode(&value)))
            .collect()
    }

    /// Reads the state from a request's `Meta-*` headers (`header(name)` looks a header up
    /// case-insensitively). `Ok(None)`: the request carries no state (an OPEN).
    pub fn from_headers<'a>(
        header: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<Option<Meta<S>>, MetaError> {
        let get = |name: &'static str| -> Result<Option<String>, MetaError> {
            match header(&format!("{REQUEST_PREFIX}{name}")) {
                None | Some("") => Ok(None),
                Some(v) => decode(v).map(Some).ok_or(MetaError::Invalid(name)),
            }
        };
        let fields = Fields { get: &get };
        let Some(state) = fields.get(field::STATE)? else {
            return Ok(None);
        };
        let phase = Phase::parse(&state).ok_or(MetaError::Invalid(field::STATE))?;
        let source = match fields.get(field::SOURCE)? {
            None => None,
            Some(s) => Some(Source::parse(&s).map_err(|_| MetaError::Invalid(field::SOURCE))?),
        };
        Ok(Some(Meta {
            phase,
            meeting: fields.required(field::MEETING)?,
            source,
            sub: fields.get(field::SUB)?.unwrap_or_default(),
            opened_ms: fields.number(field::OPENED_MS)?,
            token_exp: fields.optional_number(field::TOKEN_EXP)?,
            jti: fields.get(field::JTI)?,
            ext: S::read(&fields)?,
        }))
    }
}

/// Percent-encodes everything outside visible ASCII, and `%` itself.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if (0x21..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reverses [`encode`]; `None` for a malformed escape or bytes that are not UTF-8.
pub fn decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

//! The export's query string: `format` (default `json`), and the history range `since`
//! (exclusive) / `until` (inclusive), both resume offsets as the transcript WebSocket's
//! `?since=` takes them. Every parameter at most once; others are ignored.

use earshot_protocol::ids::query_values;
use earshot_protocol::transcript::valid_offset;

use crate::format::{Format, FormatError};

/// What an export request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportQuery {
    /// The body's format.
    pub format: Format,
    /// Only segments after this offset.
    pub since: Option<String>,
    /// Only segments at or before this offset.
    pub until: Option<String>,
}

/// Why a query was refused (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// `format` names no format.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// `since` or `until` is not an offset (`<ms>-<seq>`, each a 64-bit number).
    #[error("invalid {0} (an offset such as 1700000000000-0)")]
    InvalidOffset(&'static str),
    /// A parameter given twice.
    #[error("repeated parameter `{0}`")]
    Repeated(&'static str),
}

impl ExportQuery {
    /// Parses the query string (`None`: no query).
    pub fn parse(query: Option<&str>) -> Result<ExportQuery, QueryError> {
        let single = |name: &'static str| -> Result<Option<String>, QueryError> {
            let mut values = query_values(query, name);
            match values.len() {
                0 | 1 => Ok(values.pop()),
                _ => Err(QueryError::Repeated(name)),
            }
        };
        let format = match single("format")? {
            None => Format::Json,
            Some(name) => Format::parse(&name)?,
        };
        let offset = |name: &'static str| -> Result<Option<String>, QueryError> {
            match single(name)? {
                Some(o) if !is_offset(&o) => Err(QueryError::InvalidOffset(name)),
                other => Ok(other),
            }
        };
        Ok(ExportQuery {
            format,
            since: offset("since")?,
            until: offset("until")?,
        })
    }
}

/// A stream id Redis takes in a range: the protocol's shape, each part a 64-bit number.
fn is_offset(s: &str) -> bool {
    valid_offset(s)
        && s.split_once('-')
            .is_some_and(|(ms, seq)| ms.parse::<u64>().is_ok() && seq.parse::<u64>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_values() {
        assert_eq!(ExportQuery::parse(None).unwrap(), ExportQuery { format: Format::Json, since: None, until: None });
        let q = ExportQuery::parse(Some("format=vtt&since=5-0&until=9-1&x=y")).unwrap();
        assert_eq!((q.format, q.since.as_deref(), q.until.as_deref()), (Format::Vtt, Some("5-0"), Some("9-1")));
    }

    #[test]
    fn refusals_name_the_parameter() {
        let err = |q: &str| ExportQuery::parse(Some(q)).unwrap_err().to_string();
        assert_eq!(err("format=pdf"), "unknown format (json, srt, vtt or txt)");
        assert_eq!(err("format=srt&format=vtt"), "repeated parameter `format`");
        assert!(err("since=abc").starts_with("invalid since"));
        assert!(err("until=1-2-3").starts_with("invalid until"));
        assert!(err("since=99999999999999999999-0").starts_with("invalid since"), "not a 64-bit ms");
    }
}

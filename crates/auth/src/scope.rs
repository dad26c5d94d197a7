//! What a token grants: scopes (`scope` claim) and meetings (`meetings` claim).

use std::fmt;

use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::error::AuthError;

/// The `meetings` entry that grants every meeting.
pub const ALL_MEETINGS: &str = "*";

/// One permission a token can carry; the `scope` claim is a space-separated list of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Stream audio into a meeting (`/api/v1/ws/ingest/...`).
    Ingest,
    /// Receive meeting events and transcripts.
    Subscribe,
    /// Publish to meeting channels.
    Publish,
    /// Administrative operations.
    Admin,
}

impl Scope {
    /// Every scope, in claim order.
    pub const ALL: [Scope; 4] = [
        Scope::Ingest,
        Scope::Subscribe,
        Scope::Publish,
        Scope::Admin,
    ];

    /// Parses one scope word (exact, lowercase); `None` for anything else.
    pub fn parse(word: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == word)
    }

    /// The scope word as it appears in the `scope` claim.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Subscribe => "subscribe",
            Scope::Publish => "publish",
            Scope::Admin => "admin",
        }
    }

    /// Parses a space-separated `scope` string into sorted, de-duplicated scopes.
    pub fn parse_list(scope: &str) -> Result<Vec<Scope>, AuthError> {
        let mut scopes = scope
            .split_ascii_whitespace()
            .map(|w| Scope::parse(w).ok_or(AuthError::InvalidClaim("scope")))
            .collect::<Result<Vec<_>, _>>()?;
        scopes.sort_unstable();
        scopes.dedup();
        Ok(scopes)
    }

    /// Formats scopes as the space-separated `scope` claim.
    pub fn join(scopes: &[Scope]) -> String {
        scopes
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Scope {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// The meetings a token may touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeetingGrant {
    /// `["*"]`: every meeting.
    All,
    /// Exactly these meeting ids (possibly none).
    Only(Vec<String>),
}

impl MeetingGrant {
    /// Builds a grant from meeting ids; any `*` entry means every meeting.
    pub fn from_ids(ids: Vec<String>) -> MeetingGrant {
        if ids.iter().any(|m| m == ALL_MEETINGS) {
            MeetingGrant::All
        } else {
            MeetingGrant::Only(ids)
        }
    }

    /// Reads the `meetings` claim: absent → no meetings; an array of non-empty strings → those;
    /// any other JSON type (string, object, null, numbers inside) → invalid.
    pub(crate) fn from_claim(claim: Option<&Value>) -> Result<MeetingGrant, AuthError> {
        const INVALID: AuthError = AuthError::InvalidClaim("meetings");
        let Some(claim) = claim else {
            return Ok(MeetingGrant::Only(Vec::new()));
        };
        let items = claim.as_array().ok_or(INVALID)?;
        let ids = items
            .iter()
            .map(|v| match v.as_str() {
                Some(s) if !s.is_empty() => Ok(s.to_owned()),
                _ => Err(INVALID),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MeetingGrant::from_ids(ids))
    }

    /// Whether `meeting_id` is covered.
    pub fn allows(&self, meeting_id: &str) -> bool {
        match self {
            MeetingGrant::All => true,
            MeetingGrant::Only(ids) => ids.iter().any(|m| m == meeting_id),
        }
    }

    /// The grant as the `meetings` claim array.
    pub fn to_claim(&self) -> Vec<String> {
        match self {
            MeetingGrant::All => vec![ALL_MEETINGS.to_owned()],
            MeetingGrant::Only(ids) => ids.clone(),
        }
    }
}

impl Serialize for MeetingGrant {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_claim().serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scope_list_parses_dedups_and_rejects_unknown_words() {
        assert_eq!(
            Scope::parse_list("subscribe ingest  ingest").unwrap(),
            vec![Scope::Ingest, Scope::Subscribe]
        );
        assert_eq!(Scope::parse_list("").unwrap(), vec![]);
        assert_eq!(
            Scope::parse_list("ingest root"),
            Err(AuthError::InvalidClaim("scope"))
        );
        assert_eq!(
            Scope::parse_list("Ingest"),
            Err(AuthError::InvalidClaim("scope"))
        );
        assert_eq!(Scope::join(&Scope::ALL), "ingest subscribe publish admin");
    }

    #[test]
    fn meetings_claim_accepts_only_arrays_of_strings() {
        assert_eq!(
            MeetingGrant::from_claim(Some(&json!(["*"]))),
            Ok(MeetingGrant::All)
        );
        assert_eq!(
            MeetingGrant::from_claim(Some(&json!(["a", "b"]))),
            Ok(MeetingGrant::Only(vec!["a".into(), "b".into()]))
        );
        assert_eq!(
            MeetingGrant::from_claim(None),
            Ok(MeetingGrant::Only(vec![]))
        );
        for bad in [
            json!("*"),
            json!("m1"),
            json!({"m1": true}),
            json!(null),
            json!([1]),
            json!([""]),
            json!(true),
        ] {
            assert_eq!(
                MeetingGrant::from_claim(Some(&bad)),
                Err(AuthError::InvalidClaim("meetings")),
                "{bad}"
            );
        }
    }

    #[test]
    fn grant_allows_listed_or_all() {
        let only = MeetingGrant::Only(vec!["m1".into()]);
        assert!(only.allows("m1"));
        assert!(!only.allows("m2"));
        assert!(!only.allows("*"));
        assert!(MeetingGrant::All.allows("anything"));
        assert_eq!(
            serde_json::to_value(&MeetingGrant::All).unwrap(),
            json!(["*"])
        );
    }
}

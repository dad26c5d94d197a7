//! What a subscriber connection remembers between requests (its `Meta-*` fields beyond the
//! shared ones): what its next request owes the client before the channel's hold is released.

use earshot_ws_session::meta::{Fields, MetaError, StateFields};

/// Field name (after the `Meta-` prefix): `replay:<offset>`, `snapshot`, or `none`.
pub(crate) const FOLLOWUP: &str = "followup";

/// [`FOLLOWUP`] when nothing is owed, sent rather than dropped (see [`StateFields::write`]).
const FOLLOWUP_NONE: &str = "none";
/// [`FOLLOWUP`] while the meeting snapshot is owed.
const FOLLOWUP_SNAPSHOT: &str = "snapshot";
/// Prefix of [`FOLLOWUP`] while a transcript replay is owed; the offset follows.
const FOLLOWUP_REPLAY: &str = "replay:";

/// What a subscriber's next request must send before releasing the hold its OPEN reply
/// put on the channel (the relay calls again as soon as the subscription is effective).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Followup {
    /// The transcript segments after this offset.
    Replay(String),
    /// The meeting snapshot.
    Snapshot,
}

/// A subscriber connection's own state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SubscriberState {
    /// What the next request owes the client.
    pub(crate) followup: Option<Followup>,
}

impl StateFields for SubscriberState {
    fn opened(_now_ms: u64) -> SubscriberState {
        SubscriberState::default()
    }

    fn write(&self, out: &mut Vec<(&'static str, String)>) {
        let followup = match &self.followup {
            None => FOLLOWUP_NONE.to_owned(),
            Some(Followup::Snapshot) => FOLLOWUP_SNAPSHOT.to_owned(),
            Some(Followup::Replay(offset)) => format!("{FOLLOWUP_REPLAY}{offset}"),
        };
        out.push((FOLLOWUP, followup));
    }

    fn read(fields: &Fields<'_>) -> Result<SubscriberState, MetaError> {
        let followup = match fields.get(FOLLOWUP)?.as_deref() {
            None | Some(FOLLOWUP_NONE) => None,
            Some(FOLLOWUP_SNAPSHOT) => Some(Followup::Snapshot),
            Some(v) => match v.strip_prefix(FOLLOWUP_REPLAY) {
                Some(offset) if !offset.is_empty() => Some(Followup::Replay(offset.to_owned())),
                _ => return Err(MetaError::Invalid(FOLLOWUP)),
            },
        };
        Ok(SubscriberState { followup })
    }
}

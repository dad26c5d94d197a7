//! A meeting's transcript state in the key-value store ([`MeetingState`] at
//! `meeting_state_key`), advanced once per stored segment.

use earshot_protocol::grip::id_after;
use earshot_protocol::meeting::MeetingState;

/// The state after the final segment stored at `offset` at `now_ms`. An unreadable record is
/// replaced. The newest offset wins even if two writers' swaps land out of order (the HTTP
/// route and the Redis trigger may store segments of one meeting concurrently).
pub(crate) fn advance(current: Option<&[u8]>, offset: &str, now_ms: u64) -> Vec<u8> {
    let mut state: MeetingState = current
        .and_then(|b| serde_json::from_slice(b).ok())
        .unwrap_or_default();
    let newer = state
        .last_transcript_offset
        .as_deref()
        .is_none_or(|last| id_after(offset, last));
    if newer {
        state.last_transcript_offset = Some(offset.to_owned());
    }
    state.final_segments += 1;
    state.updated_ms = state.updated_ms.max(now_ms);
    serde_json::to_vec(&state).expect("meeting state serializes")
}
